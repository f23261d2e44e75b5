"""The capacity planner's simulation and search, on a deterministic fake profile.

The simulated replicas run the serving engine's real batcher; only the profile is a formula
(the engine's own RunTimeModel with chosen coefficients), so every result is exact and seeded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertserve.errors import ConfigError
from bertserve.planner import Arrivals, EngineConfig, PlanInputs, make_plan, read_profile, simulate
from bertserve.planner.plan import Scenario, arrivals_for, plan_scenario, scenarios, smallest_passing
from bertserve.serving.core.profile import RunTimeModel

# seconds = c0 + c1·B + c2·B·L (+ c3·B·L²/512); four students cost about three times one student
FAKE = RunTimeModel({1: [0.001, 0.0002, 0.00004, 0.0], 4: [0.002, 0.0006, 0.00012, 0.0]})
LENGTHS = np.array([12, 20, 28, 36, 60, 90])


def inputs(max_students: int = 1, slo_s: float = 0.05) -> PlanInputs:
    return PlanInputs(model=FAKE, engine=EngineConfig(slo_s=slo_s, workers=2, max_students=max_students),
                      lengths=LENGTHS, cores_per_replica=2, duration_s=6, burst_s=2, period_s=6,
                      max_replicas=64)


def test_a_lone_request_costs_its_batch_of_one_plus_the_overhead() -> None:
    arrivals = Arrivals(np.array([0.0, 1.0]), np.array([40, 100]))
    result = simulate(arrivals, FAKE, EngineConfig(), overhead_s=0.002)
    expected = [FAKE.predict(1, 40) + 0.002, FAKE.predict(1, 100) + 0.002]
    np.testing.assert_allclose(result.latencies, expected, rtol=1e-9)
    assert result.mean_batch == 1.0


def test_a_lone_request_runs_wide_when_the_engine_would_widen() -> None:
    wide = RunTimeModel(FAKE.coef, wide_coef={1: [0.001, 0.0002, 0.00002, 0.0]})
    arrivals = Arrivals(np.array([0.0, 1.0]), np.array([40, 100]))
    narrow = simulate(arrivals, wide, EngineConfig(widen=False))
    widened = simulate(arrivals, wide, EngineConfig(widen=True))
    np.testing.assert_allclose(narrow.latencies, [FAKE.predict(1, 40), FAKE.predict(1, 100)], rtol=1e-9)
    np.testing.assert_allclose(widened.latencies, [wide.predict_wide(1, 40), wide.predict_wide(1, 100)],
                               rtol=1e-9)
    assert simulate(arrivals, FAKE, EngineConfig(widen=True)).latencies.tolist() == narrow.latencies.tolist()


def test_every_request_is_answered_and_batches_form_under_load() -> None:
    arrivals = arrivals_for(Scenario("s", 800), LENGTHS, 3.0, seed=1)
    result = simulate(arrivals, FAKE, EngineConfig(slo_s=0.05), replicas=1)
    assert result.rejected == 0 and result.texts == len(arrivals.times)
    assert result.mean_batch > 1.3  # the batcher groups texts while both workers are busy
    assert result.p99 <= 0.05


def test_overload_is_refused_not_queued_without_bound() -> None:
    arrivals = arrivals_for(Scenario("s", 8000), LENGTHS, 0.5, seed=2)
    result = simulate(arrivals, FAKE, EngineConfig(slo_s=0.05), replicas=1)
    assert result.rejected > 0
    answered = result.latencies[~np.isnan(result.latencies)]
    assert answered.max() < 0.05 * 1.5  # admission keeps accepted requests near their SLO


def test_more_replicas_never_raise_p99_here() -> None:
    arrivals = arrivals_for(Scenario("s", 3000), LENGTHS, 1.0, seed=3)
    p99 = [simulate(arrivals, FAKE, EngineConfig(slo_s=0.05), replicas=n).p99 for n in (1, 2, 4)]
    assert p99[0] >= p99[1] >= p99[2]


def test_more_load_needs_more_replicas() -> None:
    low, high = (make_plan(inputs(), rate)[0] for rate in (300, 1500))
    assert low.replicas is not None and high.replicas is not None
    assert high.replicas > low.replicas
    assert high.cores == high.replicas * 2
    assert high.p99_ms <= 50 and low.p99_ms <= 50


def test_bursts_need_more_replicas_than_steady_traffic() -> None:
    steady, burst = make_plan(inputs(), 500, burst=4)
    assert burst.scenario.burst_factor == 4
    assert burst.replicas > steady.replicas  # type: ignore[operator]


def test_student_pruning_needs_fewer_replicas_for_the_same_burst() -> None:
    rows = {r.scenario.name: r for r in make_plan(inputs(max_students=4), 300, burst=4)}
    assert set(rows) == {"steady", "burst", "burst+pruning"}
    assert rows["burst+pruning"].replicas < rows["burst"].replicas  # type: ignore[operator]
    assert min(rows["burst+pruning"].students) < 4  # it did prune
    assert set(rows["burst"].students) == {4}  # without pruning every batch runs all students


def test_a_plain_model_gets_no_pruning_row() -> None:
    assert [s.name for s in scenarios(100, 3, max_students=1)] == ["steady", "burst"]
    with pytest.raises(ConfigError):
        scenarios(100, 0.5, max_students=1)


def test_unreachable_slo_is_reported_not_hidden() -> None:
    row = plan_scenario(inputs(slo_s=0.001), Scenario("steady", 100))  # below one batch's cost
    assert row.replicas is None and row.cores is None
    assert row.as_dict()["replicas"] is None


def test_bursts_raise_the_arrival_rate_inside_the_window() -> None:
    arrivals = arrivals_for(Scenario("b", 200, burst_factor=5, burst_s=10, period_s=60), LENGTHS, 60, 0)
    inside = ((arrivals.times >= 25) & (arrivals.times < 35)).sum() / 10
    outside = ((arrivals.times < 25) | (arrivals.times >= 35)).sum() / 50
    assert 4 < inside / outside < 6
    assert set(np.unique(arrivals.lengths)) <= set(LENGTHS.tolist())


def test_smallest_passing_finds_the_boundary_or_gives_up() -> None:
    calls: list[int] = []

    def passes(n: int) -> bool:
        calls.append(n)
        return n >= 37

    assert smallest_passing(passes, 1000) == 37
    assert len(calls) < 15
    assert smallest_passing(lambda n: n >= 37, 20) is None


def test_engine_config_takes_the_servers_batching_options() -> None:
    from bertserve.config import ServerSettings

    s = ServerSettings(slo_ms=80, max_batch_size=8, bin_width=8, pipeline_depth=1, adaptive_students=False)
    cfg = EngineConfig.from_settings(s, workers=3, max_students=4)
    assert (cfg.slo_s, cfg.workers, cfg.max_batch_size, cfg.bin_width, cfg.pipeline_depth) == \
        (0.08, 3, 8, 8, 1)
    assert cfg.max_students == 4 and cfg.adaptive_students is False


def test_profiles_in_the_servers_json_format_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(FAKE.to_json()))
    assert read_profile(path).predict(8, 32) == pytest.approx(FAKE.predict(8, 32))
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read profile"):
        read_profile(path)


def test_front_end_cpu_slows_the_workers_and_needs_more_replicas() -> None:
    from dataclasses import replace

    from bertserve.planner.plan import cpu_slowdown

    assert cpu_slowdown(2, 0, 0.001) == 1.0
    assert cpu_slowdown(2, 500, 0.001) == pytest.approx(2 / 1.5)
    assert cpu_slowdown(2, 2000, 0.001) == float("inf")
    lean, heavy = (make_plan(replace(inputs(), front_cpu_s=c), 600)[0] for c in (0.0, 0.002))
    assert heavy.replicas > lean.replicas  # type: ignore[operator]


def test_replica_capacity_is_the_edge_between_passing_and_failing_rates() -> None:
    from bertserve.planner import replica_capacity

    plan = inputs()
    cap = replica_capacity(plan)
    assert cap > 0
    one = plan_scenario(plan, Scenario("at", cap))
    above = plan_scenario(plan, Scenario("above", cap * 1.1))
    assert one.replicas == 1 and one.p99_ms <= 50
    assert above.replicas != 1  # one replica no longer keeps the SLO
    slower = PlanInputs(model=FAKE, engine=plan.engine, lengths=plan.lengths * 3, cores_per_replica=2,
                        duration_s=6)
    assert replica_capacity(slower) < cap  # longer texts: less capacity


def test_replica_capacity_is_zero_when_no_rate_meets_the_slo() -> None:
    from bertserve.planner import replica_capacity

    assert replica_capacity(inputs(slo_s=0.0005)) == 0.0


def test_a_replica_that_refuses_requests_does_not_keep_the_slo() -> None:
    """With a queue bound of 2 texts, one replica at 300 req/s refuses 14 of 1,817 requests: under
    1 %, so the p99 (refusals count as misses) still meets the SLO; the plan must add replicas
    until nothing is refused, as the replica capacity does."""
    from dataclasses import replace

    engine = replace(inputs().engine, max_queue_requests=2)
    tight = PlanInputs(model=FAKE, engine=engine, lengths=LENGTHS, cores_per_replica=2, duration_s=6,
                       max_replicas=64)
    one = simulate(arrivals_for(Scenario("s", 300.0), LENGTHS, 6, 0), FAKE, engine, replicas=1)
    assert 0 < one.rejected < 0.01 * len(one.latencies) and one.p99 <= engine.slo_s
    row = plan_scenario(tight, Scenario("steady", 300.0))
    assert row.replicas is not None and row.replicas > 1
    assert row.rejected_share == 0
