"""The projection runner with a read model that cannot apply a stored event (issue 16,
finding 1): the others move on, the waits do not hang on it, it is tried again with backoff
and logged once, and a fixed release applies the event (nothing was skipped)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.contexts import all_projections
from application.chorus import Chorus
from application.commands import RegisterUser
from domain.base import Cause
from projections.runner import ProjectionRunner


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


def _register(app: Chorus, name: str) -> int:
    result = app.execute(RegisterUser(username=name, password="plum-Orbit-kettle-42"), Cause(None))
    assert result.position is not None
    return result.position


def test_a_read_model_that_cannot_take_an_event_is_retried_logged_once_and_fixed_by_a_release(
    app: Chorus,
    store_url: str,
    read_pool: ConnectionPool[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with psycopg.connect(store_url, autocommit=True) as conn:
        # A bug of this release in the users read model: it cannot store this one user.
        conn.execute("ALTER TABLE rm_users ADD CONSTRAINT this_release CHECK (username <> 'zed')")
    _register(app, "ann")
    # A sign-up appends the user's event, then its username claim: the user's is one before.
    bad = _register(app, "zed") - 1
    last = _register(app, "bob")
    runner = ProjectionRunner(
        read_pool, store_url, all_projections(), retry_s=0.02, retry_max_s=0.1
    )
    caplog.set_level(logging.INFO, logger="projections.runner")
    runner.catch_up()
    stuck = runner.stuck()
    assert list(stuck) == ["users"] and stuck["users"].position == bad
    assert "this_release" in stuck["users"].error
    positions = runner.positions()
    assert positions["users"] == bad - 1
    assert all(at == last for name, at in positions.items() if name != "users")
    # Reads after one's own write do not wait for the stuck model.
    assert runner.wait_for(last, timeout=0.5)
    # Tried again with backoff for a while: still stuck, logged once.
    retried_until = time.monotonic() + 0.6
    while time.monotonic() < retried_until:
        runner.catch_up()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "users" in errors[0].getMessage() and str(bad) in errors[0].getMessage()
    with psycopg.connect(store_url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM rm_tracking WHERE projection = 'users'").fetchone()
        assert row is not None and row["stuck_position"] == bad and row["position"] == bad - 1
        assert row["since"] == stuck["users"].since  # since it first failed
        # The fixed release: the next process applies the event, nothing is skipped.
        conn.execute("ALTER TABLE rm_users DROP CONSTRAINT this_release")
    restarted = ProjectionRunner(read_pool, store_url, all_projections())
    restarted.refresh_positions()
    assert list(restarted.stuck()) == ["users"]
    restarted.catch_up()
    assert restarted.stuck() == {}
    assert restarted.position() == last
    with psycopg.connect(store_url, autocommit=True, row_factory=dict_row) as conn:
        users = conn.execute("SELECT username FROM rm_users ORDER BY username").fetchall()
        assert [u["username"] for u in users] == ["ann", "bob", "zed"]
        row = conn.execute("SELECT * FROM rm_tracking WHERE projection = 'users'").fetchone()
        assert row is not None and row["position"] == last and row["stuck_position"] is None
