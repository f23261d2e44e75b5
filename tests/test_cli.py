"""The CLI end to end, as a user runs it: real processes, real model, JSON on stdout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BERTSERVE = [sys.executable, "-m", "bertserve.cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.run([*BERTSERVE, *args], capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"bertserve {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_every_command_has_help() -> None:
    top = run("--help").stdout
    for command in ("embed", "classify", "inspect", "export", "serve"):
        assert command in top
        assert "Usage" in run(command, "--help").stdout


def test_embed_prints_json_embeddings(onnx_fp32: Path, sentences) -> None:
    from bertserve import Encoder

    proc = run("embed", "--model", str(onnx_fp32), sentences[0], sentences[1])
    data = json.loads(proc.stdout)
    assert data["dim"] == 384 and len(data["embeddings"]) == 2
    ref = Encoder.load(onnx_fp32).embed(sentences[:2])
    np.testing.assert_allclose(np.array(data["embeddings"]), ref, atol=1e-5)


def test_export_then_inspect_then_embed(tmp_path: Path) -> None:
    out = tmp_path / "int8"
    run("export", "default", str(out), "--precision", "int8")
    info = json.loads(run("inspect", str(out), "--json").stdout)
    assert (info["backend"], info["precision"], info["task"]) == ("onnxruntime", "int8", "embed")
    assert 20e6 < info["parameters"] < 25e6 and info["size_bytes"] < 40e6  # int8 weights: ~4× smaller
    data = json.loads(run("embed", "--model", str(out), "hello world").stdout)
    assert data["dim"] == 384
    refused = run("export", "default", str(out), check=False)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr


def test_errors_are_one_line_and_exit_1(tmp_path: Path, minilm_dir: Path) -> None:
    missing = run("embed", "--model", str(tmp_path / "nope"), "x", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error:") and "Traceback" not in missing.stderr
    pickle_dir = tmp_path / "pickled"
    pickle_dir.mkdir()
    shutil.copy(minilm_dir / "config.json", pickle_dir)
    (pickle_dir / "pytorch_model.bin").write_bytes(b"junk")
    refused = run("inspect", str(pickle_dir), check=False)
    assert refused.returncode == 1 and "pickle" in refused.stderr and "Traceback" not in refused.stderr
    wrong_task = run("classify", "x", check=False)
    assert wrong_task.returncode == 1 and "embedder" in wrong_task.stderr


@pytest.mark.parametrize("bad", [["export", "default", "/tmp/x", "--precision", "int4"]])
def test_bad_options_are_rejected(bad: list[str]) -> None:
    proc = run(*bad, check=False)
    assert proc.returncode == 1 and "int4" in proc.stderr
