"""Issue 20, erasure by crypto-shredding: a user's personal data is stored sealed, and once
they are erased no read path returns it (the live read models, a rebuild from zero, the
catch-up, time travel, exports, the console's log), while other users' data stays and the
hash chain still verifies.

One world per module: Ana (erased over HTTP), Bob (kept), Cleo (erased by the operator's
``chorus erase-user``), in a workspace whose owner holds view_audit and with an instance
auditor, who both see every deleted or replaced text: not erased ones.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.contexts import CONTEXTS
from api.database import NoPasswords
from application.chorus import Chorus
from application.commands import SendMessage
from domain.base import Cause
from infrastructure.eventstore import EVENTS_TABLE, eventsourcing_env
from infrastructure.keys import KEYS_TABLE, new_master_key
from infrastructure.serialisation import NOT_PERSONAL, PERSONAL, STREAM, state_type
from projections.analytics import VIEWS
from projections.log import ERASED
from tests.fixtures.chorus import GOOD_PASSWORD, TEST_MASTER_KEY, Running, User
from tests.fixtures.erasure import cli, events_of
from tests.fixtures.event_classes import event_classes, text_fields
from tests.fixtures.operators import instance_role
from tests.fixtures.processes import CHORUS
from tests.fixtures.websocket import send, socket, until

# The test servers' (tests/fixtures/chorus.py), which the console commands are given.
MASTER_KEY = TEST_MASTER_KEY

# -- the class: every text-like field of every event is declared personal or not ---------------


def test_every_text_like_field_of_every_event_is_declared_personal_or_not() -> None:
    classes = event_classes()
    undeclared: dict[str, list[str]] = {}
    for name, cls in classes.items():
        stored = set(typing.get_type_hints(state_type(cls)))
        assert ERASED not in stored, f"{name} has a field named {ERASED}"
        personal = set(PERSONAL[name].fields if name in PERSONAL else ())
        kept = set(NOT_PERSONAL.get(name, {}))
        assert not personal & kept, f"{name}: {personal & kept} both personal and not"
        assert personal | kept <= stored, f"{name}: a declared field is no field"
        if name in PERSONAL and PERSONAL[name].owner != STREAM:
            assert PERSONAL[name].owner in stored, f"{name}: its owner is no field"
        missing = text_fields(cls) - personal - kept
        if missing:
            undeclared[name] = sorted(missing)
    assert not undeclared, f"declare these in infrastructure/serialisation.py: {undeclared}"
    assert set(PERSONAL) | set(NOT_PERSONAL) <= set(classes), "a declaration names no event"
    assert {"MessageSent", "MessageEdited", "UserRegistered"} <= set(PERSONAL)


# Where stored event states are decoded, and why each may do so without opening sealed
# fields (projections/log.py's to_log_events and the mapper open them).
_STATE_DECODERS = {
    "projections.log": "to_log_events opens sealed fields; first_event reads only the ids"
    " that say where a stream lives",
    "projections.documents": "document updates: not declared personal",
    "application.live_documents.awareness": "awareness frames, not stored events",
    "application.time_travel": "erased_fields opens them with keys.open_states, only to name"
    " the fields that read as erased",
}


def _decodes_a_state(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and bool(node.args)
        and "state" in ast.unparse(node.args[0])
        and ast.unparse(node.func).endswith(("json.decode", "json.loads"))
    )


def test_every_read_path_decoding_stored_states_opens_sealed_fields() -> None:
    """A new read path cannot forget erasure: any module of api/, application/ or
    projections/ that decodes JSON itself (a stored state would reach readers sealed, or
    worse, a read model would keep it) must be one of the above."""
    root = Path(__file__).resolve().parents[2]
    decoders: set[str] = set()
    for package in ("api", "application", "projections"):
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text())):
                if _decodes_a_state(node):
                    decoders.add(module)
    assert "projections.log" in decoders  # the walk sees them
    assert decoders <= set(_STATE_DECODERS), (
        f"open sealed fields in {decoders - set(_STATE_DECODERS)}"
    )
    assert set(_STATE_DECODERS) <= decoders, "an exemption names no decoder"


# -- the world ----------------------------------------------------------------------------------


@dataclass
class World:
    ws: str
    ch: str
    owner: User
    auditor: User
    ana: User
    bob: User
    cleo: User
    ana_messages: list[str]
    bob_message: str
    cleo_message: str
    sent_at: int  # a position at which Ana's first message existed
    secrets: dict[str, str]  # what must be gone: Ana's and Cleo's texts and names
    kept: str  # Bob's text
    erased_at: int


def _stored(database_url: str) -> bytes:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(f"SELECT state FROM {EVENTS_TABLE}").fetchall()
    return b"\n".join(bytes(r[0]) for r in rows)


def erase(chorus: Running, user: User | None, body: Any) -> Any:
    headers = {} if user is None else user.headers
    return chorus.api.http.request("DELETE", "/api/users/me", json=body, headers=headers)


@pytest.fixture(scope="module")
def world(chorus: Running) -> World:
    api = chorus.api
    tag = uuid.uuid4().hex[:8]
    owner, auditor = api.signup("own"), api.signup("aud")
    ana, bob, cleo = api.signup(f"ana{tag}"), api.signup("bob"), api.signup(f"cleo{tag}")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "E", "visibility": "public"}), 201)
    for user in (auditor, ana, bob, cleo):
        api.ok(api.post(f"/api/workspaces/{ws['id']}/join", user))
    instance_role(chorus, "grant", auditor)
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "e"}), 201)["id"]

    def say(user: User, text: str) -> dict[str, Any]:
        return dict(api.ok(api.post(f"/api/channels/{ch}/messages", user, {"text": text}), 201))

    secrets = {
        "ana first": f"ana-first-{tag}",
        "ana edit": f"ana-edited-{tag}",
        "ana deleted": f"ana-deleted-{tag}",
        "cleo": f"cleo-said-{tag}",
    }
    first = say(ana, secrets["ana first"])
    api.ok(api.patch(f"/api/messages/{first['id']}", ana, {"text": secrets["ana edit"]}))
    deleted = say(ana, secrets["ana deleted"])
    api.ok(api.delete(f"/api/messages/{deleted['id']}", ana))
    kept = f"bob-kept-{tag} @{ana.username}"
    bob_message = say(bob, kept)["id"]
    cleo_message = say(cleo, secrets["cleo"])
    last = cleo_message["position"]
    assert chorus.server.services.runner.wait_for(last, 30)
    # Stored sealed: not one of their texts or names is in the log as written.
    stored = _stored(chorus.database_url)
    for what, secret in {**secrets, "ana": ana.username, "bob": kept}.items():
        assert secret.encode() not in stored, f"{what} is stored in the clear"
    # Before any erasure, every reader reads them.
    got = api.ok(api.get(f"/api/channels/{ch}/messages", bob))["items"]
    assert {m["text"] for m in got} >= {secrets["ana edit"], kept, secrets["cleo"]}
    # Ana erases herself; Cleo is erased by the operator.
    erased = api.ok(erase(chorus, ana, {"password": GOOD_PASSWORD}))
    out = cli(chorus, "erase-user", cleo.username)
    assert out.returncode == 0, out.stderr
    with psycopg.connect(chorus.database_url) as conn:
        head = conn.execute(f"SELECT max(notification_id) FROM {EVENTS_TABLE}").fetchone()
    assert head is not None
    assert chorus.server.services.runner.wait_for(head[0], 30)
    secrets |= {"ana's name": ana.username, "cleo's name": cleo.username}
    return World(
        ws["id"], ch, owner, auditor, ana, bob, cleo, [first["id"], deleted["id"]],
        bob_message, cleo_message["id"], first["position"], secrets, kept, erased["position"],
    )  # fmt: skip


def assert_none_of(w: World, got: Any) -> None:
    # Bob's message names Ana: it is his, and stays (docs/RELIABILITY.md says so).
    dump = json.dumps(got).replace(w.kept, "")
    for what, secret in w.secrets.items():
        assert secret not in dump, f"{what} reached a reader after the erasure"


def assert_erased_envelopes(w: World, events: list[dict[str, Any]]) -> None:
    """Every text event of an erased author reads null and names it; Bob's reads whole."""
    assert_none_of(w, events)
    by_stream = {s: [e for e in events if e["stream"] == s] for s in w.ana_messages}
    texts = [e for es in by_stream.values() for e in es if "text" in e["data"]]
    assert len(texts) == 3, texts  # sent, edited; sent (then deleted)
    for e in texts:
        assert e["data"]["text"] is None and e["data"][ERASED] == ["text"], e
        assert e["actor"] == w.ana.user_id and e["at"] and e["position"]
    (bob,) = [e for e in events if e["stream"] == w.bob_message]
    assert bob["data"]["text"] == w.kept and ERASED not in bob["data"]
    assert bob["data"]["mentions"] == [w.ana.user_id]


