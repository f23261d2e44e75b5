"""Fakes at the serving seams: a run-time model with known costs, a fake backend for workers,
and a discrete-event simulation that drives the batcher with a fake clock (no sleeping)."""

from __future__ import annotations

import heapq
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertserve.runtime.base import Batch
from bertserve.serving.core.batcher import Batcher, Dispatch
from bertserve.serving.core.buffer import Item, LengthBuffer
from bertserve.serving.core.policy import StudentPolicy
from bertserve.serving.core.profile import RunTimeModel

# 1 ms fixed + 0.05 ms per token (no attention term); per student for ensembles.
PER_STUDENT = [0.001, 0.0, 0.00005, 0.0]


def cost_model(max_students: int = 1, wide_speedup: float | None = None) -> RunTimeModel:
    """A run-time model whose cost grows linearly with the student count.

    ``wide_speedup`` adds wide measurements: the per-token work runs that many times faster.
    """
    coef = {1: PER_STUDENT}
    if max_students > 1:
        coef[max_students] = [c * max_students for c in PER_STUDENT]
    wide = {}
    if wide_speedup is not None:
        wide = {m: [c[0], c[1], c[2] / wide_speedup, c[3]] for m, c in coef.items()}
    return RunTimeModel(coef, wide_coef=wide)


def make_batcher(*, workers: int = 1, max_students: int = 1, max_batch: int = 8, max_tokens: int = 4096,
                 bin_width: int = 16, depth: int = 2, max_items: int = 1000, max_tokens_queued: int = 10**6,
                 policy: StudentPolicy | None = None, wide_speedup: float | None = None) -> Batcher:
    return Batcher(
        buffer=LengthBuffer(bin_width=bin_width, max_batch=max_batch, max_tokens=max_tokens),
        model=cost_model(max_students, wide_speedup),
        widen=wide_speedup is not None,
        policy=policy or StudentPolicy(max_students),
        workers=workers,
        pipeline_depth=depth,
        max_queue_items=max_items,
        max_queue_tokens=max_tokens_queued,
    )


def item(length: int, now: float = 0.0, slo: float = 0.1, owner: object = None) -> Item:
    return Item(list(range(length)), now, now + slo, owner)


@dataclass
class Simulation:
    """Runs a batcher against fake workers whose batches take exactly the predicted time × slow."""

    batcher: Batcher
    slow: float = 1.0
    now: float = 0.0
    events: list = field(default_factory=list)
    dispatched: list[Dispatch] = field(default_factory=list)
    done: list[tuple[float, Item]] = field(default_factory=list)
    rejected: int = 0
    busy_until: dict[int, float] = field(default_factory=dict)
    _seq: int = 0

    def __post_init__(self) -> None:
        for slot in self.batcher.slots:
            self.batcher.worker_up(slot.id)

    def _push(self, t: float, kind: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, self._seq, kind, payload))

    def arrive(self, t: float, length: int, slo: float = 0.1) -> None:
        self._push(t, "arrive", (length, slo))

    def _start(self, d: Dispatch) -> None:
        self.dispatched.append(d)
        start = max(self.now, self.busy_until.get(d.worker, self.now))  # a pipelined batch waits
        end = start + d.predicted_s * self.slow
        self.busy_until[d.worker] = end
        self._push(end, "finish", d)

    def run(self, until: float = 1e9) -> None:
        while self.events and self.events[0][0] <= until:
            t, _, kind, payload = heapq.heappop(self.events)
            self.now = t
            if kind == "arrive":
                length, slo = payload
                try:
                    self.batcher.admit([item(length, t, slo)], t)
                except Exception:
                    self.rejected += 1
            elif kind == "finish":
                d = payload
                self.batcher.finished(d.worker, d.batch.id, t)
                self.done.extend((t, it) for it in d.batch.items)
            elif kind == "timer":
                pass
            for d in self.batcher.poll(self.now):
                self._start(d)
            due = self.batcher.next_due(self.now)
            if due is not None and due > self.now:
                self._push(due, "timer", None)


