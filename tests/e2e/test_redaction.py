"""Issue 17, finding 5: deleted and replaced content is withheld from plain readers on every
read path, and shown whole to holders of ``view_audit`` and to the instance's auditors.

One world is built per module: a message sent, edited and deleted; a message edited twice; a
message never changed; a document written and then deleted; a member who joined after all
of it. Every read path is then asked for it by each kind of reader.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import psycopg
import pytest
from eventsourcing.domain import CanMutateAggregate

import domain
from domain.base import ChorusAggregate
from infrastructure.serialisation import state_type
from projections.analytics import VIEWS
from projections.redaction import CONTENT, ENDINGS, REDACTED, SAFE, UNREDACTED_READERS
from tests.fixtures.analytics import chorus_cli
from tests.fixtures.chorus import Api, Running, User
from tests.fixtures.documents import client, doc_events, new_document, next_event, type_text
from tests.fixtures.operators import instance_role
from tests.fixtures.websocket import send, socket, until

# -- the class: every event type's text-like fields are declared -------------------------------

# Stored beside the data, or shown by the envelope itself.
_ENVELOPE_FIELDS = {"timestamp", "actor_id", "command_id", "originator_topic"}


def _event_classes() -> dict[str, type[Any]]:
    """Every domain event class, by the type name clients see, found by walking the
    aggregates of every module of ``domain`` (a new module or event is found too)."""
    for info in pkgutil.iter_modules(domain.__path__):
        importlib.import_module(f"domain.{info.name}")
    found: dict[str, type[Any]] = {}
    pending: list[type[Any]] = [ChorusAggregate]
    while pending:
        aggregate = pending.pop()
        pending.extend(aggregate.__subclasses__())
        if not aggregate.__module__.startswith("domain."):
            continue  # aggregates that tests define (tests/toy, ...)
        for value in vars(aggregate).values():
            # Every aggregate's own ``Event`` and ``Created`` are only bases.
            bases = (getattr(aggregate, "Event", None), getattr(aggregate, "Created", None))
            if isinstance(value, type) and issubclass(value, CanMutateAggregate):
                if value in bases:
                    continue
                found[value.__name__] = value
    return found


def _text_like(hint: Any) -> bool:
    """A string, bytes, or a collection holding them: what could carry what users wrote."""
    if hint in (str, bytes):
        return True
    return get_origin(hint) is not None and any(_text_like(a) for a in get_args(hint))


def _stored_fields(event_class: Any) -> dict[str, Any]:
    """The fields the store keeps in an event's state, with their types."""
    struct = state_type(event_class)
    hints = typing.get_type_hints(struct)
    return {name: hints[name] for name in struct.__struct_fields__}


def _content_fields(event_class: type[Any]) -> set[str]:
    return {
        name
        for name, hint in _stored_fields(event_class).items()
        if name not in _ENVELOPE_FIELDS and not name.endswith(("_id", "_ids")) and _text_like(hint)
    }


def test_every_text_like_field_of_every_event_is_redacted_or_declared_safe() -> None:
    classes = _event_classes()
    assert {"MessageSent", "MessageEdited", "DocumentUpdateApplied"} <= set(classes)
    undeclared = {}
    for name, cls in classes.items():
        fields = _content_fields(cls)
        assert REDACTED not in _stored_fields(cls), f"{name} has a field named {REDACTED}"
        declared = set(CONTENT[name].fields if name in CONTENT else ()) | set(SAFE.get(name, {}))
        if fields - declared:
            undeclared[name] = sorted(fields - declared)
        for field in declared:
            assert field in _stored_fields(cls), f"{name}.{field} is declared, not a field"
        both = set(CONTENT[name].fields if name in CONTENT else ()) & set(SAFE.get(name, {}))
        assert not both, f"{name}: {both} both redacted and safe"
    assert not undeclared, f"declare these in projections/redaction.py: {undeclared}"
    assert set(SAFE) | set(CONTENT) <= set(classes), "a declaration names no event type"
    assert set(classes) >= ENDINGS
    # Each kind of redacted content has a deletion that ends it.
    for name in CONTENT:
        owner = classes[name].__qualname__.split(".")[0]
        assert any(classes[e].__qualname__.split(".")[0] == owner for e in ENDINGS), name


# Everything projections/log.py offers that yields stored events with their data.
_EVENT_READERS = {
    "visible_events",
    "scoped_events",
    "read_events",
    "read_span",
    "to_log_event",
    "SELECT_EVENTS",
}


