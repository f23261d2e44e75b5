"""The artifact contract: inferred manifests, round trips, refusal of unsafe or broken folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bertserve.artifact import MANIFEST_NAME, Manifest, load_manifest, save_manifest
from bertserve.errors import ArtifactError, UnsafeWeightsError


def test_bundled_model_manifest_is_inferred(minilm_dir: Path) -> None:
    folder, m = load_manifest(None)
    assert folder == minilm_dir
    assert (m.name, m.task, m.pooling, m.normalize) == ("all-MiniLM-L6-v2", "embed", "mean", True)
    assert m.max_seq_length == 256  # from sentence_bert_config.json, not the 512 positions
    assert m.output_dim == 384 and m.backend == "torch"


def test_onnx_artifact_round_trip(onnx_int8: Path) -> None:
    folder, m = load_manifest(onnx_int8)
    assert (m.backend, m.precision, m.weights) == ("onnxruntime", "int8", "model.onnx")
    assert (folder / "tokenizer" / "tokenizer.json").exists()
    assert m.provenance["export"]["quantization"].startswith("dynamic int8, per-channel")
    copy = Manifest.model_validate_json((folder / MANIFEST_NAME).read_text())
    assert copy == m


def test_unknown_manifest_keys_are_kept(tmp_path: Path, onnx_fp32: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(onnx_fp32, art)
    data = json.loads((art / MANIFEST_NAME).read_text())
    data["future_field"] = {"x": 1}
    (art / MANIFEST_NAME).write_text(json.dumps(data))
    _, m = load_manifest(art)
    save_manifest(tmp_path / "again", m)
    assert json.loads((tmp_path / "again" / MANIFEST_NAME).read_text())["future_field"] == {"x": 1}


def test_pickle_only_checkpoint_is_refused(tmp_path: Path, minilm_dir: Path) -> None:
    shutil.copy(minilm_dir / "config.json", tmp_path / "config.json")
    shutil.copy(minilm_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("x"), "is a file"),
        (lambda p: p.mkdir(), "neither a bertserve artifact"),
        (lambda p: (p.mkdir(), (p / MANIFEST_NAME).write_text("{not json")), "not valid JSON"),
        (lambda p: (p.mkdir(), (p / MANIFEST_NAME).write_text('{"format_version": 99}')), "Upgrade"),
        (lambda p: (p.mkdir(), (p / MANIFEST_NAME).write_text('{"task": "translate"}')), "field 'task'"),
        (lambda p: (p.mkdir(), (p / MANIFEST_NAME).write_text("[]")), "JSON object"),
    ],
)
def test_broken_folders_raise_clear_errors(tmp_path: Path, setup, message: str) -> None:
    target = tmp_path / "model"
    setup(target)
    with pytest.raises(ArtifactError, match=message):
        load_manifest(target)


def test_missing_weights_and_tokenizer_are_reported(tmp_path: Path, onnx_fp32: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(onnx_fp32, art)
    (art / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"\.onnx file"):
        load_manifest(art)
    shutil.rmtree(art / "tokenizer")
    with pytest.raises(ArtifactError, match="tokenizer"):
        load_manifest(art)


def test_classifier_manifest_needs_labels(tmp_path: Path, onnx_fp32: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(onnx_fp32, art)
    data = json.loads((art / MANIFEST_NAME).read_text())
    data["task"] = "classify"
    (art / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="labels"):
        load_manifest(art)
