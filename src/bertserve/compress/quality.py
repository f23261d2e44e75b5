"""Measure what a compression step cost (quality vs the original) and bought (size, speed).

Quality is measured on held-out real text against the *original* model's outputs: mean cosine
for embedders, argmax agreement for classifiers. The drop the quality gate checks is
``1 - mean cosine`` or ``1 - agreement``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import folder_size, load_manifest
from ..encoder import Encoder


@dataclass(slots=True)
class Quality:
    metric: str  # "cosine" (embed) or "agreement" (classify)
    mean: float
    min: float
    p5: float
    n: int

    @property
    def drop(self) -> float:
        return 1.0 - self.mean

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": round(self.drop, 6)}


@dataclass(slots=True)
class Speed:
    p50_ms_b1_16: float  # batch 1, 16 tokens, median of repeats
    b16_texts_per_s: float  # batch 16 of real tweets, padded per batch
    threads: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def eval_texts(n: int = 400) -> list[str]:
    """Held-out review snippets (the seeded test split), never used for calibration/training."""
    from ..data import rotten_tomatoes_splits

    return rotten_tomatoes_splits()["test"].texts[:n]


def load_encoder(path: str | Path | None, threads: int | None = None) -> Encoder:
    """Run an artifact on its own backend (no implicit ONNX export of torch weights)."""
    _, manifest = load_manifest(path)
    return Encoder.load(path, backend=manifest.backend, threads=threads)


def outputs(path: str | Path | None, texts: list[str], threads: int | None = None) -> np.ndarray:
    enc = load_encoder(path, threads)
    return enc.run_ids(enc.tokenize(texts).ids)


def compare(reference: np.ndarray, candidate: np.ndarray, task: str) -> Quality:
    """Quality of ``candidate`` outputs against ``reference`` outputs of the same texts."""
    if task == "classify":
        same = (reference.argmax(-1) == candidate.argmax(-1)).astype(np.float64)
        return Quality("agreement", float(same.mean()), float(same.min()), float(same.mean()), len(same))
    a = reference / np.linalg.norm(reference, axis=-1, keepdims=True).clip(1e-12)
    b = candidate / np.linalg.norm(candidate, axis=-1, keepdims=True).clip(1e-12)
    cos = (a * b).sum(-1)
    return Quality("cosine", float(cos.mean()), float(cos.min()), float(np.percentile(cos, 5)), len(cos))


def measure_quality(original: str | Path | None, candidate: str | Path, texts: list[str],
                    reference: np.ndarray | None = None) -> Quality:
    _, manifest = load_manifest(original)
    ref = reference if reference is not None else outputs(original, texts)
    return compare(ref, outputs(candidate, texts), manifest.task)


def speed_inputs(enc: Encoder) -> tuple[list[int], list[list[int]]]:
    """A real 16-token text and 16 real tweets, tokenised by the artifact's own tokenizer."""
    from ..data import corpus

    tweets = corpus("tweets")[:2000:120][:16]
    ids = enc.tokenize(tweets).ids
    long = next(row for row in ids if len(row) >= 16)
    return long[:15] + long[-1:], ids


def measure_speed(path: str | Path, *, threads: int = 1, repeats: int = 200, seconds: float = 3.0) -> Speed:
    """Batch-1 p50 at 16 tokens and batch-16 throughput, after a warm-up."""
    enc = load_encoder(path, threads)
    one, sixteen = speed_inputs(enc)
    for _ in range(10):
        enc.run_ids([one])
    times = []
    deadline = time.perf_counter() + seconds
    for _ in range(repeats):
        t0 = time.perf_counter()
        enc.run_ids([one])
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    enc.run_ids(sixteen, max_batch=16)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or done < 64:
        enc.run_ids(sixteen, max_batch=16)
        done += len(sixteen)
    rate = done / (time.perf_counter() - t0)
    return Speed(round(statistics.median(times) * 1e3, 3), round(rate, 1), threads)


def size_mb(path: str | Path) -> float:
    folder, _ = load_manifest(path)
    return round(folder_size(folder) / 1e6, 2)
