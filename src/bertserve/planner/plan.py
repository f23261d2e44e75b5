"""The capacity plan: the fewest replicas whose simulated p99 meets the SLO, per scenario.

Three scenarios, each a simulation of the real batching policy (:mod:`.simulate`):

- ``steady``: Poisson arrivals at the rate, every student kept (full quality);
- ``burst``: the rate with bursts of ``factor`` × (``burst_s`` seconds in every ``period_s``),
  every student kept;
- ``burst+pruning``: the same bursts with adaptive student pruning on (ensembles only: a plain
  model has one student, so pruning cannot help it and the row is left out).

Every batch takes the profile's time × the CPU-share slowdown (:func:`cpu_slowdown`) × a ratio
drawn from the measured spread of real batch times, if one is given (:mod:`.spread`); the time
outside batching (HTTP, tokenising) is stretched by the same slowdown, since the front end runs
on the same cores.

A request refused with 429 counts as a miss, so "p99 ≤ SLO" means 99 % of all requests were
answered within the SLO. The search assumes more replicas never hurt (routing is by load):
it doubles until the SLO holds, then bisects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ConfigError
from .simulate import Arrivals, CostModel, EngineConfig, SimResult, simulate
from .spread import Spread


@dataclass(frozen=True, slots=True)
class Scenario:
    """Traffic to plan for. ``burst_factor`` 1 means steady Poisson traffic."""

    name: str
    rate: float
    burst_factor: float = 1.0
    burst_s: float = 10.0
    period_s: float = 60.0
    pruning: bool = False


@dataclass(frozen=True, slots=True)
class PlanRow:
    scenario: Scenario
    replicas: int | None  # None: not reachable within max_replicas
    cores: float | None
    p50_ms: float
    p99_ms: float
    rejected_share: float
    mean_batch: float
    students: dict[int, int]

    def as_dict(self) -> dict:
        """Plain JSON-ready values; an unbounded latency (everything refused) becomes None."""
        def finite(x: float) -> float | None:
            return None if math.isinf(x) else round(x, 2)

        return {"scenario": self.scenario.name, "rate": self.scenario.rate,
                "burst_factor": self.scenario.burst_factor, "pruning": self.scenario.pruning,
                "replicas": self.replicas, "cores": self.cores, "p50_ms": finite(self.p50_ms),
                "p99_ms": finite(self.p99_ms), "rejected_share": round(self.rejected_share, 4),
                "mean_batch": round(self.mean_batch, 2), "students": self.students}


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """What every scenario shares: the model, the engine options and the traffic's shape."""

    model: CostModel
    engine: EngineConfig
    lengths: np.ndarray  # token lengths to draw requests from (a real corpus, tokenised)
    cores_per_replica: float
    overhead_s: float | np.ndarray = 0.0  # outside batching, on an idle server: one figure or samples
    front_cpu_s: float = 0.0  # CPU per request spent beside the batches' compute, on the replica's cores
    spread: Spread | None = None  # measured scatter of batch times (None: each batch its level)
    duration_s: float = 60.0
    burst_s: float = 10.0
    period_s: float = 60.0
    max_replicas: int = 256
    seed: int = 0


def arrivals_for(scenario: Scenario, lengths: np.ndarray, duration_s: float, seed: int) -> Arrivals:
    """Seeded Poisson arrivals; with bursts, the rate is ``factor`` × in the middle of each period."""
    if scenario.rate <= 0:
        raise ConfigError(f"rate must be > 0, got {scenario.rate}")
    rng = np.random.default_rng(seed)
    segments = [(0.0, duration_s, scenario.rate)]
    if scenario.burst_factor > 1:
        segments = []
        start = 0.0
        while start < duration_s:
            at = start + (scenario.period_s - scenario.burst_s) / 2
            for lo, hi, rate in ((start, at, scenario.rate),
                                 (at, at + scenario.burst_s, scenario.rate * scenario.burst_factor),
                                 (at + scenario.burst_s, start + scenario.period_s, scenario.rate)):
                if min(hi, duration_s) > lo:
                    segments.append((lo, min(hi, duration_s), rate))
            start += scenario.period_s
    times = np.sort(np.concatenate([rng.uniform(lo, hi, rng.poisson(rate * (hi - lo)))
                                    for lo, hi, rate in segments]))
    return Arrivals(times, rng.choice(lengths, size=len(times)))


def cpu_slowdown(cores: float, rate_per_replica: float, front_cpu_s: float) -> float:
    """How much slower batches run when everything else on the cores takes its CPU share.

    The workers were profiled with the cores to themselves; at ``rate_per_replica`` the CPU spent
    per request beside the batches' own compute (the front end's HTTP and tokenising, the workers'
    polling and hand-offs, a load generator sharing the machine) uses ``rate × front_cpu_s``
    cores, leaving the rest for the batches (∞: none left).
    """
    left = cores - rate_per_replica * front_cpu_s
    return math.inf if left <= 0 else max(1.0, cores / left)


