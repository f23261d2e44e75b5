"""Fixtures for the compression tests: the original model's outputs and a few helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def texts(sentences: list[str]) -> list[str]:
    """64 real review snippets: enough to see a quality change, quick to encode."""
    return sentences[:64]


@pytest.fixture(scope="session")
def original(minilm_dir: Path, texts: list[str]) -> np.ndarray:
    """The unmodified model's embeddings (torch fp32), the reference every step is held to."""
    from bertserve.compress.quality import outputs

    return outputs(minilm_dir, texts)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)
