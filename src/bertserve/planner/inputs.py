"""What the planner measures before it simulates: the run-time profile and the text lengths.

The profile is the serving engine's own :class:`~bertserve.serving.core.profile.RunTimeModel`
(same grid, same fit, same JSON), so a profile the server saved can be planned with directly.
Lengths come from a real corpus tokenised with the artifact's own tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..artifact import load_manifest
from ..config import ServerSettings
from ..data import corpus
from ..errors import ConfigError
from ..serving.core.engine import resolve_artifact
from ..serving.core.profile import (
    RunTimeModel,
    load_profile,
    profile_grid,
    profile_key,
    save_profile,
    wide_grid,
)
from ..serving.workers.worker import WorkerSpec, load_wide, measure
from ..serving.workers.worker import load as load_worker_backend
from ..tokenizer import TextTokenizer


def corpus_lengths(artifact: str | Path | None, name: str = "tweets", *, sample: int = 5000,
                   seed: int = 0) -> np.ndarray:
    """Token counts (special tokens included, truncated) of ``sample`` texts drawn from a corpus.

    A pair model (a cross-encoder) runs pairs: each drawn text then pairs with another drawn one
    and the count is the pair's, as the server bins it.
    """
    folder, manifest = load_manifest(artifact)
    tokenizer = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    texts = corpus(name)
    if not texts:
        raise ConfigError(f"corpus {name!r} has no texts")
    rng = np.random.default_rng(seed)
    picked = [texts[i] for i in rng.choice(len(texts), size=min(sample, len(texts)), replace=False)]
    if manifest.pairs:
        seconds = [picked[(i + 1) % len(picked)] for i in range(len(picked))]
        return np.asarray([len(x) for x in tokenizer.encode(picked, pairs=seconds).ids], dtype=np.int64)
    return np.asarray(tokenizer.count(picked), dtype=np.int64)


def read_profile(path: str | Path) -> RunTimeModel:
    """A profile JSON as the server saves it (``RunTimeModel.to_json``)."""
    try:
        return RunTimeModel.from_json(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read profile {path}: {exc}") from exc


def profile_layout(settings: ServerSettings, backend: str, precision: str | None) -> dict:
    """The engine's profile identity for these settings (mirrors ``Engine._profile``).

    With the same layout the planner reads the profile the server saved, and the server
    reuses one the planner measured.
    """
    workers, threads = settings.worker_layout()
    return {"backend": backend, "precision": precision, "device": settings.device, "threads": threads,
            "workers": workers, "max_batch": settings.max_batch_size,
            "max_tokens": settings.profile_max_tokens, "factory": None}


def engine_profile(settings: ServerSettings) -> tuple[RunTimeModel, bool]:
    """The run-time profile the server would use with ``settings``; (profile, measured now?).

    Reads the server's saved profile when there is one; otherwise measures the engine's grid
    with the engine's own worker code (:func:`~bertserve.serving.workers.worker.measure`) in this
    process, with the same intra-op threads as one worker (and, where the server would widen
    lone batches, with all of them), and saves it where the server looks.
    """
    folder, manifest, backend, precision = resolve_artifact(settings)
    key = profile_key(folder, manifest.model_dump_json(), profile_layout(settings, backend, precision))
    workers, threads = settings.worker_layout()
    wide_threads = workers * threads if settings.widen and workers > 1 and settings.device == "cpu" else 0
    cached = load_profile(key)
    if cached is not None and (cached.wide_coef or not wide_threads):
        return cached, False
    tokenizer = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    spec = WorkerSpec(str(folder), backend, precision, settings.device, threads, 0.0, tokenizer.pad_id,
                      wide_threads=wide_threads)
    model = load_worker_backend(spec)
    wide = load_wide(spec, model)
    cells = profile_grid(settings.max_batch_size, manifest.max_seq_length,
                         min(settings.profile_max_tokens, settings.max_batch_tokens))
    counts = sorted({1, max(1, int(getattr(model, "max_students", 1)))})
    reps, pad = settings.profile_repeats, tokenizer.pad_id
    measured = ({m: measure(model, cells, reps, m, pad) for m in counts} if cached is None
                else {m: list(rows) for m, rows in cached.cells.items()})
    wide_measured = ({m: measure(wide, wide_grid(cells), reps, m, pad) for m in counts}
                     if wide is not None else None)
    fitted = RunTimeModel.fit(measured, wide_measured)
    save_profile(key, fitted)
    return fitted, True
