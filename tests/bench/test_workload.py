"""Arrival processes are statistically right and reproducible (fixed seeds, generous tolerances)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertserve.bench import workload as wl
from bertserve.errors import ConfigError

TEXTS = ["short", "a somewhat longer text here", "x" * 200, "mid length text"]


def sampler(seed: int = 0) -> wl.TextSampler:
    return wl.TextSampler(TEXTS, seed=seed)


def within_sigmas(count: int, expected: float, k: float = 4.0) -> bool:
    return abs(count - expected) <= k * np.sqrt(expected)


def test_poisson_count_and_gaps_match_the_rate() -> None:
    rng = np.random.default_rng(1)
    t = wl.poisson_arrivals(200.0, 100.0, rng)
    assert within_sigmas(len(t), 20_000)
    gaps = np.diff(t)
    assert np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV = 1
    assert t.min() >= 0 and t.max() < 100.0


def test_poisson_counts_per_second_are_poisson() -> None:
    t = wl.poisson_arrivals(50.0, 400.0, np.random.default_rng(2))
    counts = np.histogram(t, bins=np.arange(401))[0]
    assert counts.mean() == pytest.approx(50, rel=0.03)
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.2)  # dispersion index of Poisson


def test_same_seed_same_schedule_different_seed_different() -> None:
    a = wl.poisson(20, 10, sampler(), seed=7)
    b = wl.poisson(20, 10, sampler(), seed=7)
    c = wl.poisson(20, 10, sampler(), seed=8)
    np.testing.assert_array_equal(a.phases[0].arrivals, b.phases[0].arrivals)
    assert a.phases[0].texts == b.phases[0].texts
    assert len(c.phases[0].arrivals) != len(a.phases[0].arrivals) or \
        not np.array_equal(c.phases[0].arrivals, a.phases[0].arrivals)


def test_arrivals_do_not_depend_on_the_corpus() -> None:
    a = wl.poisson(20, 10, wl.TextSampler(["one"]), seed=3)
    b = wl.poisson(20, 10, wl.TextSampler(TEXTS, texts_per_request=3), seed=3)
    np.testing.assert_array_equal(a.phases[0].arrivals, b.phases[0].arrivals)
    assert all(len(t) == 3 for t in b.phases[0].texts)


def test_burst_shape_rate_inside_and_outside_bursts() -> None:
    base, factor, burst_s, period = 20.0, 5.0, 2.0, 10.0
    load = wl.bursts(base, factor, burst_s, period, 600.0, sampler(), seed=4)
    t = load.phases[0].arrivals
    in_burst = ((t % period) >= period / 2) & ((t % period) < period / 2 + burst_s)
    n_periods = 60
    assert within_sigmas(int(in_burst.sum()), base * factor * burst_s * n_periods)
    assert within_sigmas(int((~in_burst).sum()), base * (period - burst_s) * n_periods)
    # the first half of every period is at the base rate: bursts start half-way
    first_half = (t % period) < period / 2
    assert within_sigmas(int(first_half.sum()), base * period / 2 * n_periods)


def test_burst_segments_tile_the_duration() -> None:
    segs = wl.burst_segments(10, 3, 1.0, 4.0, 10.0)
    assert segs[0].start_s == 0 and segs[-1].end_s == pytest.approx(10.0)
    for a, b in zip(segs, segs[1:], strict=False):
        assert a.end_s == pytest.approx(b.start_s)
    assert {s.rate for s in segs} == {10, 30}


@pytest.mark.parametrize("kwargs", [dict(factor=0.5), dict(burst_s=5.0), dict(burst_s=0.0)])
def test_burst_rejects_impossible_shapes(kwargs: dict) -> None:
    args = dict(base_rate=10, factor=3, burst_s=1.0, period_s=4.0, duration_s=10.0) | kwargs
    with pytest.raises(ConfigError):
        wl.burst_segments(**args)


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_rates_must_be_positive(rate: float) -> None:
    with pytest.raises(ConfigError):
        wl.poisson_arrivals(rate, 1.0, np.random.default_rng(0))


def test_sweep_steps_are_long_enough_for_min_requests() -> None:
    load = wl.sweep([5, 50, 200], 10.0, sampler(), seed=5, min_requests=200)
    assert [p.offered_rate for p in load.phases] == [5, 50, 200]
    assert [p.duration_s for p in load.phases] == [40.0, 10.0, 10.0]
    for p in load.phases:
        assert within_sigmas(p.count, p.offered_rate * p.duration_s)
        assert len(p.texts) == p.count


def test_ramp_rate_rises_linearly() -> None:
    t = wl.ramp_arrivals(10.0, 90.0, 200.0, np.random.default_rng(6))
    assert within_sigmas(len(t), 50 * 200)
    first, last = (t < 20).sum(), (t >= 180).sum()  # mean rates 14/s and 86/s
    assert within_sigmas(int(first), 14 * 20) and within_sigmas(int(last), 86 * 20)


def test_text_sampler_follows_the_corpus() -> None:
    corpus = ["a"] * 900 + ["b" * 50] * 100
    texts = [t[0] for t in wl.TextSampler(corpus, seed=1).draw(5000)]
    share = sum(t == "a" for t in texts) / len(texts)
    assert share == pytest.approx(0.9, abs=0.03)
    with pytest.raises(ConfigError):
        wl.TextSampler(["", ""])


def test_replay_jsonl_and_csv(tmp_path) -> None:
    jl = tmp_path / "t.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in [
        {"t": 100.5, "text": "b"}, {"t": 100.0, "text": "a"}, {"t": 102.0, "texts": ["c", "d"]}]))
    load = wl.replay(jl, speed=2.0)
    p = load.phases[0]
    np.testing.assert_allclose(p.arrivals, [0.0, 0.25, 1.0])
    assert p.texts == [["a"], ["b"], ["c", "d"]]
    csv = tmp_path / "t.csv"
    csv.write_text('t,text\n0.0,"hello, world"\n0.5,bye\n')
    times, texts = wl.load_trace(csv)
    assert texts == [["hello, world"], ["bye"]] and list(times) == [0.0, 0.5]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"time": 1}\n')
    with pytest.raises(ConfigError):
        wl.replay(bad)


def test_offered_per_second_counts_the_schedule() -> None:
    phase = wl.Phase("x", 3.0, np.array([0.1, 0.2, 1.5, 2.9]), [["a"]] * 4)
    starts, rate = wl.offered_per_second(phase)
    assert list(starts) == [0, 1, 2] and list(rate) == [2, 1, 1]


def test_real_corpus_lengths_are_short_and_skewed() -> None:
    from bertserve.data import corpus

    texts = [t[0] for t in wl.TextSampler(corpus("tweets"), seed=0).draw(2000)]
    lengths = np.array([len(t) for t in texts])
    assert 20 < np.median(lengths) < 200  # SMS-length texts
    assert np.percentile(lengths, 99) > 1.2 * np.median(lengths)
