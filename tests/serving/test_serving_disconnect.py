"""Clients that hang up (their queued texts are dropped unrun; a 499, not a 500), and requests
larger than the whole queue or the per-request token limit (413 at once, even on an idle
server: a retry cannot help).

A real server (uvicorn in a thread) over real worker processes whose fake backend takes 0.5 s
a batch, so a second request is sure to wait in the buffer while its client goes away.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_server import ThreadServer, fake_server

pytestmark = pytest.mark.slow
BATCH_S = 0.5


@pytest.fixture(scope="module")
def server(minilm_dir: Path) -> Iterator[ThreadServer]:
    with fake_server(minilm_dir, "slow_factory", {"BERTSERVE_FAKE_SLEEP_S": str(BATCH_S)},
                     profile_max_tokens=32, max_batch_size=4, max_queue_tokens=200,
                     max_tokens_per_request=300) as srv:
        yield srv


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def raw_post(port: int, body: bytes, declared: int | None = None) -> socket.socket:
    """Send a POST /embed by hand (so the test decides when the connection closes)."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared if declared is not None else len(body)}\r\n\r\n")
    sock.sendall(head.encode() + body)
    return sock


def test_a_request_whose_client_left_is_dropped_before_it_runs(server: ThreadServer) -> None:
    computed = 'bertserve_texts_by_students_total{students="1"}'
    dropped = "bertserve_abandoned_texts_total"
    key = 'bertserve_requests_total{api="simple",status="499"}'
    before = {name: metric(server.url, name) for name in (computed, dropped, key)}
    first = threading.Thread(target=httpx.post, args=(f"{server.url}/embed",),
                             kwargs={"json": {"texts": ["keeps the worker busy"]}, "timeout": 30})
    first.start()
    time.sleep(0.1)  # the worker is now busy for about BATCH_S
    body = json.dumps({"texts": ["never", "to be", "computed"], "slo_ms": 60_000}).encode()
    raw_post(server.port, body).close()  # waits in the buffer; its client hangs up
    first.join()
    time.sleep(2 * BATCH_S)  # time enough to run it, had it stayed
    assert metric(server.url, computed) == before[computed] + 1  # the first request's text only
    assert metric(server.url, dropped) == before[dropped] + 3
    assert metric(server.url, key) == before[key] + 1
    assert metric(server.url, "bertserve_queue_depth") == 0
    ok = httpx.post(f"{server.url}/embed", json={"texts": ["still served"]}, timeout=30)
    assert ok.status_code == 200


def test_a_client_gone_while_sending_its_body_is_a_499_not_a_500(server: ThreadServer) -> None:
    key_499 = 'bertserve_requests_total{api="simple",status="499"}'
    key_500 = 'bertserve_requests_total{api="simple",status="500"}'
    before = metric(server.url, key_499), metric(server.url, key_500)
    raw_post(server.port, b'{"texts": ', declared=1000).close()  # 10 of 1,000 bytes, then gone
    end = time.monotonic() + 10
    while metric(server.url, key_499) == before[0] and time.monotonic() < end:
        time.sleep(0.05)
    assert metric(server.url, key_499) == before[0] + 1
    assert metric(server.url, key_500) == before[1]


def test_a_request_larger_than_the_whole_queue_gets_413_not_429(server: ThreadServer) -> None:
    res = httpx.post(f"{server.url}/embed", json={"texts": ["word " * 100] * 2}, timeout=30)
    assert res.status_code == 413 and "Retry-After" not in res.headers
    assert "texts and 200 tokens: send fewer or shorter texts" in res.json()["error"]["message"]


def test_a_request_over_the_token_limit_gets_413_naming_the_flag(server: ThreadServer) -> None:
    res = httpx.post(f"{server.url}/embed", json={"texts": ["word " * 100] * 4}, timeout=30)
    assert res.status_code == 413 and "--max-tokens-per-request" in res.json()["error"]["message"]
