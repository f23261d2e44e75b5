"""Make an artifact ready for the backend that will run it: export a torch checkpoint to ONNX
once (kept under the cache) when a graph runtime is to run it.

This is the one place where serving meets export: the server calls :func:`prepare` once, in
its parent process, and its workers only load what it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifact import MANIFEST_NAME, Manifest, load_manifest
from ..cache import cache_root
from ..runtime.loader import BackendOptions, resolve_choice

if TYPE_CHECKING:
    from .choose import Choice


def export_path(folder: Path, manifest: Manifest, precision: str) -> Path:
    """Where the cached ONNX export of this torch artifact at ``precision`` lives (made or not)."""
    from ..version import __version__
    from .onnx import EXPORT_REVISION

    stamp = [str(folder.resolve()), manifest.model_dump_json(), precision, __version__, EXPORT_REVISION]
    for f in sorted((folder / manifest.weights).rglob("*.safetensors")):  # rglob: ensemble students/
        stat = f.stat()
        stamp.append(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}")
    key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
    return cache_root() / "onnx" / f"{manifest.name}-{precision}-{key}"


def exported_copy(folder: Path, manifest: Manifest, precision: str) -> Path:
    """An ONNX export of a torch artifact, made once and kept under the cache folder."""
    from .onnx import export_onnx  # torch: only when an export is made

    out = export_path(folder, manifest, precision)
    if not (out / "bertserve.json").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        export_onnx(folder, tmp, precision=precision, overwrite=True)
        try:
            tmp.rename(out)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def recorded_choices(folder: Path, manifest: Manifest) -> dict[int | None, Choice]:
    """The choices ``auto`` has cached for this artifact on this machine, by worker threads (None:
    every core); a torch artifact's are those of its cached fp32 export. Nothing is measured."""
    from .choose import cached_choice, eligible

    if not eligible(manifest):
        return {}
    if manifest.backend == "torch":
        folder = export_path(folder, manifest, "fp32")
        if not (folder / MANIFEST_NAME).exists():
            return {}
        folder, manifest = load_manifest(folder)
    found = {}
    for threads in (None, *range(1, (os.cpu_count() or 1) + 1)):
        choice = cached_choice(folder, manifest, threads)
        if choice is not None:
            found[threads] = choice
    return found


def graph_artifact(folder: Path, manifest: Manifest, precision: str) -> tuple[Path, Manifest]:
    """The artifact holding the graph(s) a graph runtime loads: itself, or a torch one's ONNX
    export at ``precision``.

    OpenVINO compiles the same fp32 export onnxruntime runs (bf16 is a compile option, not an
    export), so the two backends share one cached export.
    """
    if manifest.backend != "torch":
        return folder, manifest
    return load_manifest(exported_copy(folder, manifest, precision))


def prepare(
    path: str | Path | None, opts: BackendOptions
) -> tuple[Path, Manifest, str, str | None]:
    """What a server's workers load: (folder, manifest, backend, precision to pass them).

    The export to ONNX (for onnxruntime and openvino) happens here, once, in the parent, so the
    workers only read the cached copy. The precision is None where the folder alone fixes it
    (onnxruntime); torch and openvino choose it when they load (openvino: fp32 or bf16 of one
    fp32 graph). ``auto`` on CPU may pick OpenVINO by measurement (:mod:`.choose`).
    """
    folder, manifest = load_manifest(path)
    backend, precision = resolve_choice(manifest, opts)
    from .choose import choose, eligible, measuring

    if measuring(opts) and backend == "onnxruntime" and eligible(manifest):
        folder, manifest = graph_artifact(folder, manifest, "fp32")
        picked = choose(folder, manifest, opts.threads)
        return folder, manifest, picked.backend, picked.precision if picked.backend == "openvino" else None
    if backend in ("onnxruntime", "openvino"):
        folder, manifest = graph_artifact(folder, manifest, precision if backend == "onnxruntime" else "fp32")
    return folder, manifest, backend, precision if backend in ("torch", "openvino") else None
