"""A server whose projections run in another process follows their positions by NOTIFY
(``ProjectionRunner.follow``), and projects nothing itself."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from application.chorus import Chorus
from application.commands import RegisterUser
from domain.base import Cause
from infrastructure.settings import Settings, SettingsError
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
    follower = ProjectionRunner(read_pool, store_url)
    follower.follow()
    try:
        result = app.execute(RegisterUser(username="ann", password="password1"), Cause(None))
        position = result.body["position"]
        assert isinstance(position, int) and position > 0
        # Nobody projects yet, and the follower does not: the read models stay behind.
        assert not asyncio.run(follower.wait_for_async(position, timeout=0.5))
        assert follower.position() < position

        # The step's NOTIFY is what moves the follower: it never reads positions unasked.
        ProjectionRunner(read_pool, store_url, announce=True).catch_up()
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


def test_a_follower_takes_announced_positions_and_reads_them_when_it_cannot(
    store_url: str, read_pool: ConnectionPool[Any]
) -> None:
    follower = ProjectionRunner(read_pool, store_url)
    names = [p.name for p in follower.projections]
    follower.follow()
    try:
        with psycopg.connect(store_url, autocommit=True) as conn:
            # The positions come with the announcement: the tracking rows are not read.
            announced = json.dumps(dict.fromkeys(names, 7))
            conn.execute("SELECT pg_notify(%s, %s)", (PROJECTED_CHANNEL, announced))
            assert asyncio.run(follower.wait_for_async(7, timeout=10))
            # One it cannot read makes it read the tracking rows.
            conn.execute("UPDATE rm_tracking SET position = 9")
            conn.execute("SELECT pg_notify(%s, %s)", (PROJECTED_CHANNEL, "not json"))
            assert asyncio.run(follower.wait_for_async(9, timeout=10))
    finally:
        follower.stop()


def test_a_follower_reads_the_positions_again_after_losing_its_connection(
    store_url: str, read_pool: ConnectionPool[Any]
) -> None:
    follower = ProjectionRunner(read_pool, store_url)
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
