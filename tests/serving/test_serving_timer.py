"""The engine's dispatch timer never asks the event loop for less than its resolution.

uvloop keeps timers in whole milliseconds (rounded to the nearest), so a timer asked for under
0.5 ms away fires at once; before this was guarded, a batch due that soon made the loop wake,
find it not due yet and re-arm, several times per queued batch.
"""

from __future__ import annotations

import asyncio

import uvloop

from bertserve.config import ServerSettings
from bertserve.serving.core.engine import TIMER_STEP_S, Engine


class DueSoon:
    """A batcher with a batch waiting for a busy worker that frees in ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.polls = 0

    def poll(self, now: float) -> list:
        self.polls += 1
        return []

    def next_due(self, now: float) -> float:
        return now + self.delay_s


def armed(delay_s: float) -> tuple[float, int]:
    """(how far ahead the timer was armed, polls after 20 ms) for a batch due in ``delay_s``."""

    async def main() -> tuple[float, int]:
        engine = Engine(ServerSettings())
        loop = asyncio.get_running_loop()
        batcher = DueSoon(delay_s)
        engine.batcher, engine._loop, engine.pool = batcher, loop, object()  # type: ignore[assignment]
        engine._pump()
        assert engine._timer is not None
        ahead = engine._timer.when() - loop.time()
        batcher.delay_s = 1.0  # once fired, nothing is due soon any more
        await asyncio.sleep(0.02)
        return ahead, batcher.polls

    return uvloop.run(main())


def test_a_batch_due_in_a_fraction_of_a_millisecond_arms_one_timer_step() -> None:
    ahead, polls = armed(0.0002)
    assert TIMER_STEP_S * 0.9 <= ahead <= TIMER_STEP_S + 1e-6
    assert polls == 2  # the arrival's poll and the timer's, not a spin of early wake-ups


def test_a_later_batch_keeps_its_due_time() -> None:
    ahead, _ = armed(0.005)
    assert 0.004 <= ahead <= 0.005 + 1e-6
