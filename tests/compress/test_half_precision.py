"""fp16 on CPU: the ONNX fp16 export and `bertserve quantize --method fp16` run here too (ONNX
Runtime's CPU kernels take fp16 graphs), so they are tested here, against the fp32 model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from bertserve import ConfigError, Encoder
from bertserve.artifact import load_manifest
from bertserve.cli import _register, app
from bertserve.export.onnx import export_onnx

pytestmark = pytest.mark.slow


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def reference(minilm_dir: Path, sentences: list[str]) -> np.ndarray:
    return Encoder.load(minilm_dir, backend="torch").embed(sentences[:16])  # the unmodified model, fp32


def test_fp16_onnx_export_holds_half_weights_and_matches_fp32(minilm_dir: Path, tmp_path: Path,
                                                              sentences: list[str], reference) -> None:
    out = export_onnx(minilm_dir, tmp_path / "fp16", precision="fp16")
    folder, manifest = load_manifest(out)
    assert manifest.precision == "fp16" and manifest.backend == "onnxruntime"
    graph = onnx.load(str(folder / manifest.weights)).graph
    kinds = {init.data_type for init in graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds  # the weights are half width
    assert graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT16  # ids stay ints
    encoder = Encoder.load(out)
    got = encoder.embed(sentences[:16])
    assert got.dtype == np.float32  # fp16 inside, fp32 at the boundary (keep_io_types)
    assert cosines(got, reference).min() > 0.999
    assert not np.array_equal(got, reference)  # it did run at half precision


def test_quantize_fp16_writes_half_weights_that_run_on_cpu_through_onnx(
        minilm_dir: Path, tmp_path: Path, sentences: list[str], reference) -> None:
    _register()
    out = tmp_path / "half"
    result = CliRunner().invoke(app, ["quantize", str(minilm_dir), str(out), "--method", "fp16"])
    assert result.exit_code == 0, result.output
    folder, manifest = load_manifest(out)
    assert manifest.precision == "fp16" and manifest.backend == "torch"
    weights = sorted((folder / manifest.weights).rglob("*.safetensors"))
    with safe_open(str(weights[0]), "pt") as f:
        floats = {str(f.get_tensor(k).dtype) for k in f.keys() if f.get_tensor(k).is_floating_point()}  # noqa: SIM118
    assert floats == {"torch.float16"}  # every float tensor (position ids stay int64)
    with pytest.raises(ConfigError, match="CUDA"):  # torch's CPU kernels do not run fp16
        Encoder.load(out, backend="torch")
    encoder = Encoder.load(out)  # auto: the fp16 ONNX export, once, on ONNX Runtime
    assert encoder.manifest.backend == "onnxruntime" and encoder.manifest.precision == "fp16"
    assert cosines(encoder.embed(sentences[:16]), reference).min() > 0.999
