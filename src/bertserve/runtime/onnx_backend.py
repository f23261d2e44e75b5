"""ONNX Runtime backend: CPU (fp32, INT8) and CUDA providers, one session per graph.

A student ensemble has one graph per prefix size (see :mod:`bertserve.compress.ensemble_export`);
:class:`OnnxEnsembleBackend` runs the one ``Batch.students`` asks for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, BackendError, ConfigError
from .base import Batch


def make_session(path: Path, *, threads: int | None, device: str = "cpu", branches: int = 1):
    """An inference session with full graph optimisation and a fixed intra-op pool.

    ``branches`` > 1 runs independent branches of the graph (the unrolled students of an
    ensemble) side by side on that many inter-op threads (ORT's parallel executor).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if branches > 1:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = branches
    else:
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = threads
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
        branches: int = 1,
    ) -> None:
        self.session = make_session(path, threads=threads, device=device, branches=branches)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        dim = self.session.get_outputs()[0].shape[-1]
        self.output_dim = int(dim) if isinstance(dim, int) else int(output_dim or 0)
        self.max_students = max_students

    def run(self, batch: Batch) -> np.ndarray:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "students" in self.input_names:
            feeds["students"] = np.asarray(batch.students or self.max_students, dtype=np.int64)
        try:
            (out,) = self.session.run([self.output_name], feeds)
        except Exception as exc:
            raise BackendError(
                f"onnxruntime failed on a batch of shape {batch.input_ids.shape}: {exc}"
            ) from exc
        return np.asarray(out, dtype=np.float32)


class OnnxEnsembleBackend:
    """A student ensemble: session m−1 runs the prefix of m students.

    With ``student_threads`` = 1 the students run one after another (cost grows with m); with
    more, up to that many students of an unrolled graph run at once, each on its own thread, so
    batch-1 latency stays near one student's (benchmarks/students.py measures both).
    """

    name = "onnxruntime"

    def __init__(self, paths: list[Path], *, threads: int | None = None, device: str = "cpu",
                 output_dim: int | None = None, student_threads: int = 1) -> None:
        self.runners = [
            OnnxBackend(p, threads=threads, device=device, output_dim=output_dim,
                        branches=min(m, student_threads))
            for m, p in enumerate(paths, start=1)
        ]
        self.output_dim = self.runners[-1].output_dim
        self.max_students = len(self.runners)

    def run(self, batch: Batch) -> np.ndarray:
        m = self.max_students if batch.students is None else max(1, min(batch.students, self.max_students))
        return self.runners[m - 1].run(batch)
