"""A ``/ws`` catch-up costs what the subscriber may see, not what the whole log holds.

Issue 16, finding 5: a catch-up read, decoded and filtered every event of every stream, so a
few tiny subscribe frames on a busy server cost CPU-seconds. Each test here builds a log where
the subscriber may see a handful of events among many it may not, and counts the events the
server decoded for the catch-up (``EventHub.catch_up_decoded``, a deterministic counter, not a
timing)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from api import events as events_api
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api, Running, User, running_chorus
from tests.fixtures.websocket import recv, send

TIMEOUT = 10
NOISE = 300  # events the subscriber may not see, in other scopes


@contextmanager
def socket(chorus: Running, user: User) -> Iterator[ClientConnection]:
    url = chorus.server.url.replace("http", "ws") + f"/ws?token={user.access_token}"
    with connect(url, open_timeout=TIMEOUT) as ws:
        yield ws


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
    api.ok(api.post(f"/api/workspaces/{ws['id']}/join", other))  # a direct message needs one
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


# -- the per-connection budget ----------------------------------------------------------------

BUDGET = 200  # events a connection's catch-ups may read per minute, on the server below


@pytest.fixture(scope="module")
def tight(
    postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """A server whose connections may read BUDGET events a minute for catch-ups."""
    path = tmp_path_factory.mktemp("tight")
    with running_chorus(postgres_server, path, ws_catch_up_events_per_minute=BUDGET) as running:
        yield running


def _channel_with(api: Api, owner: User, messages: int) -> tuple[str, list[int]]:
    """A channel and the positions of its events (its creation, then ``messages``)."""
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "B", "visibility": "public"}), 201)
    created = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "b"}), 201)
    positions = [created["position"]]
    for i in range(messages):
        sent = api.ok(
            api.post(f"/api/channels/{created['id']}/messages", owner, {"text": f"{i}"}), 201
        )
        positions.append(sent["position"])
    return created["id"], positions


def _retry_after(text: str) -> int:
    match = re.search(r"in (\d+) s", text)
    assert match is not None, text
    return int(match.group(1))


def test_many_small_catch_ups_on_one_connection_run_out_of_budget(tight: Running) -> None:
    """The finding's attack: many tiny subscribe frames asking for a catch-up. Past the
    budget, each gets a 429 error frame saying when to retry (or, mid-way, an end frame to
    resume from); the socket stays open and the server read no more than the budget."""
    api, hub = tight.api, tight.server.services.hub
    owner = api.signup("own")
    channel, positions = _channel_with(api, owner, 20)
    with socket(tight, owner) as ws:
        before = hub.catch_up_decoded
        for i in range(32):
            send(
                ws,
                {"op": "subscribe", "sub": f"s{i}", "streams": [{"channel": channel}], "after": 0},
            )
        refused: list[dict[str, Any]] = []
        finished: set[str] = set()
        while len(finished) < 32:
            frame = recv(ws)
            if frame["op"] == "error":
                assert frame["status"] == 429 and "budget" in frame["detail"], frame
                refused.append(frame)
                finished.add(frame["sub"])
            elif frame["op"] == "end":
                assert "budget" in frame["reason"], frame
                refused.append(frame)
                finished.add(frame["sub"])
            elif frame["op"] == "event" and frame["event"]["position"] == positions[-1]:
                finished.add(frame["sub"])
        send(ws, {"op": "ping"})
        while (frame := recv(ws))["op"] != "pong":
            assert frame["op"] in ("event", "subscribed"), frame
        decoded = hub.catch_up_decoded - before
    assert refused
    assert all(0 < _retry_after(f.get("detail") or f["reason"]) <= 61 for f in refused)
    assert decoded <= BUDGET


def test_a_catch_up_past_the_budget_ends_resumably_exactly_once(tight: Running) -> None:
    """A catch-up longer than the budget ends mid-way at a position; resumed from there (on
    a new connection, with a budget of its own) it gets the rest and goes live: every event
    once, in order."""
    api = tight.api
    owner = api.signup("own")
    channel, positions = _channel_with(api, owner, BUDGET + 50)
    got: list[int] = []
    with socket(tight, owner) as ws:
        send(ws, {"op": "subscribe", "sub": "s", "streams": [{"channel": channel}], "after": 0})
        assert recv(ws)["op"] == "subscribed"
        while (frame := recv(ws))["op"] == "event":
            got.append(frame["event"]["position"])
        assert frame["op"] == "end" and "budget" in frame["reason"], frame
        resume = frame["position"]
        assert got and got[-1] <= resume < positions[-1]
        # Within the same minute, this connection gets no more catch-up.
        send(
            ws, {"op": "subscribe", "sub": "t", "streams": [{"channel": channel}], "after": resume}
        )
        refused = recv(ws)
        assert (refused["op"], refused.get("status"), refused.get("sub")) == ("error", 429, "t"), (
            refused
        )
        send(ws, {"op": "ping"})
        assert recv(ws) == {"op": "pong"}
    with socket(tight, owner) as ws:
        send(
            ws, {"op": "subscribe", "sub": "s", "streams": [{"channel": channel}], "after": resume}
        )
        assert recv(ws)["op"] == "subscribed"
        while got[-1] < positions[-1]:
            got.append(until_event(ws)["event"]["position"])
        live = api.ok(api.post(f"/api/channels/{channel}/messages", owner, {"text": "live"}), 201)
        got.append(until_event(ws)["event"]["position"])
    assert got == [*positions, live["position"]]


def until_event(ws: ClientConnection) -> dict[str, Any]:
    frame = recv(ws)
    assert frame["op"] == "event", frame
    return frame


# -- the event log over REST ----------------------------------------------------------------------


def _event_pages(api: Api, user: User) -> list[tuple[int, list[dict[str, Any]]]]:
    """Every page from the start, following ``next``: each with the ``after`` it was read from."""
    pages: list[tuple[int, list[dict[str, Any]]]] = []
    after = 0
    while True:
        page = api.ok(api.get("/api/events", user, after=after, limit=200))
        pages.append((after, page["items"]))
        if page["next"] is None:
            return pages
        after = int(page["next"])


def test_the_event_log_looks_through_a_bounded_span_per_page(
    chorus: Running, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GET /api/events`` for a reader who sees few events of a long log: each page looks
    through at most ``SCAN_SPAN`` positions (set small here, so the log need not be 20,000
    events long), and following ``next`` gives exactly what one unbounded read gives."""
    (whole,) = _event_pages(chorus.api, world.reader)  # far fewer than 200 events
    monkeypatch.setattr(events_api, "SCAN_SPAN", 40)
    pages = _event_pages(chorus.api, world.reader)
    assert len(pages) > NOISE // 40
    assert all(after < e["position"] <= after + 40 for after, items in pages for e in items)
    assert [e for _, items in pages for e in items] == whole[1]
