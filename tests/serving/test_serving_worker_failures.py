"""Workers that die or cannot load: the server says so and answers, it never hangs.

Real worker processes with fake backends (serving_fakes) that die at a chosen moment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_server import ThreadServer, assert_documented, fake_server

from bertserve.config import ServerSettings
from bertserve.errors import ArtifactError
from bertserve.serving.core.engine import Engine

pytestmark = pytest.mark.slow


def test_a_worker_dying_while_profiling_fails_the_start_with_a_clear_error(minilm_dir: Path) -> None:
    settings = ServerSettings(model=str(minilm_dir), backend="torch", workers=1, threads=1,
                              profile_max_tokens=32, profile_repeats=1)
    engine = Engine(settings, backend_factory="serving_fakes:dying_factory")

    async def start() -> None:
        try:
            with pytest.raises(ArtifactError, match="died while profiling"):
                await asyncio.wait_for(engine.start(), 120)  # before: waited for ever
        finally:
            await engine.stop()

    asyncio.run(start())


@pytest.fixture
def breakable(minilm_dir: Path, tmp_path: Path) -> Iterator[tuple[ThreadServer, Path]]:
    marker = tmp_path / "broken"
    env = {"BERTSERVE_FAKE_BROKEN": str(marker), "BERTSERVE_FAKE_SLEEP_S": "0.5"}
    with fake_server(minilm_dir, "breakable_factory", env, profile_max_tokens=32, max_batch_size=4) as srv:
        yield srv, marker


def test_no_worker_able_to_load_fails_queued_requests_then_recovers(
        breakable: tuple[ThreadServer, Path]) -> None:
    srv, marker = breakable
    pid = httpx.get(f"{srv.url}/health").json()["workers"][0]
    answers: list[httpx.Response] = []
    post = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{srv.url}/embed", json={"texts": ["lost with its worker"], "slo_ms": 60_000}, timeout=60)))
    post.start()
    time.sleep(0.2)  # its batch is running
    marker.touch()  # from now on a worker cannot load the model
    os.kill(pid, signal.SIGKILL)
    post.join(timeout=30)
    assert not post.is_alive(), "the request hung"
    assert answers[0].status_code == 503 and "no worker can run the model" in answers[0].text
    assert_documented(srv.url, "/embed", "post", answers[0])
    health = httpx.get(f"{srv.url}/health")
    assert health.status_code == 503 and "the weights are gone" in health.json()["error"]
    assert_documented(srv.url, "/health", "get", health)
    assert httpx.get(f"{srv.url}/v2/health/ready").status_code != 200
    assert httpx.post(f"{srv.url}/embed", json={"texts": ["meanwhile"]}).status_code == 503
    marker.unlink()  # the weights are back: the next restart loads them
    end = time.monotonic() + 40
    while httpx.get(f"{srv.url}/health").status_code != 200 and time.monotonic() < end:
        time.sleep(0.2)
    health = httpx.get(f"{srv.url}/health")
    assert health.status_code == 200 and health.json()["error"] is None  # the old error is gone
    assert httpx.post(f"{srv.url}/embed", json={"texts": ["served again"]}, timeout=30).status_code == 200


def test_a_worker_error_crosses_the_pipe_as_its_class(minilm_dir: Path) -> None:
    """A bertserve error raised in a worker keeps its class (and so its 4xx status); any other
    exception becomes a 500 backend_error. The request itself never hangs."""
    with fake_server(minilm_dir, "raising_factory", profile_max_tokens=32, max_batch_size=4) as srv:
        assert httpx.post(f"{srv.url}/embed", json={"texts": ["x"]}).status_code == 200  # arms it
        short = httpx.post(f"{srv.url}/embed", json={"texts": ["a few words"]})
        assert short.status_code == 200
        refused = httpx.post(f"{srv.url}/embed", json={"texts": ["word " * 60]})
        assert refused.status_code == 413, refused.text
        assert_documented(srv.url, "/embed", "post", refused)
        assert refused.json()["error"]["type"] == "text_too_long"
        assert "refuses" in refused.json()["error"]["message"]
        broken = httpx.post(f"{srv.url}/embed", json={"texts": ["word " * 30]})
        assert broken.status_code == 500
        assert_documented(srv.url, "/embed", "post", broken)
        assert broken.json()["error"]["type"] == "backend_error"
        assert "RuntimeError: a kernel failed" in broken.json()["error"]["message"]
