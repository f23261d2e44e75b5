"""Quantisation: each method writes a valid artifact that stays close to the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from bertserve import Encoder
from bertserve.artifact import load_manifest
from bertserve.compress.quality import outputs
from bertserve.compress.quantize import QuantizeConfig, quantize
from bertserve.errors import ConfigError

from .conftest import cosine


def test_static_int8_freezes_calibrated_scales(tmp_path: Path, minilm_dir: Path, texts: list[str],
                                              original: np.ndarray) -> None:
    out = quantize(minilm_dir, tmp_path / "s8", QuantizeConfig(method="static-int8", calibration_texts=32))
    folder, m = load_manifest(out)
    assert (m.backend, m.precision, m.weights) == ("onnxruntime", "int8", "model.onnx")
    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert "DynamicQuantizeLinear" not in ops and ops.count("QuantizeLinear") == 24  # static ranges
    assert ops.count("MatMulInteger") == 36
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 30e6  # int8 matrices and int8 word table: ~4x smaller than fp32's 90 MB
    cos = cosine(original, outputs(out, texts))
    assert cos.mean() >= 0.99 and cos.min() >= 0.97


def test_static_int8_qdq_format(tmp_path: Path, minilm_dir: Path, texts: list[str],
                                original: np.ndarray) -> None:
    config = QuantizeConfig(method="static-int8", format="qdq", calibration="percentile",
                            calibration_texts=16)
    out = quantize(minilm_dir, tmp_path / "qdq", config)
    _, m = load_manifest(out)
    assert m.provenance["steps"][-1]["format"] == "QDQ"
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert cosine(original, outputs(out, texts)).mean() >= 0.99


def test_dynamic_int8_keeps_attention_scores_fp32(tmp_path: Path, minilm_dir: Path, texts: list[str],
                                                  original: np.ndarray) -> None:
    out = quantize(minilm_dir, tmp_path / "d8", QuantizeConfig(method="dynamic-int8"))
    graph = onnx.load(str(out / "model.onnx")).graph
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 36  # 6 layers × 6 weight matmuls
    assert sum(n.op_type == "MatMul" for n in graph.node) == 12  # Q·Kᵀ and P·V stay fp32
    assert cosine(original, outputs(out, texts)).mean() >= 0.985


@pytest.mark.parametrize(("method", "floor"), [("bf16", 0.99), ("torch-int8", 0.96)])
def test_torch_precisions(tmp_path: Path, minilm_dir: Path, texts: list[str], original: np.ndarray,
                          method: str, floor: float) -> None:
    out = quantize(minilm_dir, tmp_path / method, QuantizeConfig(method=method))  # type: ignore[arg-type]
    _, m = load_manifest(out)
    assert m.backend == "torch" and m.precision == {"bf16": "bf16", "torch-int8": "int8"}[method]
    enc = Encoder.load(out, backend="torch")
    assert enc.backend.name == "torch"
    assert cosine(original, enc.run_ids(enc.tokenize(texts).ids)).mean() >= floor


def test_bad_method_is_a_config_error(tmp_path: Path, minilm_dir: Path) -> None:
    with pytest.raises(ConfigError, match="method"):
        quantize(minilm_dir, tmp_path / "x", QuantizeConfig(method="int4"))  # type: ignore[arg-type]
