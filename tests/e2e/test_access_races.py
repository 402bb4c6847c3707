"""Access is decided against the log (issue 17): a kick committed while a subscription is
being opened ends it at the kick's position, whatever the interleaving. Gated: each test
holds the server at one window and commits the access change there."""

from __future__ import annotations

import pytest

from api.realtime.socket import Connection
from tests.fixtures.chorus import Running, User
from tests.fixtures.gates import GATE_TIMEOUT_S, after_the_access_check, until_end_or
from tests.fixtures.websocket import recv, send, socket


def _workspace(chorus: Running) -> tuple[str, str, User, User]:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "R", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)["id"]
    return ws, ch, owner, member


@pytest.mark.parametrize("stream", ["workspace", "channel"])
def test_a_kick_while_a_subscription_opens_ends_it(chorus: Running, stream: str) -> None:
    """Finding 2: the check ran before the head was read, so a kick in between landed at or
    before the subscription's start, was never delivered, and content kept flowing."""
    api = chorus.api
    ws, ch, owner, member = _workspace(chorus)
    kicked: dict[str, int] = {}

    def kick() -> None:
        done = api.ok(api.post(f"/api/workspaces/{ws}/members/{member.user_id}/kick", owner))
        kicked["at"] = done["position"]

    target = {"workspace": ws} if stream == "workspace" else {"channel": ch}
    with socket(chorus, member.access_token) as sock, after_the_access_check(kick) as done:
        send(sock, {"op": "subscribe", "sub": "s", "streams": [target]})
        first = recv(sock)
        assert done.wait(GATE_TIMEOUT_S)
        # Content the subscription would carry: a document (workspace), a message (channel).
        later = api.ok(
            api.post(f"/api/workspaces/{ws}/documents", owner, {"title": "after"})
            if stream == "workspace"
            else api.post(f"/api/channels/{ch}/messages", owner, {"text": "after"}),
            201,
        )
        frames = (
            [first] if first["op"] in ("end", "error") else [first, *until_end_or(sock, "after")]
        )
        # Had the subscription survived the kick, the owner's later message would come.
        last = frames[-1]
        assert last["op"] in ("end", "error"), frames
        if last["op"] == "end":
            assert last["position"] < kicked["at"] < later["position"]


def test_a_kick_between_reading_the_head_and_the_check_refuses_the_subscription(
    chorus: Running,
) -> None:
    """The other window: the kick commits after the head is read, before the check; the
    check, against state at least that new, refuses (the subscription never starts)."""
    api = chorus.api
    ws, _, owner, member = _workspace(chorus)
    original = Connection._head

    def head(self: Connection) -> int:
        position = original(self)
        api.ok(api.post(f"/api/workspaces/{ws}/members/{member.user_id}/kick", owner))
        return position

    Connection._head = head  # type: ignore[method-assign]
    try:
        with socket(chorus, member.access_token) as sock:
            send(sock, {"op": "subscribe", "sub": "s", "streams": [{"workspace": ws}]})
            refused = recv(sock)
    finally:
        Connection._head = original  # type: ignore[method-assign]
    assert (refused["op"], refused["status"]) == ("error", 404), refused
