"""Issue 20, "deleted means erased": a workspace setting, on by default, under which deleting
a message destroys the data keys of its texts (sent and edited), so they read as erased on
every read path that tests/e2e/test_erasure.py enumerates (``/api/events``, a stream's
events, the ``/ws`` catch-up, ``?at=`` time travel before the deletion, the timeline,
exports, the console's log, a rebuild from zero); with the setting off a deletion hides the
text from members as before, and those who may read deleted texts (auditors) still can.

One world per module: workspace "on" (the default) and workspace "off" (its owner turned the
setting off), each with a message of Ana's that she sent, edited and deleted, and one of
Bob's that stays; the owner holds view_audit there, and an instance auditor reads everything.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from infrastructure.keys import KEYS_TABLE
from projections.analytics import VIEWS
from projections.log import ERASED
from tests.fixtures.chorus import Running, User
from tests.fixtures.erasure import cli, events_of
from tests.fixtures.operators import instance_role
from tests.fixtures.websocket import send, socket, until


@dataclass
class Side:
    ws: str
    ch: str
    message: str  # Ana's, sent, edited, then deleted
    kept: str  # Bob's message id
    kept_text: str
    texts: tuple[str, str]  # what Ana's message said: sent, edited
    before_delete: int  # a position at which Ana's message existed, edited


@dataclass
class World:
    owner: User
    auditor: User
    ana: User
    bob: User
    on: Side
    off: Side


def _setting(chorus: Running, user: User | None, ws: str, body: Any) -> Any:
    return chorus.api.put(f"/api/workspaces/{ws}/settings/deleted-means-erased", user, json=body)


def _side(chorus: Running, owner: User, *members: User, erase: bool) -> Side:
    api = chorus.api
    tag = uuid.uuid4().hex[:8]
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "S", "visibility": "public"}), 201)
    for user in members:
        api.ok(api.post(f"/api/workspaces/{ws['id']}/join", user))
    ana, bob = members[:2]
    if not erase:
        api.ok(_setting(chorus, owner, ws["id"], {"enabled": False}))
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "s"}), 201)["id"]
    texts = (f"said-{tag}", f"edited-{tag}")
    sent = api.ok(api.post(f"/api/channels/{ch}/messages", ana, {"text": texts[0]}), 201)
    edited = api.ok(api.patch(f"/api/messages/{sent['id']}", ana, {"text": texts[1]}))
    kept_text = f"kept-{tag}"
    kept = api.ok(api.post(f"/api/channels/{ch}/messages", bob, {"text": kept_text}), 201)
    api.ok(api.delete(f"/api/messages/{sent['id']}", ana))
    return Side(ws["id"], ch, sent["id"], kept["id"], kept_text, texts, edited["position"])


@pytest.fixture(scope="module")
def world(chorus: Running) -> World:
    api = chorus.api
    owner, auditor = api.signup("own"), api.signup("aud")
    ana, bob = api.signup("ana"), api.signup("bob")
    instance_role(chorus, "grant", auditor)
    on = _side(chorus, owner, ana, bob, auditor, erase=True)
    off = _side(chorus, owner, ana, bob, auditor, erase=False)
    assert chorus.server.services.runner.wait_for(api.position, 30)
    return World(owner, auditor, ana, bob, on, off)


def _none_of(side: Side, got: Any) -> None:
    dump = json.dumps(got)
    for text in side.texts:
        assert text not in dump, f"{text!r} reached a reader after its deletion erased it"


def _texts_of_message(side: Side, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["stream"] == side.message and "text" in e["data"]]


# -- the setting on (the default): erased on every read path -----------------------------------


def test_the_deletion_records_the_erasure_and_destroys_the_message_keys(
    chorus: Running, world: World
) -> None:
    got = events_of(chorus, world.owner, stream=world.on.message)
    assert got[-1]["type"] == "MessageDeleted" and got[-1]["data"]["text_erased"] is True
    with psycopg.connect(chorus.database_url) as conn:
        rows = conn.execute(
            f"SELECT subject_id::text, wrapped IS NULL FROM {KEYS_TABLE}"
            " WHERE subject_id = ANY(%s::uuid[])",
            ([world.on.message, world.on.kept, world.off.message],),
        ).fetchall()
    state: dict[str, list[bool]] = {}
    for subject, erased in rows:
        state.setdefault(subject, []).append(erased)
    assert state[world.on.message] == [True, True]  # sent and edited
    assert state[world.on.kept] == [False]
    assert state[world.off.message] == [False, False]


def test_api_events_and_streams_read_the_texts_as_erased_for_every_reader(
    chorus: Running, world: World
) -> None:
    for user in (world.auditor, world.owner, world.bob, world.ana):
        events = events_of(chorus, user, after=0)
        _none_of(world.on, events)
        _none_of(world.on, events_of(chorus, user, stream=world.on.message))
    for user in (world.auditor, world.owner):
        events = events_of(chorus, user, after=0)
        texts = _texts_of_message(world.on, events)
        assert len(texts) == 2, texts  # sent, edited
        for e in texts + _texts_of_message(
            world.on, events_of(chorus, world.owner, stream=world.on.message)
        ):
            assert e["data"]["text"] is None and e["data"][ERASED] == ["text"], e
        (bob,) = [e for e in events if e["stream"] == world.on.kept]
        assert bob["data"]["text"] == world.on.kept_text


def test_ws_catch_up_reads_them_erased(chorus: Running, world: World) -> None:
    got: list[dict[str, Any]] = []
    with socket(chorus, world.owner.access_token) as ws:
        send(
            ws, {"op": "subscribe", "sub": "s", "streams": [{"workspace": world.on.ws}], "after": 0}
        )
        until(ws, "subscribed")
        while not any(
            e["type"] == "MessageDeleted" and e["stream"] == world.on.message for e in got
        ):
            got.append(until(ws, "event")["event"])
    _none_of(world.on, got)
    assert len(_texts_of_message(world.on, got)) == 2


def test_time_travel_before_the_deletion_shows_the_text_erased(
    chorus: Running, world: World
) -> None:
    api = chorus.api
    for user in (world.owner,):  # a stream's history needs view_audit in its workspace
        then = api.ok(api.get(f"/api/streams/{world.on.message}", user, at=world.on.before_delete))
        assert then["version"] == 2 and then["state"]["text"] is None, then
        assert then["erased"] == ["text"], then
        _none_of(world.on, then)


def test_the_timeline_exports_and_console_hold_none_of_it(chorus: Running, world: World) -> None:
    api = chorus.api
    got = api.ok(api.get(f"/api/channels/{world.on.ch}/messages", world.bob))["items"]
    _none_of(world.on, got)
    assert world.on.kept_text in {m["text"] for m in got}
    for view in VIEWS:
        out = cli(chorus, "export", "--table", view, "--format", "ndjson")
        assert out.returncode == 0, out.stderr
        _none_of(world.on, out.stdout)
    out = cli(chorus, "events", "--stream", world.on.message)
    assert out.returncode == 0, out.stderr
    _none_of(world.on, out.stdout)


# -- the setting off: deletion behaves as before --------------------------------------------


def test_with_the_setting_off_a_deletion_hides_but_does_not_erase(
    chorus: Running, world: World
) -> None:
    api = chorus.api
    off = world.off
    got = events_of(chorus, world.owner, stream=off.message)
    assert got[-1]["type"] == "MessageDeleted" and got[-1]["data"]["text_erased"] is False
    assert [e["data"]["text"] for e in _texts_of_message(off, got)] == list(off.texts)
    # Members who may not read deleted texts do not, as before (projections/redaction.py).
    _none_of(off, events_of(chorus, world.bob, stream=off.message))
    then = api.ok(api.get(f"/api/streams/{off.message}", world.owner, at=off.before_delete))
    assert then["state"]["text"] == off.texts[1] and then["erased"] == []
    timeline = api.ok(api.get(f"/api/channels/{off.ch}/messages", world.bob))["items"]
    _none_of(off, timeline)


# -- after both: a rebuild from zero erases again, verify passes --------------------------------


def test_a_rebuild_from_zero_keeps_them_erased_and_verify_passes(
    chorus: Running, world: World
) -> None:
    out = cli(chorus, "replay", "--all")
    assert out.returncode == 0, out.stderr
    api = chorus.api
    got = api.ok(api.get(f"/api/channels/{world.on.ch}/messages", world.bob))["items"]
    _none_of(world.on, got)
    assert world.on.kept_text in {m["text"] for m in got}
    _none_of(world.on, events_of(chorus, world.owner, stream=world.on.message))
    verified = cli(chorus, "verify", "--no-progress")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    (shredded,) = [s for s in verified.stdout.splitlines() if s.startswith("shredded:")]
    assert int(shredded.split()[1]) == 2, shredded  # Ana's sent and edited text, "on"


# -- the route: who may change it, bad input -------------------------------------------------


def test_only_an_admin_of_the_workspace_changes_the_setting(chorus: Running, world: World) -> None:
    api = chorus.api
    ws = world.on.ws
    stranger = api.signup("stranger")
    private = api.ok(
        api.post("/api/workspaces", world.owner, {"name": "P", "visibility": "private"}), 201
    )["id"]
    before = chorus.events()
    assert _setting(chorus, world.bob, ws, {"enabled": False}).status_code == 403
    assert _setting(chorus, None, ws, {"enabled": False}).status_code == 401
    for unknown in (private, str(uuid.uuid4())):
        r = _setting(chorus, stranger, unknown, {"enabled": False})
        assert r.status_code == 404, r.text
    for body in ({}, {"enabled": "no"}, {"enabled": False, "x": 1}, [True], None):
        r = _setting(chorus, world.owner, ws, body)
        assert r.status_code in (400, 422), (body, r.status_code)
    assert _setting(chorus, world.owner, ws, {"enabled": True}).status_code == 409  # already
    assert chorus.events() == before, "a refused change appended something"
