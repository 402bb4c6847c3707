"""User and direct-channel ids reveal nothing (issue 17, finding 9): a new user's id is
random, kept unique per username by an index stream nobody can read; a direct channel's id is
random, found again through a pair index; users and direct channels created when ids were
derived keep their ids and keep working. And (finding 13) a user someone blocks cannot add
them to a channel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import httpx
import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from websockets.sync.client import connect

from api.contexts import CONTEXTS
from application.chorus import Chorus
from application.commands import RegisterUser
from domain.base import Cause, recording
from domain.channels import Channel
from domain.errors import UsernameTaken
from domain.identity import User as UserAggregate
from infrastructure.eventstore import eventsourcing_env
from tests.fixtures.chorus import (
    SHORT_LINGER,
    Api,
    CheapPasswords,
    Running,
    ServerThread,
    User,
    chorus_settings,
    reactions_quiet,
    wait_for_sessions_to_end,
)
from tests.fixtures.polling import wait_until
from tests.fixtures.read_models import read_model_rows
from tests.fixtures.sealed import opened

# Its tests wait for closed sockets' sessions to end: not a linger of 2 s each time.
CHORUS_SETTINGS = SHORT_LINGER

# How ids were derived before issue 17 (the ids already issued this way stay valid): a user's
# from the normalised username, a direct channel's from its two members' ids.
LEGACY_USERS = uuid5(NAMESPACE_URL, "chorus:usernames")
LEGACY_DIRECT = uuid5(NAMESPACE_URL, "chorus:direct-messages")
# The event types of the index streams.
INDEX_EVENTS = ("UsernameClaimed", "DirectChannelPaired")
TIMEOUT = 10
CHORUS = str(Path(sys.executable).with_name("chorus"))


def legacy_user_id(username: str) -> UUID:
    return uuid5(LEGACY_USERS, username.strip().lower())


def legacy_direct_id(a: str, b: str) -> UUID:
    first, second = sorted((a, b))
    return uuid5(LEGACY_DIRECT, f"{first}:{second}")


def write_legacy_user(chorus: Running, prefix: str, password: str = "a good password") -> User:
    """A user as sign-up wrote them before issue 17: the User stream at the id derived from
    the name, no username claim. Returned signed in."""
    app: Chorus = chorus.server.services.app
    username = f"{prefix}_{uuid.uuid4().hex[:10]}"
    uid = legacy_user_id(username)
    with recording(Cause(None)):
        user = UserAggregate(id=uid, username=username, display_name=username, actor_id=str(uid))
    app.save(user, credentials={uid: app.passwords.hash(password)})
    r = chorus.api.http.post("/api/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == str(uid)
    return User(str(uid), username, password, body["access_token"], body["refresh_token"])


def write_legacy_direct_channel(chorus: Running, a: User, b: User) -> str:
    app: Chorus = chorus.server.services.app
    with recording(Cause(a.user_id)):
        channel = Channel(
            id=legacy_direct_id(a.user_id, b.user_id),
            workspace_id=None,
            name="",
            private=True,
            topic="",
            kind="direct",
            member_ids=sorted([a.user_id, b.user_id]),
        )
    recordings = app.save(channel)
    chorus.api.position = max(chorus.api.position, max(r.notification.id for r in recordings))
    return str(channel.id)


def index_streams(chorus: Running) -> list[str]:
    with psycopg.connect(chorus.database_url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT originator_id::text FROM chorus_events WHERE topic LIKE ANY(%s)",
            ([f"%.{t}" for t in INDEX_EVENTS],),
        ).fetchall()
    return [r[0] for r in rows]


def signup(api: Api, username: str) -> httpx.Response:
    return api.http.post(
        "/api/auth/signup", json={"username": username, "password": "a good password"}
    )


# -- users ------------------------------------------------------------------------------------


def test_a_new_users_id_is_random_not_derived_from_the_username(chorus: Running) -> None:
    api = chorus.api
    users = [api.signup("rnd") for _ in range(3)]
    for user in users:
        uid = UUID(user.user_id)
        assert uid.version == 4, user
        assert uid != legacy_user_id(user.username)
    assert len({u.user_id for u in users}) == len(users)
    # Signing in finds the same random id.
    for user in users:
        r = api.http.post(
            "/api/auth/login", json={"username": user.username, "password": user.password}
        )
        assert r.status_code == 200 and r.json()["user_id"] == user.user_id
        # And so does a mention of the name.
    ws = api.acquaint(users[0], *users[1:])
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", users[0], {"name": "c"}), 201)["id"]
    text = " ".join(f"@{u.username.upper()}" for u in users[1:]) + " @nobody_here_at_all"
    sent = api.ok(api.post(f"/api/channels/{ch}/messages", users[0], {"text": text}), 201)
    shown = api.ok(api.get(f"/api/channels/{ch}/messages", users[0], min_position=sent["position"]))
    assert shown["items"][0]["mentions"] == [u.user_id for u in users[1:]]


@pytest.mark.parametrize("variant", [str.lower, str.upper, lambda s: f"  {s} "])
def test_a_username_is_taken_once_whatever_its_case(chorus: Running, variant: Any) -> None:
    api = chorus.api
    first = api.signup("once")
    before = chorus.events()
    again = signup(api, variant(first.username))
    assert again.status_code == 409, again.text
    assert again.headers["content-type"].startswith("application/problem+json")
    assert chorus.events() == before


def _sign_up_at_once(urls: list[str], name: str, count: int) -> list[int]:
    """``count`` sign-ups of ``name`` released together, spread over the servers at ``urls``."""
    barrier = threading.Barrier(count)
    statuses: list[int] = []

    def attempt(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            barrier.wait()
            body = {"username": name, "password": "a good password"}
            statuses.append(client.post("/api/auth/signup", json=body).status_code)

    threads = [threading.Thread(target=attempt, args=(urls[i % len(urls)],)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_concurrent_sign_ups_of_one_name_give_one_user(chorus: Running) -> None:
    for _ in range(3):
        statuses = _sign_up_at_once([chorus.server.url], f"race_{uuid.uuid4().hex[:10]}", 4)
        assert sorted(statuses) == [201, 409, 409, 409]


def test_sign_ups_of_one_name_on_two_servers_give_one_user(chorus: Running, tmp_path: Path) -> None:
    """Two servers (each its own application, pools and writer) on one database."""
    second = ServerThread(chorus_settings(tmp_path), chorus.database_url).start()
    try:
        for _ in range(3):
            name = f"two_{uuid.uuid4().hex[:10]}"
            before = chorus.events()
            statuses = _sign_up_at_once([chorus.server.url, second.url], name, 4)
            assert sorted(statuses) == [201, 409, 409, 409]
            # One user, one claim, and the winner's session (issue 17: SignedIn).
            assert chorus.events() == before + 3
            with psycopg.connect(chorus.database_url) as conn:
                rows = conn.execute(
                    "SELECT convert_from(state, 'UTF8')::jsonb -> 'username' FROM chorus_events"
                    " WHERE topic LIKE '%.UserRegistered'"
                ).fetchall()
            # Usernames are stored sealed (issue 20).
            names = opened(chorus.database_url, "username", [r[0] for r in rows])
            assert names.count(name) == 1
    finally:
        second.stop()


def test_two_processes_deciding_one_name_at_once_conflict_in_the_store(
    app: Chorus, store_url: str
) -> None:
    """Gated: process A decides a sign-up, process B registers the same name and commits,
    then A's save must fail (the claim stream exists now), and A decided again says taken."""
    other = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        command = RegisterUser(username="gated_name", password="plum-Orbit-kettle-42")
        decided = CONTEXTS.handlers[RegisterUser](app, command, Cause(None))
        won = other.execute(
            RegisterUser(username="Gated_Name", password="violet-Harbour-lantern-73"), Cause(None)
        )
        with pytest.raises(IntegrityError):
            app.save(*decided.aggregates, credentials=decided.credentials)
        with pytest.raises(UsernameTaken):
            app.execute(command, Cause(None))
        # The winner's user is the one the name leads to.
        assert str(decided.aggregates[0].id) != won.body["user_id"]
    finally:
        other.close()


