"""The live board (issue 21, point 3) over real HTTP and /ws: a ``{"project": id}``
subscription delivers its tasks' events to every reader of the project, exactly once across
a resume with ``after``; access is checked when subscribing and again when it changes; two
people moving cards at once end with one order, and a stale move gets 409."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from websockets.sync.client import ClientConnection

from tests.fixtures.chorus import SHORT_LINGER, Api, Running, User
from tests.fixtures.websocket import recv, send, socket, until

CHORUS_SETTINGS = SHORT_LINGER


def _project(api: Api, owner: User, *members: User, **body: Any) -> tuple[str, str]:
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "W", "visibility": "public"}), 201)
    for m in members:
        api.ok(api.post(f"/api/workspaces/{ws['id']}/join", m))
    created = api.post(f"/api/workspaces/{ws['id']}/projects", owner, {"name": "P", **body})
    return ws["id"], api.ok(created, 201)["id"]


def _task(api: Api, project: str, user: User, title: str = "T") -> str:
    return str(
        api.ok(api.post(f"/api/projects/{project}/tasks", user, {"title": title}), 201)["id"]
    )


def _subscribe(ws: ClientConnection, project: str, after: int | None = None) -> None:
    frame: dict[str, Any] = {"op": "subscribe", "sub": "b", "streams": [{"project": project}]}
    if after is not None:
        frame["after"] = after
    send(ws, frame)
    assert until(ws, "subscribed")["sub"] == "b"


def _events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [until(ws, "event")["event"] for _ in range(count)]


def _quiet(ws: ClientConnection) -> None:
    """Nothing more was queued for this socket."""
    send(ws, {"op": "ping"})
    assert recv(ws) == {"op": "pong"}


def test_every_reader_gets_created_changed_moved_deleted_in_order(chorus: Running) -> None:
    api = chorus.api
    owner, ada, bob = api.signup("lown"), api.signup("lada"), api.signup("lbob")
    _, p = _project(api, owner, ada, bob)
    with socket(chorus, ada.access_token) as a, socket(chorus, bob.access_token) as b:
        _subscribe(a, p)
        _subscribe(b, p)
        t = _task(api, p, owner)
        api.ok(api.patch(f"/api/tasks/{t}", owner, {"title": "Renamed"}))
        api.ok(api.post(f"/api/tasks/{t}/move", owner, {"status": "done"}))
        api.ok(api.delete(f"/api/tasks/{t}", owner))
        api.ok(api.patch(f"/api/projects/{p}", owner, {"name": "P2"}))
        for ws in (a, b):
            got = _events(ws, 5)
            assert [e["type"] for e in got] == [
                "TaskCreated",
                "TaskChanged",
                "TaskMoved",
                "TaskDeleted",
                "ProjectRenamed",
            ]
            assert got[0]["data"]["title"] == "T" and got[2]["data"]["status"] == "done"
            assert [e["position"] for e in got] == sorted({e["position"] for e in got})
            _quiet(ws)


def test_resuming_with_after_gets_exactly_what_was_missed(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("lown")
    _, p = _project(api, owner)
    with socket(chorus, owner.access_token) as ws:
        _subscribe(ws, p)
        first = _task(api, p, owner, "seen")
        last = _events(ws, 1)[0]["position"]
    missed = [_task(api, p, owner, f"missed {i}") for i in range(3)]
    api.ok(api.post(f"/api/tasks/{first}/move", owner, {"status": "in-progress"}))
    with socket(chorus, owner.access_token) as ws:
        _subscribe(ws, p, after=last)
        got = _events(ws, 4)
        assert [e["stream"] for e in got] == [*missed, first]
        live = _task(api, p, owner, "live")
        assert _events(ws, 1)[0]["stream"] == live
        _quiet(ws)


def test_a_listed_project_refuses_outsiders_and_ends_when_access_goes(chorus: Running) -> None:
    api = chorus.api
    owner, ada, bob = api.signup("lown"), api.signup("lada"), api.signup("lbob")
    ws_id, p = _project(api, owner, ada, bob, access="listed", member_ids=[ada.user_id])
    with socket(chorus, bob.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "b", "streams": [{"project": p}], "after": 0})
        error = until(ws, "error")
        assert (error["sub"], error["status"]) == ("b", 404)
        # A workspace subscription carries none of the listed project's events either.
        send(ws, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws_id}]})
        assert until(ws, "subscribed")["sub"] == "w"
        _task(api, p, owner, "secret")
        api.ok(api.patch(f"/api/workspaces/{ws_id}", owner, {"name": "W2"}))
        shown = until(ws, "event")
        assert shown["event"]["type"] == "WorkspaceRenamed", shown
        _quiet(ws)
    with socket(chorus, ada.access_token) as ws:
        _subscribe(ws, p)
        _task(api, p, owner, "for ada")
        assert _events(ws, 1)[0]["data"]["title"] == "for ada"
        api.ok(api.put(f"/api/projects/{p}/access", owner, json={"access": "listed"}))
        ended = until(ws, "end")
        assert (ended["sub"], ended["reason"]) == ("b", "access revoked")
        _task(api, p, owner, "after")
        _quiet(ws)


def test_deleting_the_project_ends_its_subscriptions(chorus: Running) -> None:
    api = chorus.api
    owner, ada = api.signup("lown"), api.signup("lada")
    _, p = _project(api, owner, ada)
    with socket(chorus, ada.access_token) as ws:
        _subscribe(ws, p)
        api.ok(api.delete(f"/api/projects/{p}", owner))
        ended = until(ws, "end")
        assert (ended["sub"], ended["reason"]) == ("b", "access revoked")


def _board_order(api: Api, project: str, user: User, column: str) -> list[str]:
    board = api.ok(api.get(f"/api/projects/{project}/board", user))
    return [t["id"] for c in board["columns"] if c["id"] == column for t in c["tasks"]]


def test_two_people_moving_cards_at_once_converge_and_a_stale_move_gets_409(
    chorus: Running,
) -> None:
    """Ada and Bob each drag a different card to the same spot (between the first two of
    To do) at the same moment: both moves succeed, each writes one task, and both boards,
    and the order each client works out from the events it was sent, are the same."""
    api = chorus.api
    owner, ada, bob = api.signup("lown"), api.signup("lada"), api.signup("lbob")
    _, p = _project(api, owner, ada, bob)
    cards = [_task(api, p, owner, f"c{i}") for i in range(4)]
    ranks = {c: api.ok(api.get(f"/api/tasks/{c}", owner))["rank"] for c in cards}
    clients = {u.user_id: httpx.Client(base_url=chorus.server.url, timeout=30) for u in (ada, bob)}
    results: dict[str, httpx.Response] = {}
    start = threading.Barrier(2)

    def move(user: User, card: str) -> None:
        start.wait()
        results[card] = clients[user.user_id].post(
            f"/api/tasks/{card}/move",
            json={"status": "todo", "after_id": cards[0], "before_id": cards[1]},
            headers={**user.headers, "If-Match": '"1"'},
        )

    with socket(chorus, ada.access_token) as a, socket(chorus, bob.access_token) as b:
        _subscribe(a, p)
        _subscribe(b, p)
        threads = [
            threading.Thread(target=move, args=(ada, cards[2])),
            threading.Thread(target=move, args=(bob, cards[3])),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for client in clients.values():
            client.close()
        for card in cards[2:]:
            assert results[card].status_code == 200, results[card].text
            api.position = max(api.position, results[card].json()["position"])
        seen = []
        for ws in (a, b):
            moved = _events(ws, 2)
            assert {e["stream"] for e in moved} == set(cards[2:])
            local = dict(ranks)
            for e in moved:
                local[e["stream"]] = e["data"]["rank"]
            seen.append(sorted(cards, key=lambda c: (local[c], c)))
            _quiet(ws)
    boards = {u.user_id: _board_order(api, p, u, "todo") for u in (ada, bob)}
    assert boards[ada.user_id] == boards[bob.user_id] == seen[0] == seen[1]
    order = boards[ada.user_id]
    assert order[0] == cards[0] and order[-1] == cards[1] and set(order[1:3]) == set(cards[2:])
    # Each moved card is at version 2 now: a move based on version 1 is stale.
    stale = api.post(
        f"/api/tasks/{cards[2]}/move", ada, {"status": "done"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 409, stale.text
    # (Closed sockets' presence events keep coming: the task itself says nothing was written.)
    shown = api.ok(api.get(f"/api/tasks/{cards[2]}", ada))
    assert (shown["status"], shown["version"]) == ("todo", 2)
