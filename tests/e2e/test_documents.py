"""Documents: REST, the y-websocket endpoint with a pycrdt client, snapshots and time travel,
against the running server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row
from pycrdt import Doc, Map, Text
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api.realtime.hub import Delivery
from api.yjs import endpoint as endpoint_module
from api.yjs.endpoint import Editor
from application.commands import ApplyDocumentUpdate
from application.documents import document_with_workspace
from application.live_documents.room import RUN_BYTES
from domain import yjs_protocol as protocol
from domain.base import Cause
from domain.rules import MAX_DOCUMENT_UPDATE_BYTES
from infrastructure.embedded_postgres import EmbeddedPostgres
from projections.documents import SNAPSHOT_EVERY_UPDATES, load_document
from tests.fixtures.chorus import Running, User, running_chorus
from tests.fixtures.documents import (
    client,
    doc_events,
    new_document,
    next_event,
    stream_events,
    text_of,
    type_text,
    workspace_with,
)
from tests.fixtures.yjs import TIMEOUT, YClient

# -- REST ---------------------------------------------------------------------------------------


def test_create_list_rename_delete(chorus: Running) -> None:
    api = chorus.api
    owner, member, outsider = api.signup("own"), api.signup("mem"), api.signup("out")
    ws = workspace_with(api, owner, member=member)
    doc = new_document(api, member, ws, "  Plan  ")
    listed = api.ok(api.get(f"/api/workspaces/{ws}/documents", owner))
    assert [d["title"] for d in listed["items"]] == ["Plan"]
    shown = api.ok(api.get(f"/api/documents/{doc}", owner))
    assert shown["content"] == {} and shown["title"] == "Plan"
    # The creator may rename; another member without manage_documents may not.
    api.ok(api.patch(f"/api/documents/{doc}", member, {"title": "Plan B"}))
    other = api.signup("oth")
    api.ok(api.post(f"/api/workspaces/{ws}/join", other, {}))
    assert api.patch(f"/api/documents/{doc}", other, {"title": "x"}).status_code == 403
    assert api.ok(api.get(f"/api/documents/{doc}", owner))["title"] == "Plan B"
    # Outsiders are told it does not exist.
    assert api.get(f"/api/documents/{doc}", outsider).status_code == 404
    assert api.get(f"/api/workspaces/{ws}/documents", outsider).status_code == 404
    api.ok(api.delete(f"/api/documents/{doc}", owner))
    assert api.get(f"/api/documents/{doc}", owner).status_code == 410
    assert api.ok(api.get(f"/api/workspaces/{ws}/documents", owner))["items"] == []
    assert api.delete(f"/api/documents/{doc}", owner).status_code == 410


def test_refusals_append_nothing(chorus: Running) -> None:
    api = chorus.api
    owner, viewer, outsider = api.signup("own"), api.signup("view"), api.signup("out")
    ws = workspace_with(api, owner, viewer=viewer)
    before = chorus.events()
    assert api.post(f"/api/workspaces/{ws}/documents", viewer, {"title": "x"}).status_code == 403
    assert api.post(f"/api/workspaces/{ws}/documents", outsider, {"title": "x"}).status_code == 404
    assert api.post(f"/api/workspaces/{ws}/documents", owner, {"title": "   "}).status_code == 422
    assert api.post(f"/api/workspaces/{ws}/documents", owner, {"title": "x" * 500}).status_code in (
        400,
        422,
    )
    assert api.post(f"/api/workspaces/{ws}/documents", owner, {"name": "x"}).status_code == 422
    assert chorus.events() == before


def test_pagination(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    ws = workspace_with(api, owner)
    ids = [new_document(api, owner, ws, f"doc {i}") for i in range(5)]
    page = api.ok(api.get(f"/api/workspaces/{ws}/documents", owner, limit=2))
    seen = [d["id"] for d in page["items"]]
    while page["next"]:
        page = api.ok(
            api.get(f"/api/workspaces/{ws}/documents", owner, limit=2, after=page["next"])
        )
        seen += [d["id"] for d in page["items"]]
    assert seen == ids


# -- /yjs ----------------------------------------------------------------------------------------


def test_two_editors_converge_and_the_log_keeps_it(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = workspace_with(api, owner, member=member)
    doc = new_document(api, owner, ws)
    with (
        doc_events(chorus, owner, doc) as events,
        client(chorus, doc, owner).wait_synced() as a,
        client(chorus, doc, member).wait_synced() as b,
    ):
        type_text(a, "hello")
        b.wait(lambda: text_of(b) == "hello")

        def draw(y: YClient) -> None:
            y.map("shapes")["s1"] = {"kind": "rect", "x": 1.0}

        b.edit(draw)
        a.wait(
            lambda: a.read(lambda y: y.map("shapes").to_py()) == {"s1": {"kind": "rect", "x": 1.0}}
        )
        first = next_event(events)
        assert first["actor"] in (owner.user_id, member.user_id)
        second = next_event(events)
        position = max(first["position"], second["position"])
    shown = api.ok(api.get(f"/api/documents/{doc}", owner, min_position=position))
    assert shown["content"] == {"content": "hello", "shapes": {"s1": {"kind": "rect", "x": 1.0}}}
    assert shown["roots"] == {"content": "text", "shapes": "map"}
    # The full state as one update, for any Yjs client.
    raw = api.http.get(f"/api/documents/{doc}/update", headers=owner.headers)
    assert raw.headers["content-type"] == "application/octet-stream"
    fresh: Doc[Any] = Doc()
    fresh.apply_update(raw.content)
    assert str(fresh.get("content", type=Text)) == "hello"
    assert fresh.get("shapes", type=Map).to_py() == {"s1": {"kind": "rect", "x": 1.0}}


def test_a_late_editor_gets_the_saved_state(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    ws = workspace_with(api, owner)
    doc = new_document(api, owner, ws)
    with doc_events(chorus, owner, doc) as events, client(chorus, doc, owner).wait_synced() as a:
        type_text(a, "saved text")
        next_event(events)
    with client(chorus, doc, owner).wait_synced() as late:
        assert text_of(late) == "saved text"


def test_bursts_are_saved_as_few_events(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    ws = workspace_with(api, owner)
    doc = new_document(api, owner, ws)
    before = stream_events(chorus, doc)
    with doc_events(chorus, owner, doc) as events, client(chorus, doc, owner).wait_synced() as a:
        for ch in "typing fast":
            type_text(a, ch)
        event = next_event(events)
        shown = api.ok(api.get(f"/api/documents/{doc}", owner, min_position=event["position"]))
        while shown["content"].get("content") != "typing fast":
            event = next_event(events)
            shown = api.ok(api.get(f"/api/documents/{doc}", owner, min_position=event["position"]))
    assert stream_events(chorus, doc) - before <= 3


def test_time_travel_shows_earlier_text(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    ws = workspace_with(api, owner)
    doc = new_document(api, owner, ws)
    with doc_events(chorus, owner, doc) as events, client(chorus, doc, owner).wait_synced() as a:
        type_text(a, "first draft")
        early = next_event(events)["position"]

        def rewrite(y: YClient) -> None:
            t = y.text()
            del t[0:5]
            t.insert(0, "final")

        a.edit(rewrite)
        late = next_event(events)["position"]
    now = api.ok(api.get(f"/api/documents/{doc}", owner, min_position=late))
    assert now["content"]["content"] == "final draft"
    then = api.ok(api.get(f"/api/documents/{doc}", owner, at=early))
    assert then["content"]["content"] == "first draft" and then["at"] == early
    assert api.get(f"/api/documents/{doc}", owner, at=-1).status_code == 422
    assert api.get(f"/api/documents/{doc}", owner, at=10**12).status_code == 422


def test_viewer_is_read_only(chorus: Running) -> None:
    api = chorus.api
    owner, viewer = api.signup("own"), api.signup("view")
    ws = workspace_with(api, owner, viewer=viewer)
    doc = new_document(api, owner, ws)
    with (
        client(chorus, doc, owner).wait_synced() as a,
        client(chorus, doc, viewer).wait_synced() as v,
    ):
        type_text(v, "vandalism")
        v.wait(lambda: bool(v.denied))
        assert "read-only" in v.denied[0]
        # The viewer still sees the editors' work.
        type_text(a, "real work")
        v.wait(lambda: "real work" in text_of(v))
        assert "vandalism" not in text_of(a)
    shown = api.ok(api.get(f"/api/documents/{doc}", owner))
    assert "vandalism" not in json.dumps(shown["content"])


@pytest.mark.parametrize(
    ("token", "code"),
    [(None, 4401), ("not-a-jwt", 4401)],
)
def test_bad_tokens_are_closed_with_4401(chorus: Running, token: str | None, code: int) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    c = YClient(chorus.server.url, doc, token)
    assert c.wait_closed() == code
    c.close()


def test_no_access_is_closed_with_4404(chorus: Running) -> None:
    api = chorus.api
    owner, outsider = api.signup("own"), api.signup("out")
    doc = new_document(api, owner, workspace_with(api, owner))
    for target in (doc, "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        c = client(chorus, target, outsider)
        assert c.wait_closed() == 4404
        c.close()


@pytest.mark.parametrize(
    "frame",
    [
        # An update whose first length makes pycrdt allocate ~0.5 GB before failing.
        protocol.sync_update(bytes.fromhex("8080808001")),
        protocol.sync_update(b"\x01\x05garbage"),
        protocol.sync_step2(b"\xff" * 32),
        bytes.fromhex("00028080808001"),  # a length beyond the frame
        bytes([0, 0]) + protocol.var_bytes(bytes.fromhex("8080808001")),  # absurd state vector
        bytes([7]),  # unknown message type
        bytes([1]) + protocol.var_bytes(b"\x01\x01\x01\x03{x}"),  # awareness state not JSON
    ],
)
def test_malformed_frames_close_and_append_nothing(chorus: Running, frame: bytes) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    before = stream_events(chorus, doc)
    with client(chorus, doc, owner).wait_synced() as c:
        c.send(frame)
        assert c.wait_closed() == 4400
    assert stream_events(chorus, doc) == before
    assert chorus.api.http.get("/health").status_code == 200
    with client(chorus, doc, owner).wait_synced() as again:
        type_text(again, "still works")
        assert text_of(again) == "still works"


def test_deleting_closes_editors_with_4410(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    with client(chorus, doc, owner).wait_synced() as c:
        api.ok(api.delete(f"/api/documents/{doc}", owner))
        assert c.wait_closed() == 4410
    late = client(chorus, doc, owner)
    assert late.wait_closed() == 4410
    late.close()


def test_awareness_is_shared_and_cleared_on_leave(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    with client(chorus, doc, owner).wait_synced() as a:
        b = client(chorus, doc, owner).wait_synced()
        b.set_awareness(4242, 1, b'{"who":"b"}')
        a.wait(lambda: a.awareness.get(4242) == b'{"who":"b"}')
        # Another connection may not speak for b's client id.
        a.set_awareness(4242, 5, b'{"who":"impostor"}')
        late = client(chorus, doc, owner).wait_synced()
        late.wait(lambda: 4242 in late.awareness)
        assert late.awareness[4242] == b'{"who":"b"}'
        b.close()
        a.wait(lambda: 4242 not in a.awareness)
        late.close()


def test_an_awareness_state_carries_its_connections_real_user(chorus: Running) -> None:
    """Issue 17, finding 10: a state claiming another user's id and name was relayed as
    sent. The server stamps ``user.id`` and ``user.name`` with the connection's own user;
    the rest of what the client says of itself (a colour) is kept."""
    api = chorus.api
    owner, viewer = api.signup("own"), api.signup("view")
    doc = new_document(api, owner, workspace_with(api, owner, viewer=viewer))
    claim = {"user": {"id": owner.user_id, "name": owner.username, "color": "#f00"}, "x": 1}
    with (
        client(chorus, doc, owner).wait_synced() as watcher,
        client(chorus, doc, viewer).wait_synced() as spoofer,
    ):
        spoofer.set_awareness(77, 1, json.dumps(claim).encode())
        spoofer.set_awareness(78, 1, b'{"cursor":3}')
        watcher.wait(lambda: {77, 78} <= set(watcher.awareness))
        shown = json.loads(watcher.awareness[77])
        real = {"id": viewer.user_id, "name": viewer.username}
        assert shown == {"user": {**real, "color": "#f00"}, "x": 1}
        assert (watcher.stamps[78], watcher.awareness[78]) == (real, b'{"cursor":3}')


# -- snapshots, restore, memory -------------------------------------------------------------


def test_opening_costs_a_snapshot_and_a_short_tail(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    services = chorus.server.services
    writer: Doc[Any] = Doc()
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    text = writer.get("content", type=Text)
    count = SNAPSHOT_EVERY_UPDATES * 2 + 17
    for i in range(count):
        text += f"{i % 10}"
    position = 0
    for update in updates:
        result = services.app.execute(
            ApplyDocumentUpdate(document_id=doc, update=update, roots={"content": "text"}),
            Cause(actor_id=owner.user_id),
        )
        position = result.position
    assert services.runner.wait_for(position, 30)
    with psycopg.connect(chorus.database_url, row_factory=dict_row) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM rm_document_snapshots WHERE document_id = %s", (doc,))
        versions = [row["version"] for row in cur.fetchall()]
        loaded = load_document(cur, doc)
        from_scratch: Doc[Any] = Doc()
        cur.execute(
            "SELECT state FROM chorus_events WHERE originator_id = %s ORDER BY originator_version",
            (doc,),
        )
        for row in cur.fetchall():
            state = json.loads(bytes(row["state"]))
            if "update" in state:
                from_scratch.apply_update(base64.b64decode(state["update"]))
    assert len(versions) == 2
    assert loaded.updates_replayed == count - SNAPSHOT_EVERY_UPDATES * 2 == 17
    expected = "".join(f"{i % 10}" for i in range(count))
    assert str(loaded.doc.get("content", type=Text)) == expected
    assert str(from_scratch.get("content", type=Text)) == expected
    # Any earlier position is still the log's replay, snapshot or not.
    with psycopg.connect(chorus.database_url, row_factory=dict_row) as conn, conn.cursor() as cur:
        early = load_document(cur, doc, until_version=SNAPSHOT_EVERY_UPDATES + 2)
    assert str(early.doc.get("content", type=Text)) == expected[: SNAPSHOT_EVERY_UPDATES + 1]


def test_restoring_a_version_appends_an_update(chorus: Running) -> None:
    api = chorus.api
    owner, viewer = api.signup("own"), api.signup("view")
    ws = workspace_with(api, owner, viewer=viewer)
    doc = new_document(api, owner, ws)
    with doc_events(chorus, owner, doc) as events, client(chorus, doc, owner).wait_synced() as a:
        type_text(a, "version one")
        early = next_event(events)["position"]

        def rewrite(y: YClient) -> None:
            t = y.text()
            t.clear()
            t.insert(0, "version two")

        a.edit(rewrite)
        next_event(events)
        before = stream_events(chorus, doc)
        assert (
            api.post(f"/api/documents/{doc}/restore", viewer, {"position": early}).status_code
            == 403
        )
        assert api.post(f"/api/documents/{doc}/restore", owner, {"position": 0}).status_code in (
            400,
            422,
        )
        assert stream_events(chorus, doc) == before
        restored = api.ok(api.post(f"/api/documents/{doc}/restore", owner, {"position": early}))
        # Connected editors receive the restore like any edit.
        a.wait(lambda: text_of(a) == "version one")
        event = next_event(events)
        assert event["data"]["restored_from"] == early and event["position"] == restored["position"]
    assert stream_events(chorus, doc) == before + 1
    now = api.ok(api.get(f"/api/documents/{doc}", owner, min_position=restored["position"]))
    assert now["content"]["content"] == "version one"
    # Refused even when it would change nothing (the content is already that version's).
    same = api.post(f"/api/documents/{doc}/restore", viewer, {"position": restored["position"]})
    assert same.status_code == 403
    # The history is all still there.
    then = api.ok(api.get(f"/api/documents/{doc}", owner, at=restored["position"] - 1))
    assert then["content"]["content"] == "version two"


def test_idle_documents_leave_memory(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    rooms = chorus.server.services.rooms
    rooms.idle_s = 0.2
    try:
        with client(chorus, doc, owner).wait_synced() as a:
            type_text(a, "kept")
            assert rooms.wait(lambda: doc in rooms.live, TIMEOUT)
        assert rooms.wait(lambda: doc not in rooms.live, TIMEOUT)
    finally:
        rooms.idle_s = 30.0
    # Saved before it left: a new editor finds the text.
    with client(chorus, doc, owner).wait_synced() as again:
        assert text_of(again) == "kept"


def test_a_document_cannot_outgrow_its_bound(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    rooms = chorus.server.services.rooms
    with client(chorus, doc, owner).wait_synced() as a:
        # A fresh editor is synced from the store, maybe before the copy is built.
        assert rooms.wait(lambda: doc in rooms.live, TIMEOUT)
        room = rooms.live[doc].room
        room.max_size = room.size + 1000
        type_text(a, "x" * 2000)
        assert a.wait_closed() == 4413
    assert "x" * 2000 not in json.dumps(api.ok(api.get(f"/api/documents/{doc}", owner))["content"])


def test_auditors_time_travel_a_document_stream(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = workspace_with(api, owner, member=member)
    doc = new_document(api, owner, ws)
    with doc_events(chorus, owner, doc) as events, client(chorus, doc, owner).wait_synced() as a:
        type_text(a, "as first written")
        early = next_event(events)["position"]
        type_text(a, ", then more")
        next_event(events)
    state = api.ok(api.get(f"/api/streams/{doc}", owner, at=early))
    assert state["type"] == "Document"
    assert state["state"]["content"] == {"content": "as first written"}
    assert api.get(f"/api/streams/{doc}", member, at=early).status_code == 403


def test_analysts_see_document_edits(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    with doc_events(chorus, owner, doc) as events, client(chorus, doc, owner).wait_synced() as a:
        type_text(a, "counted")
        position = next_event(events)["position"]
    assert chorus.server.services.runner.wait_for(position, 30)
    with psycopg.connect(chorus.database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT user_id::text, update_bytes, restore FROM analytics.document_edits"
            " WHERE document_id = %s",
            (doc,),
        ).fetchall()
    assert [(r["user_id"], r["restore"]) for r in rows] == [(owner.user_id, False)]
    assert rows[0]["update_bytes"] > 0


def test_an_update_with_a_gap_makes_the_client_resync(chorus: Running) -> None:
    """An update building on content the server lacks is not held back half-applied (the CRDT
    library can crash on later overlapping updates): the server asks for a resync instead, and
    the client's answer brings everything."""
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    source: Doc[Any] = Doc()
    text = source.get("content", type=Text)
    text += "first "
    vector = source.get_state()
    text += "second"
    gap_only = source.get_update(vector)
    with client(chorus, doc, owner).wait_synced() as reader, client(chorus, doc, owner) as c:
        c.wait_synced()
        # The client holds both parts, but sends the server only the second.
        c.edit(lambda y: y._apply_remote(source.get_update()))
        asked_before = c.step1_received
        c.send(protocol.sync_update(gap_only))
        reader.wait(lambda: text_of(reader) == "first second")
        assert c.close_code is None and c.step1_received == asked_before + 1