def smallest_passing(passes: Callable[[int], bool], limit: int) -> int | None:
    """The least n in [1, limit] with passes(n), assuming passes is monotone (doubling, then bisection)."""
    hi = 1
    while not passes(hi):
        if hi >= limit:
            return None
        hi = min(hi * 2, limit)
    lo = hi // 2  # fails (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return hi


def plan_scenario(inputs: PlanInputs, scenario: Scenario) -> PlanRow:
    """The fewest replicas that keep this scenario's p99 within the SLO, refusing nothing, and the
    figures there."""
    duration = max(inputs.duration_s, scenario.period_s if scenario.burst_factor > 1 else 0.0)
    arrivals = arrivals_for(scenario, inputs.lengths, duration, inputs.seed)
    engine = replace(inputs.engine, adaptive_students=scenario.pruning)
    results: dict[int, SimResult] = {}

    peak = scenario.rate * scenario.burst_factor

    def run(n: int) -> SimResult:
        if n not in results:
            slow = cpu_slowdown(inputs.cores_per_replica, peak / n, inputs.front_cpu_s)
            if math.isinf(slow):  # the front end alone needs every core: nothing gets answered
                results[n] = SimResult(np.full(len(arrivals.times), np.nan))
            else:
                results[n] = simulate(arrivals, inputs.model, engine, replicas=n, slowdown=slow,
                                      overhead_s=np.asarray(inputs.overhead_s) * slow,
                                      spread=inputs.spread, seed=inputs.seed)
        return results[n]

    # kept = nothing refused and the p99 within the SLO (as in replica_capacity): the p99 counts a
    # refusal as a miss, but alone it would pass a replica that turns away up to 1 % of requests
    n = smallest_passing(lambda k: run(k).rejected == 0 and run(k).p99 <= engine.slo_s, inputs.max_replicas)
    shown = run(n if n is not None else inputs.max_replicas)
    return PlanRow(
        scenario=scenario,
        replicas=n,
        cores=None if n is None else n * inputs.cores_per_replica,
        p50_ms=shown.p50 * 1e3,
        p99_ms=shown.p99 * 1e3,
        rejected_share=shown.rejected / max(1, len(shown.latencies)),
        mean_batch=shown.mean_batch,
        students=dict(sorted(shown.student_texts.items())),
    )


def scenarios(rate: float, burst: float | None, *, max_students: int, burst_s: float = 10.0,
              period_s: float = 60.0) -> list[Scenario]:
    """Steady traffic, and with ``burst`` the burst without and (ensembles) with pruning."""
    out = [Scenario("steady", rate)]
    if burst is not None and burst > 1:
        out.append(Scenario("burst", rate, burst, burst_s, period_s))
        if max_students > 1:
            out.append(Scenario("burst+pruning", rate, burst, burst_s, period_s, pruning=True))
    elif burst is not None and burst < 1:
        raise ConfigError(f"burst factor must be ≥ 1, got {burst}")
    return out


def make_plan(inputs: PlanInputs, rate: float, burst: float | None = None) -> list[PlanRow]:
    return [plan_scenario(inputs, s)
            for s in scenarios(rate, burst, max_students=inputs.engine.max_students,
                               burst_s=inputs.burst_s, period_s=inputs.period_s)]


def replica_capacity(inputs: PlanInputs, *, start: float = 4.0, limit: float = 20000.0,
                     resolution: float = 0.03) -> float:
    """The highest steady rate one replica serves with p99 within the SLO and nothing refused.

    Doubles the rate from ``start`` until a simulated minute fails, then bisects to within
    ``resolution`` (relative); 0 when even ``start`` / 8 fails. Bisection assumes that passing is
    monotone in the rate; with one seed it nearly is, but a rate just above the answer may pass too.
    """
    engine = inputs.engine

    def passes(rate: float) -> bool:
        arrivals = arrivals_for(Scenario("steady", rate), inputs.lengths, inputs.duration_s, inputs.seed)
        slow = cpu_slowdown(inputs.cores_per_replica, rate, inputs.front_cpu_s)
        if math.isinf(slow):
            return False
        result = simulate(arrivals, inputs.model, engine, replicas=1, slowdown=slow,
                          overhead_s=np.asarray(inputs.overhead_s) * slow, spread=inputs.spread,
                          seed=inputs.seed)
        return result.rejected == 0 and result.p99 <= engine.slo_s

    lo, hi = 0.0, start
    while passes(hi):
        lo, hi = hi, hi * 2
        if hi > limit:
            return lo
    if lo == 0.0:  # below the starting rate: look lower before giving up
        for rate in (start / 2, start / 4, start / 8):
            if passes(rate):
                lo, hi = rate, rate * 2
                break
        else:
            return 0.0
    while (hi - lo) / hi > resolution:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo
