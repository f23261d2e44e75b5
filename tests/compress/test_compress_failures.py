"""What a user sees when a compression run goes wrong: bad inputs fail at once with one line,
a failed run leaves OUT as it was, long loops show progress, help says what happens."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertserve.artifact import load_manifest, staged_out
from bertserve.compress import lowrank as lowrank_mod
from bertserve.compress import prune as prune_mod
from bertserve.compress import quantize as quantize_mod
from bertserve.compress import vocab as vocab_mod
from bertserve.compress.lowrank import FactorizeConfig, factorize
from bertserve.compress.prune import PruneConfig, prune
from bertserve.compress.quantize import QuantizeConfig, quantize
from bertserve.compress.recipe import load_recipe, make_config, run_recipe
from bertserve.compress.recover import RecoverConfig
from bertserve.compress.vocab import VocabConfig, prune_vocab
from bertserve.errors import ConfigError
from bertserve.export import onnx as export_mod
from bertserve.export.onnx import export_onnx


class Boom(RuntimeError):
    """A failure injected late in a run (after files were written)."""


def boom(*_a, **_k):  # type: ignore[no-untyped-def]
    raise Boom("injected")


@pytest.fixture
def empty_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n")
    return path


@pytest.fixture
def old_artifact(tmp_path: Path) -> Path:
    """An OUT that holds an earlier result: --overwrite may replace it, a failure may not."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "bertserve.json").write_text('{"old": true}')
    return out


