"""Pick and build the backend for an artifact. It only loads: an ONNX export of a torch
checkpoint is made beforehand by :func:`bertserve.export.prepare`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..artifact import EMBEDDINGS_GRAPH, Manifest, load_manifest
from ..errors import ConfigError
from .base import Backend

if TYPE_CHECKING:
    from .onnx_backend import SideBySide

log = logging.getLogger(__name__)

BackendChoice = Literal["auto", "torch", "onnxruntime", "openvino"]
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")


@dataclass(slots=True, frozen=True)
class BackendOptions:
    """How to run an artifact.

    backend: ``auto`` runs ONNX artifacts on onnxruntime and, on CPU, exports torch
        checkpoints to ONNX once (cached) because it runs batch 1 2.7–3.4× faster than torch
        eager at 8 tokens (benchmarks/results/latency.md); on CUDA it keeps torch. On CPU, for
        an fp32 model, :func:`bertserve.export.prepare` then measures onnxruntime against
        OpenVINO fp32/bf16 once and runs the fastest lossless one (``export.choose``). OpenVINO
        IR artifacts run on openvino. ``openvino`` runs ONNX artifacts, and torch checkpoints
        through the same cached ONNX export, on OpenVINO's CPU runtime.
    precision: None keeps the artifact's own; ``int8`` must be asked for explicitly
        (it costs accuracy), ``bf16`` runs on torch or openvino (an fp32 artifact at bf16:
        CPUs with AVX-512-BF16/AMX), ``fp16`` needs CUDA.
    threads: intra-op threads; None lets the runtime use every core.
    student_threads: students of an ensemble run side by side on this many threads (torch;
        onnxruntime CPU exports, from their per-student graphs); 1 runs them one after another.
    """

    backend: BackendChoice = "auto"
    precision: str | None = None
    device: str = "cpu"
    threads: int | None = None
    student_threads: int = 1
    auto_measure: bool | None = None  # None: on unless BERTSERVE_AUTO_MEASURE=0 (export.choose)


def resolve_choice(manifest: Manifest, opts: BackendOptions) -> tuple[str, str]:
    """Return (backend, precision) for this artifact and these options, or raise ConfigError."""
    precision = opts.precision or manifest.precision
    backend = opts.backend
    if backend not in ("auto", "torch", "onnxruntime", "openvino"):
        raise ConfigError(f"backend must be auto, torch, onnxruntime or openvino, not {backend!r}")
    if backend == "auto":
        if manifest.backend in ("onnxruntime", "openvino"):
            backend = manifest.backend
        elif precision in ("bf16",) or opts.device.startswith("cuda"):
            backend = "torch"
        else:
            backend = "onnxruntime"
    if manifest.backend == "openvino" and backend != "openvino":
        raise ConfigError("this artifact holds an OpenVINO model; run it with the openvino backend")
    if backend == "openvino":
        return backend, openvino_precision(manifest, opts)
    if manifest.backend == "onnxruntime":
        if backend == "torch":
            raise ConfigError("this artifact holds ONNX weights; run it with the onnxruntime backend")
        if precision != manifest.precision:
            raise ConfigError(
                f"this ONNX artifact is {manifest.precision}; export another one for {precision}"
            )
    if backend == "onnxruntime" and precision == "bf16":
        raise ConfigError("bf16 runs on the torch or openvino backend (use --backend torch --precision bf16)")
    return backend, precision


def openvino_precision(manifest: Manifest, opts: BackendOptions) -> str:
    """The precision OpenVINO runs this artifact at.

    OpenVINO's precision is a compile option, so an fp32 graph (or torch checkpoint, through its
    fp32 export) runs at fp32 or bf16 alike; INT8 is a property of the graph (an NNCF IR; ONNX
    Runtime's INT8 exports hold QAttention and other ORT-only ops OpenVINO cannot read).
    """
    if opts.device.startswith("cuda"):
        raise ConfigError("the openvino backend runs on CPU; use torch or onnxruntime for CUDA")
    stored = manifest.precision
    if manifest.backend == "torch" and stored == "bf16":
        stored = "fp32"  # bf16 weights export to an fp32 graph, losslessly
    precision = opts.precision or manifest.precision
    if precision not in OPENVINO_PRECISIONS:
        raise ConfigError(f"openvino runs {', '.join(OPENVINO_PRECISIONS)}, not {precision!r}")
    if stored == "int8" and manifest.backend != "openvino":  # ORT's INT8 graphs use its own ops
        raise ConfigError(f"{manifest.backend} INT8 artifacts do not run on openvino; for INT8 on "
                          "openvino write one with bertserve quantize --method ov-int8")
    if stored not in ("fp32", "int8"):
        raise ConfigError(f"openvino runs fp32 and int8 artifacts, not a {stored} one")
    if precision == "int8" and stored != "int8":
        raise ConfigError("int8 on openvino needs an INT8 artifact: bertserve quantize --method ov-int8")
    if stored == "int8" and precision != "int8":
        raise ConfigError(f"this artifact is int8; it cannot run at {precision}")
    if precision == "bf16":  # checked here too, so a server refuses before it starts workers
        from .openvino_backend import compile_config

        compile_config(precision, None)
    return precision


def side_by_side_graphs(folder: Path, manifest: Manifest) -> SideBySide | None:
    """The export's embeddings and per-student term graphs, if it has them (CPU exports do)."""
    from .onnx_backend import SideBySide

    students = manifest.students or []
    terms = [folder / s.term for s in students if s.term]
    if not students or len(terms) < len(students) or not (folder / EMBEDDINGS_GRAPH).exists():
        return None
    normalize = manifest.task == "embed" and manifest.normalize
    return SideBySide(folder / EMBEDDINGS_GRAPH, terms, normalize)


def load_backend(
    path: str | Path | None, opts: BackendOptions = BackendOptions()
) -> tuple[Path, Manifest, Backend]:
    """Load the artifact at ``path`` (None → bundled default) and build its backend.

    A torch checkpoint runs on a graph runtime (onnxruntime, openvino) only through its ONNX
    export: pass the folder :func:`bertserve.export.prepare` returns (``Encoder.load`` and the
    server do). Returns the folder and manifest the backend runs.
    """
    folder, manifest = load_manifest(path)
    backend, precision = resolve_choice(manifest, opts)
    max_students = len(manifest.students) if manifest.students else 1
    if backend != "torch" and manifest.backend == "torch":
        raise ConfigError(f"{folder} holds torch weights; {backend} runs its ONNX export: "
                          "load the folder bertserve.export.prepare returns")
    if backend == "openvino":
        return folder, manifest, openvino_backend(folder, manifest, precision, opts)
    if backend == "onnxruntime":
        from .onnx_backend import OnnxBackend

        if manifest.architecture == "student-ensemble" and manifest.students:
            from .onnx_backend import OnnxEnsembleBackend

            graphs = [folder / s.path for s in manifest.students]  # entry k: the prefix ending at k
            ensemble = OnnxEnsembleBackend(graphs, threads=opts.threads, device=opts.device,
                                           output_dim=manifest.output_dim,
                                           student_threads=opts.student_threads,
                                           side_by_side=side_by_side_graphs(folder, manifest))
            if opts.student_threads > 1 and ensemble.student_threads == 1 and ensemble.max_students > 1:
                log.warning("%s has no term graphs (a fused or older export): its students run one "
                            "after another; export it again for --student-threads", folder)
            return folder, manifest, ensemble
        runner: Backend = OnnxBackend(
            folder / manifest.weights,
            threads=opts.threads,
            device=opts.device,
            output_dim=manifest.output_dim,
            max_students=max_students,
        )
        return folder, manifest, runner
    from ..models.registry import build_module
    from .torch_backend import TorchBackend

    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    built = build_module(folder, manifest)
    module = built.module
    if opts.student_threads > 1 and built.max_students > 1:
        from ..models.ensemble import ThreadedEnsemble

        module = ThreadedEnsemble(module, opts.student_threads)  # type: ignore[arg-type]
    runner = TorchBackend(
        module,
        precision=precision,
        device=opts.device,
        threads=opts.threads,
        output_dim=built.output_dim,
        max_students=built.max_students,
    )
    return folder, manifest, runner


def openvino_backend(folder: Path, manifest: Manifest, precision: str, opts: BackendOptions) -> Backend:
    """Compile the artifact's graph(s) (ONNX or OpenVINO IR) with OpenVINO for the CPU."""
    from .openvino_backend import OpenVinoBackend, OpenVinoEnsembleBackend

    if manifest.architecture == "student-ensemble" and manifest.students:
        if opts.student_threads > 1:
            log.warning("openvino runs each prefix of an ensemble as one graph; --student-threads "
                        "(students side by side) is onnxruntime's and torch's")
        graphs = [folder / s.path for s in manifest.students]  # entry k: the prefix ending at k
        return OpenVinoEnsembleBackend(graphs, precision=precision, threads=opts.threads,
                                       device=opts.device, output_dim=manifest.output_dim)
    return OpenVinoBackend(folder / manifest.weights, precision=precision, threads=opts.threads,
                           device=opts.device, output_dim=manifest.output_dim)
