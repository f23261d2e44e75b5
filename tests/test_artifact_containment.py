"""An artifact is untrusted input: the paths its manifest names, and its symlinks, stay inside its
folder (``..``, absolute paths and symlinks that lead out are refused with an ArtifactError)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ensemble_artifacts import save_ensemble_artifact

from bertserve import Encoder
from bertserve.artifact import MANIFEST_NAME, load_manifest
from bertserve.errors import ArtifactError


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """An untrained 2 × 1-layer student ensemble of the bundled model (small, quick to copy)."""
    from bertserve.compress.teacher import init_student, student_config
    from bertserve.models.ensemble import StudentEnsemble

    cfg = student_config(minilm_dir, layers=1, task="embed", output_dim=384, pooling="mean",
                         normalize=True, max_len=256)
    alphas = [1.0, 0.5]
    model = StudentEnsemble(cfg, 2, alphas)
    for j in range(2):
        init_student(model, j, minilm_dir, [j])
    return save_ensemble_artifact(model, alphas, minilm_dir, tmp_path_factory.mktemp("ensemble"))


@pytest.fixture()
def art(tmp_path: Path, ensemble_dir: Path) -> Path:
    """A fresh copy of the ensemble at ``tmp/box/art``, with a copy of its tokenizer and first
    student outside it at ``tmp/box/outside`` (so a path that leads there would otherwise load)."""
    out = tmp_path / "box" / "art"
    shutil.copytree(ensemble_dir, out)
    shutil.copytree(ensemble_dir / "tokenizer", tmp_path / "box" / "outside" / "tokenizer")
    shutil.copytree(ensemble_dir / "students" / "0", tmp_path / "box" / "outside" / "student")
    return out


def edit_manifest(folder: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    change(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def test_normal_artifacts_still_load(minilm_dir: Path, ensemble_dir: Path) -> None:
    folder, m = load_manifest(minilm_dir)  # the bundled default model: an inferred manifest
    assert folder == minilm_dir and m.name == "all-MiniLM-L6-v2"
    folder, m = load_manifest(ensemble_dir)
    assert folder == ensemble_dir and [s.path for s in m.students or []] == ["students/0", "students/1"]
    emb = Encoder.load(ensemble_dir).embed(["a normal ensemble still loads and embeds"])
    assert emb.shape == (1, 384) and np.isfinite(emb).all()


@pytest.mark.parametrize(("field", "change"), [
    ("tokenizer", lambda d: d.update(tokenizer="../outside/tokenizer")),
    ("tokenizer", lambda d: d.update(tokenizer="tokenizer/../../outside/tokenizer")),
    ("weights", lambda d: d.update(weights="..")),
    ("students[1].path", lambda d: d["students"][1].update(path="../outside/student")),
    ("students[0].term", lambda d: d["students"][0].update(term="../outside/term.onnx")),
], ids=["tokenizer", "tokenizer-via-inside", "weights", "student-path", "student-term"])
def test_a_dotdot_path_out_of_the_folder_is_refused(art: Path, field: str, change) -> None:
    edit_manifest(art, change)
    expected = rf"manifest field '{re.escape(field)}' .* leads outside the artifact folder"
    with pytest.raises(ArtifactError, match=expected):
        load_manifest(art)


@pytest.mark.parametrize(("field", "change"), [
    ("tokenizer", lambda d, out: d.update(tokenizer=str(out / "tokenizer"))),
    ("weights", lambda d, out: d.update(weights=str(out))),
    ("students[0].path", lambda d, out: d["students"][0].update(path=str(out / "student"))),
], ids=["tokenizer", "weights", "student-path"])
def test_an_absolute_path_is_refused(art: Path, field: str, change) -> None:
    outside = art.parent / "outside"
    edit_manifest(art, lambda d: change(d, outside))
    with pytest.raises(ArtifactError, match=rf"manifest field '{re.escape(field)}' is an absolute path"):
        load_manifest(art)


def test_an_absolute_path_inside_the_folder_is_refused_too(art: Path) -> None:
    edit_manifest(art, lambda d: d.update(tokenizer=str(art / "tokenizer")))
    with pytest.raises(ArtifactError, match="absolute path"):
        load_manifest(art)


def test_a_named_folder_that_is_a_symlink_to_outside_is_refused(art: Path) -> None:
    shutil.rmtree(art / "tokenizer")
    (art / "tokenizer").symlink_to(art.parent / "outside" / "tokenizer", target_is_directory=True)
    with pytest.raises(ArtifactError, match=r"manifest field 'tokenizer' \(tokenizer\) leads outside"):
        load_manifest(art)


def test_a_symlinked_file_to_outside_is_refused(art: Path) -> None:
    weights = art / "students" / "1" / "student.safetensors"
    weights.unlink()
    weights.symlink_to(art.parent / "outside" / "student" / "student.safetensors")
    with pytest.raises(ArtifactError, match=r"students/1/student.safetensors is a symlink that leads out"):
        load_manifest(art)


def test_a_symlink_through_a_parent_folder_is_refused(art: Path) -> None:
    (art / "escape").symlink_to(art.parent, target_is_directory=True)
    edit_manifest(art, lambda d: d.update(tokenizer="escape/outside/tokenizer"))
    with pytest.raises(ArtifactError, match="leads outside the artifact folder"):
        load_manifest(art)


def test_paths_and_symlinks_that_stay_inside_are_fine(art: Path) -> None:
    (art / "tokenizer").rename(art / "tok-real")
    (art / "tokenizer").symlink_to("tok-real", target_is_directory=True)  # relative, inside
    edit_manifest(art, lambda d: d["students"][0].update(path="students/1/../0"))
    folder, m = load_manifest(art)
    assert folder == art and m.tokenizer == "tokenizer"
    assert Encoder.load(art).embed(["inside is fine"]).shape == (1, 384)


def test_a_folder_passed_through_a_symlink_still_loads(tmp_path: Path, ensemble_dir: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(ensemble_dir, target_is_directory=True)
    _, m = load_manifest(link)
    assert m.name == "ens"