def test_a_legacy_user_signs_in_is_found_by_name_and_keeps_the_name(chorus: Running) -> None:
    api = chorus.api
    legacy = write_legacy_user(chorus, "old")
    fresh = api.signup("new")
    # Found by username: a mention reaches them.
    ws = api.acquaint(fresh, legacy)
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", fresh, {"name": "c"}), 201)["id"]
    text = f"hi @{legacy.username}"
    sent = api.ok(api.post(f"/api/channels/{ch}/messages", fresh, {"text": text}), 201)
    shown = api.ok(api.get(f"/api/channels/{ch}/messages", fresh, min_position=sent["position"]))
    assert shown["items"][0]["mentions"] == [legacy.user_id]
    me = api.ok(api.get("/api/auth/me", legacy))
    assert (me["user_id"], me["username"]) == (legacy.user_id, legacy.username)
    # Nobody registers the name again, in any case.
    before = chorus.events()
    for name in (legacy.username, legacy.username.upper()):
        taken = signup(api, name)
        assert taken.status_code == 409, taken.text
    # Nor passes for the legacy user with a display name that reads as their name.
    lookalike = api.http.post(
        "/api/auth/signup",
        json={
            "username": f"look_{uuid.uuid4().hex[:8]}",
            "password": "a good password",
            "display_name": legacy.username.upper(),
        },
    )
    assert lookalike.status_code == 409, lookalike.text
    assert chorus.events() == before
    # A wrong password is still wrong.
    wrong = api.http.post(
        "/api/auth/login", json={"username": legacy.username, "password": "not the password"}
    )
    assert wrong.status_code == 401


