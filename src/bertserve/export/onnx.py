"""Export an artifact to ONNX (dynamic batch/sequence axes), fused and optionally quantised."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..artifact import Manifest, copy_tokenizer, load_manifest, save_manifest, staged_out
from ..errors import ArtifactError, ConfigError
from ..models.registry import build_module
from .graph import OPSET, eager_attention, fuse_bert_graph, quantize_int8_dynamic, trace_to_onnx

ONNX_PRECISIONS = ("fp32", "int8", "fp16")
EXPORT_REVISION = 3  # bump when exported graphs change, so cached exports are made again


def export_onnx(
    src: str | Path | None,
    out: str | Path,
    *,
    precision: str = "fp32",
    fuse: bool = True,
    fuse_attention: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write an onnxruntime artifact for ``src`` into ``out`` and return ``out``.

    ``fuse_attention=False`` keeps attention as plain MatMuls: the compression toolbox's
    static INT8 calibrates the activation range of every weight MatMul, which a fused
    ``Attention`` op hides. ``out`` appears only when the whole artifact is written; a failed
    export leaves it as it was.
    """
    if precision not in ONNX_PRECISIONS:
        raise ConfigError(f"ONNX export supports {', '.join(ONNX_PRECISIONS)}, not {precision!r}")
    folder, manifest = load_manifest(src)
    if manifest.backend == "onnxruntime":
        raise ArtifactError(f"{folder} is already an ONNX artifact; export from the torch artifact")
    with staged_out(out, overwrite=overwrite) as tmp:  # out appears only when complete
        if manifest.architecture == "student-ensemble":  # one graph per prefix size
            from .ensemble import export_ensemble_onnx

            export_ensemble_onnx(folder, manifest, tmp, precision=precision)
        else:
            export_into(folder, manifest, tmp, precision=precision, fuse=fuse, fuse_attention=fuse_attention)
    return Path(out)


def export_into(folder: Path, manifest: Manifest, out: Path, *, precision: str, fuse: bool,
                fuse_attention: bool) -> None:
    """The single-model work of :func:`export_onnx`, written into the (staging) folder ``out``."""
    built = build_module(folder, manifest)
    if fuse and fuse_attention and manifest.architecture == "hf-encoder":  # not slim: heads differ
        eager_attention(built.module)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        trace_to_onnx(built.module.float(), raw, pairs=manifest.pairs)
        current = raw
        fused = False
        if fuse and built.hf_config:
            fused_path = Path(tmp) / "fused.onnx"
            fused = fuse_bert_graph(raw, fused_path, built.hf_config, fp16=precision == "fp16")
            current = fused_path if fused else raw
        final = out / "model.onnx"
        if precision == "int8":
            quantize_int8_dynamic(current, final)
        else:
            shutil.copy2(current, final)
    new = Manifest.model_validate(
        {
            **manifest.model_dump(),
            "backend": "onnxruntime",
            "precision": precision,
            "weights": "model.onnx",
            "tokenizer": copy_tokenizer(folder, manifest, out),
            "output_dim": built.output_dim,
            "provenance": {
                **manifest.provenance,
                "exported_from": str(folder),
                "export": {
                    "opset": OPSET,
                    "fused": fused,
                    "revision": EXPORT_REVISION,
                    "precision": precision,
                    "quantization": "dynamic int8, per-channel" if precision == "int8" else None,
                },
            },
        }
    )
    save_manifest(out, new)
