"""A context added as docs/ARCHITECTURE.md's recipe says (tests/toy: one module per layer and
one registration) is scoped, delivered on ``/ws``, shown on ``/api/events``, kept in the
streams read model and published in OpenAPI, with no other edit anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from websockets.sync.client import ClientConnection, connect

from api.contexts import CONTEXTS
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Running, User, running_chorus
from tests.toy.context import BOARDS

TIMEOUT = 10


@pytest.fixture(scope="module")
def toy(
    postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    catalogue = CONTEXTS.with_context(BOARDS)
    with running_chorus(
        postgres_server, tmp_path_factory.mktemp("toy"), catalogue=catalogue
    ) as running:
        yield running


def _socket(chorus: Running, user: User) -> ClientConnection:
    url = chorus.server.url.replace("http", "ws") + f"/ws?token={user.access_token}"
    return connect(url, open_timeout=TIMEOUT)


def _frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
    return frame


def _subscribe(ws: ClientConnection, sub: str, stream: dict[str, str]) -> dict[str, Any]:
    ws.send(json.dumps({"op": "subscribe", "sub": sub, "streams": [stream]}))
    return _frame(ws)


def _next_event(ws: ClientConnection, type_name: str) -> dict[str, Any]:
    """The next event of ``type_name`` (other events of the workspace may come first)."""
    while True:
        frame = _frame(ws)
        assert frame["op"] in ("event", "caught_up", "subscribed"), frame
        if frame["op"] == "event" and frame["event"]["type"] == type_name:
            event: dict[str, Any] = frame["event"]
            return event


def test_a_context_added_by_the_recipe_works_end_to_end(toy: Running) -> None:
    api = toy.api
    owner, member, outsider = api.signup("own"), api.signup("mem"), api.signup("out")
    ws = api.acquaint(owner, member)
    api.acquaint(outsider)  # a workspace of their own: a member of something, not of ws
    before = toy.events()
    refused = api.post(f"/api/workspaces/{ws}/boards", outsider, {"name": "Mine"})
    assert refused.status_code in (403, 404), refused.text
    assert toy.events() == before

    with _socket(toy, member) as live, _socket(toy, outsider) as stranger:
        assert _subscribe(live, "ws", {"workspace": ws})["op"] == "subscribed"
        created = api.ok(api.post(f"/api/workspaces/{ws}/boards", owner, {"name": "Plans"}), 201)
        board = created["id"]
        # Delivered live to a workspace subscriber, as the kind's readers rule says.
        event = _next_event(live, "BoardCreated")
        assert event["stream"] == board and event["data"]["name"] == "Plans"
        # The kind is a subscription kind of its own, for readers only.
        assert _subscribe(live, "board", {"board": board})["op"] == "subscribed"
        denied = _subscribe(stranger, "board", {"board": board})
        assert denied["op"] == "error" and denied["status"] in (403, 404), denied
        assert _subscribe(stranger, "x", {"boards": board})["status"] == 422

    # The event log shows it to members, not to others.
    seen = api.ok(api.get("/api/events", member, stream=board, min_position=created["position"]))
    assert [e["type"] for e in seen["items"]] == ["BoardCreated"]
    hidden = api.get("/api/events", outsider, stream=board, min_position=created["position"])
    assert hidden.status_code == 404 or hidden.json()["items"] == [], hidden.text
    everything = api.ok(api.get("/api/events", outsider, min_position=created["position"]))
    assert board not in {e["stream"] for e in everything["items"]}

    # The streams read model knows where it lives; its own read model has it.
    with psycopg.connect(toy.database_url) as conn:
        row = conn.execute(
            "SELECT kind, workspace_id::text FROM rm_streams WHERE stream_id = %s", (board,)
        ).fetchone()
        assert row == ("board", ws)
        names = conn.execute("SELECT name FROM rm_toy_boards WHERE board_id = %s", (board,))
        assert names.fetchall() == [("Plans",)]

    # OpenAPI publishes the route.
    schema = api.ok(api.get("/schema/openapi.json", None))
    operation = schema["paths"]["/api/workspaces/{ws}/boards"]["post"]
    assert operation["operationId"] == "CreateBoard"
