"""Vocabulary pruning keeps in-vocabulary outputs identical; low-rank shrinks linears and reloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertserve import Encoder
from bertserve.artifact import load_manifest
from bertserve.compress.lowrank import FactorizeConfig, factorize
from bertserve.compress.quality import outputs
from bertserve.compress.vocab import VocabConfig, prune_vocab

from .conftest import cosine


@pytest.fixture(scope="module")
def vocab_artifact(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, texts: list[str]) -> Path:
    root = tmp_path_factory.mktemp("vocab")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(texts[:48]) + "\n")
    return prune_vocab(minilm_dir, root / "v", VocabConfig(corpora=(str(corpus),)))


def test_vocab_pruning_shrinks_the_embedding(vocab_artifact: Path) -> None:
    folder, m = load_manifest(vocab_artifact)
    rows = m.provenance["steps"][-1]["rows"]
    assert rows["before"] == 30522 and rows["after"] < 30522 / 3
    config = json.loads((folder / "weights" / "config.json").read_text())
    kept = json.loads((folder / "tokenizer" / "id_map.json").read_text())
    assert config["vocab_size"] == len(kept) == rows["after"] and kept == sorted(kept)
    assert m.provenance["steps"][-1]["corpus_coverage"]["texts_in_vocab"] == 1.0


def test_in_vocabulary_texts_give_identical_outputs(vocab_artifact: Path, texts: list[str],
                                                    original: np.ndarray) -> None:
    np.testing.assert_allclose(outputs(vocab_artifact, texts[:48]), original[:48], atol=1e-5)


def test_out_of_vocabulary_texts_still_work(vocab_artifact: Path) -> None:
    enc = Encoder.load(vocab_artifact, backend="torch")
    ids = enc.tokenize(["zyzzyva quokkas photosynthesize 🦘"]).ids[0]
    assert max(ids) < enc.tokenizer.vocab_size  # unseen words fall back to kept pieces / [UNK]
    assert np.isfinite(enc.embed(["zyzzyva quokkas photosynthesize 🦘"])).all()


def test_low_rank_factorisation(tmp_path: Path, minilm_dir: Path, texts: list[str],
                                original: np.ndarray) -> None:
    config = FactorizeConfig(layers=("encoder.layer.0.intermediate.dense", "encoder.layer.0.output.dense"),
                             rank=256, energy=None)
    out = factorize(minilm_dir, tmp_path / "lr", config)
    folder, m = load_manifest(out)
    step = m.provenance["steps"][-1]
    assert m.architecture == "slim-bert"
    assert step["ranks"] == {"encoder.layer.0.intermediate.dense": 256, "encoder.layer.0.output.dense": 256}
    assert step["parameters"]["after"] < step["parameters"]["before"]
    assert cosine(original, outputs(out, texts)).mean() > 0.95  # one layer at rank 256 of 384
    onnx_enc = Encoder.load(out, backend="onnxruntime")
    assert onnx_enc.embed(texts[:2]).shape == (2, 384)
