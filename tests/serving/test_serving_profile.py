"""Run-time model: fitted from a measured grid, saved, and found again by its key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertserve.serving.core.profile import (
    RunTimeModel,
    load_profile,
    profile_grid,
    profile_key,
    save_profile,
)


def synthetic(b: int, n: int, scale: float = 1.0) -> float:
    return scale * (0.0005 + 0.0001 * b + 2e-6 * b * n + 1e-9 * b * n * n)


def test_grid_stays_within_the_token_budget_and_starts_small() -> None:
    cells = profile_grid(max_batch=32, max_len=256, max_tokens=1024)
    assert cells[0] == (1, 8) and all(b * n <= 1024 for b, n in cells)
    assert (1, 256) in cells and (32, 32) in cells and (32, 64) not in cells


def test_fit_recovers_a_known_cost_and_interpolates_students() -> None:
    cells = profile_grid(32, 512, 4096)
    model = RunTimeModel.fit({1: [(b, n, synthetic(b, n)) for b, n in cells],
                              4: [(b, n, synthetic(b, n, 4.0)) for b, n in cells]})
    assert model.max_rel_error < 1e-6
    assert model.predict(16, 100) == pytest.approx(synthetic(16, 100), rel=1e-6)
    assert model.predict(16, 100, 4) == pytest.approx(synthetic(16, 100, 4.0), rel=1e-6)
    assert model.predict(16, 100, 2) == pytest.approx(synthetic(16, 100, 2.0), rel=1e-6)


def test_noisy_measurements_still_fit_within_a_few_percent() -> None:
    rng = np.random.default_rng(0)
    cells = profile_grid(32, 512, 4096)
    rows = [(b, n, synthetic(b, n) * rng.uniform(0.97, 1.03)) for b, n in cells]
    model = RunTimeModel.fit({1: rows})
    assert model.predict(8, 64) == pytest.approx(synthetic(8, 64), rel=0.06)


def test_saved_profile_is_found_by_its_key_and_the_key_follows_the_layout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTSERVE_CACHE", str(tmp_path))
    art = tmp_path / "art"
    art.mkdir()
    (art / "model.onnx").write_bytes(b"x")
    key = profile_key(art, "{}", {"threads": 1})
    assert key != profile_key(art, "{}", {"threads": 2})
    assert load_profile(key) is None
    model = RunTimeModel.fit({1: [(b, n, synthetic(b, n)) for b, n in profile_grid(8, 64, 512)]})
    assert save_profile(key, model) is not None
    again = load_profile(key)
    assert again is not None and again.predict(4, 30) == pytest.approx(model.predict(4, 30))
    (art / "model.onnx").write_bytes(b"changed weights")
    assert profile_key(art, "{}", {"threads": 1}) != key
