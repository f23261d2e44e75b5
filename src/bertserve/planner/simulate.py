"""Discrete-event simulation of bertserve replicas, driven by the serving engine's own batcher.

The simulated clock replaces the wall clock; everything else is the real decision code: each
replica owns a :class:`~bertserve.serving.core.batcher.Batcher` (length-aware buffer, SLO-aware
dispatch, admission, student policy) built from the same settings the server uses, and the
worker run times come from the artifact's measured profile. What the simulation adds is only
what the engine does not decide: when requests arrive, which replica Ray's router picks
(power of two choices on requests in flight), and how long a batch really takes: the profile's
time × a level (``slowdown``: the cores the workers share) × a ratio drawn from a measured
:class:`~.spread.Spread` (the scatter that builds the queue tail near capacity), and how long a
request spends outside batching (one figure, or drawn from measured samples).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..config import RESTORE_SHARE, ServerSettings
from ..errors import ConfigError, OverloadedError
from ..serving.core.batcher import Batcher, Dispatch
from ..serving.core.buffer import Item, LengthBuffer
from ..serving.core.policy import StudentPolicy
from .spread import Spread


class CostModel(Protocol):
    """Seconds for a batch of ``batch`` texts padded to ``length`` tokens with ``students``.

    :class:`bertserve.serving.core.profile.RunTimeModel` is one; tests use a formula.
    """

    def predict(self, batch: int, length: int, students: int = 1) -> float: ...


class MemoCost:
    """Remembers a cost model's answers: the simulation asks the same cells millions of times."""

    def __init__(self, model: CostModel) -> None:
        self.model = model
        self._seen: dict[tuple[int, int, int], float] = {}

        self._wide: dict[tuple[int, int, int], float | None] = {}

    def predict(self, batch: int, length: int, students: int = 1) -> float:
        key = (batch, length, students)
        value = self._seen.get(key)
        if value is None:
            value = self._seen[key] = float(self.model.predict(batch, length, students))
        return value

    def predict_wide(self, batch: int, length: int, students: int = 1) -> float | None:
        """The batch on every core of the layout (None: the profile has no wide cells)."""
        key = (batch, length, students)
        if key not in self._wide:
            wide = getattr(self.model, "predict_wide", None)
            value = wide(batch, length, students) if wide is not None else None
            self._wide[key] = float(value) if value is not None else None
        return self._wide[key]

    def run_time(self, d: Dispatch) -> float:
        """Profile time of a dispatched batch, wide or not."""
        if d.wide:
            wide = self.predict_wide(d.batch.size, d.batch.width, d.students)
            if wide is not None:
                return wide
        return self.predict(d.batch.size, d.batch.width, d.students)


def _default(name: str) -> object:
    """The server's default for a batching option (one source: ``ServerSettings``)."""
    return ServerSettings.model_fields[name].default


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The serving options that shape batching (names and defaults as in ``ServerSettings``)."""

    slo_s: float = float(_default("slo_ms")) / 1e3  # type: ignore[arg-type]
    workers: int = 2
    max_batch_size: int = _default("max_batch_size")  # type: ignore[assignment]
    max_batch_tokens: int = _default("max_batch_tokens")  # type: ignore[assignment]
    bin_width: int = _default("bin_width")  # type: ignore[assignment]
    pipeline_depth: int = _default("pipeline_depth")  # type: ignore[assignment]
    max_queue_requests: int = _default("max_queue_requests")  # type: ignore[assignment]
    max_queue_tokens: int = _default("max_queue_tokens")  # type: ignore[assignment]
    max_students: int = 1
    min_students: int = _default("min_students")  # type: ignore[assignment]
    adaptive_students: bool = _default("adaptive_students")  # type: ignore[assignment]
    student_cut: float = _default("student_cut")  # type: ignore[assignment]
    student_restore: float = RESTORE_SHARE * float(_default("student_cut"))  # type: ignore[arg-type]
    widen: bool = _default("widen")  # type: ignore[assignment]  # a lone batch borrows idle workers' cores

    @classmethod
    def from_settings(cls, settings: object, *, workers: int, max_students: int = 1,
                      adaptive: bool | None = None) -> EngineConfig:
        """Take every batching option from a ``ServerSettings`` (what the server would use)."""
        names = [f for f in cls.__dataclass_fields__ if f not in ("slo_s", "workers", "max_students")]
        kwargs = {n: getattr(settings, n) for n in names if hasattr(settings, n)}
        if adaptive is not None:
            kwargs["adaptive_students"] = adaptive
        return cls(slo_s=float(settings.slo_ms) / 1e3, workers=workers,
                   max_students=max_students, **kwargs)


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Requests to simulate: send times (seconds, sorted) and each one's token length."""

    times: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        if len(self.times) != len(self.lengths):
            raise ConfigError(f"{len(self.times)} arrival times but {len(self.lengths)} lengths")