# -- direct channels --------------------------------------------------------------------------


def test_a_direct_channel_id_is_random_and_the_same_on_every_open(chorus: Running) -> None:
    api = chorus.api
    a, b = api.signup("dma"), api.signup("dmb")
    ws = api.acquaint(a, b)
    body = {"user_id": b.user_id, "workspace_id": ws}
    opened = api.ok(api.post("/api/dms", a, body), 201)["channel_id"]
    assert UUID(opened).version == 4
    assert UUID(opened) != legacy_direct_id(a.user_id, b.user_id)
    before = chorus.events()
    assert api.ok(api.post("/api/dms", a, {"user_id": b.user_id}))["channel_id"] == opened
    assert api.ok(api.post("/api/dms", b, {"user_id": a.user_id}))["channel_id"] == opened
    assert chorus.events() == before
    api.ok(api.post(f"/api/channels/{opened}/messages", b, {"text": "hi"}), 201)


def test_concurrent_opens_of_one_pair_give_one_channel(chorus: Running) -> None:
    api = chorus.api
    a, b = api.signup("cca"), api.signup("ccb")
    ws = api.acquaint(a, b)
    barrier = threading.Barrier(4)
    answers: list[tuple[int, str]] = []

    def attempt(i: int) -> None:
        me, other = (a, b) if i % 2 else (b, a)
        with httpx.Client(base_url=chorus.server.url, timeout=30) as client:
            barrier.wait()
            r = client.post(
                "/api/dms",
                json={"user_id": other.user_id, "workspace_id": ws},
                headers=me.headers,
            )
            answers.append((r.status_code, r.json()["channel_id"]))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s for s, _ in answers) == [200, 200, 200, 201]
    assert len({c for _, c in answers}) == 1


