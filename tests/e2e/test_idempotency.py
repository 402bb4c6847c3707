"""Retries with the same Idempotency-Key append nothing new, also when they race."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg

from tests.fixtures.chorus import Running, User
from tests.fixtures.sealed import opened


def _channel(chorus: Running, owner: User) -> str:
    api = chorus.api
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Idem"}), 201)
    created = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "c"}), 201)
    return str(created["id"])


def _messages_with_text(chorus: Running, text: str) -> int:
    with psycopg.connect(chorus.database_url) as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb -> 'text' FROM chorus_events"
            " WHERE topic LIKE '%MessageSent'"
        ).fetchall()
    return opened(chorus.database_url, "text", [r[0] for r in rows]).count(text)


def test_a_retry_returns_the_first_response_and_appends_nothing(chorus: Running) -> None:
    api, user = chorus.api, chorus.api.signup("idem")
    ch = _channel(chorus, user)
    key = {"Idempotency-Key": "msg-" + uuid.uuid4().hex}
    first = api.post(f"/api/channels/{ch}/messages", user, {"text": "once"}, headers=key)
    before = chorus.events()
    again = api.post(f"/api/channels/{ch}/messages", user, {"text": "once"}, headers=key)
    assert (
        (again.status_code, again.json())
        == (first.status_code, first.json())
        == (201, first.json())
    )
    assert chorus.events() == before
    assert _messages_with_text(chorus, "once") == 1
    # The event records the key that caused it.
    events = api.ok(api.get("/api/events", user, stream=first.json()["id"]))["items"]
    assert events[0]["command_id"] == key["Idempotency-Key"]


def test_the_same_key_with_another_body_is_refused(chorus: Running) -> None:
    api, user = chorus.api, chorus.api.signup("idem")
    ch = _channel(chorus, user)
    key = {"Idempotency-Key": "k-" + uuid.uuid4().hex}
    api.ok(api.post(f"/api/channels/{ch}/messages", user, {"text": "first"}, headers=key), 201)
    before = chorus.events()
    r = api.post(f"/api/channels/{ch}/messages", user, {"text": "second"}, headers=key)
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"]
    assert chorus.events() == before


def test_keys_belong_to_their_user(chorus: Running) -> None:
    api = chorus.api
    ann, ben = api.signup("ann"), api.signup("ben")
    ch = _channel(chorus, ann)
    ws = api.ok(api.get(f"/api/channels/{ch}", ann))["workspace_id"]
    api.ok(api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "other"}), 201)
    code = api.ok(api.post(f"/api/workspaces/{ws}/invites", ann, {}), 201)["code"]
    api.ok(api.post(f"/api/invites/{code}/accept", ben))
    key = {"Idempotency-Key": "shared-key"}
    a = api.ok(api.post(f"/api/channels/{ch}/messages", ann, {"text": "a"}, headers=key), 201)
    b = api.ok(api.post(f"/api/channels/{ch}/messages", ben, {"text": "a"}, headers=key), 201)
    assert a["id"] != b["id"]


def test_racing_retries_store_the_command_once(chorus: Running) -> None:
    api, user = chorus.api, chorus.api.signup("race")
    ch = _channel(chorus, user)
    key = {"Idempotency-Key": "race-" + uuid.uuid4().hex}
    before = chorus.events()

    def post(_: int) -> tuple[int, dict[str, object]]:
        r = api.http.post(
            f"/api/channels/{ch}/messages", json={"text": "racing"}, headers={**key, **user.headers}
        )
        return r.status_code, r.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(16)))
    assert {status for status, _ in results} == {201}
    assert len({body["id"] for _, body in results}) == 1
    assert chorus.events() == before + 1
    assert _messages_with_text(chorus, "racing") == 1
