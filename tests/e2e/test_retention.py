"""Issue 20, per-workspace retention: messages older than a workspace's retention are erased
by crypto-shredding (their keys destroyed), each run recorded as a ``RetentionApplied``
event (cut-off and count, not contents); newer messages stay; a restart half-way through
loses nothing and erases nothing twice.

Time is the worker's clock, moved by the test (a day is not waited for): the server's own
worker is woken with its clock set a day past a boundary taken between the old messages and
the new; the restart test drives workers of its own, as two processes would.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from application.commands import ApplyRetention
from application.retention import RetentionWorker
from domain.base import Cause
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.keys import KEYS_TABLE
from projections.log import ERASED
from projections.retention import RetentionReadsSql
from tests.fixtures.chorus import Api, Running, ServerThread, User, chorus_settings, event_count
from tests.fixtures.polling import wait_until
from tests.fixtures.servers import new_database

# The server's worker sweeps once at start, then only when a test wakes it.
CHORUS_SETTINGS = {"retention_poll_s": 3600.0}


def _world(api: Api) -> tuple[User, User, str, str]:
    owner, bob = api.signup("keeper"), api.signup("bob")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "R", "visibility": "public"}), 201)
    api.ok(api.post(f"/api/workspaces/{ws['id']}/join", bob))
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "r"}), 201)["id"]
    return owner, bob, str(ws["id"]), str(ch)


def _say(api: Api, user: User, ch: str, text: str) -> dict[str, Any]:
    return dict(api.ok(api.post(f"/api/channels/{ch}/messages", user, {"text": text}), 201))


def _runs(api: Api, user: User, ws: str) -> list[dict[str, Any]]:
    items = api.ok(api.get("/api/events", user, stream=ws, type="RetentionApplied", limit=200))
    return list(items["items"])


def _boundary() -> datetime:
    """An instant after every message sent so far and before every later one (the server's
    clock is this process's)."""
    return datetime.now(UTC)


def test_setting_retention_needs_manage_workspace_and_refuses_bad_values(chorus: Running) -> None:
    api = chorus.api
    owner, bob, ws, _ = _world(api)
    stranger = api.signup("stranger")
    before = event_count(chorus.database_url)
    assert api.put(f"/api/workspaces/{ws}/retention", bob, json={"days": 1}).status_code == 403
    for bad in ({"days": 0}, {"days": 3651}, {"days": "x"}, {"days": 1.5}, {}, {"d": 1}):
        r = api.put(f"/api/workspaces/{ws}/retention", owner, json=bad)
        assert r.status_code in (400, 422), (bad, r.status_code)
    # Another workspace's id, or an unknown one: the same 404, for writes and reads alike.
    for target in (ws, str(uuid.uuid4())):
        r = api.put(f"/api/workspaces/{target}/retention", stranger, json={"days": 1})
        assert r.status_code == 404, r.text
        assert api.get(f"/api/workspaces/{target}/retention", stranger).status_code == 404
    assert api.put(f"/api/workspaces/{ws}/retention", None, json={"days": 1}).status_code == 401
    assert event_count(chorus.database_url) == before
    assert api.ok(api.get(f"/api/workspaces/{ws}/retention", bob)) == {
        "days": None,
        "retained_before": None,
    }
    api.ok(api.put(f"/api/workspaces/{ws}/retention", owner, json={"days": 30}))
    assert api.put(f"/api/workspaces/{ws}/retention", owner, json={"days": 30}).status_code == 409
    assert api.ok(api.get(f"/api/workspaces/{ws}/retention", bob))["days"] == 30
    (set_,) = [
        e for e in api.ok(api.get("/api/events", owner, stream=ws))["items"]
        if e["type"] == "RetentionSet"
    ]  # fmt: skip
    assert set_["data"]["days"] == 30 and set_["actor"] == owner.user_id
    api.ok(api.put(f"/api/workspaces/{ws}/retention", owner, json={"days": None}))
    assert api.ok(api.get(f"/api/workspaces/{ws}/retention", bob))["days"] is None


def test_old_messages_read_as_erased_on_every_path_and_new_ones_stay(chorus: Running) -> None:
    api = chorus.api
    owner, bob, ws, ch = _world(api)
    tag = uuid.uuid4().hex[:8]
    old_one = _say(api, owner, ch, f"old-one-{tag}")
    api.ok(api.patch(f"/api/messages/{old_one['id']}", owner, {"text": f"old-edit-{tag}"}))
    old_two = _say(api, bob, ch, f"old-two-{tag}")
    boundary = _boundary()
    new = _say(api, bob, ch, f"new-{tag}")
    api.ok(api.put(f"/api/workspaces/{ws}/retention", owner, json={"days": 1}))
    assert _runs(api, owner, ws) == []  # a day has not passed: nothing is due

    worker = chorus.server.services.retention
    worker.clock = lambda: boundary + timedelta(days=1)
    worker.wake()
    (run,) = wait_until("the retention run", lambda: _runs(api, owner, ws))
    api.position = max(api.position, run["position"])
    # The event says that, when and how much: not what.
    assert run["actor"] is None
    assert run["data"]["count"] == 2
    assert datetime.fromisoformat(run["data"]["cutoff"]) == boundary
    assert sorted(run["data"]["message_ids"]) == sorted([old_one["id"], old_two["id"]])
    assert tag not in str(run)
    assert api.ok(api.get(f"/api/workspaces/{ws}/retention", bob))["retained_before"]

    # The timeline.
    texts = {
        m["id"]: m["text"] for m in api.ok(api.get(f"/api/channels/{ch}/messages", bob))["items"]
    }
    assert texts == {old_one["id"]: "", old_two["id"]: "", new["id"]: f"new-{tag}"}
    # /api/events: sent and edited texts read null, named as erased; the new one whole.
    for user in (owner, bob):
        events = api.ok(api.get("/api/events", user, after=old_one["position"] - 1, limit=200))
        texts_events = [e for e in events["items"] if "text" in e["data"]]
        olds = [e for e in texts_events if e["stream"] in (old_one["id"], old_two["id"])]
        assert len(olds) == 3, olds
        for e in olds:
            assert e["data"]["text"] is None and e["data"][ERASED] == ["text"], e
        (kept,) = [e for e in texts_events if e["stream"] == new["id"]]
        assert kept["data"]["text"] == f"new-{tag}"
    # Time travel to before the run: erased too.
    then = api.ok(api.get(f"/api/streams/{old_one['id']}", owner, at=old_one["position"]))
    assert then["state"]["text"] is None
    now = api.ok(api.get(f"/api/streams/{new['id']}", owner))
    assert now["state"]["text"] == f"new-{tag}"

    # Run again (the thread is idle till its next poll): nothing is erased twice.
    assert worker.run_once() == 0
    assert len(_runs(api, owner, ws)) == 1


def _keys_erased(database_url: str, subjects: list[str]) -> dict[str, bool]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            f"SELECT subject_id::text, bool_and(erased_at IS NOT NULL) FROM {KEYS_TABLE}"
            " WHERE subject_id = ANY(%s::uuid[]) GROUP BY subject_id",
            (subjects,),
        ).fetchall()
    return {s: bool(erased) for s, erased in rows}


