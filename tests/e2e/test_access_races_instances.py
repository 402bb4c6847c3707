"""Access is decided against the log across instances (issue 17, findings 1-4): the access
change commits on instance B, the subscription or editor lives on instance A (whose hub
delivers B's commit in log order). Gated at each window, as tests/e2e/test_access_races.py
and tests/e2e/test_yjs_access_races.py are in one instance; then with `chorus serve`
processes, the instance that committed the kick killed with SIGKILL and restarted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from api.realtime.socket import Connection
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api, Running, User
from tests.fixtures.documents import text_of, type_text
from tests.fixtures.gates import GATE_TIMEOUT_S, after_the_access_check, until_end_or
from tests.fixtures.instances import Instances, two_instances
from tests.fixtures.processes import ChorusProcess, processes, start_all
from tests.fixtures.servers import new_database
from tests.fixtures.yjs import TIMEOUT, YClient
from tests.fixtures.yjs_gates import (
    after_the_editors_access_check,
    ended_or_has,
    stored_texts,
    while_saving_the_first_update_of,
)


@pytest.fixture(scope="module")
def pair(
    postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Instances]:
    with two_instances(postgres_server, tmp_path_factory.mktemp("pair")) as both:
        yield both


def ws_socket(running: Running, user: User) -> Any:
    url = running.server.url.replace("http", "ws") + f"/ws?token={user.access_token}"
    return connect(url, open_timeout=TIMEOUT)


def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    ws.send(json.dumps(frame))


def recv(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
    return frame


def synced(apis: list[Api]) -> None:
    """Reads on every instance include what any of them wrote."""
    top = max(api.position for api in apis)
    for api in apis:
        api.position = top


def workspace(pair: Instances) -> tuple[str, str, User, User]:
    """A workspace set up on instance A: its owner, a member, a channel."""
    api = pair.a.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "R", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)["id"]
    synced([pair.a.api, pair.b.api])
    return ws, ch, owner, member


def kick_on(running: Running, ws: str, owner: User, member: User) -> None:
    api = running.api
    api.ok(api.post(f"/api/workspaces/{ws}/members/{member.user_id}/kick", owner))


# -- /ws ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["after the check", "before the check", "live"])
def test_a_kick_on_another_instance_ends_a_subscription_at_its_position(
    pair: Instances, window: str
) -> None:
    """The subscription is on A, the kick commits on B: at each window, the subscription is
    refused or ends at the kick's position, and the owner's next document never reaches it."""
    ws, _, owner, member = workspace(pair)
    kicked: dict[str, int] = {}

    def kick() -> None:
        api = pair.b.api
        done = api.ok(api.post(f"/api/workspaces/{ws}/members/{member.user_id}/kick", owner))
        kicked["at"] = int(done["position"])

    original_head = Connection._head

    def head(self: Connection) -> int:
        position = original_head(self)
        if window == "before the check" and not kicked:
            kick()
        return position

    Connection._head = head  # type: ignore[method-assign]
    try:
        with (
            ws_socket(pair.a, member) as sock,
            after_the_access_check(kick if window == "after the check" else lambda: None),
        ):
            send(sock, {"op": "subscribe", "sub": "s", "streams": [{"workspace": ws}]})
            first = recv(sock)
            if window == "live":
                assert first["op"] == "subscribed", first
                kick()
            assert kicked
            later = pair.a.api.ok(
                pair.a.api.post(f"/api/workspaces/{ws}/documents", owner, {"title": "after"}),
                201,
            )
            frames = (
                [first]
                if first["op"] in ("end", "error")
                else [first, *until_end_or(sock, "after")]
            )
    finally:
        Connection._head = original_head  # type: ignore[method-assign]
    last = frames[-1]
    assert last["op"] in ("end", "error"), frames
    if last["op"] == "end":
        assert last["position"] < kicked["at"] < later["position"], frames
    else:
        assert last["status"] == 404, last


# -- /yjs --------------------------------------------------------------------------------------


def document(pair: Instances, ws: str, owner: User) -> str:
    api = pair.a.api
    doc = str(api.ok(api.post(f"/api/workspaces/{ws}/documents", owner, {"title": "D"}), 201)["id"])
    synced([pair.a.api, pair.b.api])
    return doc


def editor(running: Running, doc: str, user: User) -> YClient:
    return YClient(running.server.url, doc, user.access_token)


def test_a_kick_on_another_instance_while_an_editor_opens_ends_its_session(
    pair: Instances,
) -> None:
    """Finding 1 across instances: the member's editor opens a cold document on A; the kick
    commits on B between the access check and the join."""
    ws, _, owner, member = workspace(pair)
    doc = document(pair, ws, owner)
    with after_the_editors_access_check(
        member.user_id, lambda: kick_on(pair.b, ws, owner, member)
    ) as done:
        m = editor(pair.a, doc, member)
        assert done.wait(GATE_TIMEOUT_S)
    with m, editor(pair.a, doc, owner) as o, editor(pair.b, doc, owner) as ob:
        o.wait_synced()
        ob.wait_synced()
        type_text(ob, "after the kick")  # on B: reaches A through the store
        o.wait(lambda: "after the kick" in text_of(o))
        m.wait(ended_or_has(m, "after the kick"))
        assert "after the kick" not in text_of(m), "the kicked member got a later edit"
        assert m.wait_closed() == 4404, m.close_reason


def test_a_kick_on_another_instance_ends_a_live_editor_and_refuses_its_writes(
    pair: Instances,
) -> None:
    """The member edits on A; the kick commits on B: A ends the session at the kick (4404),
    the owner's later edits (on A and on B) never reach it, and what it wrote after is not
    stored under anyone."""
    ws, _, owner, member = workspace(pair)
    doc = document(pair, ws, owner)
    with editor(pair.a, doc, member) as m, editor(pair.a, doc, owner) as o:
        m.wait_synced()
        o.wait_synced()
        type_text(m, "before. ")
        o.wait(lambda: "before" in text_of(o))
        kick_on(pair.b, ws, owner, member)
        type_text(o, "after the kick")
        m.wait(ended_or_has(m, "after the kick"))
        assert "after the kick" not in text_of(m), "the kicked member got a later edit"
        assert m.wait_closed() == 4404, m.close_reason
        type_text(m, "intruder")  # sent on a closed socket: dropped by the client
        o.handled_so_far()
    stored = stored_texts(pair.a, doc)
    assert "before" in stored[""] and "intruder" not in stored[""], stored[""]


def test_a_kick_on_another_instance_while_the_members_update_is_saved(
    pair: Instances,
) -> None:
    """Finding 4 across instances: the member's update is being saved on A when the kick
    commits on B. The save is refused; no other editor, on A or on B, ever holds the update,
    and it is not stored under anyone when they reconnect and re-send."""
    ws, _, owner, member = workspace(pair)
    doc = document(pair, ws, owner)
    with (
        editor(pair.a, doc, member) as m,
        editor(pair.a, doc, owner) as o,
        editor(pair.b, doc, owner) as ob,
    ):
        for y in (m, o, ob):
            y.wait_synced()
        with while_saving_the_first_update_of(
            member.user_id, lambda: kick_on(pair.b, ws, owner, member)
        ):
            type_text(m, "REFUSED")
            assert o.wait_closed() == 1012  # A's copy was reset
        type_text(ob, "from b")
        ob.handled_so_far()
        assert "REFUSED" not in text_of(o)
        assert "REFUSED" not in text_of(ob)
        left = o.read(lambda y: y.doc.get_update())
        with editor(pair.a, doc, owner) as again:
            again.wait_synced()
            again.edit(lambda y: y.doc.apply_update(left))
            again.wait(lambda: "from b" in text_of(again))
            type_text(again, " owner again")
            ob.wait(lambda: "owner again" in text_of(ob))  # passed on only once saved
    stored = stored_texts(pair.a, doc)
    assert "REFUSED" not in stored[""] and "owner again" in stored[""], stored[""]
    assert member.user_id not in stored


# -- kill -9 -----------------------------------------------------------------------------------


def test_after_kill_9_of_the_instance_that_committed_the_kick_nothing_resumes(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """`chorus serve` A and B on one database. The member subscribes (/ws) and edits (/yjs)
    on A; the kick commits on B, which is then killed with SIGKILL and restarted. A ends both
    sessions at the kick; the member's resumed subscription (``after`` its last position)
    and its editor reconnecting, on either instance, get nothing after it."""
    with new_database(postgres_server) as url, processes() as started:
        a = ChorusProcess(tmp_path / "a", url)
        b = ChorusProcess(tmp_path / "b", url)
        start_all(started, a, b)
        api_a, api_b = Api(a.url), Api(b.url)
        try:
            owner, member = api_a.signup("own"), api_a.signup("mem")
            ws = api_a.ok(
                api_a.post("/api/workspaces", owner, {"name": "K", "visibility": "public"}), 201
            )["id"]
            api_a.ok(api_a.post(f"/api/workspaces/{ws}/join", member))
            doc = api_a.ok(
                api_a.post(f"/api/workspaces/{ws}/documents", owner, {"title": "D"}), 201
            )["id"]
            ws_url = a.url.replace("http", "ws") + f"/ws?token={member.access_token}"
            with (
                connect(ws_url, open_timeout=TIMEOUT) as sock,
                YClient(a.url, doc, member.access_token) as m,
            ):
                m.wait_synced()
                send(sock, {"op": "subscribe", "sub": "s", "streams": [{"workspace": ws}]})
                subscribed = recv(sock)
                assert subscribed["op"] == "subscribed", subscribed
                last = int(subscribed["after"])
                done = api_b.ok(
                    api_b.post(f"/api/workspaces/{ws}/members/{member.user_id}/kick", owner)
                )
                kicked_at = int(done["position"])
                b.kill9()
                ended = until_end_or(sock, "never posted")[-1]
                assert ended["op"] == "end" and ended["position"] < kicked_at, ended
                last = max(last, int(ended["position"]))
                assert m.wait_closed() == 4404, m.close_reason
            b.start()
            b.wait_ready()
            api_b = Api(b.url)
            later = api_b.ok(
                api_b.post(f"/api/workspaces/{ws}/documents", owner, {"title": "after"}), 201
            )
            assert later["position"] > kicked_at
            for instance in (a, b):
                url_ = instance.url.replace("http", "ws") + f"/ws?token={member.access_token}"
                with connect(url_, open_timeout=TIMEOUT) as sock:
                    for stream in ({"workspace": ws}, {"document": doc}):
                        send(
                            sock,
                            {"op": "subscribe", "sub": "r", "streams": [stream], "after": last},
                        )
                        refused = recv(sock)
                        assert (refused["op"], refused.get("status")) == ("error", 404), refused
                with YClient(instance.url, doc, member.access_token) as again:
                    assert again.wait_closed() == 4404, again.close_reason
                    assert again.received == 0
        finally:
            api_a.close()
            api_b.close()
