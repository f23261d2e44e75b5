"""OpenVINO backend (CPU): the same exported head-output graphs as onnxruntime, compiled by OpenVINO.

OpenVINO reads the ONNX export directly (or an OpenVINO IR ``.xml``, e.g. an NNCF INT8 model) and
compiles it once with dynamic (batch, sequence) axes, so one compiled model serves every padded
batch. Precisions:

- ``fp32``: ``INFERENCE_PRECISION_HINT`` f32, the exact path (cosine to the reference ≈ 1).
- ``bf16``: OpenVINO's own default on CPUs that multiply bf16 (AVX-512-BF16 or AMX); measured
  1.4–1.9× faster than onnxruntime fp32 at a cosine ≥ 0.9999 (issue 21). Refused elsewhere,
  because there OpenVINO would silently emulate it or fall back to f32.
- ``int8``: an INT8 IR (``bertserve quantize --method ov-int8``); the ops NNCF left in float run
  at the CPU's default inference precision.

A student ensemble runs the export's graph for the prefix ``Batch.students`` asks for, compiled
on first use (an ensemble rarely visits every prefix); side by side stays onnxruntime's.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, BackendError, ConfigError
from .base import Batch, types_of

PRECISIONS = ("fp32", "bf16", "int8")


@functools.cache
def core():
    """One OpenVINO Core per process (it owns the plugins and their caches)."""
    try:
        import openvino as ov
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigError("the openvino backend needs the openvino package: pip install openvino") from exc
    return ov.Core()


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin multiplies bf16 natively (AVX-512-BF16 or AMX)."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_config(precision: str, threads: int | None, *, pin: bool = False) -> dict[str, object]:
    """Compile properties: one stream (one request at a time per worker), latency-tuned.

    ``pin`` off by default: server workers are separate processes without their own affinity
    masks, and OpenVINO pinning each of them would put them all on the same first cores.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"openvino runs precision {' | '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and not cpu_has_bf16():
        raise ConfigError("bf16 on openvino needs a CPU with AVX-512-BF16 or AMX; this one has neither "
                          "(use --precision fp32)")
    config: dict[str, object] = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "ENABLE_CPU_PINNING": pin,
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    elif precision == "bf16":
        config["INFERENCE_PRECISION_HINT"] = "bf16"
    return config  # int8: float ops at the plugin's default


def compile_graph(path: Path, *, precision: str, threads: int | None, device: str = "cpu"):
    """Read an ONNX graph or OpenVINO IR and compile it for the CPU with dynamic shapes."""
    if device not in ("cpu", "auto"):
        raise ConfigError(f"the openvino backend runs on CPU, not {device!r} (CUDA: torch or onnxruntime)")
    config = compile_config(precision, threads)
    ov_core = core()
    try:
        model = ov_core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
        raise ArtifactError(f"openvino cannot read {path}: {exc}") from exc
    import openvino as ov

    # every input of rank 2 (ids, mask) or 3 (side-by-side hidden) keeps batch and sequence dynamic
    shapes = {}
    for port in model.inputs:
        shape = port.get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() >= 2 and not (shape[0].is_dynamic
                                                                            and shape[1].is_dynamic):
            dims = [ov.Dimension(-1), ov.Dimension(-1), *list(shape)[2:]]
            shapes[port.get_any_name()] = ov.PartialShape(dims)
    if shapes:
        model.reshape(shapes)
    try:
        return ov_core.compile_model(model, "CPU", config)
    except Exception as exc:
        raise ArtifactError(f"openvino cannot compile {path}: {exc}") from exc


class OpenVinoBackend:
    """Runs one compiled head-output graph (inputs input_ids, attention_mask; one output).

    One InferRequest, reused on every call: creating one per call costs allocations and a thread
    hand-off. ``run`` is therefore not re-entrant; a lock keeps a shared backend correct.
    """

    name = "openvino"

    def __init__(
        self,
        path: Path,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        device: str = "cpu",
        output_dim: int | None = None,
        max_students: int = 1,
    ) -> None:
        self.precision = precision
        self.compiled = compile_graph(path, precision=precision, threads=threads, device=device)
        self.request = self.compiled.create_infer_request()
        self.input_names = {n for port in self.compiled.inputs for n in port.get_names()}
        out = self.compiled.outputs[0]
        shape = out.get_partial_shape()
        last = shape[shape.rank.get_length() - 1] if shape.rank.is_static else None
        self.output_dim = last.get_length() if last is not None and last.is_static else int(output_dim or 0)
        self.max_students = max_students
        self.lock = threading.Lock()

    @property
    def threads(self) -> int:
        """The intra-op threads the compiled model uses (what the plugin settled on)."""
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def run(self, batch: Batch) -> np.ndarray:
        feeds = {"input_ids": np.ascontiguousarray(batch.input_ids, dtype=np.int64),
                 "attention_mask": np.ascontiguousarray(batch.attention_mask, dtype=np.int64)}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.ascontiguousarray(types_of(batch), dtype=np.int64)
        if "students" in self.input_names:
            feeds["students"] = np.asarray(batch.students or self.max_students, dtype=np.int64)
        with self.lock:
            try:
                self.request.infer(feeds)
            except Exception as exc:
                shape = batch.input_ids.shape
                raise BackendError(f"openvino failed on a batch of shape {shape}: {exc}") from exc
            # the output tensor is the request's own buffer, overwritten by the next call: copy
            return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)


class OpenVinoEnsembleBackend:
    """A student ensemble: graph m−1 runs the prefix of m students.

    Prefix 1 and the full ensemble compile at load (a bad artifact fails there, and the common
    cases pay no compile on a request); the prefixes in between when first asked for.
    """

    name = "openvino"

    def __init__(
        self,
        paths: list[Path],
        *,
        precision: str = "fp32",
        threads: int | None = None,
        device: str = "cpu",
        output_dim: int | None = None,
    ) -> None:
        if not paths:
            raise ArtifactError("a student ensemble needs at least one prefix graph")
        self.paths = paths
        self.max_students = len(paths)
        self.kwargs = {"precision": precision, "threads": threads, "device": device, "output_dim": output_dim}
        self.runners: dict[int, OpenVinoBackend] = {}
        self.compile_lock = threading.Lock()
        self.output_dim = self.runner(1).output_dim
        self.runner(self.max_students)

    def runner(self, m: int) -> OpenVinoBackend:
        with self.compile_lock:
            if m not in self.runners:
                self.runners[m] = OpenVinoBackend(self.paths[m - 1], **self.kwargs)  # type: ignore[arg-type]
            return self.runners[m]

    def run(self, batch: Batch) -> np.ndarray:
        m = self.max_students if batch.students is None else max(1, min(batch.students, self.max_students))
        return self.runner(m).run(batch)