# -- every read path ------------------------------------------------------------------------


def test_api_events_reads_erased_fields_as_erased_for_every_reader(
    chorus: Running, world: World
) -> None:
    for user in (world.bob, world.owner, world.auditor):
        assert_erased_envelopes(world, events_of(chorus, user, after=world.sent_at - 1))
        for stream in world.ana_messages:
            assert_none_of(world, events_of(chorus, user, stream=stream))


def test_the_audit_trail_says_who_erased_what_kind_and_when(chorus: Running, world: World) -> None:
    """A user stream is its owner's alone on /api/events; the operators' console log shows
    every erasure: whose, by whom (None: an operator), what kinds, when. Not the data: the
    erased user's registration reads null there too."""
    out = cli(chorus, "events", "--type", "UserErased")
    assert out.returncode == 0, out.stderr
    erased = [json.loads(line) for line in out.stdout.splitlines()]
    trail = {e["stream"]: (e["actor"], e["data"]["kinds"], bool(e["at"])) for e in erased}
    assert trail[world.ana.user_id] == (world.ana.user_id, ["profile", "messages"], True)
    assert trail[world.cleo.user_id] == (None, ["profile", "messages"], True)
    out = cli(chorus, "events", "--stream", world.ana.user_id)
    (registered,) = [
        e for line in out.stdout.splitlines() if (e := json.loads(line))["type"] == "UserRegistered"
    ]
    assert registered["data"]["username"] is None
    assert registered["data"][ERASED] == ["username", "display_name"]
    assert_none_of(world, out.stdout)


