"""Access is decided against the log, for ``/yjs`` editors (issue 17, findings 1 and 4).

An access change committed at position P ends the editor's session at P: nothing after P
reaches it, nothing it writes after P is stored, and nothing it wrote that was refused is
stored under anyone else or left in other editors' copies. Gated: each test holds the server
at one window and commits the access change there (or, for finding 4, while an update is
being saved)."""

from __future__ import annotations

import base64
import json
from typing import Any

from pycrdt import Doc, Text

from tests.fixtures.chorus import Api, Running, User
from tests.fixtures.documents import (
    client,
    doc_events,
    new_document,
    text_of,
    type_text,
    workspace_with,
)
from tests.fixtures.yjs import TIMEOUT
from tests.fixtures.yjs_gates import (
    after_the_editors_access_check,
    ended_or_has,
    stored_texts,
    stored_updates,
    while_saving_the_first_update_of,
)

GATE_TIMEOUT_S = 20.0


def kick(api: Api, ws: str, owner: User, member: User) -> None:
    api.ok(api.post(f"/api/workspaces/{ws}/members/{member.user_id}/kick", owner))


def revoke_editing(api: Api, ws: str, owner: User, member: User) -> None:
    """The member becomes a viewer: they still read the document, and lose edit_documents."""
    api.ok(api.put(f"/api/workspaces/{ws}/members/{member.user_id}/roles/viewer", owner))
    api.ok(api.delete(f"/api/workspaces/{ws}/members/{member.user_id}/roles/member", owner))


# -- finding 1: the cold open -------------------------------------------------------------------


def test_a_kick_while_an_editor_opens_a_cold_document_ends_its_session(chorus: Running) -> None:
    """Finding 1: the check ran, then the copy was built (up to BUILD_WAIT_S later) and the
    editor joined it; a kick in between was never seen, and the kicked member kept a
    read-write session that received the owner's later edits."""
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = workspace_with(api, owner, member=member)
    doc = new_document(api, owner, ws)
    with after_the_editors_access_check(
        member.user_id, lambda: kick(api, ws, owner, member)
    ) as done:
        m = client(chorus, doc, member)
        assert done.wait(GATE_TIMEOUT_S)
    with m, client(chorus, doc, owner) as o:
        o.wait_synced()
        type_text(o, "after the kick")
        o.handled_so_far()
        m.wait(ended_or_has(m, "after the kick"))
        assert "after the kick" not in text_of(m), "the kicked member got a later edit"
        assert m.wait_closed() == 4404, m.close_reason
        # What the member writes now is not stored, under them or anyone else.
        type_text(m, "intruder")
        o.handled_so_far()
        with doc_events(chorus, owner, doc) as events:
            type_text(o, " (owner again)")
            o.handled_so_far()
            while True:
                frame = json.loads(events.recv(timeout=TIMEOUT))
                if frame["op"] == "event" and frame["event"]["type"] == "DocumentUpdateApplied":
                    break
    stored = stored_texts(chorus, doc)
    assert "intruder" not in stored[""] and "owner again" in stored[""], stored[""]
    assert member.user_id not in stored


def test_a_kick_while_an_editor_opens_a_live_document_ends_its_session(chorus: Running) -> None:
    """The same window with the document already in memory (another editor holds it)."""
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = workspace_with(api, owner, member=member)
    doc = new_document(api, owner, ws)
    with client(chorus, doc, owner) as o:
        o.wait_synced()
        with after_the_editors_access_check(member.user_id, lambda: kick(api, ws, owner, member)):
            m = client(chorus, doc, member)
            with m:
                type_text(o, "after the kick")
                o.handled_so_far()
                m.wait(ended_or_has(m, "after the kick"))
                assert "after the kick" not in text_of(m), "the kicked member got a later edit"
                assert m.wait_closed() == 4404, m.close_reason


# -- finding 4: refused updates are not re-attributed -------------------------------------------


def test_an_update_refused_at_saving_reaches_nobody_and_is_never_stored_under_another(
    chorus: Running,
) -> None:
    """Finding 4: A's update went to B and C at once, and was saved later; A lost
    edit_documents meanwhile, the save was refused, the copy dropped (1012), and B, re-sending
    what the server lacked on reconnecting, had A's edit stored as its own."""
    api = chorus.api
    owner, a, b, c = api.signup("own"), api.signup("a"), api.signup("b"), api.signup("c")
    ws = workspace_with(api, owner, member=a)
    for user in (b, c):
        api.ok(api.post(f"/api/workspaces/{ws}/join", user, {}))
    doc = new_document(api, owner, ws)
    with client(chorus, doc, a) as ca, client(chorus, doc, b) as cb, client(chorus, doc, c) as cc:
        for y in (ca, cb, cc):
            y.wait_synced()
        type_text(cb, "from b. ")
        cb.handled_so_far()
        ca.wait(lambda: "from b" in text_of(ca))
        cc.wait(lambda: "from b" in text_of(cc))
        with while_saving_the_first_update_of(a.user_id, lambda: revoke_editing(api, ws, owner, a)):
            type_text(ca, "REFUSED")
            # The refused save resets the copy: every editor is told to reconnect.
            assert cb.wait_closed() == 1012
            assert cc.wait_closed() == 1012
        assert "REFUSED" not in text_of(cb)
        assert "REFUSED" not in text_of(cc)
        left = cb.read(lambda y: y.doc.get_update())
    # B reconnects as y-websocket does: what it holds goes to the server again.
    with client(chorus, doc, b) as again, doc_events(chorus, owner, doc) as events:
        again.wait_synced()
        again.edit(lambda y: y.doc.apply_update(left))
        type_text(again, "b again")
        again.handled_so_far()
        seen: Doc[Any] = Doc()
        for _, update in stored_updates(chorus, doc):
            seen.apply_update(update)
        while "b again" not in str(seen.get("content", type=Text)):
            frame = json.loads(events.recv(timeout=TIMEOUT))
            if frame["op"] == "event" and frame["event"]["type"] == "DocumentUpdateApplied":
                seen.apply_update(base64.b64decode(frame["event"]["data"]["update"]))
    stored = stored_texts(chorus, doc)
    assert "from b" in stored[""] and "REFUSED" not in stored[""], stored[""]
    assert a.user_id not in stored
