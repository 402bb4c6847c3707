"""The event-loop lag probe of a running server, read through ``GET /ready``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec

from api.loop_lag import BOUNDS_MS, LoopLagCounts, LoopLagProbe
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Running, running_chorus

BLOCK_S = 0.25


def _lag(chorus: Running) -> LoopLagCounts:
    response = chorus.api.http.get("/ready")
    assert response.status_code == 200, response.text
    return msgspec.convert(response.json()["loop_lag"], LoopLagCounts)


def _later_than_200_ms(lag: LoopLagCounts) -> int:
    return sum(lag.counts[BOUNDS_MS.index(200.0) + 1 :])


def test_a_blocking_call_on_the_event_loop_shows_in_the_loop_lag(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path) as chorus:
        before = _lag(chorus)
        probe: LoopLagProbe = chorus.server.app.state.loop_lag
        assert probe.loop is not None
        done = threading.Event()

        def block() -> None:  # what a blocking call in a handler does to everyone else
            time.sleep(BLOCK_S)
            done.set()

        probe.loop.call_soon_threadsafe(block)
        assert done.wait(10)
        # The probe's overdue wake-up runs after the block, in the loop's next turns.
        deadline = time.monotonic() + 10
        after = _lag(chorus)
        while _later_than_200_ms(after) == _later_than_200_ms(before):
            assert time.monotonic() < deadline, after
            after = _lag(chorus)
        assert after.max_ms >= BLOCK_S * 1000 * 0.8
        assert sum(after.counts) > sum(before.counts)
