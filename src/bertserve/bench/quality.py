"""Fidelity of a server's answers: cosine similarity to reference embeddings of the same texts.

The reference is sentence-transformers' own ``encode`` of the fp32 model (or a ``.npy`` the user
gives), so every system is judged against the same numbers, whatever its precision or batching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import numpy as np

from ..errors import ConfigError, TargetError, UnavailableError
from .client import HttpError, HttpSender, describe
from .targets import Target


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) matrices."""
    if a.shape != b.shape:
        raise TargetError(f"the target answers {b.shape} where the reference has {a.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def reference_embeddings(texts: Sequence[str], model: str | None = None,
                         reference: str | Path | None = None) -> np.ndarray:
    """Reference vectors: from a ``.npy`` file, else sentence-transformers on ``model`` (fp32, CPU)."""
    if reference is not None:
        ref = load_reference(reference)
        if len(ref) != len(texts):
            raise ConfigError(f"{reference} has {len(ref)} rows; the quality set has {len(texts)} texts")
        return ref
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError("quality needs sentence-transformers (pip install sentence-transformers) "
                          "or --reference FILE.npy") from exc
    from ..artifact import resolve

    st = SentenceTransformer(str(resolve(model)), device="cpu")
    return st.encode(list(texts), batch_size=32, convert_to_numpy=True, normalize_embeddings=True)


def load_reference(path: str | Path) -> np.ndarray:
    """A (N, D) float matrix from a ``.npy`` file; anything else is a :class:`ConfigError` naming it."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"reference embeddings {p}: no such file")
    if p.is_dir():
        raise ConfigError(f"reference embeddings {p}: is a directory, not a .npy file")
    try:
        ref = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"reference embeddings {p}: not a readable .npy array ({exc})") from exc
    if not isinstance(ref, np.ndarray) or ref.ndim != 2 or not np.issubdtype(ref.dtype, np.number):
        what = f"shape {ref.shape}, dtype {ref.dtype}" if isinstance(ref, np.ndarray) else type(ref).__name__
        raise ConfigError(f"reference embeddings {p}: expected a (texts, dim) matrix of numbers, got {what}")
    return ref


RETRY_STATUSES = (429, 503)


async def _answer(sender: HttpSender, body: bytes, tries: int = 8) -> bytes:
    """Send one body; a server shedding load (429/503) is asked again after a short pause."""
    for attempt in range(tries):
        try:
            return await sender(body)
        except HttpError as exc:
            if exc.status not in RETRY_STATUSES or attempt == tries - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


async def fetch_embeddings(target: Target, sender: HttpSender, texts: Sequence[str]) -> np.ndarray:
    """Each text in its own request, one after another (the same shape of request as the load)."""
    rows = []
    for t in texts:
        try:
            answer = await _answer(sender, target.body([t]))
        except (HttpError, aiohttp.ClientError, TimeoutError) as exc:
            raise UnavailableError(f"quality check: {target.url} failed to answer ({describe(exc)})") from exc
        try:
            rows.append(target.embeddings(answer)[0])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ConfigError(f"quality check: no embeddings found in the answer of {target.url} "
                              f"({type(exc).__name__}: {exc}); with --api template, set --response-path") \
                from exc
    return np.stack(rows)


def quality_set(texts: Sequence[str], n: int) -> list[str]:
    """``n`` texts spread evenly over the corpus (a fixed choice, so every system sees the same)."""
    if n <= 0:
        return []
    step = max(1, len(texts) // n)
    return [t for t in texts[::step] if t][:n]


def quality_summary(served: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cos = cosine_rows(np.asarray(served, dtype=np.float64), np.asarray(reference, dtype=np.float64))
    return {"n": float(len(cos)), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "p01_cosine": float(np.quantile(cos, 0.01))}