def left_as_before(out: Path) -> None:
    assert json.loads((out / "bertserve.json").read_text()) == {"old": True}
    assert sorted(p.name for p in out.iterdir()) == ["bertserve.json"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


def no_trace(out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


# -- 1. empty corpora fail at once, with one line -------------------------------------------------


def test_quantize_with_an_empty_corpus_is_one_line_and_writes_nothing(tmp_path: Path,
                                                                       empty_corpus: Path) -> None:
    out = tmp_path / "q"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "bertserve.cli", "quantize", "default", str(out),
                           "--method", "static-int8", "--corpus", str(empty_corpus)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and "holds no text" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    no_trace(out)


def test_prune_vocab_with_an_empty_corpus_is_a_config_error(tmp_path: Path, minilm_dir: Path,
                                                            empty_corpus: Path) -> None:
    out = tmp_path / "v"
    with pytest.raises(ConfigError, match="holds no text"):
        prune_vocab(minilm_dir, out, VocabConfig(corpora=(str(empty_corpus),)))
    no_trace(out)


def test_recovery_without_texts_beyond_the_scoring_slice_is_a_config_error(tmp_path: Path,
                                                                          minilm_dir: Path) -> None:
    """It used to skip recovery silently: the first score_texts texts only score."""
    few = tmp_path / "few.txt"
    few.write_text("one text\nanother text\na third\n")
    out = tmp_path / "p"
    config = PruneConfig(magnitude=0.1, transfer=str(few), recover=RecoverConfig(steps=2))
    with pytest.raises(ConfigError, match="has only 3"):
        prune(minilm_dir, out, config)
    no_trace(out)


# -- 2. a failed run leaves OUT as it was ----------------------------------------------------------


def test_staged_out_moves_into_place_only_on_success(tmp_path: Path, old_artifact: Path) -> None:
    fresh = tmp_path / "a" / "fresh"
    with staged_out(fresh, overwrite=False) as tmp:
        (tmp / "x").write_text("new")
        assert not fresh.exists()
    assert (fresh / "x").read_text() == "new"
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o777 & ~_umask()  # not mkdtemp's 0700

    with pytest.raises(ConfigError, match="--overwrite"), staged_out(old_artifact, overwrite=False):
        pytest.fail("must refuse before any work")
    with pytest.raises(Boom), staged_out(old_artifact, overwrite=True) as tmp:
        (tmp / "bertserve.json").write_text("half")
        boom()
    left_as_before(old_artifact)
    with pytest.raises(KeyboardInterrupt), staged_out(tmp_path / "never", overwrite=False):
        raise KeyboardInterrupt
    no_trace(tmp_path / "never")

    with staged_out(old_artifact, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in old_artifact.iterdir()) == ["new.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    inode = empty.stat().st_ino
    with staged_out(empty, overwrite=False) as tmp:
        (tmp / "y").write_text("y")
    assert empty.stat().st_ino == inode and (empty / "y").exists()  # a folder the user made is kept


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_quantize_keeps_the_old_artifact(monkeypatch: pytest.MonkeyPatch, minilm_dir: Path,
                                                old_artifact: Path) -> None:
    monkeypatch.setattr(quantize_mod, "finish", boom)  # after the bf16 weights were written
    with pytest.raises(Boom):
        quantize(minilm_dir, old_artifact, QuantizeConfig(method="bf16"), overwrite=True)
    left_as_before(old_artifact)


def test_failed_onnx_quantize_leaves_no_output(monkeypatch: pytest.MonkeyPatch, minilm_dir: Path,
                                               tmp_path: Path) -> None:
    monkeypatch.setattr(quantize_mod, "quantize_embeddings", boom)  # after model.onnx was written
    out = tmp_path / "q"
    with pytest.raises(Boom):
        quantize(minilm_dir, out, QuantizeConfig(method="dynamic-int8"))
    no_trace(out)


def test_failed_prune_leaves_no_output(monkeypatch: pytest.MonkeyPatch, minilm_dir: Path,
                                       tmp_path: Path) -> None:
    monkeypatch.setattr(prune_mod, "finish", boom)  # magnitude only: weights written, then the manifest
    out = tmp_path / "p"
    with pytest.raises(Boom):
        prune(minilm_dir, out, PruneConfig(magnitude=0.1, transfer="reviews:train"))
    no_trace(out)


def test_failed_prune_vocab_keeps_the_old_artifact(monkeypatch: pytest.MonkeyPatch, minilm_dir: Path,
                                                   old_artifact: Path, tmp_path: Path) -> None:
    texts = tmp_path / "t.txt"
    texts.write_text("a tiny corpus\nof two lines\n")
    monkeypatch.setattr(vocab_mod, "finish", boom)
    with pytest.raises(Boom):
        prune_vocab(minilm_dir, old_artifact, VocabConfig(corpora=(str(texts),)), overwrite=True)
    left_as_before(old_artifact)


def test_failed_factorize_leaves_no_output(monkeypatch: pytest.MonkeyPatch, minilm_dir: Path,
                                           tmp_path: Path) -> None:
    monkeypatch.setattr(lowrank_mod, "save_module", boom)
    out = tmp_path / "f"
    with pytest.raises(Boom):
        factorize(minilm_dir, out, FactorizeConfig(layers=("encoder.layer.0.intermediate.dense",), rank=8,
                                                   energy=None))
    no_trace(out)


def test_failed_export_keeps_the_old_artifact(monkeypatch: pytest.MonkeyPatch, minilm_dir: Path,
                                              old_artifact: Path) -> None:
    monkeypatch.setattr(export_mod, "copy_tokenizer", boom)  # after model.onnx was written
    with pytest.raises(Boom):
        export_onnx(minilm_dir, old_artifact, overwrite=True)
    left_as_before(old_artifact)


def test_failed_recipe_keeps_the_old_artifact(minilm_dir: Path, old_artifact: Path, tmp_path: Path,
                                              empty_corpus: Path) -> None:
    """The recipe used to empty OUT before its first step; a step that fails now costs nothing."""
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"eval_texts: 8\nmeasure_speed: false\n"
                           f"steps:\n  - quantize: {{method: static-int8, corpus: '{empty_corpus}'}}\n")
    with pytest.raises(ConfigError, match="holds no text"):
        run_recipe(minilm_dir, old_artifact, load_recipe(recipe_file), overwrite=True)
    left_as_before(old_artifact)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".recipe-")] == []