def test_every_module_that_hands_out_stored_events_applies_the_rule() -> None:
    """A new read path cannot forget the rule: a module of api/ or application/ that takes
    stored events from projections/log.py also imports projections/redaction.py, or is
    declared exempt beside the rule, with the reason."""
    root = Path(__file__).resolve().parents[2]
    readers: dict[str, bool] = {}
    for package in ("api", "application"):
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            imported: set[tuple[str, str]] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    imported |= {(node.module, a.name) for a in node.names}
            if any((m, n) in imported for m in ("projections.log",) for n in _EVENT_READERS):
                readers[module] = any(m == "projections.redaction" for m, _ in imported)
    assert {"api.events", "api.realtime.socket"} <= set(readers)
    forgotten = [m for m, applies in readers.items() if not applies and m not in UNREDACTED_READERS]
    assert not forgotten, f"apply projections.redaction in {forgotten} or declare why not"
    assert set(UNREDACTED_READERS) <= set(readers), "an exemption names no reader"


# -- the world ----------------------------------------------------------------------------------


@dataclass
class World:
    ws: str
    ch: str
    owner: User  # holds view_audit (owners do)
    admin: User  # every permission but view_audit: a plain reader here
    member: User
    late: User  # joined after everything below
    auditor: User  # the instance's auditor, an ordinary member of the workspace
    deleted: str  # sent, edited, deleted
    edited: str  # sent, edited twice
    kept: str  # sent, never changed
    doc: str  # written to, then deleted
    doc_written: int  # a position at which the document had content
    start: int  # the log's position before the world
    last: int  # the world's last event (the late member's join)
    secrets: dict[str, str]
    final: str
    kept_text: str
    doc_text: str


def erasing_off(api: Api, owner: User, ws: str) -> Any:
    """Turns the workspace's "deleted means erased" off (issue 20)."""
    return api.put(
        f"/api/workspaces/{ws}/settings/deleted-means-erased", owner, json={"enabled": False}
    )


@pytest.fixture(scope="module")
def world(chorus: Running) -> World:
    api = chorus.api
    tag = uuid.uuid4().hex[:8]
    owner, admin, member = api.signup("own"), api.signup("adm"), api.signup("mem")
    auditor, late = api.signup("aud"), api.signup("late")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "R", "visibility": "public"}), 201)
    ws_id = ws["id"]
    start = ws["position"] - 1
    for user in (admin, member, auditor):
        api.ok(api.post(f"/api/workspaces/{ws_id}/join", user))
    # "Deleted means erased" off: with it on (the default since issue 20) a deletion destroys
    # the text for every reader, auditors included (tests/e2e/test_shred_deleted_messages.py).
    # This module is about what "off" keeps: withheld from plain readers, not destroyed.
    api.ok(erasing_off(api, owner, ws_id))
    api.ok(api.put(f"/api/workspaces/{ws_id}/members/{admin.user_id}/roles/admin", owner))
    instance_role(chorus, "grant", auditor)
    ch = api.ok(api.post(f"/api/workspaces/{ws_id}/channels", owner, {"name": "r"}), 201)["id"]
    secrets = {
        "sent then deleted": f"sent-then-deleted-{tag} @{member.username}",
        "edit then deleted": f"edit-then-deleted-{tag}",
        "first draft": f"first-draft-{tag}",
        "second draft": f"second-draft-{tag}",
    }

    def say(text: str) -> str:
        return str(
            api.ok(api.post(f"/api/channels/{ch}/messages", member, {"text": text}), 201)["id"]
        )

    def edit(message: str, text: str) -> None:
        api.ok(api.patch(f"/api/messages/{message}", member, {"text": text}))

    deleted = say(secrets["sent then deleted"])
    edit(deleted, secrets["edit then deleted"])
    api.ok(api.delete(f"/api/messages/{deleted}", member))
    edited = say(secrets["first draft"])
    edit(edited, secrets["second draft"])
    final = f"final-{tag}"
    edit(edited, final)
    kept_text = f"kept-{tag}"
    kept = say(kept_text)

    doc = new_document(api, owner, ws_id)
    doc_text = f"doc-secret-{tag}"
    with doc_events(chorus, owner, doc) as events, client(chorus, doc, owner).wait_synced() as c:
        type_text(c, doc_text)
        doc_written = next_event(events)["position"]
        type_text(c, " and more")
        next_event(events)
    api.ok(api.delete(f"/api/documents/{doc}", owner))
    joined = api.ok(api.post(f"/api/workspaces/{ws_id}/join", late))
    last = joined["position"]
    assert chorus.server.services.runner.wait_for(last, 30)
    return World(
        ws_id, ch, owner, admin, member, late, auditor, deleted, edited, kept, doc, doc_written,
        start, last, secrets, final, kept_text, doc_text,
    )  # fmt: skip