def test_a_direct_channel_opens_with_someone_who_just_joined(chorus: Running) -> None:
    """Gated: the workspaces read model is held (its tracking row locked) while B joins A's
    workspace; A then opens a direct channel with B without naming the workspace. It must
    wait for the read models to reach B's join, not answer the stranger's 404."""
    api = chorus.api
    a, b = api.signup("jna"), api.signup("jnb")
    ws = api.acquaint(a)
    runner = chorus.server.services.runner
    assert runner.wait_for(api.position, timeout=10)
    answers: list[httpx.Response] = []

    def open_dm() -> None:
        with httpx.Client(base_url=chorus.server.url, timeout=30) as client:
            answers.append(client.post("/api/dms", json={"user_id": b.user_id}, headers=a.headers))

    with psycopg.connect(chorus.database_url) as gate:
        gate.execute("SELECT 1 FROM rm_tracking WHERE projection = 'workspaces' FOR UPDATE")
        api.ok(api.post(f"/api/workspaces/{ws}/join", b))
        opener = threading.Thread(target=open_dm)
        opener.start()
        wait_until("the open to wait or answer", lambda: runner.waiting() or answers)
        gate.rollback()
    opener.join()
    assert answers[0].status_code == 201, answers[0].text


def test_a_legacy_direct_channel_keeps_being_returned(chorus: Running) -> None:
    api = chorus.api
    a, b = write_legacy_user(chorus, "lda"), write_legacy_user(chorus, "ldb")
    api.acquaint(a, b)
    legacy = write_legacy_direct_channel(chorus, a, b)
    before = chorus.events()
    assert api.ok(api.post("/api/dms", b, {"user_id": a.user_id}))["channel_id"] == legacy
    assert api.ok(api.post("/api/dms", a, {"user_id": b.user_id}))["channel_id"] == legacy
    assert chorus.events() == before
    sent = api.ok(api.post(f"/api/channels/{legacy}/messages", a, {"text": "still here"}), 201)
    read = api.ok(api.get(f"/api/channels/{legacy}/messages", b, min_position=sent["position"]))
    assert [m["text"] for m in read["items"]] == ["still here"]
    # A legacy user's direct channel with a new user is a new, random one.
    c = api.signup("ldc")
    ws = api.acquaint(a, c)
    body = {"user_id": c.user_id, "workspace_id": ws}
    new = api.ok(api.post("/api/dms", a, body), 201)["channel_id"]
    assert UUID(new).version == 4


# -- the index streams are nobody's to read ---------------------------------------------------


def test_index_streams_answer_as_unknown_ids_everywhere(chorus: Running) -> None:
    api = chorus.api
    owner, friend = api.signup("idxo"), api.signup("idxf")
    ws = api.acquaint(owner, friend)
    hall = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "hall"}), 201)["id"]
    body = {"user_id": friend.user_id, "workspace_id": ws}
    dm = api.ok(api.post("/api/dms", owner, body), 201)["channel_id"]
    assert chorus.server.services.runner.wait_for(api.position, timeout=10)
    streams = index_streams(chorus)
    assert streams, "sign-ups and direct channels keep index streams"
    unknown = api.get(f"/api/streams/{uuid.uuid4()}", owner)
    assert unknown.status_code == 404
    for stream in streams:
        for user in (owner, friend):
            r = api.get(f"/api/streams/{stream}", user)
            assert (r.status_code, r.json()) == (404, unknown.json()), stream
            named = api.ok(api.get("/api/events", user, stream=stream, after=0))
            assert named["items"] == []
    # The owner holds view_audit in the workspace and still sees none of them in the log.
    for user in (owner, friend):
        seen: set[str] = set()
        after: str | None = "0"
        while after is not None:
            page = api.ok(api.get("/api/events", user, after=after, limit=200))
            seen |= {e["stream"] for e in page["items"]}
            after = page["next"]
        assert seen and not seen & set(streams)
    # Nor on /ws: a catch-up of the owner's own stream (direct channels included) and the
    # workspace's from the start of the log, then live, while a newcomer signs up and the
    # owner opens a direct channel with them (new index streams), up to a marker message.
    url = chorus.server.url.replace("http", "ws") + f"/ws?token={owner.access_token}"
    with connect(url, open_timeout=TIMEOUT) as sock:
        subscribe = {"op": "subscribe", "sub": "s", "after": 0}
        subscribe["streams"] = [{"user": "me"}, {"workspace": ws}]
        sock.send(json.dumps(subscribe))
        newcomer = api.signup("idxn")
        api.ok(api.post(f"/api/workspaces/{ws}/join", newcomer))
        body = {"user_id": newcomer.user_id, "workspace_id": ws}
        live_dm = api.ok(api.post("/api/dms", owner, body), 201)["channel_id"]
        marker = api.ok(api.post(f"/api/channels/{hall}/messages", owner, {"text": "end"}), 201)
        caught: set[str] = set()
        while True:
            frame = json.loads(sock.recv(timeout=TIMEOUT))
            if frame["op"] != "event":
                assert frame["op"] == "subscribed", frame
                continue
            caught.add(frame["event"]["stream"])
            if frame["event"]["stream"] == marker["id"]:
                break
    later = index_streams(chorus)
    assert set(streams) < set(later)
    assert {owner.user_id, ws, dm, live_dm} <= caught
    assert not caught & set(later)


