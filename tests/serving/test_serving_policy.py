"""Adaptive student pruning: reacts to a simulated queue, restores students after the burst."""

from __future__ import annotations

import random

from serving_fakes import Simulation, make_batcher

from bertserve.serving.core.policy import StudentPolicy


def queue_pressure(waiting_work_s: float, slack_s: float):
    """Pressure of a queue whose work scales with the student count."""
    return lambda m: waiting_work_s * m / slack_s


def test_prunes_under_pressure_and_restores_when_it_passes() -> None:
    p = StudentPolicy(4)
    assert p.choose(queue_pressure(0.01, 0.1)) == 4  # 40% of the slack: all students
    assert p.choose(queue_pressure(0.03, 0.1)) == 2  # 120% at 4, 90% at 3, 60% at 2
    assert p.choose(queue_pressure(0.1, 0.1)) == 1  # nothing fits: the fewest allowed
    assert p.choose(queue_pressure(0.03, 0.1)) == 1  # 60% at 2 is not below the 50% restore mark
    assert p.choose(queue_pressure(0.02, 0.1)) == 2  # 40% at 2: one back
    assert p.choose(queue_pressure(0.001, 0.1)) == 4  # burst over: all back


def test_respects_min_students_disabled_and_plain_models() -> None:
    assert StudentPolicy(4, min_students=3).choose(queue_pressure(1.0, 0.1)) == 3
    assert StudentPolicy(4, enabled=False).choose(queue_pressure(1.0, 0.1)) == 4
    assert StudentPolicy(1).choose(queue_pressure(1.0, 0.1)) == 1


def test_simulated_burst_runs_fewer_students_then_all_again() -> None:
    rng = random.Random(1)
    sim = Simulation(make_batcher(workers=2, max_students=4, max_batch=16, depth=1))
    t, arrivals = 0.0, []
    for rate, seconds in ((100, 1.0), (1500, 0.5), (100, 1.0)):  # base, 15× burst, base
        end = t + seconds
        while t < end:
            t += rng.expovariate(rate)
            arrivals.append(t)
    for a in arrivals:
        sim.arrive(a, rng.randint(10, 40), slo=0.1)
    sim.run()
    phase = [(d.sent_at, d.students) for d in sim.dispatched]
    before = [m for s, m in phase if s < 1.0]
    burst = [m for s, m in phase if 1.1 <= s < 1.5]
    after = [m for s, m in phase if s > 2.2]
    assert set(before) == {4}
    assert min(burst) < 4 and sum(burst) / len(burst) < 3
    assert after and set(after) == {4}
    assert all(done <= it.deadline + 1e-9 for done, it in sim.done)


def test_thresholds_come_from_the_settings_and_must_not_flap() -> None:
    import pytest

    from bertserve.config import ServerSettings
    from bertserve.errors import ConfigError

    s = ServerSettings(student_cut=0.5, student_restore=0.2)
    early = StudentPolicy(4, cut_fraction=s.student_cut, restore_fraction=s.student_restore)
    assert early.choose(queue_pressure(0.015, 0.1)) == 3  # 60% at 4 > 0.5: cut; the default keeps 4
    assert StudentPolicy(4).choose(queue_pressure(0.015, 0.1)) == 4
    assert ServerSettings(student_cut=0.4).student_restore == 0.25  # a cut alone derives its restore
    with pytest.raises(ConfigError, match="flaps"):
        ServerSettings(student_cut=0.5, student_restore=0.6)


def test_student_threads_leave_fewer_cores_for_default_workers(monkeypatch) -> None:
    import bertserve.config as config

    monkeypatch.setattr(config, "usable_cores", lambda: 4)
    assert config.ServerSettings().worker_layout() == (4, 1)
    assert config.ServerSettings(student_threads=2).worker_layout() == (2, 1)  # 2 workers × 2 students
    assert config.ServerSettings(student_threads=2, threads=2).worker_layout() == (1, 2)
    assert config.ServerSettings(student_threads=2, workers=3).worker_layout() == (3, 1)  # explicit wins
