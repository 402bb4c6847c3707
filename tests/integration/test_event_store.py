"""The event store: typed JSON records, optimistic concurrency, commands decided again on
conflict, and idempotency records committed with the events."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import cast
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from api.bootstrap import migrate
from api.contexts import CONTEXTS
from application.chorus import Chorus, IdempotencyKeyReused
from application.commands import CreateWorkspace, JoinWorkspace, RegisterUser
from domain.base import Cause, ChorusAggregate
from domain.errors import UsernameTaken
from domain.workspaces import Workspace
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.eventstore import eventsourcing_env
from tests.fixtures.chorus import CheapPasswords
from tests.fixtures.servers import new_database


def _user(app: Chorus, name: str) -> str:
    result = app.execute(RegisterUser(username=name, password="plum-Orbit-kettle-42"), Cause(None))
    return str(result.body["user_id"])


def test_events_are_typed_json_readable_in_sql(app: Chorus, store_url: str) -> None:
    owner = _user(app, "owner")
    result = app.execute(CreateWorkspace(name="Typed", visibility="public"), Cause(owner, "k1"))
    with psycopg.connect(store_url) as conn:
        row = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb FROM chorus_events"
            " WHERE notification_id = %s",
            (result.position,),
        ).fetchone()
    assert row is not None
    assert row[0]["name"] == "Typed" and row[0]["actor_id"] == owner
    assert row[0]["command_id"] == "k1"
    # Read back through the mapper, the fields have their declared types again.
    events = cast(list[ChorusAggregate.Event], list(app.events.get(UUID(str(result.body["id"])))))
    assert isinstance(events[0].originator_id, UUID)
    assert isinstance(events[0].timestamp, datetime)
    assert vars(events[0])["has_password"] is False


def test_a_stale_write_is_refused_not_applied(store_url: str) -> None:
    first = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    second = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        owner = _user(first, "ann")
        joiner = _user(first, "ben")
        created = first.execute(CreateWorkspace(name="W", visibility="public"), Cause(owner))
        ws_id = UUID(str(created.body["id"]))
        a: object = first.repository.get(ws_id)
        b: object = second.repository.get(ws_id)
        assert isinstance(a, Workspace) and isinstance(b, Workspace)
        a.join(Cause(joiner), password_ok=False)
        first.save(a)
        b.create_role("late", ["view_channels"], Cause(owner))
        with pytest.raises(IntegrityError):
            second.save(b)
        assert [type(e).__name__ for e in first.events.get(ws_id)] == [
            "WorkspaceCreated",
            "MemberJoined",
        ]
    finally:
        first.close()
        second.close()


def test_concurrent_commands_on_one_aggregate_are_all_decided(app: Chorus, store_url: str) -> None:
    """Twelve people join one workspace at once: each conflict is decided again against the
    newer state, so every join lands exactly once and versions stay contiguous."""
    owner = _user(app, "host")
    joiners = [_user(app, f"guest{i}") for i in range(12)]
    ws = str(
        app.execute(CreateWorkspace(name="Busy", visibility="public"), Cause(owner)).body["id"]
    )
    others = [
        Chorus(
            eventsourcing_env(store_url),
            passwords=CheapPasswords(),
            handlers=CONTEXTS.handlers,
            snapshotting=CONTEXTS.snapshotting,
        )
        for _ in range(3)
    ]
    barrier = threading.Barrier(len(joiners))

    def join(i: int) -> int | None:
        barrier.wait()
        return others[i % 3].execute(JoinWorkspace(workspace_id=ws), Cause(joiners[i])).position

    try:
        with ThreadPoolExecutor(len(joiners)) as pool:
            positions = list(pool.map(join, range(len(joiners))))
    finally:
        for other in others:
            other.close()
    assert all(p is not None for p in positions) and len(set(positions)) == len(positions)
    events = list(app.events.get(UUID(ws)))
    assert [e.originator_version for e in events] == list(range(1, len(joiners) + 2))
    workspace = app.load(Workspace, ws)
    assert set(workspace.members) == {owner, *joiners}


def test_username_is_unique_even_when_two_signups_race(app: Chorus, store_url: str) -> None:
    other = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def signup(chorus: Chorus) -> None:
        barrier.wait()
        try:
            chorus.execute(
                RegisterUser(username="only_one", password="plum-Orbit-kettle-42"), Cause(None)
            )
            outcomes.append("ok")
        except UsernameTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=signup, args=(c,)) for c in (app, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert sorted(outcomes) == ["ok", "taken"]


def test_idempotency_record_survives_a_new_process(app: Chorus, store_url: str) -> None:
    owner = _user(app, "keeper")
    key = "create-" + uuid.uuid4().hex
    first = app.execute(CreateWorkspace(name="Once"), Cause(owner, key))
    restarted = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        again = restarted.execute(CreateWorkspace(name="Once"), Cause(owner, key))
        assert again.replayed and again.body == first.body and again.status == first.status
        with pytest.raises(IdempotencyKeyReused):
            restarted.execute(CreateWorkspace(name="Twice"), Cause(owner, key))
    finally:
        restarted.close()
    with psycopg.connect(store_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chorus_events WHERE topic LIKE %s", ("%WorkspaceCreated",)
        ).fetchone()
    assert row == (1,)


def test_db_functions_stay_disabled() -> None:
    env = eventsourcing_env("postgresql://u:p@127.0.0.1:5432/db")
    assert env["POSTGRES_ENABLE_DB_FUNCTIONS"] == "n"
    assert env["CREATE_TABLE"] == "false"


def test_starting_again_on_a_migrated_database_logs_no_error(
    postgres_server: EmbeddedPostgres,
) -> None:
    """Issue 22: eventsourcing created its row type on every start and let PostgreSQL refuse
    it, an ``ERROR: type "stored_event_uuid" already exists`` in the server's log each time."""
    with new_database(postgres_server) as url:
        migrate(url, CONTEXTS.read_models())
        before = postgres_server.log_file.stat().st_size
        migrate(url, CONTEXTS.read_models())
        with postgres_server.log_file.open("rb") as log:
            log.seek(before)
            logged = log.read().decode(errors="replace")
    assert "ERROR:" not in logged, logged
