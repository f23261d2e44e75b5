"""Shared fixtures: the bundled model, its ONNX exports (made once per run) and real sentences."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# backend auto would time onnxruntime against OpenVINO per artifact (export.choose): the suite
# pins today's numerics; tests/test_auto_backend.py turns it on where it is the subject
os.environ["BERTSERVE_AUTO_MEASURE"] = "0"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep ONNX exports made on the fly inside this test run, not in the user's cache."""
    os.environ["BERTSERVE_CACHE"] = str(tmp_path_factory.mktemp("bertserve-cache"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from bertserve.artifact import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def onnx_fp32(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    from bertserve.export.onnx import export_onnx

    return export_onnx(minilm_dir, tmp_path_factory.mktemp("onnx") / "fp32", precision="fp32")


@pytest.fixture(scope="session")
def onnx_int8(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    from bertserve.export.onnx import export_onnx

    return export_onnx(minilm_dir, tmp_path_factory.mktemp("onnx") / "int8", precision="int8")


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    """200 real review snippets of varied length (fixed selection)."""
    from bertserve.data import rotten_tomatoes

    texts = rotten_tomatoes()[0]
    return texts[::60][:200]


@pytest.fixture(scope="session")
def st_reference(minilm_dir: Path, sentences: list[str]) -> np.ndarray:
    """sentence-transformers' own encode() of the bundled model: the numerics reference."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    return model.encode(sentences, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)


@pytest.fixture(scope="session")
def rerank_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A cross-encoder checkpoint as Hugging Face writes one: the bundled MiniLM with a one-logit
    sequence-classification head (seeded, untrained: the numerics tests need a pair model, not a
    good one). A plain HF folder, so its manifest (task rerank, pairs) is inferred."""
    from checkpoints import seeded_head_checkpoint

    return seeded_head_checkpoint(minilm_dir, tmp_path_factory.mktemp("rerank") / "minilm-cross-encoder",
                                  seed=0, num_labels=1)


@pytest.fixture(scope="session")
def query_pairs() -> tuple[list[str], list[str]]:
    """Real news text for pair models: short sentences from the first articles as queries and
    sentences of later articles as passages (the two lists may differ in length; zip them)."""
    from bertserve.data import news_sentences

    sents = news_sentences()
    queries = [s for s in sents[:4000:97] if len(s) < 120][:24]
    passages = sents[4000:40000:1500][:24]
    return queries, passages
