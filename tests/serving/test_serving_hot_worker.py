"""The hot worker: worker 0, the batcher's first choice, stays awake longer than the others.

Real worker processes with a fake backend that reports the spin its worker was started with.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from serving_server import fake_server


def test_lone_requests_go_to_the_hot_worker_and_a_crowd_reaches_the_others(minilm_dir: Path) -> None:
    with fake_server(minilm_dir, "spin_factory", workers=2, profile_max_tokens=256, worker_spin_ms=1,
                     hot_spin_ms=40) as srv:
        lone = [httpx.post(f"{srv.url}/embed", json={"texts": [f"message {i}"]}).json() for i in range(5)]
        assert [a["embeddings"][0][-1] for a in lone] == [40.0] * 5  # idle server: worker 0, hot

        texts = [f"message number {i} " * (1 + i % 7) for i in range(40)]
        with ThreadPoolExecutor(16) as pool:
            crowd = list(pool.map(lambda t: httpx.post(
                f"{srv.url}/embed", json={"texts": [t], "slo_ms": 10_000}, timeout=30).json(), texts))
        assert {a["embeddings"][0][-1] for a in crowd} == {40.0, 1.0}  # both workers, each its spin
