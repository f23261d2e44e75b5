"""Export an artifact to ONNX (dynamic batch/sequence axes), fuse its graph, quantise it.

INT8 uses ONNX Runtime dynamic quantisation with **per-channel** weight scales: per-tensor
scales lose too much on MiniLM (cosine to fp32 ≈ 0.94), per-channel keeps ≈ 0.99.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ..artifact import Manifest, copy_tokenizer, load_manifest, save_manifest
from ..errors import ArtifactError, ConfigError
from ..models.registry import build_module
from .artifacts import staged_out

ONNX_PRECISIONS = ("fp32", "int8", "fp16")
OPSET = 17
EXPORT_REVISION = 3  # bump when exported graphs change, so cached exports are made again


def eager_attention(module: torch.nn.Module) -> bool:
    """Switch a Hugging Face encoder to eager attention before tracing; False if it has none.

    ORT's transformer optimizer recognises eager attention (MatMul → Softmax → MatMul) and fuses
    each layer into one ``Attention`` op (``QAttention`` after INT8 quantisation), plus an
    ``EmbedLayerNormalization``. The SDPA export (masks built with IsNaN/Where) stays unfused:
    on all-MiniLM-L6-v2, 331 → 73 nodes and about 4 % lower batch-1 latency in fp32 and INT8
    (``benchmarks/overheads.py``).
    """
    inner = getattr(module, "model", None)
    if inner is None:
        return False
    if not hasattr(inner, "set_attn_implementation"):  # transformers too old to switch after loading
        warnings.warn("this transformers version cannot switch attention after loading: the ONNX "
                      "graph keeps unfused attention (slower); upgrade transformers", stacklevel=2)
        return False
    inner.set_attn_implementation("eager")
    return True


def trace_to_onnx(module: torch.nn.Module, path: Path, *, vocab_hint: int = 1000) -> None:
    """Trace ``module(input_ids, attention_mask)`` into ``path`` with dynamic axes."""
    ids = torch.randint(100, vocab_hint, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    trace_graph(module, (ids, mask), ["input_ids", "attention_mask"], path)


def trace_graph(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    names: list[str],
    path: Path,
    *,
    output_axes: dict[int, str] | None = None,
) -> None:
    """Trace ``module(*args)`` into ``path``; inputs get dynamic (batch, sequence), the output batch."""
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=names,
            output_names=["output"],
            dynamic_axes={**axes, "output": output_axes or {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def fuse_bert_graph(src: Path, dst: Path, hf_config: dict, *, fp16: bool = False) -> bool:
    """Fuse attention/LayerNorm/GELU with ORT's transformer optimizer; False if not a BERT."""
    from onnxruntime.transformers import optimizer

    if hf_config.get("model_type") not in ("bert", "roberta", "mpnet", "distilbert", "xlm-roberta"):
        return False
    model_type = "bert" if hf_config["model_type"] != "distilbert" else "bert"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimizer.optimize_model(
            str(src),
            model_type=model_type,
            num_heads=int(hf_config["num_attention_heads"]),
            hidden_size=int(hf_config["hidden_size"]),
            opt_level=1,
        )
        if fp16:
            opt.convert_float_to_float16(keep_io_types=True)
        opt.save_model_to_file(str(dst))
    return True


def quantize_int8_dynamic(src: Path, dst: Path) -> None:
    """Dynamic INT8 (weights per channel, activations at run time)."""
    import logging

    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns through the root logger
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


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
            from .ensemble_export import export_ensemble_onnx

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
        trace_to_onnx(built.module.float(), raw)
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
