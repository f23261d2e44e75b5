"""Turning head outputs into what the APIs return: shared by the Encoder and the HTTP layer."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities of (N, C) logits, stable for large values."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