def plain_readers(w: World) -> list[User]:
    return [w.member, w.late, w.admin]


def full_readers(w: World) -> list[User]:
    return [w.owner, w.auditor]


# -- what each kind of reader must see ------------------------------------------------------------


def _of(events: list[dict[str, Any]], stream: str) -> list[dict[str, Any]]:
    return [e for e in events if e["stream"] == stream]


def assert_redacted(w: World, events: list[dict[str, Any]], *, documents: bool = True) -> None:
    """What a plain reader must get: every envelope, no withheld content."""
    dump = json.dumps(events)
    for what, secret in w.secrets.items():
        assert secret.split(" @")[0] not in dump, f"the {what} text reached a plain reader"
    deleted = _of(events, w.deleted)
    assert [e["type"] for e in deleted] == ["MessageSent", "MessageEdited", "MessageDeleted"]
    for e in deleted[:2]:
        assert e["data"]["text"] is None and e["data"]["mentions"] is None, e
        assert e["data"][REDACTED] == ["text", "mentions"], e
        assert e["actor"] == w.member.user_id and e["at"] and e["position"]
    edited = _of(events, w.edited)
    assert [e["version"] for e in edited] == [1, 2, 3]
    for e in edited[:2]:
        assert e["data"]["text"] is None and e["data"][REDACTED] == ["text", "mentions"], e
    assert edited[2]["data"]["text"] == w.final and REDACTED not in edited[2]["data"]
    (kept,) = _of(events, w.kept)
    assert kept["data"]["text"] == w.kept_text and REDACTED not in kept["data"]
    if documents:
        doc = _of(events, w.doc)
        types = [e["type"] for e in doc]
        assert types[0] == "DocumentCreated" and types[-1] == "DocumentDeleted"
        updates = [e for e in doc if e["type"] == "DocumentUpdateApplied"]
        assert len(updates) >= 2
        for e in updates:
            assert e["data"]["update"] is None and e["data"][REDACTED] == ["update"], e
            assert e["data"]["roots"] is not None


def assert_whole(w: World, events: list[dict[str, Any]], *, documents: bool = True) -> None:
    """What an auditor must get: everything as it was written."""
    assert not [e for e in events if REDACTED in e["data"]]
    deleted = _of(events, w.deleted)
    assert [e["data"].get("text") for e in deleted] == [
        w.secrets["sent then deleted"],
        w.secrets["edit then deleted"],
        None,
    ]
    assert deleted[0]["data"]["mentions"] == [w.member.user_id]
    assert [e["data"]["text"] for e in _of(events, w.edited)] == [
        w.secrets["first draft"],
        w.secrets["second draft"],
        w.final,
    ]
    if documents:
        updates = [e for e in _of(events, w.doc) if e["type"] == "DocumentUpdateApplied"]
        assert updates and all(isinstance(e["data"]["update"], str) for e in updates)


# -- /api/events ---------------------------------------------------------------------------------


def events_of(api: Api, user: User, **params: Any) -> list[dict[str, Any]]:
    """Every event the reader may see, following ``next``."""
    got: list[dict[str, Any]] = []
    while True:
        page = api.ok(api.get("/api/events", user, **params))
        got += page["items"]
        if page["next"] is None:
            return got
        params["after"] = int(page["next"])


def test_api_events_by_stream_withholds_deleted_and_replaced_text(
    chorus: Running, world: World
) -> None:
    api = chorus.api
    streams = (world.deleted, world.edited, world.kept, world.doc)
    for user in plain_readers(world):
        assert_redacted(world, [e for s in streams for e in events_of(api, user, stream=s)])
    for user in full_readers(world):
        assert_whole(world, [e for s in streams for e in events_of(api, user, stream=s)])


def test_api_events_in_log_order_withholds_them_too(chorus: Running, world: World) -> None:
    api = chorus.api
    for user in (world.late, world.member):
        got = events_of(api, user, after=world.start, limit=7)
        assert got[-1]["position"] >= world.last
        assert_redacted(world, got)
        # Filtered by type: the same rule.
        edits = events_of(api, user, after=world.start, type="MessageEdited")
        texts = [e["data"]["text"] for e in edits if e["stream"] in (world.deleted, world.edited)]
        assert texts == [None, None, world.final]
    assert_whole(world, events_of(api, world.owner, after=world.start, limit=7))


