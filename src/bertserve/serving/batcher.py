"""SLO-aware dynamic batching: admission, which batch runs next, on which worker, with how many students.

Pure decision logic with no I/O and no clock of its own (every call takes ``now``), so it is
tested with a fake clock and driven by the engine in production.

- **Admission.** A request is refused (:class:`OverloadedError`, → 429 with Retry-After) when
  the queue is at its bounds (texts, tokens) or when the predicted finish of its texts (the
  work already queued plus its own, spread over the live workers, with the fewest students
  allowed) falls after its deadline. An idle server accepts anything that fits the bounds.
- **Dispatch.** An idle worker takes the most urgent batch at once (earliest deadline of its
  oldest member): no fixed wait window. A busy worker may also hold a second batch in its pipe
  (``pipeline_depth``), so it starts the next batch without a round trip to the server; that
  batch is sent when it is full, or just before the worker is predicted to finish, or when its
  slack (deadline − predicted finish) is gone. Until then it keeps growing.
- **Students.** For an ensemble, the policy picks the student count of each batch from the
  queue's pressure: the largest share of any waiting batch's slack that the work ahead of it
  (and it) will use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import OverloadedError
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


@dataclass(slots=True)
class WorkerSlot:
    id: int
    alive: bool = False
    outstanding: list[Dispatch] = field(default_factory=list)

    def free_at(self, now: float) -> float:
        return max(now, self.outstanding[-1].finish_at) if self.outstanding else now


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
    ) -> None:
        self.buffer = buffer
        self.model = model
        self.policy = policy
        self.slots = [WorkerSlot(i) for i in range(workers)]
        self.pipeline_depth = pipeline_depth
        self.max_queue_items = max_queue_items
        self.max_queue_tokens = max_queue_tokens
        self.lead_s = lead_s

    # -- state ---------------------------------------------------------------------------
    def predict(self, batch: PendingBatch, students: int | None = None) -> float:
        return self.model.predict(batch.size, batch.width, students or self.policy.max_students)

    def live_workers(self) -> int:
        return sum(1 for s in self.slots if s.alive)

    def in_flight(self) -> int:
        return sum(len(s.outstanding) for s in self.slots)

    def running_work(self, now: float) -> float:
        """Predicted seconds of work still ahead in batches already sent to workers."""
        return sum(max(0.0, d.finish_at - now) if i == 0 else d.predicted_s
                   for s in self.slots for i, d in enumerate(s.outstanding))

    def pressure(self, now: float, students: int) -> float:
        """Worst share of a waiting batch's slack used by the work up to its end (>1: a miss)."""
        workers = max(1, self.live_workers())
        work = self.running_work(now)
        worst = 0.0
        for batch in sorted(self.buffer.batches(), key=lambda b: b.deadline):
            work += self.predict(batch, students)
            slack = batch.deadline - now
            if slack <= 0:
                return math.inf
            worst = max(worst, (work / workers) / slack)
        return worst

    # -- admission -----------------------------------------------------------------------
    def admit(self, items: list[Item], now: float) -> None:
        """Queue the texts of one request, or refuse all of them."""
        tokens = sum(i.length for i in items)
        backlog = self.running_work(now) + sum(self.predict(b, self.policy.min_students)
                                               for b in self.buffer.batches())
        workers = max(1, self.live_workers())
        retry = max(1.0, math.ceil(backlog / workers))
        if len(self.buffer) + len(items) > self.max_queue_items:
            raise OverloadedError("the server's queue is full (too many texts waiting); retry later", retry)
        if self.buffer.tokens + tokens > self.max_queue_tokens:
            raise OverloadedError("the server's queue is full (too many tokens waiting); retry later", retry)
        if backlog > 0 and items:
            m = self.policy.min_students
            own = [self.model.predict(1, i.length, m) for i in items]
            finish = now + max((backlog + sum(own)) / workers, max(own))
            deadline = min(i.deadline for i in items)
            if finish > deadline:
                raise OverloadedError(
                    f"the server cannot answer within the latency target now (predicted "
                    f"{(finish - now) * 1e3:.0f} ms, target {(deadline - now) * 1e3:.0f} ms); retry later",
                    retry)
        for item in items:
            self.buffer.add(item)

    def requeue(self, items: list[Item]) -> None:
        """Put back texts of a batch whose worker died; they are never refused."""
        for item in items:
            self.buffer.add(item)

    # -- dispatch ------------------------------------------------------------------------
    def poll(self, now: float) -> list[Dispatch]:
        """Batches to send now; call after every arrival, completion and timer."""
        out: list[Dispatch] = []
        while len(self.buffer):
            idle = [s for s in self.slots if s.alive and not s.outstanding]
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
        slots = [s for s in self.slots if s.alive and len(s.outstanding) < self.pipeline_depth]
        if not slots:
            return None, None
        slot = min(slots, key=lambda s: s.free_at(now))
        free = slot.free_at(now)
        due = []
        for batch in self.buffer.batches():
            late = batch.deadline - (free + self.predict(batch, self.policy.current)) <= 0
            if batch.closed or late or now >= free - self.lead_s:
                due.append(batch)
        if not due:
            return None, None
        return slot, min(due, key=lambda b: (b.deadline, -b.size))

    def _send(self, slot: WorkerSlot, batch: PendingBatch, now: float) -> Dispatch:
        students = self.policy.choose(lambda m: self.pressure(now, m)) if self.policy.max_students > 1 \
            else 1
        self.buffer.remove(batch)
        predicted = self.predict(batch, students)
        d = Dispatch(slot.id, batch, students, predicted, now)
        d.finish_at = slot.free_at(now) + predicted
        slot.outstanding.append(d)
        return d

    def next_due(self, now: float) -> float | None:
        """When a waiting batch becomes due for a busy worker's pipe (None: no timer needed)."""
        if not len(self.buffer):
            return None
        slots = [s for s in self.slots if s.alive and len(s.outstanding) < self.pipeline_depth]
        if not slots:
            return None
        return max(now, min(s.free_at(now) for s in slots) - self.lead_s)

    # -- completion and failure ----------------------------------------------------------
    def finished(self, worker: int, batch_id: int, now: float) -> Dispatch | None:
        slot = self.slots[worker]
        for k, d in enumerate(slot.outstanding):
            if d.batch.id == batch_id:
                del slot.outstanding[k]
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
        return lost

    def worker_up(self, worker: int) -> None:
        self.slots[worker].alive = True