# -- 3. nonsense counts are refused, not ignored ---------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> CliRunner:
    from bertserve import cli as cli_pkg

    cli_pkg._register()
    return CliRunner()


@pytest.mark.parametrize("args", [
    ["prune", "default", "{out}", "--heads", "0.25", "--recover", "-5"],
    ["prune", "default", "{out}", "--heads", "0.25", "--max-per-layer", "-1"],
    ["prune", "default", "{out}", "--heads", "0.25", "--max-per-layer", "0"],
    ["prune", "default", "{out}", "--heads", "0.25", "--rounds", "0"],
    ["prune", "default", "{out}", "--heads", "0.25", "--hidden", "-1"],
    ["factorize", "default", "{out}", "--rank", "0"],
    ["factorize", "default", "{out}", "--recover", "-1"],
    ["prune-vocab", "default", "{out}", "--max-size", "-3"],
    ["quantize", "default", "{out}", "--calibration-texts", "0"],
], ids=lambda a: " ".join(a[3:]))
def test_negative_or_zero_counts_are_usage_errors(cli: CliRunner, tmp_path: Path, args: list[str]) -> None:
    from bertserve.cli import app

    out = tmp_path / "out"
    result = cli.invoke(app, [a.replace("{out}", str(out)) for a in args])
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output
    no_trace(out)


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("prune", {"heads": 0.25, "recover": {"steps": -5}}, "steps must be an integer >= 0"),
    ("prune", {"heads": 0.25, "max_per_layer": 0}, "max_per_layer must be >= 1"),
    ("prune", {"heads": 0.25, "score_texts": 0}, "score_texts must be >= 1"),
    ("prune", {"heads": 0.25, "recover": {"steps": 5, "lr": 0}}, "lr must be > 0"),
    ("prune", {"heads": 0.25, "recover": {"steps": 5, "batch_size": 0}}, "batch_size must be"),
    ("factorize", {"rank": 8, "energy": None, "recover": {"steps": -1}}, "steps must be"),
])
def test_recipe_and_api_refuse_nonsense_counts(kind: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(kind, params)


def test_zero_learning_rate_is_one_line_from_the_cli(cli: CliRunner, tmp_path: Path) -> None:
    from bertserve.cli import app

    result = cli.invoke(app, ["prune", "default", str(tmp_path / "o"), "--heads", "0.25", "--lr", "0"])
    assert isinstance(result.exception, ConfigError) and "lr must be > 0" in str(result.exception)
    no_trace(tmp_path / "o")


# -- 4. head ablation shows progress ---------------------------------------------------------------


def test_head_ablation_shows_a_progress_bar(capsys: pytest.CaptureFixture[str], minilm_dir: Path,
                                            texts: list[str]) -> None:
    from bertserve.compress.artifacts import load_module
    from bertserve.models.slim import head_size
    from bertserve.tokenizer import TextTokenizer

    folder, manifest = load_manifest(minilm_dir)
    module, config = load_module(folder, manifest)
    tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    prune_mod.ablation_keep(module, tok, texts[:2], "embed", head_size(config), 0.25)
    err = capsys.readouterr().err
    assert "head ablation" in err and "/72 " in err  # one step per head of MiniLM-L6


# -- 5. help says what each --format does ----------------------------------------------------------


def test_quantize_help_tells_what_each_format_does(cli: CliRunner) -> None:
    from bertserve.cli import app

    result = cli.invoke(app, ["quantize", "--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert result.exit_code == 0
    assert "(ONNX QDQ)" not in text
    assert "integer = integer MatMuls with the calibrated activation scales frozen in" in text
    assert "qdq = QuantizeLinear/DequantizeLinear pairs" in text
    assert "activation scales computed per call" in text  # dynamic-int8