# -- /ws catch-up -----------------------------------------------------------------------------


def caught_up(
    chorus: Running, user: User, streams: list[dict[str, str]], after: int, until_pos: int
) -> list[dict[str, Any]]:
    """A subscription's catch-up from ``after`` up to the event at ``until_pos``."""
    got: list[dict[str, Any]] = []
    with socket(chorus, user.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "s", "streams": streams, "after": after})
        until(ws, "subscribed")
        while not got or got[-1]["position"] < until_pos:
            got.append(until(ws, "event")["event"])
    return got


def test_ws_catch_up_from_zero_withholds_them(chorus: Running, world: World) -> None:
    on_workspace: list[dict[str, str]] = [{"workspace": world.ws}]
    on_channel: list[dict[str, str]] = [{"channel": world.ch}]
    kept_at = events_of(chorus.api, world.owner, stream=world.kept)[0]["position"]
    for user in plain_readers(world):
        assert_redacted(world, caught_up(chorus, user, on_workspace, 0, world.last))
        assert_redacted(world, caught_up(chorus, user, on_channel, 0, kept_at), documents=False)
    for user in full_readers(world):
        assert_whole(world, caught_up(chorus, user, on_workspace, 0, world.last))


def test_ws_catch_up_past_the_read_models_withholds_them(chorus: Running) -> None:
    """Past the position the visibility read models have reached, a catch-up reads the log
    whole and filters it itself: the same rule applies there. Gate: the streams read model's
    tracking row is held locked, so the read models cannot move past what follows."""
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "T", "visibility": "public"}), 201)
    api.ok(api.post(f"/api/workspaces/{ws['id']}/join", member))
    api.ok(erasing_off(api, owner, ws["id"]))
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "t"}), 201)
    assert chorus.server.services.runner.wait_for(ch["position"], 30)
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(chorus.database_url) as gate:
        gate.execute("SELECT 1 FROM rm_tracking WHERE projection = 'streams' FOR UPDATE")
        sent = api.ok(
            api.post(f"/api/channels/{ch['id']}/messages", owner, {"text": f"gone-{tag}"}), 201
        )
        api.ok(api.patch(f"/api/messages/{sent['id']}", owner, {"text": f"also-gone-{tag}"}))
        last = api.ok(api.delete(f"/api/messages/{sent['id']}", owner))["position"]
        with psycopg.connect(chorus.database_url) as conn:
            row = conn.execute(
                "SELECT position FROM rm_tracking WHERE projection = 'streams'"
            ).fetchone()
            assert row is not None and row[0] < sent["position"], "the gate did not hold"
        got = caught_up(chorus, member, [{"channel": ch["id"]}], ch["position"], last)
        audited = caught_up(chorus, owner, [{"channel": ch["id"]}], ch["position"], last)
        gate.rollback()
    assert [e["type"] for e in got] == ["MessageSent", "MessageEdited", "MessageDeleted"]
    assert tag not in json.dumps(got)
    assert all(e["data"][REDACTED] == ["text", "mentions"] for e in got[:2])
    assert [e["data"].get("text") for e in audited] == [f"gone-{tag}", f"also-gone-{tag}", None]


def test_direct_messages_are_withheld_from_both_members(chorus: Running) -> None:
    """A direct channel belongs to no workspace: nobody there holds view_audit, so both its
    members (the author too) read a deleted or replaced direct message redacted, over REST
    and in the catch-up of their user stream."""
    api = chorus.api
    one, other = api.signup("one"), api.signup("two")
    ws = api.acquaint(one, other)
    # Named: found without it, the shared workspace comes from a read model that may not
    # have the other's join yet (the one who opens it did not write that join).
    body = {"user_id": other.user_id, "workspace_id": ws}
    dm = api.ok(api.post("/api/dms", one, body), 201)["channel_id"]
    tag = uuid.uuid4().hex[:8]
    sent = api.ok(api.post(f"/api/channels/{dm}/messages", one, {"text": f"dm-gone-{tag}"}), 201)
    api.ok(api.patch(f"/api/messages/{sent['id']}", one, {"text": f"dm-also-gone-{tag}"}))
    last = api.ok(api.delete(f"/api/messages/{sent['id']}", one))["position"]
    for user in (one, other):
        rest = events_of(api, user, stream=sent["id"])
        live = caught_up(chorus, user, [{"user": "me"}], sent["position"] - 1, last)
        for got in (rest, [e for e in live if e["stream"] == sent["id"]]):
            assert [e["type"] for e in got] == ["MessageSent", "MessageEdited", "MessageDeleted"]
            assert tag not in json.dumps(got)
            assert all(e["data"][REDACTED] == ["text", "mentions"] for e in got[:2])


