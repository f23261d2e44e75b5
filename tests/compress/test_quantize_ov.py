"""``quantize --method ov-int8``: an NNCF INT8 OpenVINO IR artifact, close to fp32, served as is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def ov_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bertserve.compress.quantize import QuantizeConfig, quantize

    out = tmp_path_factory.mktemp("ov-int8") / "model"
    return quantize(None, out, QuantizeConfig(method="ov-int8", calibration_texts=100, corpus="tweets"))


def test_ov_int8_keeps_mean_cosine_to_fp32(ov_int8: Path, sentences: list[str],
                                           st_reference: np.ndarray) -> None:
    from bertserve import Encoder

    enc = Encoder.load(ov_int8, threads=1)  # auto: an OpenVINO artifact runs on openvino
    assert enc.backend.name == enc.manifest.backend == "openvino" and enc.manifest.precision == "int8"
    assert (ov_int8 / "model.xml").is_file() and (ov_int8 / "model.bin").is_file()
    ref = Encoder.load(None, backend="openvino", precision="fp32", threads=1).embed(sentences)
    got = enc.embed(sentences)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.mean() >= 0.995
    to_st = (got * st_reference).sum(1) / np.linalg.norm(got, axis=1)  # ST's rows are unit norm
    assert to_st.mean() >= 0.995  # against the unmodified model too, not only the fp32 graph
    step = enc.manifest.provenance["steps"][-1]
    assert step["config"]["method"] == "ov-int8" and step["quality"]["mean_cosine_to_fp32"] >= 0.995


def test_ov_int8_refuses_other_runtimes_and_precisions(ov_int8: Path) -> None:
    from bertserve import Encoder
    from bertserve.errors import ConfigError

    with pytest.raises(ConfigError, match="openvino backend"):
        Encoder.load(ov_int8, backend="onnxruntime")
    with pytest.raises(ConfigError, match="int8"):
        Encoder.load(ov_int8, backend="openvino", precision="fp32")


@pytest.mark.slow
def test_cli_quantize_ov_int8(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from bertserve.artifact import load_manifest

    out = tmp_path / "q"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "bertserve.cli", "quantize", "default", str(out),
                           "--method", "ov-int8", "--calibration-texts", "16"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _, manifest = load_manifest(out)
    assert (manifest.backend, manifest.precision, manifest.weights) == ("openvino", "int8", "model.xml")
