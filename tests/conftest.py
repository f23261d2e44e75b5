"""Shared fixtures: the bundled model, its ONNX exports (made once per run) and real sentences."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