def test_ws_catch_up_from_zero_reads_them_erased(chorus: Running, world: World) -> None:
    for user in (world.bob, world.owner):
        got: list[dict[str, Any]] = []
        with socket(chorus, user.access_token) as ws:
            streams = [{"workspace": world.ws}]
            send(ws, {"op": "subscribe", "sub": "s", "streams": streams, "after": 0})
            until(ws, "subscribed")
            while not any(e["stream"] == world.cleo_message for e in got):
                got.append(until(ws, "event")["event"])
        assert_erased_envelopes(world, got)


def test_time_travel_before_the_erasure_shows_them_erased(chorus: Running, world: World) -> None:
    api = chorus.api
    then = api.ok(api.get(f"/api/streams/{world.ana_messages[0]}", world.owner, at=world.sent_at))
    assert then["version"] == 1 and then["state"]["text"] is None
    assert then["erased"] == ["text"]  # erased, not "never set"
    assert_none_of(world, then)
    bob = api.ok(api.get(f"/api/streams/{world.bob_message}", world.owner))
    assert bob["state"]["text"] == world.kept and bob["erased"] == []


def test_the_timeline_and_the_users_read_model_forget_them(chorus: Running, world: World) -> None:
    api = chorus.api
    got = api.ok(api.get(f"/api/channels/{world.ch}/messages", world.bob))["items"]
    assert_none_of(world, got)
    texts = {m["id"]: m["text"] for m in got}
    assert texts[world.ana_messages[0]] == "" and texts[world.cleo_message] == ""
    assert texts[world.bob_message] == world.kept
    with psycopg.connect(chorus.database_url) as conn:
        users = conn.execute("SELECT username, display_name FROM rm_users").fetchall()
    assert_none_of(world, users)


def test_an_erased_user_can_no_longer_sign_in_and_their_sessions_ended(
    chorus: Running, world: World
) -> None:
    api = chorus.api
    assert api.get("/api/auth/me", world.ana).status_code == 401
    for user in (world.ana, world.cleo):
        r = api.post(
            "/api/auth/login", None, {"username": user.username, "password": GOOD_PASSWORD}
        )
        assert r.status_code == 401, r.text
    refreshed = api.post("/api/auth/refresh", None, {"refresh_token": world.ana.refresh_token})
    assert refreshed.status_code == 401


def test_exports_and_the_console_log_hold_none_of_it(chorus: Running, world: World) -> None:
    for view in VIEWS:
        for fmt in ("csv", "ndjson"):
            out = cli(chorus, "export", "--table", view, "--format", fmt)
            assert out.returncode == 0, out.stderr
            assert_none_of(world, out.stdout)
    out = cli(chorus, "events", "--after", str(world.sent_at - 1))
    assert out.returncode == 0, out.stderr
    envelopes = [json.loads(line) for line in out.stdout.splitlines()]
    assert_erased_envelopes(world, envelopes)