def test_a_hostile_length_allocates_nothing(chorus: Running) -> None:
    """``8080808001`` makes pycrdt reserve ~0.5 GB before failing; checked first, it costs
    nothing. The server runs in this process, so its peak memory is ours."""
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(5):
        with client(chorus, doc, owner).wait_synced() as c:
            c.send(protocol.sync_update(bytes.fromhex("8080808001")))
            assert c.wait_closed() == 4400
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak_after - peak_before < 100 * 1024


def test_frames_are_bounded_in_size_and_rate(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    before = stream_events(chorus, doc)
    with client(chorus, doc, owner).wait_synced() as c:
        c.send(protocol.sync_update(b"\x00" * (MAX_DOCUMENT_UPDATE_BYTES + 100)))
        assert c.wait_closed() == 4413
    settings_rate = chorus.server.services.settings.yjs_frames_per_second
    with client(chorus, doc, owner).wait_synced() as c:
        for _ in range(int(settings_rate * 3)):
            c.send(protocol.query_awareness())
        # Dropping a frame would desynchronise the client: it is told to reconnect instead.
        assert c.wait_closed() == 1013
    assert stream_events(chorus, doc) == before


def test_query_awareness_is_answered(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    with client(chorus, doc, owner).wait_synced() as a, client(chorus, doc, owner) as b:
        b.wait_synced()
        a.set_awareness(77, 1, b'{"who":"a"}')
        b.wait(lambda: 77 in b.awareness)
        b.edit(lambda y: y.awareness.clear())
        b.send(protocol.query_awareness())
        b.wait(lambda: b.awareness.get(77) == b'{"who":"a"}')


def burst(writer: YClient, reader: YClient, pieces: list[str]) -> str:
    """Writes each piece as its own update (one transaction, one frame each) as fast as the
    socket takes them; returns the text once the reader holds it too, both still connected.

    Each piece goes in front of the last: appended pieces of one client are merged into one
    ever-growing string on every commit, by the writer, the server and the reader, which
    makes a burst quadratic in time (tens of seconds for 20 MB) without changing what the
    server is asked to carry."""

    def prepend(y: YClient) -> None:
        text = y.text()
        for piece in pieces:
            text.insert(0, piece)

    writer.edit(prepend)
    expected = text_of(writer)
    size = writer.read(lambda y: len(y.text()))  # cheap to compare after every frame
    reader.wait(lambda: reader.read(lambda y: len(y.text())) == size, timeout=60)
    assert text_of(reader) == expected
    assert reader.close_code is None and writer.close_code is None
    return expected


@pytest.mark.slow
def test_a_fast_writer_loses_nothing_and_saves_bounded_events(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Thousands of updates sent as fast as the socket takes them (no rate limit here): the
    other editor converges, neither is cut off, and no saved event outgrows a run."""
    updates, chunk = 6000, "x" * 100  # more than an outbox holds; ~600 KB: several runs
    with running_chorus(
        postgres_server, tmp_path, yjs_frames_per_second=1_000_000, document_idle_s=0.2
    ) as fast:
        api = fast.api
        owner = api.signup("own")
        doc = new_document(api, owner, workspace_with(api, owner))
        rooms = fast.server.services.rooms
        with client(fast, doc, owner).wait_synced() as reader, client(fast, doc, owner) as w:
            w.wait_synced()

            expected = burst(w, reader, [f"{i % 10}{chunk}" for i in range(updates)])
        # A document leaves memory only once everything it received is saved.
        assert rooms.wait(lambda: doc not in rooms.live, 60)
        events = fast.server.services.app.events.get(UUID(doc))
        saved: list[bytes] = [
            e.update for e in events if type(e).__name__ == "DocumentUpdateApplied"
        ]
    replayed: Doc[Any] = Doc()
    for update in saved:
        replayed.apply_update(update)
    assert str(replayed.get("content", type=Text)) == expected
    # Issue 6's bound: at most 0.1 events per update while typing fast (runs are batched).
    assert len(saved) <= updates / 10
    assert max(len(update) for update in saved) <= RUN_BYTES


def small_buffer_socket(running: Running) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connect: it sets
    sock.connect(("127.0.0.1", running.server.port))  # the window scale
    return sock


@pytest.mark.slow
def test_an_editor_that_stops_reading_is_cut_off_alone(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """An editor whose client reads nothing is disconnected once its outbox is full (bounded
    server memory); the writer and the other editors carry on and converge."""
    # 20 MB to each editor, more than an outbox holds, and random so that the connection's
    # compression cannot shrink it.
    updates = 200
    chunks = [base64.b64encode(os.urandom(75_000)).decode() for _ in range(updates)]
    # 20 MB is past the edit budget's 16 MiB a minute: the budget is not what this is about
    # (whether the writer stayed within it depended on how fast the burst went).
    with running_chorus(
        postgres_server,
        tmp_path,
        yjs_frames_per_second=1_000_000,
        document_bytes_per_user=0,
        document_updates_per_user=0,
    ) as fast:
        api = fast.api
        owner = api.signup("own")
        doc = new_document(api, owner, workspace_with(api, owner))
        url = fast.server.url.replace("http", "ws", 1) + f"/yjs/{doc}?token={owner.access_token}"
        # Its library stops reading the socket once a few frames wait unread; a small receive
        # buffer keeps the kernel from holding the rest.
        # No compression: deflating 20 MB that cannot shrink takes seconds on each side.
        with (
            connect(
                url, sock=small_buffer_socket(fast), max_size=None, max_queue=4, compression=None
            ) as stalled,
            client(fast, doc, owner, compressed=False).wait_synced() as reader,
            client(fast, doc, owner, compressed=False) as w,
        ):
            w.wait_synced()

            burst(w, reader, chunks)
            # What reached it before the cut, then the end of the connection.
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    stalled.recv(timeout=TIMEOUT)
            assert closed.value.rcvd is None or closed.value.rcvd.code == 1013


@dataclass(eq=False)
class Watch:
    """A listener of the server's event hub, waiting for a batch it recognises."""

    matches: Callable[[list[Delivery]], bool]
    heard: threading.Event

    def deliver(self, batch: list[Delivery]) -> None:
        if self.matches(batch):
            self.heard.set()


def test_a_fresh_editor_is_sent_the_stored_state_while_the_copy_is_built(
    chorus: Running,
) -> None:
    """Opening a document not in memory: a fresh editor gets the stored bytes at once, before
    the server's copy is built; updates committed meanwhile reach it once the copy is."""
    api = chorus.api
    owner = api.signup("own")
    doc = new_document(api, owner, workspace_with(api, owner))
    doc_id = UUID(doc)
    services = chorus.server.services
    rooms = services.rooms
    source: Doc[Any] = Doc()
    text = source.get("content", type=Text)
    text += "stored"
    services.app.execute(
        ApplyDocumentUpdate(document_id=doc, update=source.get_update(), roots={"content": "text"}),
        Cause(actor_id=owner.user_id),
    )
    gate = threading.Event()
    build = rooms._build

    def gated_build(fetched: Any) -> Any:
        assert gate.wait(TIMEOUT)
        return build(fetched)

    rooms._build = gated_build
    try:
        with client(chorus, doc, owner) as fresh:
            fresh.wait(lambda: text_of(fresh) == "stored")
            assert doc not in rooms.live  # served from the store: the copy is not built yet
            before = source.get_state()
            text += " and more"
            update = source.get_update(before)
            # The hub's listeners are told in turn: once this one is, the rooms hold the
            # update too, set aside until the copy is built.
            heard = threading.Event()
            watch = Watch(  # the stream's third event: created, "stored", this
                lambda batch: any(d.event.stream == doc_id and d.event.version == 3 for d in batch),
                heard,
            )
            services.hub.add(watch)
            try:
                services.app.execute(
                    ApplyDocumentUpdate(document_id=doc, update=update, roots={"content": "text"}),
                    Cause(actor_id=owner.user_id),
                )
                assert heard.wait(TIMEOUT)
            finally:
                services.hub.remove(watch)
            gate.set()
            fresh.wait(lambda: text_of(fresh) == "stored and more")
            assert fresh.synced and fresh.close_code is None
    finally:
        rooms._build = build


def _record_builds(
    rooms: Any, monkeypatch: pytest.MonkeyPatch, document_id: str
) -> tuple[list[str], threading.Event, threading.Event]:
    """Makes each build of the document's copy append "build" to the returned steps; the two
    events are set when a build starts and when it ends. Builds of other documents (an
    earlier test's, still waiting for their editor) are not recorded."""
    steps: list[str] = []
    building, built = threading.Event(), threading.Event()
    build = rooms._build

    def recorded_build(fetched: Any) -> Any:
        if str(fetched.document_id) != document_id:
            return build(fetched)
        steps.append("build")
        building.set()
        try:
            return build(fetched)
        finally:
            built.set()

    monkeypatch.setattr(rooms, "_build", recorded_build)
    return steps, building, built


def _stored_for_a_fresh_editor(
    chorus: Running, monkeypatch: pytest.MonkeyPatch
) -> tuple[User, str, Any]:
    """An owner, their document stored with the text "stored" and not in memory, and the
    server's rooms, which will read it only once an editor's first frame has come."""
    api = chorus.api
    owner = api.signup("own")
    doc = _stored_document(chorus, owner, workspace_with(api, owner), "stored")
    rooms = chorus.server.services.rooms
    _read_after_the_first_frame(rooms, monkeypatch)
    return owner, doc, rooms


def _read_after_the_first_frame(rooms: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Holds the read of the stored state until the server has the editor's first frame.

    An editor whose step 1 comes after the read finished joins the copy as any other editor
    (the copy is built at once, and no stored bytes are sent), which a busy machine makes
    happen; the tests of the fresh editor's path need its step 1 first."""
    framed = threading.Event()
    next_frame, read_stored = endpoint_module._next_frame, rooms.read_stored

    async def recorded_next_frame(*args: Any) -> bytes | None:
        frame = await next_frame(*args)
        framed.set()
        return frame

    def read_after_the_first_frame(document_id: str) -> Any:
        assert framed.wait(TIMEOUT), "the editor's first frame never came"
        return read_stored(document_id)

    monkeypatch.setattr(endpoint_module, "_next_frame", recorded_next_frame)
    monkeypatch.setattr(rooms, "read_stored", read_after_the_first_frame)


def test_the_copy_is_built_once_the_fresh_editor_was_sent_the_stored_state(
    chorus: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pycrdt holds the GIL while it builds a copy (milliseconds for a large document): the
    build starts only after the stored bytes were handed to the fresh editor's connection,
    so it does not hold up that send."""
    owner, doc, rooms = _stored_for_a_fresh_editor(chorus, monkeypatch)
    steps, building, built = _record_builds(rooms, monkeypatch, doc)
    drained = Editor.drained

    async def recorded_drained(editor: Editor) -> None:
        await drained(editor)
        # A build that does not wait for this send would start meanwhile (it is ready as
        # soon as the state is read); one that waits cannot: this gives it the chance.
        await asyncio.to_thread(building.wait, 1.0)
        steps.append("sent")

    monkeypatch.setattr(rooms, "build_wait_s", 30.0)
    monkeypatch.setattr(Editor, "drained", recorded_drained)
    with client(chorus, doc, owner) as fresh:
        fresh.wait(lambda: text_of(fresh) == "stored")
        assert built.wait(TIMEOUT)
    assert steps == ["sent", "build"]


def _stored_document(chorus: Running, owner: User, ws: str, text: str) -> str:
    """A document whose stored state holds ``text``, not in memory."""
    services = chorus.server.services
    doc = new_document(chorus.api, owner, ws)
    source: Doc[Any] = Doc()
    source.get("content", type=Text).insert(0, text)
    services.app.execute(
        ApplyDocumentUpdate(document_id=doc, update=source.get_update(), roots={"content": "text"}),
        Cause(actor_id=owner.user_id),
    )
    assert doc not in services.rooms.live
    return doc


def _fresh_sync(ws: ClientConnection) -> list[int]:
    """Sends the step 1 of an empty document; returns the sync types received, up to the
    server's step 1."""
    ws.send(protocol.sync_step1(b"\x00"))
    kinds: list[int] = []
    while protocol.SYNC_STEP1 not in kinds:
        frame = ws.recv(timeout=TIMEOUT)
        assert isinstance(frame, bytes)
        message = protocol.parse(frame)
        if message.kind == protocol.MESSAGE_SYNC and message.sync_type is not None:
            kinds.append(message.sync_type)
    return kinds


def test_the_copy_is_built_once_the_fresh_editor_has_answered(
    chorus: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fresh editor applies the stored bytes it was sent, then answers the server's step
    1. Building the copy meanwhile would slow that apply down (the build holds the GIL and
    takes a CPU), so the build waits for the editor's next frame."""
    owner, doc, rooms = _stored_for_a_fresh_editor(chorus, monkeypatch)
    steps, building, _ = _record_builds(rooms, monkeypatch, doc)
    monkeypatch.setattr(rooms, "build_wait_s", 60.0)
    url = chorus.server.url.replace("http", "ws", 1) + f"/yjs/{doc}?token={owner.access_token}"
    with connect(url, open_timeout=TIMEOUT, max_size=None) as ws:
        assert _fresh_sync(ws) == [protocol.SYNC_STEP2, protocol.SYNC_STEP1]
        # A build that does not wait for the answer starts now: this gives it the chance.
        assert not building.wait(1.0)
        steps.append("answered")
        ws.send(protocol.sync_step2(b"\x00\x00"))
        assert building.wait(TIMEOUT)
        assert chorus.server.services.rooms.wait(lambda: doc in rooms.live, TIMEOUT)
    assert steps == ["answered", "build"]


def test_another_editor_does_not_wait_for_a_silent_first_one(
    chorus: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first editor of a document not in memory is sent the stored bytes and never
    answers: the copy's build waits for it, but a second editor opening the document ends
    that wait at once."""
    owner, doc, rooms = _stored_for_a_fresh_editor(chorus, monkeypatch)
    monkeypatch.setattr(rooms, "build_wait_s", 600.0)  # far beyond the test's timeouts
    url = chorus.server.url.replace("http", "ws", 1) + f"/yjs/{doc}?token={owner.access_token}"
    with connect(url, open_timeout=TIMEOUT, max_size=None) as silent:
        _fresh_sync(silent)
        with client(chorus, doc, owner) as second:
            second.wait(lambda: text_of(second) == "stored")
            type_text(second, "!")
            assert rooms.wait(lambda: doc in rooms.live, TIMEOUT)


def test_the_stored_state_is_read_while_the_access_is_checked(
    chorus: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a document not in memory, the access check and the read of the stored state
    run at the same time; an editor refused access gets neither the state nor a copy."""
    api = chorus.api
    owner, outsider = api.signup("own"), api.signup("out")
    private = str(api.ok(api.post("/api/workspaces", owner, {"name": "private"}), 201)["id"])
    doc = _stored_document(chorus, owner, private, "secret")
    rooms = chorus.server.services.rooms
    reading = threading.Event()
    overlapped: list[bool] = []
    read_stored, check = rooms.read_stored, document_with_workspace

    def recorded_read(document_id: str) -> Any:
        reading.set()
        return read_stored(document_id)

    def recorded_check(*args: Any) -> Any:
        overlapped.append(reading.wait(TIMEOUT))  # without the overlap: never, until timeout
        return check(*args)

    monkeypatch.setattr(rooms, "read_stored", recorded_read)
    monkeypatch.setattr(endpoint_module, "document_with_workspace", recorded_check)
    with client(chorus, doc, outsider) as refused:
        assert refused.wait_closed() in (4403, 4404)
        assert text_of(refused) == "" and not refused.synced
    assert doc not in rooms.live and rooms.fetching(doc) is None
    with client(chorus, doc, owner) as allowed:
        allowed.wait(lambda: text_of(allowed) == "secret")
    assert overlapped == [True, True]


def test_editors_count_towards_the_connections_per_user(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path, ws_connections_per_user=2) as capped:
        api = capped.api
        owner = api.signup("own")
        doc = new_document(api, owner, workspace_with(api, owner))
        with (
            client(capped, doc, owner).wait_synced(),
            client(capped, doc, owner).wait_synced(),
            client(capped, doc, owner) as third,
        ):
            # Busy is transient: 1013, which stock Yjs clients retry (issue 16, finding 10).
            assert third.wait_closed() == 1013
        with client(capped, doc, owner) as again:  # the slots were given back
            again.wait_synced()
