"""Widening: a lone batch on an idle server borrows the other workers' cores.

The batcher decides (fake cost model, fake clock); the engine test runs real worker processes
with a fake backend whose speed depends on its thread count and which reports that count.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_fakes import item, make_batcher
from serving_server import ThreadServer, fake_server

from bertserve.tokenizer import TextTokenizer


def up(batcher):
    for slot in batcher.slots:
        batcher.worker_up(slot.id)
    return batcher


def test_lone_batch_on_an_idle_server_runs_wide_and_borrows_the_other_worker() -> None:
    b = up(make_batcher(workers=2, wide_speedup=2.0))
    b.admit([item(40)], 0.0)
    (d,) = b.poll(0.0)
    assert d.wide and d.predicted_s == pytest.approx(0.001 + 40 * 0.00005 / 2)
    assert b.slots[1].lent_to is d
    b.admit([item(40, now=0.0005)], 0.0005)
    assert b.poll(0.0005) == []  # the lent worker takes nothing while the wide batch runs
    assert b.schedule(0.0005, [(0.1, 0.001, 0)]) == [pytest.approx(d.finish_at + 0.001)]
    b.finished(0, d.batch.id, 0.002)
    assert b.slots[1].lent_to is None
    (nxt,) = b.poll(0.002)
    assert nxt.wide  # lone again, and both workers are idle


def test_no_widening_when_others_wait_or_work_or_it_does_not_pay() -> None:
    b = up(make_batcher(workers=2, wide_speedup=2.0))
    b.admit([item(40), item(100)], 0.0)  # two bins: two batches waiting
    first, second = b.poll(0.0)
    assert not first.wide and not second.wide
    busy = up(make_batcher(workers=2, wide_speedup=2.0))
    busy.admit([item(40), item(100)], 0.0)
    busy.poll(0.0)
    busy.finished(0, busy.slots[0].outstanding[0].batch.id, 0.001)
    busy.admit([item(40, now=0.001)], 0.001)
    (d,) = busy.poll(0.001)
    assert d.worker == 0 and not d.wide  # worker 1 is still working
    no_gain = up(make_batcher(workers=2, wide_speedup=1.05))
    no_gain.admit([item(40)], 0.0)
    (d,) = no_gain.poll(0.0)
    assert not d.wide and no_gain.slots[1].lent_to is None
    off = up(make_batcher(workers=2))
    off.admit([item(40)], 0.0)
    assert not off.poll(0.0)[0].wide
    single = up(make_batcher(workers=1, wide_speedup=2.0))
    single.admit([item(40)], 0.0)
    assert not single.poll(0.0)[0].wide  # no other worker to borrow from


def test_a_dead_wide_worker_gives_the_borrowed_cores_back() -> None:
    b = up(make_batcher(workers=2, wide_speedup=2.0))
    b.admit([item(40)], 0.0)
    (d,) = b.poll(0.0)
    assert d.wide
    lost = b.worker_down(0)
    assert lost == [d] and b.slots[1].lent_to is None
    b.requeue(list(d.batch.items))
    (again,) = b.poll(0.001)
    assert again.worker == 1 and not again.wide  # the only live worker has nobody to borrow


@pytest.fixture(scope="module")
def server(minilm_dir: Path) -> Iterator[ThreadServer]:
    with fake_server(minilm_dir, "threaded_factory", workers=2, profile_max_tokens=256, widen=True) as srv:
        yield srv


def expected(minilm_dir: Path, text: str) -> float:
    return float(np.mean(TextTokenizer(minilm_dir, 256).encode([text]).ids[0])) / 1000.0


def widened(srv: ThreadServer) -> float:
    text = httpx.get(f"{srv.url}/metrics").text
    return float(next(ln.split()[-1] for ln in text.splitlines()
                      if ln.startswith("bertserve_widened_batches_total")))


@pytest.mark.slow
def test_engine_runs_a_lone_request_on_both_cores_and_a_crowd_on_one_each(
        server: ThreadServer, minilm_dir: Path) -> None:
    text = "a long quiet message " * 6
    before = widened(server)
    body = httpx.post(f"{server.url}/embed", json={"texts": [text]}).json()
    row = body["embeddings"][0]
    assert row[0] == pytest.approx(expected(minilm_dir, text), rel=1e-6)
    assert row[-1] == 2  # ran on the wide backend: the threads of both workers
    assert widened(server) == before + 1

    texts = [f"message number {i} " * (1 + i % 7) for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: httpx.post(
            f"{server.url}/embed", json={"texts": [t], "slo_ms": 10_000}, timeout=30).json(), texts))
    for t, a in zip(texts, answers, strict=True):
        assert a["embeddings"][0][0] == pytest.approx(expected(minilm_dir, t), rel=1e-6)
    threads = [a["embeddings"][0][-1] for a in answers]
    assert 1 in threads  # under concurrency the workers run their own batches side by side


def test_widening_stops_when_wide_batches_run_slow_and_is_tried_again_later() -> None:
    b = up(make_batcher(workers=2, wide_speedup=2.0))
    for step in range(10):  # the borrowed core is busy: wide batches take the narrow time
        now = step * 0.01
        b.admit([item(40, now=now)], now)
        (d,) = b.poll(now)
        if not d.wide:
            break
        b.finished(0, d.batch.id, now + 0.001)
        b.observe(d, d.predicted_s / d.calibration * 2.0)
    else:
        pytest.fail("widening never stopped although it did not pay")
    assert b.calibration == 1.0  # narrow predictions are not blamed for the wide batches
    for _ in range(300):  # narrow batches on time: the wide factor drifts back
        b.observe(d, d.predicted_s / d.calibration)
    b.finished(d.worker, d.batch.id, 1.0)
    b.admit([item(40, now=1.0)], 1.0)
    assert b.poll(1.0)[0].wide
