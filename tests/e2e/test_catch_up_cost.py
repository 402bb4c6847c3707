"""A ``/ws`` catch-up costs what the subscriber may see, not what the whole log holds.

Issue 16, finding 5: a catch-up read, decoded and filtered every event of every stream, so a
few tiny subscribe frames on a busy server cost CPU-seconds. Each test here builds a log where
the subscriber may see a handful of events among many it may not, and counts the events the
server decoded for the catch-up (``EventHub.catch_up_decoded``, a deterministic counter, not a
timing)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.fixtures.chorus import Api, Running, User

TIMEOUT = 10
NOISE = 300  # events the subscriber may not see, in other scopes


@contextmanager
def socket(chorus: Running, user: User) -> Iterator[ClientConnection]:
    url = chorus.server.url.replace("http", "ws") + f"/ws?token={user.access_token}"
    with connect(url, open_timeout=TIMEOUT) as ws:
        yield ws


def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    ws.send(json.dumps(frame))


def recv(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
    return frame


@dataclass
class World:
    """One workspace the reader belongs to (a public channel, a private one it is not in, a
    document), a direct message with the owner, and NOISE events elsewhere: another
    workspace's channel, other people's direct messages, other sign-ups."""

    owner: User
    reader: User
    workspace: str
    channel: str
    secret: str
    document: str
    dm: str


def _noise(api: Api, count: int) -> None:
    stranger, other = api.signup("str"), api.signup("oth")
    ws = api.ok(
        api.post("/api/workspaces", stranger, {"name": "Else", "visibility": "public"}), 201
    )
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", stranger, {"name": "x"}), 201)
    dm = api.ok(api.post("/api/dms", stranger, {"user_id": other.user_id}), 201)["channel_id"]
    for i in range(count // 2):
        api.ok(api.post(f"/api/channels/{ch['id']}/messages", stranger, {"text": f"n{i}"}), 201)
        api.ok(api.post(f"/api/channels/{dm}/messages", stranger, {"text": f"d{i}"}), 201)


@pytest.fixture(scope="module")
def world(chorus: Running) -> World:
    api = chorus.api
    owner, reader = api.signup("own"), api.signup("rdr")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Here", "visibility": "public"}), 201)
    api.ok(api.post(f"/api/workspaces/{ws['id']}/join", reader))
    channels = f"/api/workspaces/{ws['id']}/channels"
    channel = api.ok(api.post(channels, owner, {"name": "open"}), 201)["id"]
    secret = api.ok(api.post(channels, owner, {"name": "s", "private": True}), 201)["id"]
    document = api.ok(
        api.post(f"/api/workspaces/{ws['id']}/documents", owner, {"title": "Plan"}), 201
    )["id"]
    dm = api.ok(api.post("/api/dms", owner, {"user_id": reader.user_id}), 201)["channel_id"]
    for i in range(3):
        api.ok(api.post(f"/api/channels/{channel}/messages", owner, {"text": f"c{i}"}), 201)
        api.ok(api.post(f"/api/channels/{secret}/messages", owner, {"text": f"s{i}"}), 201)
        api.ok(api.post(f"/api/channels/{dm}/messages", owner, {"text": f"dm{i}"}), 201)
    _noise(api, NOISE)
    return World(owner, reader, ws["id"], channel, secret, document, dm)


# What a subscription names, and a write (by the owner) that it must receive next, giving
# its position: once it arrives, the catch-up is over.
TARGETS: dict[str, tuple[Callable[[World], dict[str, str]], Callable[[Api, World], int]]] = {
    "channel": (
        lambda w: {"channel": w.channel},
        lambda api, w: api.ok(
            api.post(f"/api/channels/{w.channel}/messages", w.owner, {"text": "mark"}), 201
        )["position"],
    ),
    "workspace": (
        lambda w: {"workspace": w.workspace},
        lambda api, w: api.ok(
            api.post(f"/api/channels/{w.channel}/messages", w.owner, {"text": "mark"}), 201
        )["position"],
    ),
    "document": (
        lambda w: {"document": w.document},
        lambda api, w: api.ok(
            api.patch(f"/api/documents/{w.document}", w.owner, {"title": "mark"})
        )["position"],
    ),
    "user": (
        lambda w: {"user": "me"},
        lambda api, w: api.ok(
            api.post(f"/api/channels/{w.dm}/messages", w.owner, {"text": "mark"}), 201
        )["position"],
    ),
}
# Events of the target's scope the subscriber is not shown but the server must look at
# (access changes come from the workspace's own stream; a workspace subscription sees its
# private channels only to hide them): a few, whatever the rest of the log holds.
SLACK = 20
VISIBLE_TEXTS = {
    "channel": {"c0", "c1", "c2"},
    "workspace": {"c0", "c1", "c2"},
    "document": set(),
    "user": {"dm0", "dm1", "dm2"},
}


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_catch_up_decodes_what_the_subscriber_may_see(
    chorus: Running, world: World, kind: str
) -> None:
    stream, mark = TARGETS[kind]
    hub = chorus.server.services.hub
    with socket(chorus, world.reader) as ws:
        before = hub.catch_up_decoded
        send(ws, {"op": "subscribe", "sub": "s", "streams": [stream(world)], "after": 0})
        assert recv(ws)["op"] == "subscribed"
        marked = mark(chorus.api, world)
        shown: list[dict[str, Any]] = []
        while not shown or shown[-1]["position"] < marked:
            frame = recv(ws)
            assert frame["op"] == "event", frame
            shown.append(frame["event"])
        decoded = hub.catch_up_decoded - before
    texts = {e["data"].get("text") for e in shown} - {None}
    assert texts == VISIBLE_TEXTS[kind] | ({"mark"} if kind != "document" else set()), texts
    assert world.secret not in {e["stream"] for e in shown}
    # Every event shown was decoded once (the mark perhaps live, not by the catch-up) ...
    assert decoded >= len(shown) - 1, (decoded, len(shown))
    # ... and the rest of the log was not.
    assert decoded <= len(shown) + SLACK, (decoded, len(shown))
