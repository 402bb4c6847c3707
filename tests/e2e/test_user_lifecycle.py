"""A user's whole life over HTTP (issue 20): the profile (display name, avatar, username),
a password reset with an operator's one-time token, deactivation and reactivation, and
finding a user by name among the people one shares a workspace with. Each change is a
past-tense event on the user's stream, shown on ``/api/events`` to that user alone; refused
requests append nothing; every read path that shows a name shows the new one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.fixtures.chorus import GOOD_PASSWORD, Api, Running, User

pytestmark = pytest.mark.security

NEW_PASSWORD = "violet-Harbour-lantern-73"
AVATAR = "https://images.example.org/u/alice.png?size=64"


# -- helpers -----------------------------------------------------------------------------------


def login(api: Api, username: str, password: str) -> httpx.Response:
    return api.http.post("/api/auth/login", json={"username": username, "password": password})


def signed_in(api: Api, user: User, password: str | None = None) -> User:
    r = login(api, user.username, password or user.password)
    assert r.status_code == 200, r.text
    body = r.json()
    return User(
        user.user_id,
        user.username,
        password or user.password,
        body["access_token"],
        body["refresh_token"],
    )


def works(api: Api, user: User) -> bool:
    r = api.get("/api/auth/me", user)
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


def refreshes(api: Api, user: User) -> bool:
    r = api.http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


def my_events(api: Api, user: User, stream: str) -> list[dict[str, Any]]:
    """The events of ``stream`` the user is shown on /api/events (by stream: every one)."""
    r = api.get("/api/events", user, stream=stream, limit=200)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def chorus_cli(chorus: Running, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": chorus.database_url}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def issue_reset(chorus: Running, username: str, *extra: str) -> str:
    done = chorus_cli(chorus, "issue-password-reset", username, *extra)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.count(".") == 1 and len(token) > 40, done.stdout
    return token


def stored_states(chorus: Running) -> list[bytes]:
    with psycopg.connect(chorus.database_url) as conn:
        return [bytes(s) for (s,) in conn.execute("SELECT state FROM chorus_events").fetchall()]


def assert_refused(
    chorus: Running, response: httpx.Response, status: int, before: int, detail: str = ""
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert detail in response.json()["detail"], response.json()
    assert chorus.events() == before, "refused, yet events were appended"


# -- the profile, and every read path that shows it --------------------------------------------


def _members(api: Api, viewer: User, ids: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.ok(api.get(f"/api/workspaces/{ids['ws']}/members", viewer))[
        "items"
    ]
    return items


def _channel_members(api: Api, viewer: User, ids: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.ok(
        api.get(f"/api/channels/{ids['private']}/members", viewer)
    )["items"]
    return items


def _dm_list(api: Api, viewer: User, ids: dict[str, str]) -> list[dict[str, Any]]:
    body = api.ok(api.get("/api/dms", viewer))
    return [i["other"] | {"user_id": i["other"]["id"]} for i in body["items"]]


def _blocks(api: Api, viewer: User, ids: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.ok(api.get("/api/users/me/blocks", viewer))["items"]
    return items


def _lookup(api: Api, viewer: User, ids: dict[str, str]) -> list[dict[str, Any]]:
    return [api.ok(api.get(f"/api/users/by-username/{ids['new_username']}", viewer))]


# Every read path that shows another user's names (presence shows ids and statuses only;
# messages carry their author's id, never a copy of the name).
READ_PATHS: dict[str, Callable[[Api, User, dict[str, str]], list[dict[str, Any]]]] = {
    "workspace members": _members,
    "private channel members": _channel_members,
    "direct-message list": _dm_list,
    "blocked users": _blocks,
    "lookup by username": _lookup,
}


@pytest.fixture(scope="module")
def renamed(chorus: Running) -> dict[str, Any]:
    """Alice and Bob share a workspace, a private channel and a direct channel; Bob blocks
    Alice; then Alice changes her display name, avatar and username in one request."""
    api = chorus.api
    alice, bob = api.signup("alice"), api.signup("bob")
    ws = api.acquaint(bob, alice)
    private = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", bob, {"name": "pair", "private": True}), 201
    )["id"]
    api.ok(api.post(f"/api/channels/{private}/members", bob, {"user_id": alice.user_id}))
    api.ok(api.post("/api/dms", bob, {"user_id": alice.user_id}), 201)
    api.ok(api.put(f"/api/users/me/blocks/{alice.user_id}", bob))
    new_username = f"alice_{uuid.uuid4().hex[:8]}"
    r = api.patch(
        "/api/users/me",
        alice,
        {"display_name": "Alice Liddell", "avatar_url": AVATAR, "username": new_username},
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["position"], int)
    return {
        "alice": alice,
        "bob": bob,
        "ids": {"ws": ws, "private": private, "new_username": new_username},
    }


@pytest.mark.parametrize("path", READ_PATHS, ids=str)
def test_every_read_path_shows_the_new_names(
    chorus: Running, renamed: dict[str, Any], path: str
) -> None:
    alice, bob, ids = renamed["alice"], renamed["bob"], renamed["ids"]
    rows = READ_PATHS[path](chorus.api, bob, ids)
    [row] = [r for r in rows if r["user_id"] == alice.user_id]
    assert (row["username"], row["display_name"]) == (ids["new_username"], "Alice Liddell")


def test_the_profile_changes_are_one_event_each_shown_to_the_user_alone(
    chorus: Running, renamed: dict[str, Any]
) -> None:
    api, alice, bob = chorus.api, renamed["alice"], renamed["bob"]
    me = api.ok(api.get("/api/auth/me", alice))
    assert (me["username"], me["display_name"], me["avatar_url"]) == (
        renamed["ids"]["new_username"],
        "Alice Liddell",
        AVATAR,
    )
    events = my_events(api, alice, alice.user_id)
    assert types_of(events)[-3:] == ["UsernameChanged", "DisplayNameChanged", "AvatarChanged"]
    changed = {e["type"]: e["data"] for e in events}
    assert changed["UsernameChanged"]["previous"] == alice.username
    assert changed["AvatarChanged"]["avatar_url"] == AVATAR
    assert all(e["actor"] == alice.user_id for e in events[-3:])
    # Another user's stream: nothing of it (an unknown stream reads as empty or 404 alike).
    r = api.get("/api/events", bob, stream=alice.user_id)
    assert r.status_code == 404 or r.json()["items"] == [], r.text
    # The same values again: nothing to record.
    r = api.patch("/api/users/me", alice, {"display_name": "Alice Liddell", "avatar_url": AVATAR})
    assert r.status_code == 200 and r.json()["position"] is None, r.text
    # Removing the avatar.
    api.ok(api.patch("/api/users/me", alice, {"avatar_url": ""}))
    assert api.ok(api.get("/api/auth/me", alice))["avatar_url"] is None


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({}, 422, "nothing to change"),
        ({"display_name": ""}, 422, ""),
        ({"display_name": "x" * 65}, 422, ""),
        ({"display_name": "evil\u202ename"}, 422, "display_name"),
        ({"display_name": "a\u0000b"}, 422, "display_name"),
        ({"avatar_url": "http://example.org/a.png"}, 422, "https"),
        ({"avatar_url": "javascript:alert(1)"}, 422, "https"),
        ({"avatar_url": "https://user:pw@example.org/a.png"}, 422, "credentials"),
        ({"avatar_url": "https://example.org/a b.png"}, 422, "whitespace"),
        ({"avatar_url": "https://example.org/" + "a" * 600}, 422, ""),
        ({"username": "no spaces"}, 422, "username"),
        ({"username": "ab"}, 422, "username"),
        ({"username": "x" * 65}, 422, ""),
        ({"display_name": "ok", "user_id": "00000000-0000-0000-0000-000000000000"}, 422, "unknown"),
        ({"display_name": 5}, 422, ""),
    ],
)
def test_bad_profile_input_is_refused_and_appends_nothing(
    chorus: Running, body: dict[str, Any], status: int, detail: str
) -> None:
    api = chorus.api
    user = api.signup("shape")
    before = chorus.events()
    r = api.patch("/api/users/me", user, body)
    assert_refused(chorus, r, status, before, detail)


def test_profile_changes_need_a_signed_in_user(chorus: Running) -> None:
    before = chorus.events()
    r = chorus.api.http.patch("/api/users/me", json={"display_name": "Nobody"})
    assert_refused(chorus, r, 401, before)


def test_a_display_name_may_not_read_as_another_users_username(chorus: Running) -> None:
    api = chorus.api
    alice, bob = api.signup("alice"), api.signup("bob")
    before = chorus.events()
    r = api.patch("/api/users/me", alice, {"display_name": bob.username.upper()})
    assert_refused(chorus, r, 409, before, "another user's username")
    # One's own username is fine.
    api.ok(api.patch("/api/users/me", alice, {"display_name": alice.username.upper()}))


# -- usernames: claimed atomically, released for others -----------------------------------------


def test_a_username_change_frees_the_old_name_and_refuses_a_taken_one(chorus: Running) -> None:
    api = chorus.api
    alice, bob = api.signup("alice"), api.signup("bob")
    before = chorus.events()
    for taken in (bob.username, bob.username.upper()):
        r = api.patch("/api/users/me", alice, {"username": taken})
        assert_refused(chorus, r, 409, before, "taken")
    new = f"alice_{uuid.uuid4().hex[:8]}"
    api.ok(api.patch("/api/users/me", alice, {"username": new}))
    # The new name signs in, the old one no longer does...
    assert login(api, new, alice.password).status_code == 200
    assert login(api, alice.username, alice.password).status_code == 401
    # ...and is free: another user takes it (by sign-up, then by rename back and forth).
    r = api.http.post(
        "/api/auth/signup", json={"username": alice.username, "password": GOOD_PASSWORD}
    )
    assert r.status_code == 201, r.text
    carol_id = r.json()["user_id"]
    assert carol_id != alice.user_id
    carol = User(carol_id, alice.username, GOOD_PASSWORD, r.json()["access_token"], "")
    assert login(api, alice.username, GOOD_PASSWORD).json()["user_id"] == carol_id
    spare = f"spare_{uuid.uuid4().hex[:8]}"
    api.ok(api.patch("/api/users/me", carol, {"username": spare}))
    api.ok(api.patch("/api/users/me", bob, {"username": alice.username}))
    assert login(api, alice.username, bob.password).json()["user_id"] == bob.user_id


def _rename(
    api: Api, user: User, wanted: str, barrier: threading.Barrier, statuses: list[int]
) -> None:
    with httpx.Client(base_url=api.base_url, timeout=30) as http:
        barrier.wait()
        r = http.patch("/api/users/me", json={"username": wanted}, headers=user.headers)
        statuses.append(r.status_code)


def test_two_users_racing_for_one_username_one_wins(chorus: Running) -> None:
    """The claim is saved with the rename: the store's version check on the claim stream
    lets exactly one of two concurrent renames to the same name through."""
    api = chorus.api
    for _ in range(3):
        first, second = api.signup("racer"), api.signup("racer")
        wanted = f"prize_{uuid.uuid4().hex[:8]}"
        barrier = threading.Barrier(2)
        statuses: list[int] = []

        threads = [
            threading.Thread(target=_rename, args=(api, u, wanted, barrier, statuses))
            for u in (first, second)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200, 409], statuses
        winner = login(api, wanted, GOOD_PASSWORD).json()["user_id"]
        [loser] = [u for u in (first, second) if u.user_id != winner]
        # The loser kept their name; the winner's old one is free.
        assert login(api, loser.username, GOOD_PASSWORD).json()["user_id"] == loser.user_id


# -- password reset ----------------------------------------------------------------------------


def test_a_reset_token_sets_the_password_once_and_ends_every_session(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("forgetful")
    other = signed_in(api, user)
    token = issue_reset(chorus, user.username)
    assert "PasswordResetIssued" in types_of(my_events(api, user, user.user_id))
    user_part, secret = token.split(".")
    assert user_part == user.user_id

    before = chorus.events()
    for body, status, detail in (
        ({"token": f"{user.user_id}.wrong-{secret[:10]}", "new_password": NEW_PASSWORD}, 403, ""),
        ({"token": f"{uuid.uuid4()}.{secret}", "new_password": NEW_PASSWORD}, 403, ""),
        ({"token": secret, "new_password": NEW_PASSWORD}, 403, ""),
        ({"token": token, "new_password": "password123"}, 422, "password"),
        ({"token": token, "new_password": user.username + "-Extra-42"}, 422, "password"),
        ({"token": token}, 422, "new_password"),
        ({"token": token, "new_password": NEW_PASSWORD, "user_id": user.user_id}, 422, "unknown"),
    ):
        r = api.http.post("/api/auth/password-reset", json=body)
        assert_refused(chorus, r, status, before, detail)
        if status == 403:
            assert r.json()["detail"] == "invalid or expired reset token"
    assert works(api, user) and works(api, other)

    r = api.http.post(
        "/api/auth/password-reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 200, r.text
    for session in (user, other):
        assert not works(api, session) and not refreshes(api, session)
    assert login(api, user.username, user.password).status_code == 401
    assert works(api, signed_in(api, user, NEW_PASSWORD))
    # Single use.
    before = chorus.events()
    r = api.http.post(
        "/api/auth/password-reset", json={"token": token, "new_password": "another-Good-pass-99"}
    )
    assert_refused(chorus, r, 403, before, "invalid or expired")
    names = types_of(my_events(api, signed_in(api, user, NEW_PASSWORD), user.user_id))
    assert names.index("PasswordResetIssued") < names.index("PasswordReset")
    # The log keeps the token's hash, never the token nor the password.
    for state in stored_states(chorus):
        assert secret.encode() not in state and NEW_PASSWORD.encode() not in state


def test_the_delivery_hook_hands_the_token_to_an_operators_command(
    chorus: Running, tmp_path: Path
) -> None:
    api = chorus.api
    user = api.signup("mailed")
    out = tmp_path / "delivered"
    hook = f"sh -c 'cat > {out}; echo \"$CHORUS_RESET_USERNAME\" >> {out}'"
    done = chorus_cli(chorus, "issue-password-reset", user.username, "--deliver-with", hook)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # delivered, not printed
    token, username = out.read_text().split()
    assert username == user.username
    r = api.http.post(
        "/api/auth/password-reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 200, r.text
    # A failing hook: the command fails, and says so.
    failed = chorus_cli(chorus, "issue-password-reset", user.username, "--deliver-with", "false")
    assert failed.returncode == 1 and "not delivered" in failed.stderr


def test_the_cli_refuses_unknown_users_and_bad_expiries(chorus: Running) -> None:
    before = chorus.events()
    unknown = chorus_cli(chorus, "issue-password-reset", f"nobody_{uuid.uuid4().hex[:8]}")
    assert unknown.returncode == 1 and "unknown user" in unknown.stderr
    bad = chorus_cli(chorus, "issue-password-reset", "someone", "--expires-in", "10")
    assert bad.returncode == 2
    assert chorus.events() == before


# -- deactivation ------------------------------------------------------------------------------


def test_deactivation_ends_sessions_refuses_sign_in_and_an_operator_reactivates(
    chorus: Running,
) -> None:
    api = chorus.api
    user, friend = api.signup("leaving"), api.signup("friend")
    ws = api.acquaint(friend, user)
    other = signed_in(api, user)

    before = chorus.events()
    r = api.post("/api/users/me/deactivate", user, {"password": "not-My-password-42"})
    assert_refused(chorus, r, 403, before, "wrong password")
    r = api.post("/api/users/me/deactivate", user, {})
    assert_refused(chorus, r, 422, before, "password")
    assert works(api, user) and works(api, other)

    r = api.post("/api/users/me/deactivate", user, {"password": user.password})
    assert r.status_code == 200, r.text
    for session in (user, other):
        assert not works(api, session) and not refreshes(api, session)
    # Signing in: 403 with the reason, only to whoever knows the password.
    r = login(api, user.username, user.password)
    assert r.status_code == 403 and "deactivated" in r.json()["detail"], r.text
    assert login(api, user.username, "not-My-password-42").status_code == 401
    # No longer an active member, nor found by name; the name stays theirs.
    members = api.ok(api.get(f"/api/workspaces/{ws}/members", friend))["items"]
    assert user.user_id not in {m["user_id"] for m in members}
    r = api.get(f"/api/users/by-username/{user.username}", friend)
    assert r.status_code == 404
    r = api.http.post(
        "/api/auth/signup", json={"username": user.username, "password": GOOD_PASSWORD}
    )
    assert r.status_code == 409
    # No reset token brings it back.
    refused = chorus_cli(chorus, "issue-password-reset", user.username)
    assert refused.returncode == 1 and "deactivated" in refused.stderr

    done = chorus_cli(chorus, "reactivate-user", user.username)
    assert done.returncode == 0, done.stderr
    again = signed_in(api, user)
    assert works(api, again)
    members = api.ok(api.get(f"/api/workspaces/{ws}/members", friend))["items"]
    assert user.user_id in {m["user_id"] for m in members}
    names = types_of(my_events(api, again, user.user_id))
    assert names.index("UserDeactivated") < names.index("UserReactivated")
    # Reactivating an active account: refused, nothing appended.
    before = chorus.events()
    twice = chorus_cli(chorus, "reactivate-user", user.username)
    assert twice.returncode == 1 and "active" in twice.stderr
    assert chorus.events() == before


# -- lookup by username ------------------------------------------------------------------------


def test_lookup_by_username_is_for_people_who_share_a_workspace(chorus: Running) -> None:
    api = chorus.api
    alice, bob, stranger = api.signup("alice"), api.signup("bob"), api.signup("stranger")
    ws = api.acquaint(alice, bob)
    api.ok(api.patch("/api/users/me", bob, {"avatar_url": AVATAR}))
    found = api.ok(api.get(f"/api/users/by-username/{bob.username.upper()}", alice))
    assert found == {
        "user_id": bob.user_id,
        "username": bob.username,
        "display_name": bob.username,
        "avatar_url": AVATAR,
    }
    assert api.ok(api.get(f"/api/users/by-username/{alice.username}", alice))["user_id"] == (
        alice.user_id
    )
    # A stranger: the same 404 as for nobody's name and for an impossible one.
    answers = {
        (r.status_code, r.json()["detail"])
        for r in (
            api.get(f"/api/users/by-username/{bob.username}", stranger),
            api.get(f"/api/users/by-username/nobody_{uuid.uuid4().hex[:8]}", stranger),
            api.get("/api/users/by-username/No%20Such%20Name", stranger),
            api.get(f"/api/users/by-username/nobody_{uuid.uuid4().hex[:8]}", alice),
        )
    }
    assert answers == {(404, "unknown user")}
    # Once they no longer share a workspace, the same.
    api.ok(api.post(f"/api/workspaces/{ws}/leave", bob))
    r = api.get(f"/api/users/by-username/{bob.username}", alice)
    assert (r.status_code, r.json()["detail"]) == (404, "unknown user")
    assert api.get(f"/api/users/by-username/{bob.username}", None).status_code == 401