# -- /ws live ----------------------------------------------------------------------------------


def test_ws_live_delivers_the_deletion_and_a_later_catch_up_is_redacted(
    chorus: Running, world: World
) -> None:
    """What a live reader already received stays with them; the deletion reaches them live,
    and their next catch-up no longer holds the text."""
    api = chorus.api
    tag = uuid.uuid4().hex[:8]
    with socket(chorus, world.late.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "live", "streams": [{"channel": world.ch}]})
        before = until(ws, "subscribed")["head"]
        sent = api.post(f"/api/channels/{world.ch}/messages", world.member, {"text": f"l-{tag}"})
        message = api.ok(sent, 201)["id"]
        live_sent = until(ws, "event")["event"]
        api.ok(api.delete(f"/api/messages/{message}", world.member))
        live_deleted = until(ws, "event")["event"]
    assert live_sent["type"] == "MessageSent" and live_sent["data"]["text"] == f"l-{tag}"
    assert live_deleted["type"] == "MessageDeleted" and live_deleted["stream"] == message
    again = caught_up(chorus, world.late, [{"channel": world.ch}], before, live_deleted["position"])
    assert [e["type"] for e in again] == ["MessageSent", "MessageDeleted"]
    assert again[0]["data"]["text"] is None and again[0]["data"][REDACTED] == ["text", "mentions"]
    assert tag not in json.dumps(again)


# -- /api/streams?at= and /api/documents/{id}?at= ---------------------------------------------


def test_api_streams_at_is_for_auditors_alone(chorus: Running, world: World) -> None:
    """A stream as of a position needs view_audit: plain readers get no state at all (so no
    withheld text), holders get it whole."""
    api = chorus.api
    sent_at = events_of(api, world.owner, stream=world.deleted)[0]["position"]
    for user in plain_readers(world):
        for stream in (world.deleted, world.edited, world.doc):
            for at in (sent_at, world.doc_written, None):
                params = {} if at is None else {"at": at}
                r = api.get(f"/api/streams/{stream}", user, **params)
                assert r.status_code in (403, 404), r.text
                assert world.secrets["first draft"] not in r.text
    then = api.ok(api.get(f"/api/streams/{world.deleted}", world.owner, at=sent_at))
    assert then["state"]["text"] == world.secrets["sent then deleted"]
    doc = api.ok(api.get(f"/api/streams/{world.doc}", world.owner, at=world.doc_written))
    assert doc["state"]["content"] == {"content": world.doc_text}


def test_a_deleted_documents_content_is_gone_at_every_position(
    chorus: Running, world: World
) -> None:
    """``GET /api/documents/{id}`` and its ``/update`` answer 410 for a deleted document at
    any ``at`` (documented in docs/API.md): the deletion is in the log anyway, the content is
    not handed out. Auditors read it through ``/api/streams/{id}?at=``."""
    api = chorus.api
    for user in [*plain_readers(world), *full_readers(world)]:
        for at in (world.doc_written, world.last, None):
            params = {} if at is None else {"at": at}
            for path in (f"/api/documents/{world.doc}", f"/api/documents/{world.doc}/update"):
                r = api.get(path, user, **params)
                assert r.status_code == 410, (path, at, r.status_code)
                assert world.doc_text not in r.text


# -- exports ----------------------------------------------------------------------------------


def test_exports_hold_no_deleted_or_replaced_text(chorus: Running, world: World) -> None:
    """``chorus export`` of every analytics view, in both formats: activity, not text."""
    for view in VIEWS:
        for fmt in ("csv", "ndjson"):
            out = chorus_cli(chorus.database_url, "export", "--table", view, "--format", fmt)
            assert out.returncode == 0, out.stderr
            for secret in [*world.secrets.values(), world.doc_text]:
                assert secret.split(" @")[0] not in out.stdout, (view, fmt)
    with psycopg.connect(chorus.database_url) as conn:
        row = conn.execute(
            "SELECT deleted, text_length, mentions FROM analytics.messages WHERE message_id = %s",
            (world.deleted,),
        ).fetchone()
    assert row == (True, 0, 0)
