"""``/ready`` tells a saturated event loop (issue 22, point 4): while blocking calls keep the
server's loop from running its timers on time it answers 503 naming the cause, and 200 again
once they stop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx

from api.loop_lag import LoopLagProbe
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import running_chorus

MAX_LATE_S = 0.2
# Each blocking call holds the loop longer than the threshold; between two of them the loop
# runs one turn, in which requests are read and answered.
BLOCK_S = 0.4


async def _saturate(started: threading.Event, stop: threading.Event) -> None:
    """What a handler calling blocking code on every request does to the process."""
    started.set()
    while not stop.is_set():
        time.sleep(BLOCK_S)  # deliberately blocking: this is the fault under test
        await asyncio.sleep(0)


def _ready_until(http: httpx.Client, status: int, deadline_s: float = 30) -> httpx.Response:
    """``/ready`` asked again and again (each answer is the synchronisation) until ``status``."""
    deadline = time.monotonic() + deadline_s
    while True:
        response = http.get("/ready")
        if response.status_code == status:
            return response
        assert time.monotonic() < deadline, response.text


def test_ready_is_503_while_the_event_loop_is_saturated_and_200_after(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path, ready_max_loop_lag_s=MAX_LATE_S) as chorus:
        http = chorus.api.http
        calm = _ready_until(http, 200)
        assert calm.json()["loop_late_s"] <= MAX_LATE_S
        probe: LoopLagProbe = chorus.server.app.state.loop_lag
        assert probe.loop is not None
        started, stop = threading.Event(), threading.Event()
        saturating = asyncio.run_coroutine_threadsafe(_saturate(started, stop), probe.loop)
        try:
            assert started.wait(10)
            busy = _ready_until(http, 503).json()
            assert busy["status"] == "degraded"
            assert busy["database"] is True
            assert busy["detail"].startswith("event loop saturated")
            assert busy["loop_late_s"] > MAX_LATE_S
        finally:
            stop.set()
            saturating.result(timeout=30)
        again = _ready_until(http, 200).json()
        assert again["status"] == "ok"
        assert again["detail"] is None


def test_a_zero_threshold_never_fails_ready_for_the_loop(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path, ready_max_loop_lag_s=0.0) as chorus:
        probe: LoopLagProbe = chorus.server.app.state.loop_lag
        assert probe.loop is not None
        # A kept-alive connection: the request below is answered in the loop's first turns
        # after the block, before the probe's next on-time wake-up (20 ms) resets the figure.
        assert chorus.api.http.get("/health").status_code == 200
        blocked = threading.Event()

        def block() -> None:
            blocked.set()
            time.sleep(BLOCK_S)

        # The request goes out while the loop is held: it is read only after the block.
        probe.loop.call_soon_threadsafe(block)
        assert blocked.wait(10)
        answer = chorus.api.http.get("/ready")
        assert answer.status_code == 200, answer.text
        assert answer.json()["loop_late_s"] > 0
