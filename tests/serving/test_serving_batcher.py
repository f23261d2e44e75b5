"""SLO-aware batcher against a fake cost model and a fake clock (no timing assertions)."""

from __future__ import annotations

import random

import pytest
from serving_fakes import Simulation, item, make_batcher

from bertserve.errors import DeadlineError, OverloadedError, QueueFullError, RequestTooLargeError


def up(batcher):
    for slot in batcher.slots:
        batcher.worker_up(slot.id)
    return batcher


def test_idle_workers_get_work_at_once() -> None:
    b = up(make_batcher(workers=2))
    b.admit([item(20)], 0.0)
    first = b.poll(0.0)
    b.admit([item(20)], 0.0)
    second = b.poll(0.0)
    assert [(d.worker, d.batch.size) for d in first + second] == [(0, 1), (1, 1)]
    assert b.next_due(0.0) is None  # nothing waits


def test_texts_wait_in_one_batch_while_the_worker_is_busy() -> None:
    b = up(make_batcher(workers=1, depth=1))
    b.admit([item(20)], 0.0)
    (d,) = b.poll(0.0)
    for _ in range(3):
        b.admit([item(18, now=0.0005)], 0.0005)
    assert b.poll(0.0005) == []
    assert [x.size for x in b.buffer.batches()] == [3]
    b.finished(0, d.batch.id, 0.002)
    (nxt,) = b.poll(0.002)
    assert nxt.batch.size == 3 and nxt.batch.width == 18


def test_pipelined_batch_is_sent_just_before_the_worker_frees() -> None:
    b = up(make_batcher(workers=1, depth=2))
    b.admit([item(20)], 0.0)
    (d,) = b.poll(0.0)  # predicted 1 ms + 20 × 0.05 ms = 2 ms
    assert d.finish_at == pytest.approx(0.002)
    b.admit([item(20, now=0.0002)], 0.0002)
    assert b.poll(0.0002) == []
    assert b.next_due(0.0002) == pytest.approx(0.001)  # finish − lead
    (p,) = b.poll(0.001)
    assert p.worker == 0 and p.finish_at == pytest.approx(0.004)
    b.finished(0, d.batch.id, 0.003)  # ran late: the next one's predicted finish moves
    assert b.slots[0].outstanding[0].finish_at == pytest.approx(0.005)


def test_full_or_late_batches_go_into_a_busy_workers_pipe_at_once() -> None:
    b = up(make_batcher(workers=1, depth=2, max_batch=2))
    b.admit([item(20)], 0.0)
    b.poll(0.0)
    b.admit([item(20), item(20)], 0.0)  # fills a batch of 2
    (full,) = b.poll(0.0)
    assert full.batch.size == 2
    late = up(make_batcher(workers=1, depth=2))
    late.admit([item(20)], 0.0)
    (running,) = late.poll(0.0)
    late.admit([item(20, slo=0.0065)], 0.0)  # fits: 2 ms ahead + 2 ms own + 2 ms safety < 6.5 ms
    assert late.poll(0.0001) == []  # not due before the worker's finish − lead
    running.finish_at = 0.006  # the worker runs slower than predicted
    assert len(late.poll(0.0002)) == 1  # now waiting would miss the deadline: send at once


def test_earliest_deadline_runs_first() -> None:
    b = up(make_batcher(workers=1, depth=1))
    b.admit([item(20)], 0.0)
    (d,) = b.poll(0.0)
    b.admit([item(100, now=0.0, slo=0.5)], 0.0)
    b.admit([item(5, now=0.001, slo=0.05)], 0.001)
    b.finished(0, d.batch.id, 0.002)
    (nxt,) = b.poll(0.002)
    assert nxt.batch.width == 5


def test_admission_refuses_what_cannot_meet_its_deadline() -> None:
    b = up(make_batcher(workers=1, depth=1, max_batch=8))
    b.admit([item(20)], 0.0)
    b.poll(0.0)
    for _ in range(10):  # batches of 8 and 2: done at 2 + 81 + 21 = 104 ms (+2 ms safety) ≤ 108 ms
        b.admit([item(200, slo=0.108)], 0.0)
    with pytest.raises(OverloadedError) as info:
        b.admit([item(60, now=0.001, slo=0.108)], 0.001)  # would end at 108 (+2) ms, deadline 109 ms
    assert info.value.retry_after_s >= 1
    assert len(b.buffer) == 10
    b.admit([item(60, now=0.001, slo=0.2)], 0.001)  # a looser deadline still fits
    # A tighter one would join that batch and make it run first, which would push the batches of
    # 200 past their deadline: refused (it used to be checked against the batch's looser deadline).
    with pytest.raises(DeadlineError):
        b.admit([item(60, now=0.001, slo=0.05)], 0.001)
    assert len(b.buffer) == 11


