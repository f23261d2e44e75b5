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
    assert wrong_task.returncode == 1 and "an embedder: use `bertserve embed`" in wrong_task.stderr
    invalid = run("serve", "--slo-ms", "0", check=False)  # pydantic's check, as one line naming the flag
    assert invalid.returncode == 1
    assert invalid.stderr.strip() == "error: --slo-ms: Input should be greater than 0"
    too_deep = run("distill", str(tmp_path / "deep"), "--layers", "7", "--corpus", "tweets", "--n", "8",
                   "--eval-n", "0", check=False)
    assert too_deep.returncode == 1 and "deeper than the 6-layer checkpoint" in too_deep.stderr
    assert "Traceback" not in invalid.stderr + too_deep.stderr


@pytest.mark.parametrize(("bad", "fragment"), [
    (["export", "default", "/tmp/x", "--precision", "int4"], "int4"),
    (["embed", "x", "--backend", "bogus"], "bogus"),  # typer's own check: exit 2, before any work
    (["embed", "x", "--device", "tpu"], "tpu"),
    (["distill", "/tmp/x", "--temperature", "0"], "--temperature"),
    (["distill", "/tmp/x", "--lr", "-1"], "--lr"),
    (["finetune", "/tmp/x", "--max-steps", "0"], "--max-steps"),
    (["stack", "/tmp/x", "--device", "gpu"], "gpu"),
    (["serve-ray", "--replicas", "0"], "--replicas"),
    (["plan", "--duration-s", "0"], "--duration-s"),
    (["plan", "--overhead-ms", "-1"], "--overhead-ms"),
    (["plan", "--spread-before", "scrape.txt"], "give --spread too"),
])
def test_bad_options_are_rejected(bad: list[str], fragment: str) -> None:
    proc = run(*bad, check=False)
    assert proc.returncode in (1, 2) and fragment in proc.stderr and "Traceback" not in proc.stderr


def test_rerank_prints_documents_best_first(rerank_dir: Path, query_pairs) -> None:
    from bertserve import Encoder

    query, docs = query_pairs[0][0], query_pairs[1][:4]
    data = json.loads(run("rerank", query, *docs, "--model", str(rerank_dir), "--backend", "torch").stdout)
    scores = Encoder.load(rerank_dir, backend="torch").score(query, docs)
    assert [r["index"] for r in data["results"]] == list(np.argsort(-scores))
    np.testing.assert_allclose([r["score"] for r in data["results"]], np.sort(scores)[::-1], atol=1e-5)
    wrong = run("rerank", "q", "d", check=False)  # the bundled model is an embedder
    assert wrong.returncode == 1 and "an embedder: use `bertserve embed`" in wrong.stderr