def test_a_rebuild_from_zero_brings_nothing_back_and_verify_passes(
    chorus: Running, world: World
) -> None:
    out = cli(chorus, "replay", "--all")
    assert out.returncode == 0, out.stderr
    api = chorus.api
    got = api.ok(api.get(f"/api/channels/{world.ch}/messages", world.bob))["items"]
    assert_none_of(world, got)
    # Bob's text came back from its seal: the rebuild opened what was not erased.
    assert world.kept in {m["text"] for m in got}
    verified = cli(chorus, "verify", "--no-progress")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ok:" in verified.stdout
    shredded = [line for line in verified.stdout.splitlines() if line.startswith("shredded:")]
    assert shredded, verified.stdout
    # Ana: 3 texts, her registration and claim (5); Cleo: a text, registration, claim (3).
    assert int(shredded[0].split()[1]) == 8, shredded


def test_erasure_needs_the_password_and_a_signed_in_user(chorus: Running) -> None:
    api = chorus.api
    dana = api.signup("dana")
    before = chorus.events()
    wrong = erase(chorus, dana, {"password": "not-" + GOOD_PASSWORD})
    assert wrong.status_code == 403, wrong.text
    assert erase(chorus, None, {"password": GOOD_PASSWORD}).status_code == 401
    for body in ({}, {"password": ""}, {"password": "x", "user_id": dana.user_id}, [1]):
        r = erase(chorus, dana, body)
        assert r.status_code in (400, 422), (body, r.status_code)
    assert chorus.events() == before, "a refused erasure appended something"
    with psycopg.connect(chorus.database_url) as conn:
        live = conn.execute(
            f"SELECT count(*) FROM {KEYS_TABLE} WHERE subject_id = %s AND wrapped IS NOT NULL",
            (dana.user_id,),
        ).fetchone()
    assert live == (1,)
    # Erased once; a second erasure (a new sign-in is impossible) finds no such user.
    assert cli(chorus, "erase-user", dana.username).returncode == 0
    again = cli(chorus, "erase-user", dana.username)
    assert again.returncode == 1 and "unknown user" in again.stderr
    assert cli(chorus, "erase-user", "nobody-here").returncode == 1


def test_events_stored_in_the_clear_before_this_issue_read_as_before(
    chorus: Running, world: World
) -> None:
    """A store written before erasure existed: an application without a key ring writes
    as Chorus did then; the server reads it as it was (nothing to open, nothing erased)."""
    text = f"plain-{uuid.uuid4().hex[:8]}"
    old = Chorus(
        eventsourcing_env(chorus.database_url, pool_size=1),
        passwords=NoPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        sent = old.execute(
            SendMessage(channel_id=world.ch, text=text), Cause(actor_id=world.bob.user_id)
        )
    finally:
        old.close()
    assert text.encode() in _stored(chorus.database_url)
    assert sent.position is not None
    assert chorus.server.services.runner.wait_for(sent.position, 30)
    (event,) = events_of(chorus, world.owner, stream=str(sent.body["id"]))
    assert event["data"]["text"] == text and ERASED not in event["data"]
    got = chorus.api.ok(chorus.api.get(f"/api/channels/{world.ch}/messages", world.bob))
    assert text in {m["text"] for m in got["items"]}


def test_rotating_the_master_key_rewraps_every_key(chorus: Running, world: World) -> None:
    """Last in the module: the server still holds the old key. The console re-wraps every
    live key under a new one, read from stdin; the log then opens with the new key only."""
    new = new_master_key()
    env = {**os.environ, "DATABASE_URL": chorus.database_url, "CHORUS_MASTER_KEY": MASTER_KEY}
    out = subprocess.run(
        [CHORUS, "rotate-master-key", "--new-key-from-stdin"],
        env=env,
        input=new + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == new  # to be set as CHORUS_MASTER_KEY
    with psycopg.connect(chorus.database_url) as conn:
        live = conn.execute(
            f"SELECT count(*), count(DISTINCT master_id) FROM {KEYS_TABLE}"
            " WHERE wrapped IS NOT NULL"
        ).fetchone()
    assert live is not None and live[0] > 0 and live[1] == 1
    assert f"re-wrapped {live[0]} data keys" in out.stdout
    read = subprocess.run(
        [CHORUS, "events", "--stream", world.bob_message],
        env={**env, "CHORUS_MASTER_KEY": new},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout.splitlines()[0])["data"]["text"] == world.kept
    stale = subprocess.run(
        [CHORUS, "events", "--stream", world.bob_message],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # The old key is refused, loudly: not read as if everything were erased.
    assert stale.returncode != 0 and world.kept not in stale.stdout
    assert "KeyRefused" in stale.stderr or "wrapped by master key" in stale.stderr
