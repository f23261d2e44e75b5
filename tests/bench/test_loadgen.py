"""The scheduler is open-loop: it sends on schedule whatever the server does (fake clock, fake server)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from bertserve.bench.client import HttpError
from bertserve.bench.loadgen import LoadOptions, Outcome, late_warning, run_phase, run_workload
from bertserve.bench.workload import Phase, Workload


class FakeClock:
    """Virtual time: sleeping advances it at once, so nothing here waits for real."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # like a real loop: tasks already due run before the timer fires
        self.t += seconds
        await asyncio.sleep(0)


class GatedServer:
    """Records when each body arrives and answers nobody until ``gate`` is opened."""

    def __init__(self, clock: FakeClock, fail: set[bytes] = frozenset()) -> None:
        self.clock = clock
        self.gate = asyncio.Event()
        self.arrived: list[tuple[float, bytes]] = []
        self.fail = fail

    async def __call__(self, body: bytes) -> bytes:
        self.arrived.append((self.clock.now(), body))
        await self.gate.wait()
        if body in self.fail:
            raise HttpError(503, b"busy")
        return b"{}"


def make_phase(times: list[float]) -> tuple[Phase, list[bytes]]:
    return Phase("p", max(times), np.array(times), [["t"]] * len(times), 1.0), \
        [f"b{i}".encode() for i in range(len(times))]


async def open_gate_when(server: GatedServer, n: int, clock: FakeClock, after_s: float) -> None:
    while len(server.arrived) < n:
        await asyncio.sleep(0)
    clock.t += after_s
    server.gate.set()


async def test_every_request_leaves_on_time_although_none_was_answered() -> None:
    clock = FakeClock()
    times = [0.0, 0.1, 0.25, 0.25, 1.0, 3.5]
    phase, bodies = make_phase(times)
    server = GatedServer(clock)
    start = clock.t
    opener = asyncio.create_task(open_gate_when(server, len(times), clock, after_s=0.5))
    result = await run_phase(phase, bodies, server, clock)
    await opener
    assert [b for _, b in server.arrived] == bodies
    np.testing.assert_allclose([t - start for t, _ in server.arrived], times)
    # latency counts from the scheduled time: all answered at 3.5 + 0.5 s
    np.testing.assert_allclose(result.latencies(), [4.0 - t for t in times])
    assert np.all(result.lags() == 0)
    assert result.wall_s == pytest.approx(4.0)


async def test_failures_are_recorded_by_kind_and_do_not_stop_the_run() -> None:
    clock = FakeClock()
    phase, bodies = make_phase([0.0, 0.5, 1.0])
    server = GatedServer(clock, fail={b"b1"})
    server.gate.set()
    seen: list[Outcome] = []
    result = await run_phase(phase, bodies, server, clock, on_done=seen.append)
    assert [o.error for o in result.outcomes] == [None, "http_503", None]
    assert math.isnan(result.outcomes[1].latency_s)
    assert len(seen) == 3


async def test_unexpected_exceptions_become_error_kinds() -> None:
    async def broken(body: bytes) -> bytes:
        raise ConnectionResetError("gone")

    phase, bodies = make_phase([0.0, 0.1])
    result = await run_phase(phase, bodies, broken, FakeClock())
    assert [o.error for o in result.outcomes] == ["ConnectionResetError"] * 2


async def test_client_caps_open_requests() -> None:
    clock = FakeClock()
    phase, bodies = make_phase([0.0, 0.1, 0.2, 0.3, 0.4])
    server = GatedServer(clock)
    start = clock.t

    async def open_after_schedule() -> None:
        while clock.t < start + 0.4:
            await asyncio.sleep(0)
        for _ in range(5):
            await asyncio.sleep(0)
        server.gate.set()

    opener = asyncio.create_task(open_after_schedule())
    result = await run_phase(phase, bodies, server, clock, LoadOptions(max_in_flight=2))
    await opener
    assert len(server.arrived) == 2
    assert [o.error for o in result.outcomes] == [None, None, "client_overflow", "client_overflow",
                                                  "client_overflow"]


async def test_sweep_stops_when_the_rule_says_so() -> None:
    clock = FakeClock()
    phases = [make_phase([0.0, 0.5])[0] for _ in range(3)]
    bodies = [[b"a", b"b"]] * 3
    server = GatedServer(clock)
    server.gate.set()
    results = await run_workload(Workload("sweep", phases), bodies, server, clock,
                                 stop=lambda r: len(r.outcomes) == 2)
    assert len(results) == 1


def test_late_warning_only_when_the_client_fell_behind() -> None:
    phase, _ = make_phase([0.0])

    def result(lag_s: float):
        from bertserve.bench.loadgen import PhaseResult

        return PhaseResult("p", 1.0, 1.0, [Outcome(0.0, lag_s, 0.01)] * 200, 1.0)

    assert late_warning([result(0.001)], lag_warn_ms=5) is None
    warning = late_warning([result(0.020)], lag_warn_ms=5)
    assert warning is not None and "20.0 ms" in warning
