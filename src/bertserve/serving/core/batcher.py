"""SLO-aware dynamic batching: admission, which batch runs next, on which worker, with how many students.

Pure decision logic with no I/O and no clock of its own (every call takes ``now``), so it is
tested with a fake clock and driven by the engine in production.

- **Admission.** A request larger than the whole queue is refused for good
  (:class:`RequestTooLargeError`, → 413). Any other is refused (:class:`OverloadedError`, → 429
  with Retry-After) when the queue is at its bounds (texts, tokens) or when no placement of its
  texts keeps every waiting batch on time. Placement first tries the open batches of their bins, then new
  batches; the check replays the dispatch rule (deadline order, each batch on the worker that
  frees first) with the fewest students allowed. Predictions are the start-up profile scaled by
  a live calibration (measured/predicted batch times) plus the event loop's lag, so a shared
  or throttled machine is planned as it is now. An idle server accepts anything within bounds.
- **Dispatch.** An idle worker takes the most urgent batch at once (earliest deadline of its
  oldest member): no fixed wait window. A busy worker may also hold a second batch in its pipe
  (``pipeline_depth``), so it starts the next batch without a round trip to the server; that
  batch is sent when it is full, or just before the worker is predicted to finish, or when its
  slack (deadline − predicted finish) is gone. Until then it keeps growing.
- **Widening.** A lone batch on an idle server (nothing else waiting, every worker idle) may
  run *wide*: on all the layout's cores in one worker, while the other workers are lent to it
  and take nothing until it finishes. It is done only where the start-up profile measured a
  real gain for that batch shape; any new arrival waits at most for that one batch.
- **Students.** For an ensemble, the policy picks the student count of each batch from the
  queue's pressure: the largest share of any waiting batch's slack that the work ahead of it
  (and it) will use.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from ...errors import DeadlineError, QueueFullError, RequestTooLargeError
from .buffer import Item, LengthBuffer, PendingBatch
from .policy import StudentPolicy
from .profile import RunTimeModel


@dataclass(slots=True, eq=False)
class Dispatch:
    """A batch sent to a worker, with what the batcher predicted for it."""

    worker: int
    batch: PendingBatch
    students: int
    predicted_s: float
    sent_at: float
    finish_at: float = 0.0  # predicted; updated when the batch ahead of it finishes
    calibration: float = 1.0  # the batcher's calibration factor when it was sent
    wide: bool = False  # runs on the cores of every worker (the others are lent to it)


@dataclass(slots=True)
class WorkerSlot:
    id: int
    alive: bool = False
    outstanding: list[Dispatch] = field(default_factory=list)
    lent_to: Dispatch | None = None  # a wide batch on another worker is using this one's cores

    def free_at(self, now: float) -> float:
        if self.outstanding:
            return max(now, self.outstanding[-1].finish_at)
        return max(now, self.lent_to.finish_at) if self.lent_to is not None else now

    @property
    def idle(self) -> bool:
        return self.alive and not self.outstanding and self.lent_to is None

    @property
    def can_queue(self) -> bool:
        """Alive and not lent: may take a batch now or in its pipe."""
        return self.alive and self.lent_to is None


class Batcher:
    """Owns the length buffer and the view of the workers; decides, never waits."""

    def __init__(
        self,
        *,
        buffer: LengthBuffer,
        model: RunTimeModel,
        policy: StudentPolicy,
        workers: int,
        pipeline_depth: int = 2,
        max_queue_items: int = 1024,
        max_queue_tokens: int = 131_072,
        lead_s: float = 0.001,
        safety_s: float = 0.002,
        widen: bool = False,
        widen_gain: float = 0.85,
    ) -> None:
        self.buffer = buffer
        self.model = model
        self.policy = policy
        self.slots = [WorkerSlot(i) for i in range(workers)]
        self.pipeline_depth = pipeline_depth
        self.max_queue_items = max_queue_items
        self.max_queue_tokens = max_queue_tokens
        self.lead_s = lead_s
        self.safety_s = safety_s
        self.widen = widen
        self.widen_gain = widen_gain  # widen only if predicted wide time ≤ this × narrow time
        self.calibration = 1.0
        self.wide_calibration = 1.0  # wide batches calibrate apart: borrowed cores may be busy
        self.lag_s = 0.0

    # -- state ---------------------------------------------------------------------------
    def cost(self, size: int, width: int, students: int) -> float:
        """Predicted seconds: the start-up profile times the live calibration factor."""
        return self.model.predict(size, width, students) * self.calibration

    def wide_cost(self, size: int, width: int, students: int) -> float | None:
        """Predicted seconds run wide, or None where widening is off or does not pay."""
        if not self.widen:
            return None
        wide = self.model.predict_wide(size, width, students)
        if wide is None:
            return None
        wide *= self.wide_calibration
        return wide if wide <= self.widen_gain * self.cost(size, width, students) else None

    def observe_lag(self, seconds: float) -> None:
        """How late the server reads a finished batch (its event loop is busy): fast up, slow down."""
        seconds = max(0.0, seconds)
        alpha = 0.5 if seconds > self.lag_s else 0.05
        self.lag_s = (1 - alpha) * self.lag_s + alpha * seconds

    def predict(self, batch: PendingBatch, students: int | None = None) -> float:
        return self.cost(batch.size, batch.width, students or self.policy.max_students)

    def observe(self, d: Dispatch, seconds: float) -> None:
        """Calibrate with a measured batch time: a shared machine runs slower than its profile.

        An exponential average of measured/predicted (clamped to [0.5, 8]) scales every
        prediction, so admission tracks the machine as it is now: it rises fast (a miss costs
        more than a refusal) and falls slowly.
        """
        if d.predicted_s <= 0 or seconds <= 0:
            return
        ratio = seconds / (d.predicted_s / d.calibration)
        if d.wide:  # its own factor: if the cores it borrows are busy, widening stops paying
            self.wide_calibration = self._calibrated(self.wide_calibration, ratio)
            return
        self.calibration = self._calibrated(self.calibration, ratio)
        # Drift back towards the narrow factor, so widening is tried again once the machine is quiet.
        self.wide_calibration += 0.02 * (self.calibration - self.wide_calibration)

    @staticmethod
    def _calibrated(current: float, ratio: float) -> float:
        alpha = 0.2 if ratio > current else 0.05
        return min(8.0, max(0.5, (1 - alpha) * current + alpha * ratio))

    def live_workers(self) -> int:
        return sum(1 for s in self.slots if s.alive)

    def in_flight(self) -> int:
        return sum(len(s.outstanding) for s in self.slots)

    def running_work(self, now: float) -> float:
        """Predicted seconds of work still ahead in batches already sent to workers."""
        return sum(max(0.0, d.finish_at - now) if i == 0 else d.predicted_s
                   for s in self.slots for i, d in enumerate(s.outstanding))

    def schedule(self, now: float, jobs: list[tuple[float, float, int]]) -> list[float]:
        """Predicted finish of each (deadline, cost, key) job, in deadline order.

        Replays the dispatch rule: jobs in deadline order, each on the worker that frees first
        (after what it already holds, pipelined batches included).
        """
        free = sorted(s.free_at(now) for s in self.slots if s.alive) or [now]
        finish = []
        for _, cost, _ in sorted(jobs, key=lambda j: j[0]):
            start = heapq.heappop(free)
            finish.append(start + cost)
            heapq.heappush(free, start + cost)
        return finish

    def jobs(self, students: int) -> list[tuple[float, float, int]]:
        return [(b.deadline, self.predict(b, students), b.id) for b in self.buffer.batches()]

    def pressure(self, now: float, students: int) -> float:
        """Worst share of a waiting batch's slack used up by its predicted finish (>1: a miss)."""
        jobs = sorted(self.jobs(students), key=lambda j: j[0])
        worst = 0.0
        for (deadline, _, _), end in zip(jobs, self.schedule(now, jobs), strict=True):
            slack = deadline - now
            if slack <= 0:
                return math.inf
            worst = max(worst, (end - now) / slack)
        return worst

    # -- admission -----------------------------------------------------------------------
    def admit(self, items: list[Item], now: float) -> None:
        """Queue the texts of one request, or refuse all of them.

        The texts join the open batches of their bins if that keeps every waiting batch on
        time; else they open new batches if that does; else the request is refused.
        """
        tokens = sum(i.length for i in items)
        if len(items) > self.max_queue_items or tokens > self.max_queue_tokens:
            raise RequestTooLargeError(
                f"this request has {len(items)} texts and {tokens} tokens; the server queues at most "
                f"{self.max_queue_items} texts and {self.max_queue_tokens} tokens: send fewer or shorter "
                "texts")
        m = self.policy.min_students
        base = self.jobs(m)
        workers = max(1, self.live_workers())
        backlog = self.running_work(now) + sum(cost for _, cost, _ in base)
        retry = max(1.0, math.ceil(backlog / workers))
        if len(self.buffer) + len(items) > self.max_queue_items:
            raise QueueFullError("the server's queue is full (too many texts waiting); retry later", retry)
        if self.buffer.tokens + tokens > self.max_queue_tokens:
            raise QueueFullError("the server's queue is full (too many tokens waiting); retry later", retry)
        if backlog <= 0 or not items:  # nothing ahead: even a slow text is best served now
            for item in items:
                self.buffer.add(item)
            return
        base_end = dict(zip((j[2] for j in sorted(base, key=lambda j: j[0])), self.schedule(now, base),
                            strict=True))
        margin = self.safety_s + self.lag_s
        late_before = {key for deadline, _, key in base if base_end[key] + margin > deadline}
        for join in (True, False):
            jobs, touched = self._with(items, base, m, join)
            ends = self.schedule(now, jobs)
            # Untouched batches that were late already may stay late; nothing may join them.
            if all(end + margin <= deadline or (key in late_before and key not in touched)
                   for (deadline, _, key), end in zip(sorted(jobs, key=lambda j: j[0]), ends, strict=True)):
                for item in items:
                    self.buffer.add(item, join=join)
                return
        own = max(self.schedule(now, self._with(items, base, m, True)[0]))
        raise DeadlineError(
            f"the server cannot answer within the latency target now (predicted "
            f"{(own - now) * 1e3:.0f} ms, target {(min(i.deadline for i in items) - now) * 1e3:.0f} ms); "
            "retry later", retry)

    def _with(self, items: list[Item], base: list[tuple[float, float, int]], students: int,
              join: bool) -> tuple[list[tuple[float, float, int]], set[int]]:
        """The waiting jobs with ``items`` added (joined or in new batches), and the changed ones."""
        grown: dict[int, tuple[int, int, float]] = {}
        fresh: dict[int, tuple[int, int, float]] = {}
        for item in items:
            target = self.buffer.target(item) if join else None
            if target is not None:  # a tighter deadline joining a batch makes the whole batch due sooner
                size, width, deadline = grown.get(target.id, (target.size, target.width, target.deadline))
                grown[target.id] = (size + 1, max(width, item.length), min(deadline, item.deadline))
            else:
                b = self.buffer.bin_of(item.length)
                size, width, deadline = fresh.get(b, (0, 0, item.deadline))
                fresh[b] = (size + 1, max(width, item.length), min(deadline, item.deadline))
        jobs = []
        for deadline, cost, key in base:
            if key in grown:
                size, width, deadline = grown[key]
                cost = self.cost(size, width, students)
            jobs.append((deadline, cost, key))
        for k, (size, width, deadline) in enumerate(fresh.values()):
            jobs.append((deadline, self.cost(size, width, students), -1 - k))
        return jobs, set(grown) | {-1 - k for k in range(len(fresh))}

    def requeue(self, items: list[Item]) -> None:
        """Put back texts of a batch whose worker died; they are never refused."""
        for item in items:
            self.buffer.add(item)

    # -- dispatch ------------------------------------------------------------------------
    def poll(self, now: float) -> list[Dispatch]:
        """Batches to send now; call after every arrival, completion and timer."""
        out: list[Dispatch] = []
        while len(self.buffer):
            idle = [s for s in self.slots if s.idle]
            if idle:
                batch = self.buffer.most_urgent()
                slot = idle[0]
            else:
                slot, batch = self._pipelined(now)
            if batch is None or slot is None:
                break
            out.append(self._send(slot, batch, now))
        return out

    def _pipelined(self, now: float) -> tuple[WorkerSlot | None, PendingBatch | None]:
        """A busy worker with room in its pipe and a batch that should not wait longer."""
        slots = [s for s in self.slots if s.can_queue and len(s.outstanding) < self.pipeline_depth]
        if not slots:
            return None, None
        slot = min(slots, key=lambda s: s.free_at(now))
        free = slot.free_at(now)
        batch = self.buffer.most_urgent()  # only the head of the deadline order: never overtake it
        if batch is None:
            return None, None
        late = batch.deadline - (free + self.predict(batch, self.policy.current)) <= 0
        if batch.closed or late or now >= free - self.lead_s:
            return slot, batch
        return None, None

    def _send(self, slot: WorkerSlot, batch: PendingBatch, now: float) -> Dispatch:
        students = self.policy.choose(lambda m: self.pressure(now, m)) if self.policy.max_students > 1 \
            else 1
        lent = self._lendable(slot, batch)
        wide = self.wide_cost(batch.size, batch.width, students) if lent is not None else None
        self.buffer.remove(batch)
        predicted = wide if wide is not None else self.predict(batch, students)
        d = Dispatch(slot.id, batch, students, predicted, now, wide=wide is not None,
                     calibration=self.wide_calibration if wide is not None else self.calibration)
        d.finish_at = slot.free_at(now) + predicted
        slot.outstanding.append(d)
        if d.wide:
            for other in lent or ():
                other.lent_to = d
        return d

    def _lendable(self, slot: WorkerSlot, batch: PendingBatch) -> list[WorkerSlot] | None:
        """The other workers a lone batch may borrow: all of them idle, nothing else waiting."""
        if not self.widen or slot.outstanding or len(self.buffer) != batch.size:
            return None
        others = [s for s in self.slots if s is not slot and s.alive]
        if not others or not all(s.idle for s in others):
            return None
        return others

    def _release(self, d: Dispatch) -> None:
        for s in self.slots:
            if s.lent_to is d:
                s.lent_to = None

    def next_due(self, now: float) -> float | None:
        """When a waiting batch becomes due for a busy worker's pipe (None: no timer needed)."""
        if not len(self.buffer):
            return None
        slots = [s for s in self.slots if s.can_queue and len(s.outstanding) < self.pipeline_depth]
        if not slots:
            return None
        return max(now, min(s.free_at(now) for s in slots) - self.lead_s)

    # -- completion and failure ----------------------------------------------------------
    def finished(self, worker: int, batch_id: int, now: float) -> Dispatch | None:
        slot = self.slots[worker]
        for k, d in enumerate(slot.outstanding):
            if d.batch.id == batch_id:
                del slot.outstanding[k]
                if d.wide:
                    self._release(d)
                if k == 0 and slot.outstanding:
                    nxt = slot.outstanding[0]
                    nxt.finish_at = now + nxt.predicted_s
                    for prev, cur in zip(slot.outstanding, slot.outstanding[1:], strict=False):
                        cur.finish_at = prev.finish_at + cur.predicted_s
                return d
        return None

    def worker_down(self, worker: int) -> list[Dispatch]:
        """Mark a worker dead and hand back what it held."""
        slot = self.slots[worker]
        slot.alive = False
        lost, slot.outstanding = slot.outstanding, []
        for d in lost:
            if d.wide:
                self._release(d)
        return lost

    def worker_up(self, worker: int) -> None:
        self.slots[worker].alive = True
