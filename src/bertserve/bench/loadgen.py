"""Open-loop load generation: send each request at its scheduled time, record what happened.

Latency is measured from the *scheduled* send time, not from when the client got round to it,
so a late client cannot hide queueing (no coordinated omission). The client's own lateness —
scheduling lag, the time from a request's due time to the moment its send starts — is recorded
for every request and reported beside the latencies; a run whose p99 lag is above
``lag_warn_ms`` is flagged, because then the client, not the server, shaped the traffic.

The clock and the sender are parameters, so tests drive the scheduler with a fake clock and a
fake server instead of timing real sleeps.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .client import error_kind
from .workload import Phase, Workload

Send = Callable[[bytes], Awaitable[bytes]]


class Clock:
    """Monotonic seconds and a sleep on the same clock (asyncio's timer uses monotonic time)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(slots=True)
class Outcome:
    """One request: when it was due (s into the phase), how late it left, how long it took."""

    scheduled_s: float
    lag_s: float
    latency_s: float = math.nan  # due time → full answer; nan when it failed
    error: str | None = None
    error_latency_s: float = math.nan  # due time → the error (a 429's answer, a timeout, …)
    n_texts: int = 1  # texts in the request (a rerank request: its documents, the pairs scored)


@dataclass(slots=True)
class PhaseResult:
    name: str
    duration_s: float
    offered_rate: float | None
    outcomes: list[Outcome]
    wall_s: float  # phase start → last answer (the phase's drain included)
    segments: list[tuple[float, float, float]] = field(default_factory=list)
    server_cpu_s: dict[str, float] | None = None  # CPU each server process used in the phase
    rerank: bool = False  # each request a query with documents (n_texts of them): pairs are counted

    def latencies(self) -> np.ndarray:
        return np.array([o.latency_s for o in self.outcomes], dtype=float)

    def lags(self) -> np.ndarray:
        return np.array([o.lag_s for o in self.outcomes], dtype=float)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How the client behaves; the defaults suit one server on loopback."""

    max_in_flight: int = 2048  # beyond this a request is counted as 'client_overflow', not sent
    warmup_s: float = 2.0  # unrecorded traffic first (connections, lazy init, caches)
    warmup_rate: float = 20.0  # requests per second during warm-up
    lag_warn_ms: float = 5.0  # flag the run when the client's p99 lag exceeds this


Progress = Callable[[Outcome], None]


async def run_phase(phase: Phase, bodies: Sequence[bytes], send: Send, clock: Clock,
                    options: LoadOptions = LoadOptions(), on_done: Progress | None = None) -> PhaseResult:
    """Send every request of ``phase`` on schedule (never waiting for answers), then drain."""
    outcomes: list[Outcome] = [Outcome(float(t), math.nan) for t in phase.arrivals]
    pending: set[asyncio.Task[None]] = set()
    t0 = clock.now()
    last_answer = t0

    async def one(i: int, due: float) -> None:
        nonlocal last_answer
        out = outcomes[i]
        out.lag_s = clock.now() - due
        try:
            await send(bodies[i])
            done = clock.now()
            out.latency_s = done - due
        except Exception as exc:  # every failure becomes an error kind, never a crash of the run
            done = clock.now()
            out.error = error_kind(exc)
            out.error_latency_s = done - due
        last_answer = max(last_answer, done)
        if on_done is not None:
            on_done(out)

    for i, at in enumerate(phase.arrivals):
        outcomes[i].n_texts = len(phase.texts[i])
        due = t0 + float(at)
        delay = due - clock.now()
        if delay > 0:
            await clock.sleep(delay)
        if len(pending) >= options.max_in_flight:
            outcomes[i].lag_s = clock.now() - due
            outcomes[i].error = "client_overflow"
            if on_done is not None:
                on_done(outcomes[i])
            continue
        task = asyncio.create_task(one(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    wall = max(last_answer - t0, phase.duration_s)
    return PhaseResult(phase.name, phase.duration_s, phase.offered_rate, outcomes, wall,
                       [(s.start_s, s.end_s, s.rate) for s in phase.segments],
                       rerank=phase.queries is not None)


StopRule = Callable[[PhaseResult], bool]
CpuProbe = Callable[[], Awaitable[dict[str, float] | None]]  # the server's CPU seconds by process


async def run_workload(workload: Workload, bodies: Sequence[Sequence[bytes]], send: Send,
                       clock: Clock | None = None, options: LoadOptions = LoadOptions(),
                       on_done: Progress | None = None, on_phase: Callable[[Phase], None] | None = None,
                       stop: StopRule | None = None, cpu: CpuProbe | None = None) -> list[PhaseResult]:
    """Run the phases one after another; ``stop`` may end a sweep once the server saturated.

    ``cpu``, when given, is read before and after each phase: the difference is what the server
    spent on it (:attr:`PhaseResult.server_cpu_s`).
    """
    clock = clock or Clock()
    results = []
    for phase, phase_bodies in zip(workload.phases, bodies, strict=True):
        if on_phase is not None:
            on_phase(phase)
        before = await cpu() if cpu is not None else None
        result = await run_phase(phase, phase_bodies, send, clock, options, on_done)
        after = await cpu() if cpu is not None and before is not None else None
        if before is not None and after is not None:
            result.server_cpu_s = {k: after[k] - before[k] for k in after if k in before}
        results.append(result)
        if stop is not None and stop(result):
            break
    return results


async def warm_up(workload: Workload, bodies: Sequence[Sequence[bytes]], send: Send,
                  options: LoadOptions, clock: Clock | None = None) -> None:
    """Unrecorded Poisson traffic at ``warmup_rate`` using the workload's first bodies."""
    if options.warmup_s <= 0 or not bodies or not bodies[0]:
        return
    from .workload import poisson_arrivals

    times = poisson_arrivals(options.warmup_rate, options.warmup_s, np.random.default_rng(12345))
    pool = bodies[0]
    warm = Phase("warm-up", options.warmup_s, times, [[""]] * len(times))
    await run_phase(warm, [pool[i % len(pool)] for i in range(len(times))], send, clock or Clock(), options)


def late_warning(results: Sequence[PhaseResult], lag_warn_ms: float) -> str | None:
    """A sentence for the user when the client fell behind its schedule, else None."""
    lags = np.concatenate([r.lags() for r in results]) if results else np.empty(0)
    lags = lags[np.isfinite(lags)]
    if len(lags) == 0:
        return None
    p99 = float(np.quantile(lags, 0.99)) * 1e3
    if p99 <= lag_warn_ms:
        return None
    return (f"the load generator fell behind: p99 scheduling lag {p99:.1f} ms > {lag_warn_ms:g} ms "
            f"(max {float(lags.max()) * 1e3:.1f} ms). Latencies still count from the scheduled time, "
            "but the offered load was burstier than planned; give the client a free core or lower the rate.")