@dataclass(slots=True)
class SimResult:
    """Latency per request (seconds; NaN = refused with 429) and what the engine did."""

    latencies: np.ndarray
    batches: int = 0
    texts: int = 0
    student_texts: dict[int, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return int(np.isnan(self.latencies).sum())

    def percentile(self, q: float) -> float:
        """Latency percentile with refused requests counted as misses (infinitely late)."""
        lat = np.where(np.isnan(self.latencies), np.inf, self.latencies)
        return float(np.percentile(lat, q, method="higher")) if len(lat) else 0.0

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean_batch(self) -> float:
        return self.texts / self.batches if self.batches else 0.0


class _Replica:
    """One replica: the engine's batcher plus simulated workers that run what it sends."""

    def __init__(self, cfg: EngineConfig, model: CostModel) -> None:
        policy = StudentPolicy(max_students=cfg.max_students, min_students=cfg.min_students,
                               enabled=cfg.adaptive_students, cut_fraction=cfg.student_cut,
                               restore_fraction=cfg.student_restore)
        self.batcher = Batcher(
            buffer=LengthBuffer(bin_width=cfg.bin_width, max_batch=cfg.max_batch_size,
                                max_tokens=cfg.max_batch_tokens),
            model=model,  # type: ignore[arg-type]  # duck-typed: predict() and predict_wide()
            policy=policy,
            workers=cfg.workers,
            pipeline_depth=cfg.pipeline_depth,
            max_queue_items=cfg.max_queue_requests,
            max_queue_tokens=cfg.max_queue_tokens,
            widen=cfg.widen,
        )
        for w in range(cfg.workers):
            self.batcher.worker_up(w)
        self.queues: list[list[Dispatch]] = [[] for _ in range(cfg.workers)]  # FIFO per worker
        self.timer_at: float | None = None

    def ongoing(self) -> int:
        return len(self.batcher.buffer) + sum(d.batch.size for q in self.queues for d in q)


def simulate(
    arrivals: Arrivals,
    model: CostModel,
    cfg: EngineConfig,
    *,
    replicas: int = 1,
    overhead_s: float | Sequence[float] | np.ndarray = 0.0,
    slowdown: float = 1.0,
    spread: Spread | None = None,
    run_time: Callable[[Dispatch], float] | None = None,
    seed: int = 0,
) -> SimResult:
    """Replay ``arrivals`` against ``replicas`` simulated replicas; one text per request.

    overhead_s: latency every request pays outside batching (HTTP, tokenisation, proxy hops):
    one figure, or measured samples that each request draws one of.
    slowdown: how much slower than its profile a batch runs on average (the cores the workers
    share with the front end); the engine's live calibration sees it as the real one would.
    spread: the scatter of real batch times around that level (scaled to mean 1 here); each
    batch draws its own ratio. None: every batch takes exactly its level.
    run_time: how long a dispatched batch really takes; default: the profile's time for it
    × ``slowdown`` × a ratio from ``spread``.
    """
    if replicas < 1:
        raise ConfigError(f"replicas must be ≥ 1, got {replicas}")
    rng = np.random.default_rng(seed)
    memo = MemoCost(model)
    if run_time is not None:
        actual = run_time
    elif spread is None:
        def actual(d: Dispatch) -> float:
            return memo.run_time(d) * slowdown
    else:
        ratio = spread.normalised().sampler(np.random.default_rng([seed, 1]))

        def actual(d: Dispatch) -> float:
            return memo.run_time(d) * slowdown * ratio()
    extra = np.asarray(overhead_s, dtype=float)
    if extra.ndim == 0:
        extra = np.full(len(arrivals.times), float(extra))
    elif len(extra) == 0:
        raise ConfigError("overhead samples are empty")
    else:
        extra = np.random.default_rng([seed, 2]).choice(extra, size=len(arrivals.times))
    reps = [_Replica(cfg, memo) for _ in range(replicas)]
    picks = iter(rng.integers(0, max(1, replicas), size=(len(arrivals.times), 2)).tolist())
    n = len(arrivals.times)
    latencies = np.full(n, np.nan)
    result = SimResult(latencies)
    seq = itertools.count()
    # events: (time, seq, kind, replica, payload); kinds: 0 = arrival, 1 = batch done, 2 = timer
    events: list[tuple[float, int, int, int, object]] = [
        (float(t), next(seq), 0, -1, i) for i, t in enumerate(arrivals.times)
    ]
    heapq.heapify(events)

    def start(r: int, d: Dispatch, now: float) -> None:
        seconds = actual(d)
        heapq.heappush(events, (now + seconds, next(seq), 1, r, (d, seconds)))

    def poll(r: int, now: float) -> None:
        rep = reps[r]
        for d in rep.batcher.poll(now):
            queue = rep.queues[d.worker]
            queue.append(d)
            result.batches += 1
            result.texts += d.batch.size
            result.student_texts[d.students] = result.student_texts.get(d.students, 0) + d.batch.size
            if len(queue) == 1:  # the worker was idle: it starts at once
                start(r, d, now)
        due = rep.batcher.next_due(now)
        if due is not None and due > now and (rep.timer_at is None or due < rep.timer_at):
            rep.timer_at = due
            heapq.heappush(events, (due, next(seq), 2, r, None))

    while events:
        now, _, kind, r, payload = heapq.heappop(events)
        if kind == 0:
            i = int(payload)  # type: ignore[call-overload]
            r = _route(reps, next(picks))
            item = Item(ids=[0] * int(arrivals.lengths[i]), arrival=now, deadline=now + cfg.slo_s, owner=i)
            try:
                reps[r].batcher.admit([item], now)
            except OverloadedError:
                continue  # refused: latency stays NaN
        elif kind == 1:
            d, seconds = payload  # type: ignore[misc]
            rep = reps[r]
            rep.batcher.finished(d.worker, d.batch.id, now)
            observe = getattr(rep.batcher, "observe", None)  # the engine's live calibration, if any
            if observe is not None:
                observe(d, seconds)
            queue = rep.queues[d.worker]
            queue.pop(0)
            for it in d.batch.items:
                latencies[it.owner] = now - it.arrival + extra[it.owner]
            if queue:  # the next batch was already in the worker's pipe
                start(r, queue[0], now)
        else:
            reps[r].timer_at = None
        poll(r, now)
    return result


def _route(reps: Sequence[_Replica], pair: list[int]) -> int:
    """Ray Serve's default router: two random replicas, the one with fewer requests in flight."""
    a, b = pair
    if a == b:
        b = (a + 1) % len(reps)
    return a if reps[a].ongoing() <= reps[b].ongoing() else b
