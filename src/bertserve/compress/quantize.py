"""Quantisation into a new artifact: bf16/fp16 and torch INT8 (torch), dynamic/static INT8 (ONNX).

- ``bf16`` / ``fp16``: weights stored at half width, run by the torch backend (bf16 uses
  AVX-512-BF16/AMX on CPU; fp16 is for CUDA).
- ``torch-int8``: torch dynamic INT8 of every linear, applied when the artifact loads — the
  fallback where onnxruntime is not wanted. The stored weights stay fp32 (torch's packed
  INT8 tensors have no safetensors form).
- ``dynamic-int8``: ONNX Runtime dynamic quantisation, per-channel INT8 weights, activations
  quantised per call. Only weight MatMuls are quantised: the embedding Gather and the
  attention score MatMuls (two activations) stay fp32, which is where accuracy was lost.
- ``static-int8``: QDQ format, activation ranges calibrated on real text (MinMax, entropy or
  percentile), per-channel weights, U8 activations / S8 weights (the VNNI fast path). No
  per-call range computation, so it is the fastest INT8 on CPU.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..artifact import load_manifest, save_manifest
from ..errors import ConfigError
from ..models.tokenizer import TextTokenizer
from .artifacts import finish, load_torch_source, prepare_out, read_config, read_state, write_weights

Method = Literal["bf16", "fp16", "torch-int8", "dynamic-int8", "static-int8"]
METHODS: tuple[str, ...] = ("bf16", "fp16", "torch-int8", "dynamic-int8", "static-int8")
Calibration = Literal["minmax", "entropy", "percentile"]


@dataclass(slots=True, frozen=True)
class QuantizeConfig:
    """method: see module doc. calibration/calibration_texts/corpus: static INT8 only.
    percentile: the percentile kept by ``percentile`` calibration.
    exclude: ONNX node-name substrings left in fp32 (e.g. a sensitive layer's FFN output)."""

    method: Method = "static-int8"
    calibration: Calibration = "percentile"
    calibration_texts: int = 256
    corpus: str = "tweets"
    percentile: float = 99.99
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"quantize method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.calibration not in ("minmax", "entropy", "percentile"):
            raise ConfigError(f"calibration must be minmax, entropy or percentile, not {self.calibration!r}")
        if self.calibration_texts < 1:
            raise ConfigError("calibration_texts must be at least 1")


def weight_matmuls(model_path: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of MatMul nodes whose second input is a weight initializer (not activation×activation)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits
            and not any(x in n.name for x in exclude)]


def quantize_dynamic_onnx(src: Path, dst: Path, exclude: tuple[str, ...] = ()) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns through the root logger
    quantize_dynamic(
        str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"], nodes_to_quantize=weight_matmuls(src, exclude),
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


class TextCalibration:
    """Feeds real, tokenised texts to the calibrator in batches of one fixed shape.

    The histogram calibrators stack every batch's activations, so all batches share the
    width ``width`` (texts cut to it, shorter ones padded and masked).
    """

    def __init__(self, tok: TextTokenizer, texts: list[str], batch_size: int = 16, width: int = 64) -> None:
        ids = [row[: width - 1] + row[-1:] if len(row) > width else row for row in tok.encode(texts).ids]
        n = len(ids) - len(ids) % batch_size or len(ids)
        input_ids = np.full((n, width), tok.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, row in enumerate(ids[:n]):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        self.batches = [(input_ids[i : i + batch_size], mask[i : i + batch_size])
                        for i in range(0, n, batch_size)]
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.batches):
            return None
        ids, mask = self.batches[self.pos]
        self.pos += 1
        return {"input_ids": ids, "attention_mask": mask}

    def rewind(self) -> None:
        self.pos = 0


def quantize_static_onnx(src: Path, dst: Path, calib: TextCalibration, config: QuantizeConfig) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration]
    quantize_static(
        str(src), str(dst), calib, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"], nodes_to_quantize=weight_matmuls(src, config.exclude),
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=method,
        extra_options={"DefaultTensorType": TensorProto.FLOAT, "CalibPercentile": config.percentile,
                       "CalibMovingAverage": config.calibration == "minmax"},
    )


def quantize_torch(folder: Path, out: Path, config: QuantizeConfig) -> Path:
    """bf16 / fp16 / torch-int8: a torch artifact with its precision set."""
    folder, manifest = load_torch_source(folder)
    weights = folder / manifest.weights
    state = read_state(weights)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.method)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    slim_file = weights / "slim.json"
    slim = None
    if slim_file.exists():
        import json

        slim = json.loads(slim_file.read_text())
    write_weights(out, state, read_config(weights), slim)
    precision = {"bf16": "bf16", "fp16": "fp16", "torch-int8": "int8"}[config.method]
    step = {"step": "quantize", "config": asdict(config)}
    if config.method == "torch-int8":
        step["note"] = "fp32 weights stored; torch dynamic INT8 is applied to every linear at load"
    finish(folder, manifest, out, step, precision=precision, backend="torch")
    return out


def quantize(src: str | Path | None, out: str | Path, config: QuantizeConfig = QuantizeConfig(),
             *, overwrite: bool = False) -> Path:
    """Quantise the torch artifact ``src`` into a new artifact at ``out``."""
    from ..data import corpus
    from .export import export_onnx

    config.check()
    folder, manifest = load_torch_source(src)
    out = prepare_out(out, overwrite=overwrite)
    if config.method in ("bf16", "fp16", "torch-int8"):
        return quantize_torch(folder, out, config)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(folder, Path(tmp) / "fp32", precision="fp32")
        _, fp32_manifest = load_manifest(fp32)
        target = out / "model.onnx"
        if config.method == "dynamic-int8":
            quantize_dynamic_onnx(fp32 / "model.onnx", target, config.exclude)
        else:
            tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
            texts = corpus(config.corpus)[-config.calibration_texts:]  # the tail: unused by training
            calib = TextCalibration(tok, texts)
            quantize_static_onnx(fp32 / "model.onnx", target, calib, config)
        shutil.copytree(fp32 / fp32_manifest.tokenizer, out / "tokenizer", dirs_exist_ok=True)
    provenance = dict(manifest.provenance)
    provenance.setdefault("source", str(folder))
    step = {"step": "quantize", "config": asdict(config), "format": "QDQ" if config.method == "static-int8"
            else "QOperator", "per_channel": True}
    provenance["steps"] = [*manifest.provenance.get("steps", []), step]
    new = fp32_manifest.model_copy(update={"precision": "int8", "provenance": provenance,
                                           "weights": "model.onnx", "tokenizer": "tokenizer"})
    save_manifest(out, new)
    return out