class FakeBackend:
    """A backend for worker processes: output row = Σ_{k<m} (k+1)·mean(ids)/1000 in every column.

    ``max_students`` comes from the BERTSERVE_FAKE_STUDENTS environment variable (default 4).
    """

    name = "fake"

    def __init__(self, max_students: int) -> None:
        self.max_students = max_students
        self.output_dim = 8

    def run(self, batch: Batch) -> np.ndarray:
        m = batch.students or self.max_students
        mean = (batch.input_ids * batch.attention_mask).sum(1) / batch.attention_mask.sum(1)
        scale = sum(k + 1 for k in range(m)) / 1000.0
        return np.repeat((mean * scale)[:, None], self.output_dim, axis=1).astype(np.float32)


def fake_factory(spec: object) -> FakeBackend:
    return FakeBackend(int(os.environ.get("BERTSERVE_FAKE_STUDENTS", "4")))


class ThreadedFakeBackend(FakeBackend):
    """A one-student FakeBackend that takes time (1 ms + 0.1 ms per padded token, split among its
    threads) and writes its thread count into the last column, so a test sees which ran."""

    def __init__(self, threads: int) -> None:
        super().__init__(1)
        self.threads = threads

    def run(self, batch: Batch) -> np.ndarray:
        time.sleep(0.001 + 1e-4 * batch.input_ids.size / self.threads)
        out = super().run(batch)
        out[:, -1] = self.threads
        return out


def threaded_factory(spec: object) -> ThreadedFakeBackend:
    return ThreadedFakeBackend(int(getattr(spec, "threads", 1)))


class SpinReportingFakeBackend(ThreadedFakeBackend):
    """A ThreadedFakeBackend that writes its worker's pipe spin (ms) into the last column."""

    def __init__(self, spin_ms: float) -> None:
        super().__init__(1)
        self.spin_ms = spin_ms

    def run(self, batch: Batch) -> np.ndarray:
        out = super().run(batch)
        out[:, -1] = self.spin_ms
        return out


def spin_factory(spec: object) -> SpinReportingFakeBackend:
    return SpinReportingFakeBackend(float(getattr(spec, "spin_s", 0.0)) * 1e3)


class SlowFakeBackend(FakeBackend):
    """A one-student FakeBackend whose every batch takes BERTSERVE_FAKE_SLEEP_S seconds."""

    def __init__(self, seconds: float) -> None:
        super().__init__(1)
        self.seconds = seconds

    def run(self, batch: Batch) -> np.ndarray:
        time.sleep(self.seconds)
        return super().run(batch)


def slow_factory(spec: object) -> SlowFakeBackend:
    return SlowFakeBackend(float(os.environ.get("BERTSERVE_FAKE_SLEEP_S", "0.3")))


class DyingFakeBackend(FakeBackend):
    """Warms up (three batches), then dies on the next one, the first of the start-up profile."""

    def __init__(self) -> None:
        super().__init__(1)
        self.runs = 0

    def run(self, batch: Batch) -> np.ndarray:
        self.runs += 1
        if self.runs > 3:
            os._exit(3)  # as an OOM kill would: no goodbye
        return super().run(batch)


def dying_factory(spec: object) -> DyingFakeBackend:
    return DyingFakeBackend()


def breakable_factory(spec: object) -> SlowFakeBackend:
    """A SlowFakeBackend that cannot load while the file BERTSERVE_FAKE_BROKEN names exists."""
    if Path(os.environ["BERTSERVE_FAKE_BROKEN"]).exists():
        raise RuntimeError("the weights are gone")
    return slow_factory(spec)


class RaisingFakeBackend(FakeBackend):
    """A one-student FakeBackend that fails on texts it is told to: a batch with a text longer
    than 40 tokens raises a bertserve TextTooLongError, one longer than 20 a plain RuntimeError
    (after the start-up profile, whose batches are the fake's own)."""

    def __init__(self) -> None:
        super().__init__(1)
        self.armed = False

    def run(self, batch: Batch) -> np.ndarray:
        from bertserve.errors import TextTooLongError

        longest = int(batch.lengths.max())
        if self.armed and longest > 40:
            raise TextTooLongError(f"the backend refuses {longest} tokens")
        if self.armed and longest > 20:
            raise RuntimeError("a kernel failed")
        if batch.input_ids.shape[0] == 1 and longest == 3:  # the test's "arm" text: [CLS] x [SEP]
            self.armed = True
        return super().run(batch)


def raising_factory(spec: object) -> RaisingFakeBackend:
    return RaisingFakeBackend()
