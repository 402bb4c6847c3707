"""Access is decided against the log (issue 17): a kick committed while a subscription is
being opened ends it at the kick's position, whatever the interleaving. Gated: each test
holds the server at one window and commits the access change there."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from api.realtime.socket import Connection, Subscription
from tests.e2e.test_websocket import recv, send, socket
from tests.fixtures.chorus import Running, User

GATE_TIMEOUT_S = 20.0


@contextmanager
def after_the_access_check(act: Callable[[], None]) -> Iterator[threading.Event]:
    """Runs ``act`` (an access change, committed) the first time a subscription has passed
    its access check, before the subscription goes on; yields an event set once it ran."""
    original = Subscription.check
    done = threading.Event()

    def check(self: Subscription) -> None:
        original(self)
        if not done.is_set():
            act()
            done.set()

    Subscription.check = check  # type: ignore[method-assign]
    try:
        yield done
    finally:
        Subscription.check = original  # type: ignore[method-assign]


def _workspace(chorus: Running) -> tuple[str, str, User, User]:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "R", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)["id"]
    return ws, ch, owner, member


def _until_end_or(ws: Any, text: str) -> list[dict[str, Any]]:
    """Frames until the subscription ends (or is refused) or delivers the message ``text``:
    the one or the other must come, in log order, through the same hub."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = recv(ws)
        frames.append(frame)
        if frame["op"] in ("end", "error"):
            return frames
        data = frame["event"]["data"] if frame["op"] == "event" else {}
        if text in (data.get("text"), data.get("title")):
            return frames


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
            [first] if first["op"] in ("end", "error") else [first, *_until_end_or(sock, "after")]
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
