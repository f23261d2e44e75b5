"""The measured scatter of batch times: reading it from /metrics, drawing from it, its effect on p99.

Seeded throughout, so every assertion is about behaviour, not timing.
"""

from __future__ import annotations

import numpy as np
import pytest

from bertserve.errors import ConfigError
from bertserve.planner import Arrivals, EngineConfig, Spread, simulate
from bertserve.planner.plan import PlanInputs, Scenario, arrivals_for, plan_scenario
from bertserve.planner.spread import histogram_buckets
from bertserve.serving.core.profile import RunTimeModel

FAKE = RunTimeModel({1: [0.001, 0.0002, 0.00004, 0.0]})
LENGTHS = np.array([12, 20, 28, 36, 60, 90])

METRICS = """\
# HELP bertserve_batch_time_prediction_ratio Measured / predicted run time of each batch.
# TYPE bertserve_batch_time_prediction_ratio histogram
bertserve_batch_time_prediction_ratio_bucket{le="0.5"} 0.0
bertserve_batch_time_prediction_ratio_bucket{le="1.0"} {one}
bertserve_batch_time_prediction_ratio_bucket{le="2.0"} {two}
bertserve_batch_time_prediction_ratio_bucket{le="+Inf"} {two}
bertserve_batch_time_prediction_ratio_count {two}
bertserve_runtime_calibration 1.3
"""


def metrics(one: int, two: int) -> str:
    return METRICS.replace("{one}", str(float(one))).replace("{two}", str(float(two)))


def test_the_servers_histogram_is_read_and_two_scrapes_are_subtracted() -> None:
    assert histogram_buckets(metrics(3, 4)) == [(0.5, 0.0), (1.0, 3.0), (2.0, 4.0), (float("inf"), 4.0)]
    spread = Spread.from_metrics(metrics(30, 50), before=metrics(10, 10))
    assert spread.batches == 40
    np.testing.assert_allclose(spread.weight, [0, 20, 20, 0])
    np.testing.assert_allclose(spread.lo, [0.25, 0.5, 1.0, 2.0])  # open ends: a log-width step out
    np.testing.assert_allclose(spread.hi, [0.5, 1.0, 2.0, 4.0])
    draws = spread.draw(np.random.default_rng(0), 10_000)
    assert draws.min() >= 0.5 and draws.max() <= 2.0  # only the buckets that held batches
    assert np.mean(draws) == pytest.approx(spread.mean, rel=0.02)
    assert spread.normalised().mean == pytest.approx(1.0)


def test_bad_or_empty_metrics_are_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="no bertserve_batch_time_prediction_ratio"):
        Spread.from_metrics("bertserve_ready 1\n")
    with pytest.raises(ConfigError, match="empty"):
        Spread.from_metrics(metrics(5, 5), before=metrics(5, 5))


def test_a_spread_survives_json_and_loads_from_a_saved_metrics_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spread = Spread.from_samples([0.8, 1.0, 1.5])
    assert Spread.from_json(spread.to_json()).mean == pytest.approx(spread.mean)
    saved = tmp_path / "metrics.txt"
    saved.write_text(metrics(3, 4))
    assert Spread.load(str(saved)).batches == 4
    with pytest.raises(ConfigError, match="cannot read"):
        Spread.load(str(tmp_path / "missing.txt"))


def test_a_spread_keeps_the_mean_batch_time_and_is_seeded() -> None:
    arrivals = Arrivals(np.arange(400) * 1.0, np.full(400, 40))  # far apart: each batch alone
    flat = simulate(arrivals, FAKE, EngineConfig())
    spread = Spread.from_samples([0.5, 1.0, 1.5, 4.0])  # mean 1.75: the longest is 2.3 × the mean
    a, b = (simulate(arrivals, FAKE, EngineConfig(), spread=spread, seed=4) for _ in range(2))
    np.testing.assert_array_equal(a.latencies, b.latencies)  # same seed, same draws
    assert a.latencies.mean() == pytest.approx(flat.latencies.mean(), rel=0.1)  # scaled to mean 1
    assert a.latencies.max() > 2 * flat.latencies.max()  # but some batches run long


def test_a_wider_spread_raises_predicted_p99_near_capacity() -> None:
    arrivals = arrivals_for(Scenario("s", 420), LENGTHS, 20.0, seed=5)  # ~80 % of two workers
    narrow = Spread.from_samples(np.linspace(0.8, 1.2, 41))
    wide = narrow.widened(4.0)
    p99 = [simulate(arrivals, FAKE, EngineConfig(slo_s=0.2), spread=s, seed=1).p99
           for s in (None, narrow, wide)]
    assert p99[0] <= p99[1] < p99[2]
    assert p99[2] > 1.2 * p99[0]


def test_the_plan_needs_more_replicas_with_a_wide_spread() -> None:
    base = PlanInputs(model=FAKE, engine=EngineConfig(slo_s=0.03, workers=2), lengths=LENGTHS,
                      cores_per_replica=2, duration_s=10, max_replicas=64)
    wide = Spread.from_samples([0.3, 0.5, 0.7, 1.0, 3.5])
    from dataclasses import replace

    flat, scattered = (plan_scenario(replace(base, spread=s), Scenario("steady", 1500)) for s in (None, wide))
    assert scattered.replicas > flat.replicas  # type: ignore[operator]


def test_overhead_samples_are_drawn_per_request() -> None:
    arrivals = Arrivals(np.arange(200) * 1.0, np.full(200, 40))
    result = simulate(arrivals, FAKE, EngineConfig(), overhead_s=[0.001, 0.009])
    extra = np.round(result.latencies - FAKE.predict(1, 40), 6)
    assert set(extra.tolist()) == {0.001, 0.009}
    with pytest.raises(ConfigError):
        simulate(arrivals, FAKE, EngineConfig(), overhead_s=[])