def _own_worker(server: ServerThread, clock: datetime) -> RetentionWorker:
    """A worker as a server builds one (api/bootstrap.py), on the server's store, with a
    clock of the test's and batches of two."""
    services = server.services
    return RetentionWorker(
        RetentionReadsSql(services.read_pool),
        record=lambda command, cause: services.app.execute_now(command, cause).position,
        wait_for=lambda position: services.runner.wait_for(position, 30),
        batch=2,
        clock=lambda: clock,
    )


def test_a_restart_half_way_loses_nothing_and_erases_nothing_twice(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = chorus_settings(tmp_path, retention_poll_s=3600.0)
    with new_database(postgres_server) as url:
        server = ServerThread(settings, url).start()
        api = Api(server.url)
        try:
            owner, _, ws, ch = _world(api)
            olds = [_say(api, owner, ch, f"old-{i}")["id"] for i in range(5)]
            boundary = _boundary()
            new = _say(api, owner, ch, "new")["id"]
            api.ok(api.put(f"/api/workspaces/{ws}/retention", owner, json={"days": 1}))
            then = boundary + timedelta(days=1)
            # One run of two messages, then the server stops.
            assert _own_worker(server, then).run_once(max_runs=1) == 1
            erased = _keys_erased(url, olds)
            assert sum(erased.values()) == 2, erased
        finally:
            api.close()
            server.stop()
        server = ServerThread(settings, url).start()
        api = Api(server.url)
        try:
            worker = _own_worker(server, then)
            assert worker.run_once() == 2  # the three left, two and one
            assert worker.run_once() == 0  # and nothing again
            # A run decided from a stale cut-off (a second server's, a rerun after a crash)
            # is refused by the workspace: nothing appended, nothing erased.
            before = event_count(url)
            stale = ApplyRetention(workspace_id=ws, since=None, cutoff=then, message_ids=[new])
            assert server.services.app.execute_now(stale, Cause(None)).position is None
            assert event_count(url) == before
            login = api.post(
                "/api/auth/login", None, {"username": owner.username, "password": owner.password}
            )
            owner.access_token = api.ok(login)["access_token"]
            runs = _runs(api, owner, ws)
            ids = [m for run in runs for m in run["data"]["message_ids"]]
            assert sorted(ids) == sorted(olds)  # every old message, each once
            assert [run["data"]["count"] for run in runs] == [2, 2, 1]
            cutoffs = [datetime.fromisoformat(run["data"]["cutoff"]) for run in runs]
            assert cutoffs == sorted(cutoffs) and cutoffs[-1] == boundary
            assert all(_keys_erased(url, olds).values())
            assert _keys_erased(url, [new]) == {new: False}
            assert server.services.runner.wait_for(runs[-1]["position"], 30)
            items = api.ok(api.get(f"/api/channels/{ch}/messages", owner))["items"]
            assert {m["id"]: m["text"] for m in items} == {**dict.fromkeys(olds, ""), new: "new"}
        finally:
            api.close()
            server.stop()
