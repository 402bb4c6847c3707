"""A server whose projections run in another process follows their positions by NOTIFY
(``ProjectionRunner.follow``), and projects nothing itself. A NOTIFY is only a wake-up (any
database login can send one): the positions are read from the tracking table, and a flood of
wake-ups costs a bounded rate of reads (issue 16, finding 14)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.contexts import all_projections
from application.chorus import Chorus
from application.commands import RegisterUser
from domain.base import Cause
from infrastructure.eventstore import NOTIFY_CHANNEL
from infrastructure.settings import Settings, SettingsError
from infrastructure.stop_signal import StopSignal
from projections.log import WAKE_BURST, WAKE_RATE, follow_channel, follow_store
from projections.runner import PROJECTED_CHANNEL, ProjectionRunner
from tests.fixtures.processes import CHORUS


@pytest.fixture
def read_pool(store_url: str) -> Iterator[ConnectionPool[Any]]:
    pool: ConnectionPool[Any] = ConnectionPool(
        store_url,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True, "row_factory": dict_row},
        open=True,
    )
    yield pool
    pool.close()


def test_a_follower_is_woken_by_the_steps_an_announcing_runner_commits(
    app: Chorus, store_url: str, read_pool: ConnectionPool[Any]
) -> None:
    follower = ProjectionRunner(read_pool, store_url, all_projections())
    follower.follow()
    try:
        result = app.execute(
            RegisterUser(username="ann", password="plum-Orbit-kettle-42"), Cause(None)
        )
        position = result.body["position"]
        assert isinstance(position, int) and position > 0
        # Nobody projects yet, and the follower does not: the read models stay behind.
        assert not asyncio.run(follower.wait_for_async(position, timeout=0.5))
        assert follower.position() < position

        # The step's NOTIFY is what wakes the follower (then it reads the tracking rows).
        ProjectionRunner(read_pool, store_url, all_projections(), announce=True).catch_up()
        assert asyncio.run(follower.wait_for_async(position, timeout=10))
        assert follower.position() >= position
    finally:
        follower.stop()


def test_the_projections_setting_takes_only_its_two_modes() -> None:
    assert Settings.from_env({}).projections == "in-process"
    assert Settings.from_env({"CHORUS_PROJECTIONS": "External"}).projections == "external"
    with pytest.raises(SettingsError, match="CHORUS_PROJECTIONS"):
        Settings.from_env({"CHORUS_PROJECTIONS": "elsewhere"})


def test_chorus_project_needs_the_servers_database(tmp_path: Path) -> None:
    # Without DATABASE_URL it would start a private PostgreSQL no server uses: refused.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [CHORUS, "project"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "DATABASE_URL is not set" in done.stderr
    assert not (tmp_path / ".chorus").exists()


def test_a_follower_reads_positions_from_the_tracking_table_never_from_a_notify(
    store_url: str, read_pool: ConnectionPool[Any]
) -> None:
    follower = ProjectionRunner(read_pool, store_url, all_projections())
    names = [p.name for p in follower.projections]
    follower.follow()
    try:
        with psycopg.connect(store_url, autocommit=True) as conn:
            # Any database login can announce anything: forged positions, far ahead.
            for forged in (json.dumps(dict.fromkeys(names, 10**9)), json.dumps({}), "not json"):
                conn.execute("SELECT pg_notify(%s, %s)", (PROJECTED_CHANNEL, forged))
                assert not asyncio.run(follower.wait_for_async(7, timeout=0.5))
                assert follower.position() == 0
            # Where the read models really are is what it takes, whatever the payload says.
            conn.execute("UPDATE rm_tracking SET position = 9")
            conn.execute("SELECT pg_notify(%s, %s)", (PROJECTED_CHANNEL, "1"))
            assert asyncio.run(follower.wait_for_async(9, timeout=10))
            assert follower.position() == 9
    finally:
        follower.stop()


def _flood(store_url: str, channel: str, seconds: float, senders: int = 3) -> float:
    """NOTIFYs on ``channel`` as fast as ``senders`` connections can send them, for
    ``seconds``; returns how long the flood lasted."""
    started = time.monotonic()

    def send() -> None:
        with psycopg.connect(store_url, autocommit=True) as conn:
            while time.monotonic() - started < seconds:
                conn.execute("SELECT pg_notify(%s, 'x')", (channel,))

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


def _bound(seconds: float) -> float:
    """The most wake-ups a listener may act on in ``seconds`` (its burst, its rate, and the
    first call on connecting)."""
    return WAKE_BURST + WAKE_RATE * seconds + 2


def test_a_notify_flood_on_the_projected_channel_costs_a_bounded_rate_of_reads(
    store_url: str, read_pool: ConnectionPool[Any]
) -> None:
    follower = ProjectionRunner(read_pool, store_url, all_projections())
    follower.follow()
    try:
        before = follower.refreshes
        lasted = _flood(store_url, PROJECTED_CHANNEL, 1.5)
        assert follower.refreshes - before <= _bound(lasted), follower.refreshes - before
        assert follower.refreshes > before  # it did wake up
    finally:
        follower.stop()


def test_a_notify_flood_on_the_events_channel_costs_a_bounded_rate_of_catch_ups(
    store_url: str,
) -> None:
    calls: list[float] = []
    stop = StopSignal()
    connected = threading.Event()

    def on_commit() -> None:
        calls.append(time.monotonic())
        connected.set()

    follower = threading.Thread(
        target=follow_store, args=(store_url, stop, on_commit, "flood test"), daemon=True
    )
    follower.start()
    try:
        assert connected.wait(10)
        before = len(calls)
        lasted = _flood(store_url, NOTIFY_CHANNEL, 1.5)
        woken = len(calls) - before
        assert 0 < woken <= _bound(lasted), woken
    finally:
        stop.set()
        follower.join(10)


def test_a_follower_reads_the_positions_again_after_losing_its_connection(
    store_url: str, read_pool: ConnectionPool[Any]
) -> None:
    follower = ProjectionRunner(read_pool, store_url, all_projections())
    follower.follow()
    try:
        with psycopg.connect(store_url, autocommit=True) as conn:
            # Moved and never announced: only reading them again on reconnecting tells it.
            conn.execute("UPDATE rm_tracking SET position = 11")
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE query = %s",
                (f"LISTEN {PROJECTED_CHANNEL}",),
            ).fetchone()
            assert row is not None
            conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            assert asyncio.run(follower.wait_for_async(11, timeout=10))
    finally:
        follower.stop()


def test_a_follower_stops_at_once_when_told_not_when_its_wait_times_out(store_url: str) -> None:
    """The stop wakes the follower's wait on its socket: with an hour-long quiet wait and no
    NOTIFY, it still ends (it used to look at its flag only between waits)."""
    stop = StopSignal()
    connected = threading.Event()
    follower = threading.Thread(
        target=follow_channel,
        args=(store_url, NOTIFY_CHANNEL, stop, lambda _: connected.set(), "stop test"),
        kwargs={"when_quiet": True, "quiet_s": 3600.0},
        daemon=True,
    )
    follower.start()
    assert connected.wait(10)
    stop.set()
    follower.join(30)
    assert not follower.is_alive()


def test_a_stop_signal_set_before_the_wait_wakes_it_at_once() -> None:
    stop = StopSignal()
    with stop.waker() as early:
        assert select.select([early], [], [], 0)[0] == []
        stop.set()
        assert select.select([early], [], [], 0)[0] == [early]
    with stop.waker() as late:  # registered after the set
        assert select.select([late], [], [], 0)[0] == [late]
