"""Fixtures for the student tests: one tiny stacked ensemble, trained once per run on real text.

Training is a few steps only (tests check behaviour, not quality); the teacher runs on torch so
no ONNX export is needed to compute its targets.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def texts() -> dict[str, list[str]]:
    """Real transfer and held-out texts: health tweets and review snippets, fixed selections."""
    from bertserve.data import health_tweets, rotten_tomatoes

    tweets, reviews = health_tweets(), rotten_tomatoes()[0]
    return {"transfer": tweets[:120] + reviews[:120], "eval": tweets[-30:] + reviews[-30:]}


@pytest.fixture(scope="session")
def fast_opts():
    from bertserve.compress.transfer import TrainOptions

    return TrainOptions(
        max_steps=3, batch_size=16, max_len=32, lr=2e-4, progress=False, teacher_backend="torch",
        hidden_weight=0.1, ridge=0.5,
    )


@pytest.fixture(scope="session")
def stacked(tmp_path_factory: pytest.TempPathFactory, texts, fast_opts):
    """A 3-student, 2-layer ensemble distilled from the bundled MiniLM; returns (path, report)."""
    from bertserve.compress.stacking import stack

    out = tmp_path_factory.mktemp("students") / "stack-3x2"
    return stack(None, texts["transfer"], out, students=3, layers=2, opts=fast_opts, eval_texts=texts["eval"])


@pytest.fixture(scope="session")
def stacked_path(stacked) -> Path:
    return stacked[0]
