"""Bad input gets a clear 4xx problem and appends nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.fixtures.chorus import Running, User


@dataclass
class World:
    owner: User
    member: User
    outsider: User
    workspace: str
    channel: str
    message: str


@pytest.fixture(scope="module")
def world(chorus: Running) -> Iterator[World]:
    api = chorus.api
    owner, member, outsider = api.signup("own"), api.signup("mem"), api.signup("out")
    ws = api.ok(
        api.post("/api/workspaces", owner, {"name": "Private", "visibility": "private"}), 201
    )
    code = api.ok(api.post(f"/api/workspaces/{ws['id']}/invites", owner, {}), 201)["code"]
    api.ok(api.post(f"/api/invites/{code}/accept", member))
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "general"}), 201)
    msg = api.ok(api.post(f"/api/channels/{ch['id']}/messages", owner, {"text": "mine"}), 201)
    yield World(owner, member, outsider, ws["id"], ch["id"], msg["id"])


def assert_problem(response: httpx.Response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert fragment.lower() in body["detail"].lower(), body


def test_malformed_json_is_400(chorus: Running, world: World) -> None:
    before = chorus.events()
    r = chorus.api.http.post(
        f"/api/channels/{world.channel}/messages",
        content=b'{"text": ',
        headers={**world.owner.headers, "content-type": "application/json"},
    )
    assert_problem(r, 400)
    assert chorus.events() == before


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"text": 5}, "expected `str`"),
        ({}, "missing required field `text`"),
        ({"text": "hi", "reply_to": 7}, "expected `str"),
        ({"text": "hi", "author_id": "someone-else"}, "unknown field"),
        ({"text": "x" * 9000}, "length"),
        ({"text": "   "}, "must not be empty"),
        ({"text": "y" * 4001}, "longer than 4000"),
        ({"text": "hi", "reply_to": str(uuid.uuid4())}, "unknown reply_to"),
    ],
)
def test_invalid_message_bodies_are_refused(
    chorus: Running, world: World, body: dict[str, object], fragment: str
) -> None:
    before = chorus.events()
    r = chorus.api.post(f"/api/channels/{world.channel}/messages", world.owner, body)
    assert_problem(r, 404 if "unknown" in fragment and "field" not in fragment else 422, fragment)
    assert chorus.events() == before


def test_mass_assignment_of_owner_is_refused(chorus: Running, world: World) -> None:
    before = chorus.events()
    r = chorus.api.post(
        "/api/workspaces", world.member, {"name": "Mine", "owner_id": world.owner.user_id}
    )
    assert_problem(r, 422, "unknown field")
    r = chorus.api.post(
        f"/api/workspaces/{world.workspace}/roles",
        world.owner,
        {"name": "boss", "permissions": ["view_channels"], "builtin": True},
    )
    assert_problem(r, 422, "unknown field")
    assert chorus.events() == before


def test_oversized_body_is_413(chorus: Running, world: World) -> None:
    before = chorus.events()
    r = chorus.api.post(
        f"/api/channels/{world.channel}/messages", world.owner, {"text": "z" * (300 * 1024)}
    )
    assert_problem(r, 413)
    assert chorus.events() == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/channels/{unknown}/messages", {"text": "x"}),
        ("/api/channels/not-an-id/messages", {"text": "x"}),
        ("/api/workspaces/{unknown}/channels", {"name": "x"}),
        ("/api/dms", {"user_id": "{unknown}"}),
    ],
)
def test_unknown_ids_are_404(
    chorus: Running, world: World, path: str, body: dict[str, str]
) -> None:
    before = chorus.events()
    unknown = str(uuid.uuid4())
    body = {k: v.format(unknown=unknown) for k, v in body.items()}
    r = chorus.api.post(path.format(unknown=unknown), world.owner, body)
    assert_problem(r, 404, "unknown")
    assert chorus.events() == before
    assert_problem(
        chorus.api.patch(f"/api/messages/{uuid.uuid4()}", world.owner, {"text": "x"}), 404
    )
    assert_problem(chorus.api.get(f"/api/channels/{uuid.uuid4()}/messages", world.owner), 404)


def test_other_peoples_ids_are_not_reachable(chorus: Running, world: World) -> None:
    """Broken object-level authorization: an outsider using ids of a private workspace."""
    api, o, before = chorus.api, world.outsider, chorus.events()
    ws, ch, msg = world.workspace, world.channel, world.message
    attempts = [
        api.post(f"/api/channels/{ch}/messages", o, {"text": "let me in"}),
        api.patch(f"/api/messages/{msg}", o, {"text": "rewritten"}),
        api.delete(f"/api/messages/{msg}", o),
        api.put(f"/api/messages/{msg}/reactions/x", o),
        api.post(f"/api/workspaces/{ws}/channels", o, {"name": "mine"}),
        api.post(f"/api/workspaces/{ws}/invites", o, {}),
        api.post(f"/api/workspaces/{ws}/join", o),
        api.post(f"/api/workspaces/{ws}/members/{world.member.user_id}/kick", o),
        api.put(f"/api/workspaces/{ws}/members/{o.user_id}/roles/admin", o),
        api.post(f"/api/channels/{ch}/members", o, {"user_id": o.user_id}),
        api.get(f"/api/channels/{ch}/messages", o),
        api.get(f"/api/workspaces/{ws}", o),
        api.get(f"/api/workspaces/{ws}/members", o),
        api.get(f"/api/workspaces/{ws}/channels", o),
    ]
    for r in attempts:
        assert_problem(r, 404)
    assert chorus.events() == before
    # A member may see the message but not rewrite or delete another's.
    assert_problem(api.patch(f"/api/messages/{msg}", world.member, {"text": "mine now"}), 403)
    assert_problem(api.delete(f"/api/messages/{msg}", world.member), 403)
    assert chorus.events() == before


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"limit": 500}, "limit"),
        ({"limit": 0}, "limit"),
        ({"before": "abc"}, "cursor"),
        ({"before": "5", "after": "3"}, "not both"),
        ({"limit": "many"}, ""),
    ],
)
def test_bad_paging_is_422_or_400(
    chorus: Running, world: World, params: dict[str, object], fragment: str
) -> None:
    r = chorus.api.get(f"/api/channels/{world.channel}/messages", world.owner, **params)
    assert r.status_code in (400, 422), r.text
    assert fragment in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/streams/{channel}", "at"),
        ("/api/channels/{channel}/messages", "min_position"),
        ("/api/events", "after"),
    ],
)
def test_positions_past_a_bigint_are_422_not_500(
    chorus: Running, world: World, path: str, name: str
) -> None:
    """Positions are PostgreSQL bigints: a larger number is refused before any query."""
    url = path.format(channel=world.channel)
    assert_problem(chorus.api.get(url, world.owner, **{name: 2**63}), 422, name)


def test_idempotency_key_too_long_is_refused(chorus: Running, world: World) -> None:
    before = chorus.events()
    r = chorus.api.post(
        f"/api/channels/{world.channel}/messages",
        world.owner,
        {"text": "x"},
        headers={"Idempotency-Key": "k" * 129},
    )
    assert_problem(r, 422, "Idempotency-Key")
    assert chorus.events() == before


def test_missing_or_bad_tokens_are_401(chorus: Running, world: World) -> None:
    before = chorus.events()
    path = f"/api/channels/{world.channel}/messages"
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}):
        r = chorus.api.http.post(path, json={"text": "x"}, headers=headers)
        assert_problem(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"
    assert chorus.events() == before