# -- replay -------------------------------------------------------------------------------------


def test_read_models_rebuild_from_a_log_of_legacy_and_new_users(chorus: Running) -> None:
    api = chorus.api
    old_a, old_b = write_legacy_user(chorus, "rpa"), write_legacy_user(chorus, "rpb")
    new_a, new_b = api.signup("rpc"), api.signup("rpd")
    ws = api.acquaint(old_a, old_b, new_a, new_b)
    legacy_dm = write_legacy_direct_channel(chorus, old_a, old_b)
    body = {"user_id": old_a.user_id, "workspace_id": ws}
    new_dm = api.ok(api.post("/api/dms", new_a, body), 201)
    for dm, who in ((legacy_dm, old_b), (new_dm["channel_id"], old_a)):
        api.ok(api.post(f"/api/channels/{dm}/messages", who, {"text": "hi"}), 201)
    # Sockets of earlier tests end their presence sessions a moment after closing.
    wait_for_sessions_to_end(chorus.database_url)
    # And the reactions' notifications (the joins, the direct messages) before the snapshot.
    quiet = reactions_quiet(chorus.database_url)
    assert chorus.server.services.runner.wait_for(quiet, timeout=10)
    live = read_model_rows(chorus.database_url)
    users = {r["user_id"]: r["username"] for r in live["rm_users"]}
    for user in (old_a, old_b, new_a, new_b):
        assert users[UUID(user.user_id)] == user.username
    env = {**os.environ, "DATABASE_URL": chorus.database_url}
    done = subprocess.run(
        [CHORUS, "replay", "--all"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert read_model_rows(chorus.database_url) == live


# -- blocking (finding 13) ----------------------------------------------------------------------


def test_a_blocked_user_cannot_add_the_blocker_to_a_channel(chorus: Running) -> None:
    api = chorus.api
    pest, me, friend = api.signup("pest"), api.signup("me"), api.signup("frnd")
    ws = api.acquaint(pest, me, friend)
    den = {"name": "den", "private": True}
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", pest, den), 201)["id"]
    api.ok(api.put(f"/api/users/me/blocks/{pest.user_id}", me))
    before = chorus.events()
    refused = api.post(f"/api/channels/{ch}/members", pest, {"user_id": me.user_id})
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert chorus.events() == before
    # Whoever has not blocked the pest can still be added; and once unblocked, so can I.
    api.ok(api.post(f"/api/channels/{ch}/members", pest, {"user_id": friend.user_id}))
    api.ok(api.delete(f"/api/users/me/blocks/{pest.user_id}", me))
    api.ok(api.post(f"/api/channels/{ch}/members", pest, {"user_id": me.user_id}))