def test_idle_server_accepts_a_slow_text() -> None:
    b = up(make_batcher(workers=1))
    b.admit([item(500, slo=0.001)], 0.0)  # cannot meet 1 ms, but nothing is ahead of it
    assert len(b.poll(0.0)) == 1


def test_queue_bounds_refuse_by_texts_and_by_tokens() -> None:
    b = up(make_batcher(workers=1, depth=1, max_items=3, max_tokens_queued=10**6))
    b.admit([item(5)], 0.0)
    b.poll(0.0)
    b.admit([item(5, slo=10), item(5, slo=10), item(5, slo=10)], 0.0)
    with pytest.raises(OverloadedError, match="too many texts"):
        b.admit([item(5, slo=10)], 0.0)
    t = up(make_batcher(workers=1, depth=1, max_tokens_queued=50))
    t.admit([item(5)], 0.0)
    t.poll(0.0)
    t.admit([item(40, slo=10)], 0.0)
    with pytest.raises(OverloadedError, match="too many tokens"):
        t.admit([item(5, slo=10), item(6, slo=10)], 0.0)
    assert len(t.buffer) == 1  # all of a request or nothing


def test_a_request_larger_than_the_whole_queue_is_refused_for_good_even_when_idle() -> None:
    b = up(make_batcher(workers=1, max_items=3, max_tokens_queued=50))
    with pytest.raises(RequestTooLargeError, match="at most 3 texts"):  # 413: a retry cannot help
        b.admit([item(5)] * 4, 0.0)
    with pytest.raises(RequestTooLargeError, match="51 tokens"):
        b.admit([item(51)], 0.0)
    assert len(b.buffer) == 0
    b.admit([item(5)] * 3, 0.0)  # exactly the bounds: fine


def test_a_dead_workers_batches_come_back_and_run_elsewhere() -> None:
    b = up(make_batcher(workers=2, depth=1))
    b.admit([item(20)], 0.0)
    (d,) = b.poll(0.0)
    lost = b.worker_down(d.worker)
    assert [x.batch for x in lost] == [d.batch]
    b.requeue(d.batch.items)
    (again,) = b.poll(0.001)
    assert again.worker != d.worker and again.batch.items == d.batch.items
    assert b.poll(0.001) == [] and b.live_workers() == 1


def test_simulated_flood_rejects_some_and_every_accepted_text_meets_its_deadline() -> None:
    rng = random.Random(0)
    sim = Simulation(make_batcher(workers=2, max_batch=16, depth=1))
    t = 0.0
    for _ in range(3000):  # ~3000 req/s of 5–60-token texts: beyond capacity
        t += rng.expovariate(3000)
        sim.arrive(t, rng.randint(5, 60), slo=0.05)
    sim.run()
    assert sim.rejected > 0
    assert len(sim.done) + sim.rejected == 3000
    assert all(done_at <= it.deadline + 1e-9 for done_at, it in sim.done)
    sizes = [d.batch.size for d in sim.dispatched]
    assert max(sizes) > 4  # batching happened
    assert sim.batcher.in_flight() == 0 and len(sim.batcher.buffer) == 0
    assert all(d.batch.width - min(i.length for i in d.batch.items) < 16 for d in sim.dispatched)


def test_simulated_light_load_runs_every_text_alone_and_without_waiting() -> None:
    sim = Simulation(make_batcher(workers=2))
    for k in range(50):
        sim.arrive(k * 0.1, 30)  # 10 req/s
    sim.run()
    assert sim.rejected == 0 and all(d.batch.size == 1 for d in sim.dispatched)
    assert all(d.sent_at == d.batch.items[0].arrival for d in sim.dispatched)


def test_refusals_say_why_by_their_class() -> None:
    """The engine counts rejections by reason from the error's class, never from its text."""
    b = up(make_batcher(workers=1, depth=1, max_items=2, max_tokens_queued=10**6))
    b.admit([item(20)], 0.0)
    b.poll(0.0)
    b.admit([item(200, slo=0.05)], 0.0)
    with pytest.raises(DeadlineError) as late:
        b.admit([item(200, now=0.001, slo=0.003)], 0.001)
    b.admit([item(5, slo=10)], 0.0)
    with pytest.raises(QueueFullError) as full:
        b.admit([item(5, slo=10)], 0.0)
    assert (late.value.reason, full.value.reason) == ("slo", "queue_full")
    assert isinstance(late.value, OverloadedError) and isinstance(full.value, OverloadedError)
