"""ONNX Runtime backend: CPU (fp32, INT8) and CUDA providers, one session per graph.

A student ensemble has one graph per prefix size (see :mod:`bertserve.export.ensemble`);
:class:`OnnxEnsembleBackend` runs the one ``Batch.students`` asks for, or the students' own
graphs side by side on several threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, BackendError, ConfigError
from .base import Batch, types_of


def make_session(path: Path, *, threads: int | None, device: str = "cpu"):
    """An inference session with full graph optimisation, sequential, with a fixed intra-op pool."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = threads
    # ORT's pool threads busy-wait after each run by default: on a server they would burn the
    # cores the other workers need (at idle too), so they sleep between runs instead.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    available = ort.get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ConfigError(
                "device 'cuda' asked for, but onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif device == "auto" and "CUDAExecutionProvider" in available:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as exc:  # ORT raises its own exception types without a common base
        raise ArtifactError(f"onnxruntime cannot load {path}: {exc}") from exc


class OnnxBackend:
    """Runs an exported head-output graph (inputs input_ids, attention_mask; one output)."""

    name = "onnxruntime"

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        device: str = "cpu",
        output_dim: int | None = None,
        max_students: int = 1,
    ) -> None:
        self.session = make_session(path, threads=threads, device=device)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        dim = self.session.get_outputs()[0].shape[-1]
        self.output_dim = int(dim) if isinstance(dim, int) else int(output_dim or 0)
        self.max_students = max_students

    def run(self, batch: Batch) -> np.ndarray:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = types_of(batch)
        if "students" in self.input_names:
            feeds["students"] = np.asarray(batch.students or self.max_students, dtype=np.int64)
        (out,) = run_graph(self.session, feeds, batch, [self.output_name])
        return np.asarray(out, dtype=np.float32)


class OnnxEnsembleBackend:
    """A student ensemble: session m−1 runs the prefix of m students, one after another.

    With ``student_threads`` = s > 1 and an export that holds term graphs (CPU exports do), the
    backend owns ``threads`` × s cores. A prefix of 2 ≤ m ≤ s students runs *side by side*: the
    embeddings once, then each student's own graph on its own thread (ONNX Runtime releases
    the GIL), their terms α_k·S_k added up and, for a normalised embedder, L2-normalised. One
    student, or more students than threads, runs the prefix graph with every op split over all
    the cores instead (``benchmarks/students.py parallel``: 2 students per thread lose to that).
    On 2 CPU cores side by side measured no faster at p50 than one graph on both cores, with a
    lower p99 (``benchmarks/students.py cores``), so servers default to s = 1.
    """

    name = "onnxruntime"

    def __init__(
        self,
        paths: list[Path],
        *,
        threads: int | None = None,
        device: str = "cpu",
        output_dim: int | None = None,
        student_threads: int = 1,
        side_by_side: SideBySide | None = None,
    ) -> None:
        self.max_students = len(paths)
        self.side: SideBySideRunner | None = None
        if side_by_side is not None and student_threads > 1 and self.max_students > 1:
            self.side = SideBySideRunner(side_by_side, threads=threads, device=device,
                                         students=min(student_threads, self.max_students))
        self.student_threads = student_threads if self.side else 1
        cores = threads * self.student_threads if threads else None  # prefix graphs: every core
        side = range(2, self.student_threads + 1) if self.side else range(0)
        # prefix m's own graph; the prefixes that run side by side never load one (memory, start-up)
        self.runners = {
            m: OnnxBackend(p, threads=cores, device=device, output_dim=output_dim)
            for m, p in enumerate(paths, start=1)
            if m not in side
        }
        self.output_dim = self.runners[1].output_dim  # one student never runs side by side

    def run(self, batch: Batch) -> np.ndarray:
        m = self.max_students if batch.students is None else max(1, min(batch.students, self.max_students))
        if m in self.runners:
            return self.runners[m].run(batch)
        assert self.side is not None  # every prefix without a graph of its own runs side by side
        return self.side.run(batch, m)


@dataclass(frozen=True, slots=True)
class SideBySide:
    """An export's graphs for running students side by side (see export.ensemble)."""

    embeddings: Path  # input_ids → embedded tokens
    terms: list[Path]  # student k: (embedded tokens, attention_mask) → α_k·S_k
    normalize: bool  # L2-normalise the sum (normalised embedders)


class SideBySideRunner:
    """Runs each of the first m ≤ ``students`` students on its own thread and adds their terms up."""

    def __init__(self, graphs: SideBySide, *, threads: int | None, device: str, students: int) -> None:
        self.embed = make_session(graphs.embeddings, threads=threads, device=device)
        self.embed_types = any(i.name == "token_type_ids" for i in self.embed.get_inputs())
        self.terms = [make_session(p, threads=threads, device=device) for p in graphs.terms[:students]]
        self.normalize = graphs.normalize
        self.pool = ThreadPoolExecutor(students - 1, thread_name_prefix="bertserve-student")

    def run(self, batch: Batch, m: int) -> np.ndarray:
        if not 1 <= m <= len(self.terms):
            raise ValueError(f"side by side runs 1..{len(self.terms)} students, not {m}")
        feeds = {"input_ids": batch.input_ids}
        if self.embed_types:
            feeds["token_type_ids"] = types_of(batch)
        (hidden,) = run_graph(self.embed, feeds, batch)
        feeds = {"hidden": hidden, "attention_mask": batch.attention_mask}
        others = [self.pool.submit(run_graph, self.terms[k], feeds, batch) for k in range(1, m)]
        total = run_graph(self.terms[0], feeds, batch)[0]  # the caller's thread runs the first student
        for f in others:
            total = total + f.result()[0]
        if self.normalize:
            total = total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)
        return np.asarray(total, dtype=np.float32)


def run_graph(session, feeds: dict[str, np.ndarray], batch: Batch, outputs: list[str] | None = None) -> list:
    """``session.run`` with ONNX Runtime's errors (no common base class) turned into BackendError."""
    try:
        return session.run(outputs, feeds)
    except Exception as exc:
        raise BackendError(f"onnxruntime failed on a batch of shape {batch.input_ids.shape}: {exc}") from exc
