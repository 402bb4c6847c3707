# The tables below keep one request per line, to be read as tables.
# ruff: noqa: E501
"""The authorization matrix (issue #7, case 9): every REST command and query, for every
built-in role, a custom role without permissions, a non-member and an anonymous caller.

How to read it. ``CASES`` is the matrix: one row per request (method, path template, body)
saying who can *see* its target (everyone else gets 404, which must look exactly like an
unknown id) and who *may* do it (everyone else who sees it gets 403). Both are derived from
the permission table (``domain.permissions.BUILTIN_ROLES``, which docs/API.md states and
``test_the_builtin_roles_are_the_documented_table`` pins) rather than written per role.
``test_matrix`` runs every row for every actor of ``ACTORS`` against one running server and
asserts the concrete status, that a refusal appends no event (the store's event count and
head position are unchanged), and that a success appends what it says.

The scene: workspace A (private) where ``owner``, ``admin``, ``member``, ``viewer`` and
``muted`` hold their roles; ``outsider`` was a member (it wrote a message and a document)
and left; ``victim`` is a plain member that moderation cases act on; ``stranger`` owns
workspace B, whose ids the cross-workspace (BOLA) tests use.

Also here: ids of the other workspace used in paths and bodies (BOLA), unknown body fields
(mass assignment) over REST and WebSocket, and the same rules over WebSocket commands.
Already covered elsewhere and not repeated: kick/ban/role rules between moderators
(test_moderation.py), subscriptions to private channels (test_websocket.py), the /yjs
read-only viewer and 4404 (test_documents.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pycrdt import Doc, Text
from websockets.sync.client import ClientConnection, connect

from application.commands import ApplyDocumentUpdate
from domain.base import Cause
from domain.permissions import ALL_PERMISSIONS, BUILTIN_ROLES
from tests.fixtures.chorus import (
    NOT_BY_REACTIONS,
    SHORT_LINGER,
    Api,
    Running,
    User,
    wait_for_sessions_to_end,
)

pytestmark = pytest.mark.security

# Its tests wait for closed sockets' sessions to end: not a linger of 2 s each time.
CHORUS_SETTINGS = SHORT_LINGER

TIMEOUT = 15.0
MUTED = "muted"  # a custom role holding no permission at all
CUSTOM_ROLES: dict[str, frozenset[str]] = {MUTED: frozenset()}
PRIVATE_CHANNEL_MEMBERS = ("admin",)  # the private channel of A was created by the admin


# -- who ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    name: str
    roles: tuple[str, ...]  # roles held in workspace A; () = not a member
    signed_in: bool = True

    @property
    def member(self) -> bool:
        return bool(self.roles)

    @property
    def perms(self) -> frozenset[str]:
        held: set[str] = set()
        for role in self.roles:
            held |= BUILTIN_ROLES.get(role, CUSTOM_ROLES.get(role, frozenset()))
        return frozenset(held)

    def holds(self, *permissions: str) -> bool:
        return self.member and set(permissions) <= self.perms

    def __str__(self) -> str:
        return self.name


ACTORS = [
    Actor("owner", ("owner",)),
    Actor("admin", ("member", "admin")),
    Actor("member", ("member",)),
    Actor("viewer", ("viewer",)),
    Actor(MUTED, (MUTED,)),
    Actor("outsider", ()),
    Actor("anonymous", (), signed_in=False),
]
BY_NAME = {a.name: a for a in ACTORS}

Rule = Callable[[Actor], bool]


def anyone(_: Actor) -> bool:
    return True


def nobody(_: Actor) -> bool:
    return False


def member(a: Actor) -> bool:
    return a.member


def holding(*permissions: str) -> Rule:
    return lambda a: a.holds(*permissions)


def holding_all_of_role(role: str) -> Rule:
    """May hand out ``role``: holds manage_roles and every permission the role carries."""
    return lambda a: a.holds("manage_roles", *BUILTIN_ROLES[role])


def is_owner(a: Actor) -> bool:
    return "owner" in a.roles


def in_private_channel(a: Actor) -> bool:
    return a.name in PRIVATE_CHANNEL_MEMBERS and a.holds("view_channels")


def either(*rules: Rule) -> Rule:
    return lambda a: any(rule(a) for rule in rules)


# -- the scene --------------------------------------------------------------------------------


@dataclass
class World:
    chorus: Running
    users: dict[str, User]
    ids: dict[str, Any]
    legacy: dict[tuple[str, str], str] = field(default_factory=dict)
    _db: psycopg.Connection[Any] | None = None

    @property
    def api(self) -> Api:
        return self.chorus.api

    def user(self, name: str) -> User:
        return self.users[name]

    def head(self) -> tuple[int, int]:
        """The store's event count and last position."""
        if self._db is None:
            self._db = psycopg.connect(self.chorus.database_url, autocommit=True)
        row = self._db.execute(
            "SELECT count(*), coalesce(max(notification_id), 0) FROM chorus_events"
            f" WHERE {NOT_BY_REACTIONS}"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    # -- helpers that set the scene up and put it back -------------------------------------

    def ok(self, response: httpx.Response, *statuses: int) -> Any:
        assert response.status_code in (statuses or (200,)), (response.status_code, response.text)
        return response.json() if response.content else None

    def give_roles(self, name: str) -> None:
        """Makes ``name`` (a fresh member) hold exactly its actor's roles."""
        ws, owner, user = self.ids["ws"], self.user("owner"), self.user(name)
        roles = BY_NAME[name].roles
        for role in roles:
            if role != "member":
                self.ok(
                    self.api.put(f"/api/workspaces/{ws}/members/{user.user_id}/roles/{role}", owner)
                )
        if "member" not in roles:
            self.ok(
                self.api.delete(f"/api/workspaces/{ws}/members/{user.user_id}/roles/member", owner)
            )

    def rejoin(self, name: str) -> None:
        self.ok(self.api.post(f"/api/invites/{self.ids['code']}/accept", self.user(name)))
        self.give_roles(name)
        if name in PRIVATE_CHANNEL_MEMBERS:
            # Coming back does not restore a private channel: an owner adds them again.
            body = {"user_id": self.user(name).user_id}
            self.ok(
                self.api.post(f"/api/channels/{self.ids['priv']}/members", self.user("owner"), body)
            )

    def readmit_victim(self) -> None:
        ws, owner, victim = self.ids["ws"], self.user("owner"), self.user("victim")
        self.ok(self.api.delete(f"/api/workspaces/{ws}/bans/{victim.user_id}", owner), 200, 404)
        self.ok(self.api.post(f"/api/invites/{self.ids['code']}/accept", victim), 200, 409)

    def drop_victim_role(self, role: str) -> None:
        ws, owner, victim = self.ids["ws"], self.user("owner"), self.user("victim")
        path = f"/api/workspaces/{ws}/members/{victim.user_id}/roles/{role}"
        self.ok(self.api.delete(path, owner), 200, 404)

    def post_message(self, author: str, channel: str | None = None) -> str:
        ch = channel or self.ids["ch"]
        body = {"text": f"by {author} {uuid.uuid4().hex[:6]}"}
        return str(
            self.ok(self.api.post(f"/api/channels/{ch}/messages", self.user(author), body), 201)[
                "id"
            ]
        )

    def new_document(self, author: str) -> str:
        body = {"title": f"by {author}"}
        path = f"/api/workspaces/{self.ids['ws']}/documents"
        return str(self.ok(self.api.post(path, self.user(author), body), 201)["id"])

    def write_text(self, document_id: str, author: str, text: str) -> int:
        """Content for a document, saved as the live copy would save an editor's update."""
        doc: Doc[Any] = Doc()
        doc.get("content", type=Text).insert(0, text)
        services = self.chorus.server.services
        result = services.app.execute(
            ApplyDocumentUpdate(
                document_id=document_id, update=doc.get_update(), roots={"content": "text"}
            ),
            Cause(actor_id=self.user(author).user_id),
        )
        position = int(result.position)
        assert services.runner.wait_for(position, TIMEOUT)
        self.api.position = max(self.api.position, position)
        return position


def _signup_all(api: Api, names: list[str]) -> dict[str, User]:
    return {name: api.signup(name[:8]) for name in names}


@pytest.fixture(scope="module")
def world(chorus: Running) -> Iterator[World]:
    api = chorus.api
    users = _signup_all(
        api, ["owner", "admin", "member", "viewer", MUTED, "outsider", "victim", "stranger"]
    )
    w = World(chorus, users, {})
    owner, admin, stranger = users["owner"], users["admin"], users["stranger"]
    ws = w.ok(api.post("/api/workspaces", owner, {"name": "A", "visibility": "private"}), 201)["id"]
    w.ids.update(ws=ws, victim=users["victim"].user_id, victim_name=users["victim"].username)
    w.ids["code"] = w.ok(api.post(f"/api/workspaces/{ws}/invites", owner, {}), 201)["code"]
    w.ok(api.post(f"/api/workspaces/{ws}/roles", owner, {"name": MUTED, "permissions": []}), 201)
    for name in ("admin", "member", "viewer", MUTED, "outsider", "victim"):
        w.ok(api.post(f"/api/invites/{w.ids['code']}/accept", users[name]))
    w.ids["ch"] = w.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "general"}), 201)[
        "id"
    ]
    # What those who will lose the right wrote while they were plain members.
    for name in ("viewer", MUTED, "outsider"):
        for kind in ("edit", "delete"):
            w.legacy[(name, f"message-{kind}")] = w.post_message(name)
            w.legacy[(name, f"document-{kind}")] = w.new_document(name)
    for name in ("admin", "viewer", MUTED):
        w.give_roles(name)
    w.ok(api.post(f"/api/workspaces/{ws}/leave", users["outsider"]))
    w.ids["priv"] = w.ok(
        api.post(f"/api/workspaces/{ws}/channels", admin, {"name": "staff", "private": True}), 201
    )["id"]
    w.post_message("admin", w.ids["priv"])
    w.ids["msg"] = w.post_message("victim")
    w.ids["doc"] = w.new_document("victim")
    w.ids["doc_created"] = w.api.position
    w.ids["doc_written"] = w.write_text(w.ids["doc"], "victim", "hello")
    # A direct channel none of the actors is in: the stranger opens it while sharing A with
    # the victim, then leaves.
    w.ok(api.post(f"/api/invites/{w.ids['code']}/accept", stranger))
    w.ids["dm"] = w.ok(api.post("/api/dms", stranger, {"user_id": users["victim"].user_id}), 201)[
        "channel_id"
    ]
    w.ok(api.post(f"/api/workspaces/{ws}/leave", stranger))
    # Workspace B, which nobody of A belongs to.
    ws_b = w.ok(api.post("/api/workspaces", stranger, {"name": "B", "visibility": "private"}), 201)[
        "id"
    ]
    ch_b = w.ok(api.post(f"/api/workspaces/{ws_b}/channels", stranger, {"name": "b"}), 201)["id"]
    w.ids.update(
        ws_b=ws_b,
        ch_b=ch_b,
        msg_b=w.post_message("stranger", ch_b),
        doc_b=str(
            w.ok(api.post(f"/api/workspaces/{ws_b}/documents", stranger, {"title": "b"}), 201)["id"]
        ),
        role_b="b-only",
        code_b=w.ok(api.post(f"/api/workspaces/{ws_b}/invites", stranger, {}), 201)["code"],
    )
    w.ids["invite_b"] = hashlib.sha256(w.ids["code_b"].encode()).hexdigest()
    w.ok(
        api.post(f"/api/workspaces/{ws_b}/roles", stranger, {"name": "b-only", "permissions": []}),
        201,
    )
    # Webhooks (issue 19), for an event type the matrix never causes: nothing is sent.
    w.ids["hook"] = w.ok(api.post(f"/api/workspaces/{ws}/webhooks", owner, WEBHOOK), 201)["id"]
    w.ids["hook_b"] = w.ok(api.post(f"/api/workspaces/{ws_b}/webhooks", stranger, WEBHOOK), 201)[
        "id"
    ]
    # Projects and tasks (issue 21): one open to A, one listed (its creator, the admin, and
    # A's owners read it), a task in each; and B's.
    w.ids["proj"] = w.ok(api.post(f"/api/workspaces/{ws}/projects", owner, {"name": "P"}), 201)[
        "id"
    ]
    w.ids["task"] = w.ok(
        api.post(f"/api/projects/{w.ids['proj']}/tasks", owner, {"title": "T"}), 201
    )["id"]
    w.ids["proj_at"] = api.position
    listed = {"name": "L", "access": "listed"}
    w.ids["lproj"] = w.ok(api.post(f"/api/workspaces/{ws}/projects", admin, listed), 201)["id"]
    w.ids["ltask"] = w.ok(
        api.post(f"/api/projects/{w.ids['lproj']}/tasks", admin, {"title": "L"}), 201
    )["id"]
    w.ids["proj_b"] = w.ok(
        api.post(f"/api/workspaces/{ws_b}/projects", stranger, {"name": "B"}), 201
    )["id"]
    w.ids["task_b"] = w.ok(
        api.post(f"/api/projects/{w.ids['proj_b']}/tasks", stranger, {"title": "B"}), 201
    )["id"]
    yield w
    w.close()


# -- per-attempt set-up: fresh targets so that every allowed attempt can succeed --------------

# A public address (no look-up) and an event type no case here causes in A or B after the
# webhooks are registered.
WEBHOOK = {"url": "https://93.184.215.14/hook", "event_types": ["WorkspaceCreated"]}


def fresh_webhook(w: World, _: Actor) -> dict[str, Any]:
    path = f"/api/workspaces/{w.ids['ws']}/webhooks"
    return {"fresh": w.ok(w.api.post(path, w.user("owner"), WEBHOOK), 201)["id"]}


def disabled_webhook(w: World, a: Actor) -> dict[str, Any]:
    made = fresh_webhook(w, a)
    path = f"/api/workspaces/{w.ids['ws']}/webhooks/{made['fresh']}/disable"
    w.ok(w.api.post(path, w.user("owner")))
    return made


def drop_webhooks(w: World, _: Actor) -> None:
    """Every webhook of A but the standing one is deleted (a workspace holds at most 20)."""
    path = f"/api/workspaces/{w.ids['ws']}/webhooks"
    for hook in w.ok(w.api.get(path, w.user("owner")))["items"]:
        if hook["id"] != w.ids["hook"]:
            w.ok(w.api.delete(f"{path}/{hook['id']}", w.user("owner")))


Setup = Callable[[World, Actor], dict[str, Any]]
Teardown = Callable[[World, Actor], None]


def fresh_project(w: World, _: Actor) -> dict[str, Any]:
    path = f"/api/workspaces/{w.ids['ws']}/projects"
    return {"fresh": w.ok(w.api.post(path, w.user("owner"), {"name": "fresh"}), 201)["id"]}


def archived_project(w: World, a: Actor) -> dict[str, Any]:
    made = fresh_project(w, a)
    w.ok(w.api.post(f"/api/projects/{made['fresh']}/archive", w.user("owner")))
    return made


def fresh_task(w: World, _: Actor) -> dict[str, Any]:
    """A task the owner made (so the owner, and nobody else, watches it)."""
    path = f"/api/projects/{w.ids['proj']}/tasks"
    return {"fresh": w.ok(w.api.post(path, w.user("owner"), {"title": "fresh"}), 201)["id"]}


def in_listed_project(a: Actor) -> bool:
    """Reads the listed project: its creator (the admin) and A's owners."""
    return a.name == "admin" or is_owner(a)


def unwatch_ltask(w: World, a: Actor) -> None:
    """The owner, whom the case made a watcher, stops watching again."""
    if is_owner(a):
        w.ok(w.api.delete(f"/api/tasks/{w.ids['ltask']}/watch", w.user(a.name)), 200, 404)


def fresh_channel(w: World, _: Actor) -> dict[str, Any]:
    body = {"name": "fresh"}
    path = f"/api/workspaces/{w.ids['ws']}/channels"
    return {"fresh": w.ok(w.api.post(path, w.user("owner"), body), 201)["id"]}


def archived_channel(w: World, a: Actor) -> dict[str, Any]:
    made = fresh_channel(w, a)
    w.ok(w.api.post(f"/api/channels/{made['fresh']}/archive", w.user("owner")))
    return made


def fresh_private_channel(w: World, _: Actor) -> dict[str, Any]:
    body = {"name": "fresh-private", "private": True}
    path = f"/api/workspaces/{w.ids['ws']}/channels"
    return {"fresh": w.ok(w.api.post(path, w.user("admin"), body), 201)["id"]}


def a_peer(w: World, a: Actor) -> dict[str, Any]:
    """Another member of A than the actor (the owner, or the admin for the owner)."""
    return {"peer": w.user("admin" if a.name == "owner" else "owner").user_id}


def private_channel_with_victim(w: World, a: Actor) -> dict[str, Any]:
    made = fresh_private_channel(w, a)
    body = {"user_id": w.ids["victim"]}
    w.ok(w.api.post(f"/api/channels/{made['fresh']}/members", w.user("admin"), body))
    return made


def fresh_workspace(w: World, a: Actor) -> dict[str, Any]:
    """Issue 20: a workspace of the owner's of its own (transfer and deletion would end A)
    in which the actor holds its roles, the victim is a plain member."""
    api, owner = w.api, w.user("owner")
    ws = w.ok(api.post("/api/workspaces", owner, {"name": "F", "visibility": "private"}), 201)["id"]
    code = w.ok(api.post(f"/api/workspaces/{ws}/invites", owner, {}), 201)["code"]
    w.ok(api.post(f"/api/invites/{code}/accept", w.user("victim")))
    if a.member and a.name != "owner":
        user = w.user(a.name)
        w.ok(api.post(f"/api/invites/{code}/accept", user))
        for role in a.roles:
            if role == MUTED:
                body = {"name": MUTED, "permissions": []}
                w.ok(api.post(f"/api/workspaces/{ws}/roles", owner, body), 201)
            if role != "member":
                w.ok(api.put(f"/api/workspaces/{ws}/members/{user.user_id}/roles/{role}", owner))
        if "member" not in a.roles:
            w.ok(api.delete(f"/api/workspaces/{ws}/members/{user.user_id}/roles/member", owner))
    return {"fresh": ws}


def fresh_role(w: World, _: Actor) -> dict[str, Any]:
    """A custom role without permissions, the lowest of A's (the newest)."""
    name = f"f-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "permissions": []}
    w.ok(w.api.post(f"/api/workspaces/{w.ids['ws']}/roles", w.user("owner"), body), 201)
    return {"role": name}


def drop_fresh_roles(w: World, _: Actor) -> None:
    """A workspace holds at most 100 custom roles: the fresh ones go again."""
    path = f"/api/workspaces/{w.ids['ws']}/roles"
    for role in w.ok(w.api.get(path, w.user("owner")))["items"]:
        if not role["builtin"] and role["name"] != MUTED:
            w.ok(w.api.delete(f"{path}/{role['name']}", w.user("owner")), 200, 404)


def roles_reversed(w: World, a: Actor) -> dict[str, Any]:
    fresh_role(w, a)
    path = f"/api/workspaces/{w.ids['ws']}/roles"
    names = [r["name"] for r in w.ok(w.api.get(path, w.user("owner")))["items"]]
    custom = [n for n in names if n not in BUILTIN_ROLES]
    return {"order": custom[::-1]}


def victims_invite(w: World, _: Actor) -> dict[str, Any]:
    """An invite the victim (a plain member) made; its id is its code's SHA-256."""
    path = f"/api/workspaces/{w.ids['ws']}/invites"
    code = w.ok(w.api.post(path, w.user("victim"), {}), 201)["code"]
    return {"fresh": hashlib.sha256(code.encode()).hexdigest()}


def victims_message(w: World, _: Actor) -> dict[str, Any]:
    return {"fresh": w.post_message("victim")}


def own_message(kind: str) -> Setup:
    """A message the actor wrote: now if they may still post, else one from when they could."""

    def setup(w: World, a: Actor) -> dict[str, Any]:
        if a.holds("send_messages"):
            return {"fresh": w.post_message(a.name)}
        return {"fresh": w.legacy.get((a.name, f"message-{kind}"), w.ids["msg"])}

    return setup


def victims_document(w: World, _: Actor) -> dict[str, Any]:
    return {"fresh": w.new_document("victim")}


def own_document(kind: str) -> Setup:
    def setup(w: World, a: Actor) -> dict[str, Any]:
        if a.holds("edit_documents"):
            return {"fresh": w.new_document(a.name)}
        return {"fresh": w.legacy.get((a.name, f"document-{kind}"), w.ids["doc"])}

    return setup


def document_with_content(w: World, _: Actor) -> dict[str, Any]:
    document = w.new_document("victim")
    created = w.api.position
    w.write_text(document, "victim", "text to undo")
    return {"fresh": document, "then": created}


def own_reaction(w: World, a: Actor) -> dict[str, Any]:
    emoji = f"ok-{a.name}"
    if a.holds("send_messages"):
        w.ok(w.api.put(f"/api/messages/{w.ids['msg']}/reactions/{emoji}", w.user(a.name)))
    return {"emoji": emoji}


def a_reaction(_: World, a: Actor) -> dict[str, Any]:
    return {"emoji": f"hi-{a.name}"}


def victim_banned(w: World, _: Actor) -> dict[str, Any]:
    path = f"/api/workspaces/{w.ids['ws']}/members/{w.ids['victim']}/ban"
    w.ok(w.api.post(path, w.user("owner")))
    return {}


def victim_holds(role: str) -> Setup:
    def setup(w: World, _: Actor) -> dict[str, Any]:
        path = f"/api/workspaces/{w.ids['ws']}/members/{w.ids['victim']}/roles/{role}"
        w.ok(w.api.put(path, w.user("owner")))
        return {}

    return setup


def retention_off(w: World, _: Actor) -> None:
    """A retention set to the same value again is a 409: back to off after each case."""
    path = f"/api/workspaces/{w.ids['ws']}/retention"
    w.ok(w.api.put(path, w.user("owner"), json={"days": None}), 200, 409)


def deletion_erases_again(w: World, _: Actor) -> None:
    """The setting turned off again is a 409: back on (its default) after each case."""
    path = f"/api/workspaces/{w.ids['ws']}/settings/deleted-means-erased"
    w.ok(w.api.put(path, w.user("owner"), json={"enabled": True}), 200, 409)


def unblock_victim(w: World, a: Actor) -> None:
    if a.signed_in:
        path = f"/api/users/me/blocks/{w.ids['victim']}"
        w.ok(w.api.delete(path, w.user(a.name)), 200, 404)


def send_receipts_again(w: World, a: Actor) -> None:
    if a.signed_in:
        w.api.put("/api/users/me/read-receipts", w.user(a.name), json={"send": True})


def readmit_victim(w: World, _: Actor) -> None:
    w.readmit_victim()


def drop_victim_role(role: str) -> Teardown:
    return lambda w, _: w.drop_victim_role(role)


def rejoin_if_left(w: World, a: Actor) -> None:
    if a.member and a.name != "owner":
        w.rejoin(a.name)


def outsider_leaves_again(w: World, a: Actor) -> None:
    if a.signed_in and not a.member:
        w.ok(w.api.post(f"/api/workspaces/{w.ids['ws']}/leave", w.user(a.name)))


# -- what an answer shows ---------------------------------------------------------------------

Finder = Callable[[Any, dict[str, Any]], bool]


def lists(key: str) -> Finder:
    return lambda body, ids: any(item.get("id") == ids[key] for item in body["items"])


def _login(w: World, name: str) -> User:
    user = w.user(name)
    body = w.ok(
        w.api.http.post(
            "/api/auth/login", json={"username": user.username, "password": user.password}
        )
    )
    return User(
        user.user_id, user.username, user.password, body["access_token"], body["refresh_token"]
    )


def own_other_session(w: World, a: Actor) -> dict[str, Any]:
    """Another session of the actor's (issue 17): they sign in once more."""
    if not a.signed_in:
        return {"fresh": str(uuid.uuid4())}
    other = _login(w, a.name)
    listed = w.ok(w.api.http.get("/api/auth/sessions", headers=other.headers))
    return {"fresh": next(s["id"] for s in listed["items"] if s["current"])}


def victims_session(w: World, _: Actor) -> dict[str, Any]:
    listed = w.ok(w.api.http.get("/api/auth/sessions", headers=w.user("victim").headers))
    return {"fresh": listed["items"][0]["id"]}


def sign_in_again(w: World, a: Actor) -> None:
    """After logging out everywhere, the actor signs in again for the cases that follow."""
    if a.signed_in:
        w.users[a.name] = _login(w, a.name)


def has_items(body: Any, _: dict[str, Any]) -> bool:
    return bool(body["items"])


# -- the matrix -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request of the API. ``sees``: who can tell its target exists (others: 404);
    ``may``: who of those may do it (others: 403); ``status`` overrides both where the
    contract says something else (409, 410...). ``target`` names the path id whose 404 must
    look exactly like one for an unknown id. ``shows``/``finds``: for reads that filter
    instead of refusing, who must find the target in the answer."""

    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    sees: Rule = member
    may: Rule = anyone
    ok: int = 200
    status: Callable[[Actor], int | None] = lambda _: None
    appends: Rule | None = None  # default: every successful write appends, no read does
    target: str | None = None
    setup: Setup | None = None
    teardown: Teardown | None = None
    shows: Rule | None = None
    finds: Finder | None = None

    def expected(self, a: Actor) -> int:
        if not a.signed_in:
            return 401
        override = self.status(a)
        if override is not None:
            return override
        if not self.sees(a):
            return 404
        if not self.may(a):
            return 403
        return self.ok

    def expects_append(self, a: Actor) -> bool:
        if self.appends is not None:
            return self.appends(a)
        return self.method != "GET"

    def __str__(self) -> str:
        return self.name


def _status_if_signed_in(status: int) -> Callable[[Actor], int | None]:
    return lambda a: status if a.signed_in else None


VIEW = holding("view_channels")
VIEW_DOCS = holding("view_documents")
AUDIT = holding("view_audit")

CASES: list[Case] = [
    # -- the caller -------------------------------------------------------------------------
    Case("who am I", "GET", "/api/auth/me", sees=anyone),
    # Whom one blocks is one's own business: any signed-in user, for themselves only.
    Case("list whom I block", "GET", "/api/users/me/blocks", sees=anyone),
    Case("block someone", "PUT", "/api/users/me/blocks/{victim}", sees=anyone,
         teardown=unblock_victim),
    Case("unblock someone not blocked", "DELETE", "/api/users/me/blocks/{victim}",
         status=_status_if_signed_in(404)),
    # Sessions (issue 17): one's own only; another user's session id is an unknown one.
    Case("list my sessions", "GET", "/api/auth/sessions", sees=anyone),
    Case("end one's other session", "DELETE", "/api/auth/sessions/{fresh}", sees=anyone,
         setup=own_other_session),
    Case("end someone else's session", "DELETE", "/api/auth/sessions/{fresh}", target="fresh",
         sees=nobody, setup=victims_session),
    Case("change password with a wrong old one", "POST", "/api/auth/password",
         body={"old_password": "not-Their-password-{nonce}",
               "new_password": "violet-Harbour-lantern-{nonce}"},
         status=_status_if_signed_in(403)),
    # Erasure (issue 20): the caller alone, with their password (the right one is in
    # tests/e2e/test_erasure.py: it ends the user).
    Case("erase oneself with a wrong password", "DELETE", "/api/users/me",
         body={"password": "not-Their-password-{nonce}"}, status=_status_if_signed_in(403)),
    Case("log out everywhere", "POST", "/api/auth/logout-all", sees=anyone,
         teardown=sign_in_again),
    # A user's whole life (issue 20): one's own profile and account only; another user is
    # found by name only through a shared workspace (others: 404 as for nobody's name).
    Case("change my display name", "PATCH", "/api/users/me",
         body={"display_name": "Name {nonce}"}, sees=anyone),
    Case("deactivate with a wrong password", "POST", "/api/users/me/deactivate",
         body={"password": "not-Their-password-{nonce}"}, status=_status_if_signed_in(403)),
    Case("find a user by username", "GET", "/api/users/by-username/{victim_name}",
         target="victim_name"),
    # Notifications (issue 19): one's own inbox and settings only.
    Case("list my notifications", "GET", "/api/notifications", sees=anyone),
    Case("count my unread notifications", "GET", "/api/notifications/unread-count", sees=anyone),
    # Nobody's id (as another user's): nothing to mark, nothing written.
    Case("mark notifications read", "POST", "/api/notifications/read",
         body={"ids": ["5b1e61a6-2b48-4a8e-9d4e-2a62d4c7e001"]}, sees=anyone, appends=nobody),
    Case("list my notification preferences", "GET", "/api/notification-preferences",
         sees=anyone),
    # -- workspaces, membership, roles, invites ---------------------------------------------
    Case("list my workspaces", "GET", "/api/workspaces", sees=anyone, shows=member, finds=lists("ws")),
    Case("create a workspace", "POST", "/api/workspaces", body={"name": "w-{nonce}"}, sees=anyone,
         ok=201),
    Case("read the workspace", "GET", "/api/workspaces/{ws}", target="ws"),
    Case("list members", "GET", "/api/workspaces/{ws}/members", target="ws"),
    Case("list roles", "GET", "/api/workspaces/{ws}/roles", target="ws"),
    Case("list presence", "GET", "/api/workspaces/{ws}/presence", target="ws"),
    Case("list channels: the public one", "GET", "/api/workspaces/{ws}/channels", target="ws",
         shows=VIEW, finds=lists("ch")),
    Case("list channels: the private one", "GET", "/api/workspaces/{ws}/channels", target="ws",
         shows=in_private_channel, finds=lists("priv")),
    # A private workspace is joined by invite only: at the door it does not exist.
    Case("join the private workspace", "POST", "/api/workspaces/{ws}/join", target="ws",
         status=_status_if_signed_in(404)),
    Case("leave the workspace", "POST", "/api/workspaces/{ws}/leave", target="ws",
         status=lambda a: 409 if "owner" in a.roles else None, teardown=rejoin_if_left),
    Case("create an invite", "POST", "/api/workspaces/{ws}/invites", body={}, target="ws",
         may=holding("invite"), ok=201),
    Case("set the workspace's notification level", "PUT",
         "/api/notification-preferences/workspace/{ws}", body={"level": "mentions"},
         target="ws"),
    Case("mute the private channel", "PUT", "/api/notification-preferences/channel/{priv}",
         body={"muted_until": "2099-01-01T00:00:00+00:00"}, target="priv",
         sees=in_private_channel),
    # An invite code is a capability: whoever holds it joins (members: 409 already in).
    Case("accept an invite", "POST", "/api/invites/{code}/accept",
         status=lambda a: (409 if a.member else 200) if a.signed_in else None,
         teardown=outsider_leaves_again),
    Case("accept an invite, the code in the body", "POST", "/api/invites/accept",
         body={"code": "{code}"},
         status=lambda a: (409 if a.member else 200) if a.signed_in else None,
         teardown=outsider_leaves_again),
    Case("kick a member", "POST", "/api/workspaces/{ws}/members/{victim}/kick", target="ws",
         may=holding("kick_members"), teardown=readmit_victim),
    Case("ban a member", "POST", "/api/workspaces/{ws}/members/{victim}/ban", target="ws",
         may=holding("ban_members"), teardown=readmit_victim),
    Case("unban", "DELETE", "/api/workspaces/{ws}/bans/{victim}", target="ws",
         may=holding("ban_members"), setup=victim_banned, teardown=readmit_victim),
    Case("create a role", "POST", "/api/workspaces/{ws}/roles", target="ws",
         body={"name": "r-{nonce}", "permissions": ["view_channels"]},
         may=holding("manage_roles", "view_channels"), ok=201),
    Case("create a role with every permission", "POST", "/api/workspaces/{ws}/roles",
         target="ws", body={"name": "all-{nonce}", "permissions": sorted(ALL_PERMISSIONS)},
         may=holding("manage_roles", *ALL_PERMISSIONS), ok=201),
    Case("grant viewer", "PUT", "/api/workspaces/{ws}/members/{victim}/roles/viewer",
         target="ws", may=holding_all_of_role("viewer"), teardown=drop_victim_role("viewer")),
    # Admin ranks above every role but owner: only an owner outranks it (issue 17, #11).
    Case("grant admin", "PUT", "/api/workspaces/{ws}/members/{victim}/roles/admin",
         target="ws", may=lambda a: "owner" in a.roles, teardown=drop_victim_role("admin")),
    Case("grant owner", "PUT", "/api/workspaces/{ws}/members/{victim}/roles/owner",
         target="ws", may=lambda a: "owner" in a.roles, teardown=drop_victim_role("owner")),
    Case("grant a role to oneself", "PUT", "/api/workspaces/{ws}/members/{me}/roles/viewer",
         target="ws", may=nobody),
    Case("revoke a role", "DELETE", "/api/workspaces/{ws}/members/{victim}/roles/viewer",
         target="ws", may=holding_all_of_role("viewer"), setup=victim_holds("viewer"),
         teardown=drop_victim_role("viewer")),
    # -- the whole life of a workspace, its roles and invites (issue 20) ----------------------
    Case("rename the workspace", "PATCH", "/api/workspaces/{ws}", body={"name": "A {nonce}"},
         target="ws", may=holding("manage_workspace")),
    Case("change the workspace's visibility", "PUT", "/api/workspaces/{ws}/visibility",
         body={"visibility": "private"}, target="ws", may=holding("manage_workspace")),
    # Transfer and deletion would end A: each attempt has a workspace of its own.
    Case("transfer a workspace", "POST", "/api/workspaces/{fresh}/transfer",
         body={"user_id": "{victim}"}, target="fresh", may=is_owner, setup=fresh_workspace),
    Case("delete a workspace", "DELETE", "/api/workspaces/{fresh}", body={"confirm_name": "F"},
         target="fresh", may=is_owner, setup=fresh_workspace),
    # Custom roles below one's own: the fresh role is the lowest, so manage_roles decides.
    Case("rename a role", "PATCH", "/api/workspaces/{ws}/roles/{role}", body={"name": "n-{nonce}"},
         target="ws", may=holding("manage_roles"), setup=fresh_role, teardown=drop_fresh_roles),
    Case("change a role's permissions", "PUT", "/api/workspaces/{ws}/roles/{role}/permissions",
         body={"permissions": ["view_channels"]}, target="ws",
         may=holding("manage_roles", "view_channels"), setup=fresh_role,
         teardown=drop_fresh_roles),
    Case("reorder the roles", "PUT", "/api/workspaces/{ws}/roles/order",
         body={"roles": "{order}"}, target="ws", may=holding("manage_roles"),
         setup=roles_reversed, teardown=drop_fresh_roles),
    Case("delete a role", "DELETE", "/api/workspaces/{ws}/roles/{role}", target="ws",
         may=holding("manage_roles"), setup=fresh_role, teardown=drop_fresh_roles),
    Case("list invites", "GET", "/api/workspaces/{ws}/invites", target="ws",
         may=holding("invite")),
    # Another's invite: only above its maker's rank (the victim is a plain member).
    Case("revoke an invite", "DELETE", "/api/workspaces/{ws}/invites/{fresh}", target="ws",
         may=lambda a: "owner" in a.roles or "admin" in a.roles, setup=victims_invite),
    # Retention (issue 20): every member may read it; manage_workspace sets it.
    Case("turn deleted-means-erased off", "PUT",
         "/api/workspaces/{ws}/settings/deleted-means-erased", body={"enabled": False},
         target="ws", may=holding("manage_workspace"), teardown=deletion_erases_again),
    Case("read the retention", "GET", "/api/workspaces/{ws}/retention", target="ws"),
    Case("set the retention", "PUT", "/api/workspaces/{ws}/retention", body={"days": 3650},
         target="ws", may=holding("manage_workspace"), teardown=retention_off),
    # -- channels ---------------------------------------------------------------------------
    Case("create a channel", "POST", "/api/workspaces/{ws}/channels", body={"name": "c-{nonce}"},
         target="ws", may=holding("manage_channels"), ok=201),
    Case("read a channel", "GET", "/api/channels/{ch}", target="ch", sees=VIEW),
    Case("read the private channel", "GET", "/api/channels/{priv}", target="priv",
         sees=in_private_channel),
    Case("list a channel's readers", "GET", "/api/channels/{ch}/members", target="ch",
         sees=either(VIEW, AUDIT)),
    Case("list the private channel's members", "GET", "/api/channels/{priv}/members",
         target="priv", sees=either(in_private_channel, AUDIT)),
    Case("change a channel", "PATCH", "/api/channels/{ch}", body={"topic": "t-{nonce}"},
         target="ch", sees=VIEW, may=holding("manage_channels")),
    Case("delete a channel", "DELETE", "/api/channels/{fresh}", target="fresh", sees=VIEW,
         may=holding("manage_channels"), setup=fresh_channel),
    Case("archive a channel", "POST", "/api/channels/{fresh}/archive", target="fresh", sees=VIEW,
         may=holding("manage_channels"), setup=fresh_channel),
    Case("unarchive a channel", "POST", "/api/channels/{fresh}/unarchive", target="fresh",
         sees=VIEW, may=holding("manage_channels"), setup=archived_channel),
    # Owners manage any private channel's members, so none is ever out of everyone's reach.
    Case("add to a private channel", "POST", "/api/channels/{fresh}/members",
         body={"user_id": "{victim}"}, target="fresh", sees=either(in_private_channel, is_owner),
         may=holding("manage_channels"), setup=fresh_private_channel),
    Case("remove from a private channel", "DELETE", "/api/channels/{fresh}/members/{victim}",
         target="fresh", sees=either(in_private_channel, is_owner), may=holding("manage_channels"),
         setup=private_channel_with_victim),
    # Only with someone one shares a workspace with: for others they do not exist (404).
    Case("open a direct channel", "POST", "/api/dms", body={"user_id": "{victim}"},
         target="victim", sees=member, ok=201),
    Case("read someone else's direct channel", "GET", "/api/channels/{dm}", target="dm",
         sees=nobody),
    # Issue 19: a group of the actor and two other members of A (for one who is not a
    # member, people they share no workspace with: 404, as unknown users).
    Case("open a group direct message", "POST", "/api/group-dms",
         body={"user_ids": ["{victim}", "{peer}"]}, sees=member, ok=201, setup=a_peer),
    Case("leave someone else's direct channel", "POST", "/api/group-dms/{dm}/leave",
         target="dm", sees=nobody),
    # -- messages ---------------------------------------------------------------------------
    Case("send a message", "POST", "/api/channels/{ch}/messages", body={"text": "hi {nonce}"},
         target="ch", sees=VIEW, may=holding("send_messages"), ok=201),
    Case("send in the private channel", "POST", "/api/channels/{priv}/messages",
         body={"text": "hi {nonce}"}, target="priv", sees=in_private_channel,
         may=holding("send_messages"), ok=201),
    Case("read the timeline", "GET", "/api/channels/{ch}/messages", target="ch", sees=VIEW),
    Case("read the private timeline", "GET", "/api/channels/{priv}/messages", target="priv",
         sees=in_private_channel),
    Case("edit someone else's message", "PATCH", "/api/messages/{msg}",
         body={"text": "mine {nonce}"}, target="msg", sees=VIEW, may=nobody),
    Case("edit one's own message", "PATCH", "/api/messages/{fresh}", body={"text": "ed {nonce}"},
         target="fresh", sees=VIEW, may=holding("send_messages"), setup=own_message("edit")),
    Case("delete someone else's message", "DELETE", "/api/messages/{fresh}", target="fresh",
         sees=VIEW, may=holding("manage_messages"), setup=victims_message),
    # The author may take back what they wrote, even once they may no longer post.
    Case("delete one's own message", "DELETE", "/api/messages/{fresh}", target="fresh",
         sees=VIEW, setup=own_message("delete")),
    Case("react", "PUT", "/api/messages/{msg}/reactions/{emoji}", target="msg", sees=VIEW,
         may=holding("send_messages"), setup=a_reaction),
    Case("remove one's reaction", "DELETE", "/api/messages/{msg}/reactions/{emoji}",
         target="msg", sees=VIEW, setup=own_reaction, appends=holding("send_messages")),
    # -- read state (issue 19): a reader's own markers; threads as their channel ---------------
    Case("mark a channel read", "PUT", "/api/channels/{ch}/read", body={"up_to": "{fresh}"},
         target="ch", sees=VIEW, setup=victims_message),
    Case("read a thread", "GET", "/api/messages/{msg}/replies", target="msg", sees=VIEW),
    Case("list my direct channels", "GET", "/api/dms", sees=anyone),
    Case("list a private channel's read receipts", "GET", "/api/channels/{priv}/receipts",
         target="priv", sees=in_private_channel),
    Case("read my read-receipts setting", "GET", "/api/users/me/read-receipts", sees=anyone),
    Case("stop sending read receipts", "PUT", "/api/users/me/read-receipts",
         body={"send": False}, sees=anyone, teardown=send_receipts_again),
    # -- documents --------------------------------------------------------------------------
    Case("create a document", "POST", "/api/workspaces/{ws}/documents",
         body={"title": "d-{nonce}"}, target="ws", may=holding("edit_documents"), ok=201),
    Case("list documents", "GET", "/api/workspaces/{ws}/documents", target="ws", sees=VIEW_DOCS),
    Case("read a document", "GET", "/api/documents/{doc}", target="doc", sees=VIEW_DOCS),
    Case("read a document as it was", "GET", "/api/documents/{doc}", target="doc",
         query={"at": "{doc_created}"}, sees=VIEW_DOCS),
    Case("read a document's Yjs state", "GET", "/api/documents/{doc}/update", target="doc",
         sees=VIEW_DOCS),
    Case("rename someone else's document", "PATCH", "/api/documents/{doc}",
         body={"title": "t-{nonce}"}, target="doc", sees=VIEW_DOCS,
         may=holding("edit_documents", "manage_documents")),
    Case("rename one's own document", "PATCH", "/api/documents/{fresh}",
         body={"title": "t-{nonce}"}, target="fresh", sees=VIEW_DOCS,
         may=holding("edit_documents"), setup=own_document("rename")),
    Case("delete someone else's document", "DELETE", "/api/documents/{fresh}", target="fresh",
         sees=VIEW_DOCS, may=holding("edit_documents", "manage_documents"),
         setup=victims_document),
    Case("delete one's own document", "DELETE", "/api/documents/{fresh}", target="fresh",
         sees=VIEW_DOCS, may=holding("edit_documents"), setup=own_document("delete")),
    Case("restore a document version", "POST", "/api/documents/{fresh}/restore",
         body={"position": "{then}"}, target="fresh", sees=VIEW_DOCS,
         may=holding("edit_documents"), setup=document_with_content),
    # -- projects and tasks (issue 21): members read open projects, a listed one only its
    # members and the owners; manage_projects changes projects, manage_tasks tasks -----------
    Case("create a project", "POST", "/api/workspaces/{ws}/projects", body={"name": "p-{nonce}"},
         target="ws", may=holding("manage_projects"), ok=201),
    Case("list projects: the open one", "GET", "/api/workspaces/{ws}/projects", target="ws",
         shows=member, finds=lists("proj")),
    Case("list projects: the listed one", "GET", "/api/workspaces/{ws}/projects", target="ws",
         shows=in_listed_project, finds=lists("lproj")),
    Case("read a project", "GET", "/api/projects/{proj}", target="proj"),
    Case("read the listed project", "GET", "/api/projects/{lproj}", target="lproj",
         sees=in_listed_project),
    Case("read a board", "GET", "/api/projects/{proj}/board", target="proj"),
    Case("a board as it was", "GET", "/api/projects/{proj}/board", query={"at": "{proj_at}"},
         target="proj", may=AUDIT),
    Case("read the listed project's board", "GET", "/api/projects/{lproj}/board",
         target="lproj", sees=in_listed_project),
    Case("change a project", "PATCH", "/api/projects/{proj}", body={"description": "d-{nonce}"},
         target="proj", may=holding("manage_projects")),
    Case("change the listed project", "PATCH", "/api/projects/{lproj}",
         body={"description": "d-{nonce}"}, target="lproj", sees=in_listed_project,
         may=holding("manage_projects")),
    Case("set a project's access", "PUT", "/api/projects/{fresh}/access",
         body={"access": "listed"}, target="fresh", may=holding("manage_projects"),
         setup=fresh_project),
    Case("archive a project", "POST", "/api/projects/{fresh}/archive", target="fresh",
         may=holding("manage_projects"), setup=fresh_project),
    Case("unarchive a project", "POST", "/api/projects/{fresh}/unarchive", target="fresh",
         may=holding("manage_projects"), setup=archived_project),
    Case("delete a project", "DELETE", "/api/projects/{fresh}", target="fresh",
         may=holding("manage_projects"), setup=fresh_project),
    Case("add a column", "POST", "/api/projects/{fresh}/columns", body={"name": "c-{nonce}"},
         target="fresh", may=holding("manage_projects"), ok=201, setup=fresh_project),
    Case("rename a column", "PATCH", "/api/projects/{proj}/columns/todo",
         body={"name": "T {nonce}"}, target="proj", may=holding("manage_projects")),
    Case("reorder the columns", "PUT", "/api/projects/{proj}/columns/order",
         body={"column_ids": ["todo", "in-progress", "done"]}, target="proj",
         may=holding("manage_projects")),
    Case("create a task", "POST", "/api/projects/{proj}/tasks", body={"title": "t-{nonce}"},
         target="proj", may=holding("manage_tasks"), ok=201),
    Case("create a task in the listed project", "POST", "/api/projects/{lproj}/tasks",
         body={"title": "t-{nonce}"}, target="lproj", sees=in_listed_project,
         may=holding("manage_tasks"), ok=201),
    Case("read a task", "GET", "/api/tasks/{task}", target="task"),
    # Across workspaces, filtered: what each caller reads, nobody's refused.
    Case("list tasks: the open project's", "GET", "/api/tasks", sees=anyone, shows=member,
         finds=lists("task")),
    Case("list tasks: the listed project's", "GET", "/api/tasks",
         sees=anyone, shows=in_listed_project, finds=lists("ltask")),
    Case("read a task of the listed project", "GET", "/api/tasks/{ltask}", target="ltask",
         sees=in_listed_project),
    Case("change a task", "PATCH", "/api/tasks/{task}", body={"title": "t-{nonce}"},
         target="task", may=holding("manage_tasks")),
    Case("move a task", "POST", "/api/tasks/{task}/move", body={"status": "in-progress"},
         target="task", may=holding("manage_tasks")),
    Case("delete a task", "DELETE", "/api/tasks/{fresh}", target="fresh",
         may=holding("manage_tasks"), setup=fresh_task),
    # Anyone who reads the project watches what they like; its maker watches it already.
    Case("watch a task", "PUT", "/api/tasks/{fresh}/watch", target="fresh", setup=fresh_task,
         appends=lambda a: a.member and not is_owner(a)),
    Case("unwatch a task", "DELETE", "/api/tasks/{fresh}/watch", target="fresh",
         setup=fresh_task, appends=is_owner),
    Case("watch a task of the listed project", "PUT", "/api/tasks/{ltask}/watch",
         target="ltask", sees=in_listed_project, appends=is_owner,
         teardown=unwatch_ltask),
    # -- outgoing webhooks (issue 19): manage_webhooks, for every route ----------------------
    Case("register a webhook", "POST", "/api/workspaces/{ws}/webhooks", target="ws",
         body={"url": "https://93.184.215.14/{nonce}", "event_types": ["WorkspaceCreated"]},
         may=holding("manage_webhooks"), ok=201, teardown=drop_webhooks),
    Case("list webhooks", "GET", "/api/workspaces/{ws}/webhooks", target="ws",
         may=holding("manage_webhooks")),
    Case("read a webhook", "GET", "/api/workspaces/{ws}/webhooks/{hook}", target="ws",
         may=holding("manage_webhooks")),
    Case("read a webhook's deliveries", "GET", "/api/workspaces/{ws}/webhooks/{hook}/deliveries",
         target="ws", may=holding("manage_webhooks")),
    Case("change a webhook", "PATCH", "/api/workspaces/{ws}/webhooks/{fresh}", target="ws",
         body={"url": "https://93.184.215.14/changed-{nonce}"}, may=holding("manage_webhooks"),
         setup=fresh_webhook, teardown=drop_webhooks),
    Case("disable a webhook", "POST", "/api/workspaces/{ws}/webhooks/{fresh}/disable",
         target="ws", may=holding("manage_webhooks"), setup=fresh_webhook,
         teardown=drop_webhooks),
    Case("enable a webhook", "POST", "/api/workspaces/{ws}/webhooks/{fresh}/enable",
         target="ws", may=holding("manage_webhooks"), setup=disabled_webhook,
         teardown=drop_webhooks),
    Case("rotate a webhook's secret", "POST", "/api/workspaces/{ws}/webhooks/{fresh}/rotate-secret",
         target="ws", may=holding("manage_webhooks"), setup=fresh_webhook,
         teardown=drop_webhooks),
    Case("delete a webhook", "DELETE", "/api/workspaces/{ws}/webhooks/{fresh}", target="ws",
         may=holding("manage_webhooks"), setup=fresh_webhook, teardown=drop_webhooks),
    # -- the event log, time travel, audit --------------------------------------------------
    Case("events of the workspace", "GET", "/api/events", query={"stream": "{ws}"},
         sees=anyone, shows=member, finds=has_items),
    Case("events of a channel", "GET", "/api/events", query={"stream": "{ch}"}, sees=anyone,
         shows=either(VIEW, AUDIT), finds=has_items),
    Case("events of a message", "GET", "/api/events", query={"stream": "{msg}"}, sees=anyone,
         shows=either(VIEW, AUDIT), finds=has_items),
    Case("events of the private channel", "GET", "/api/events", query={"stream": "{priv}"},
         sees=anyone, shows=either(in_private_channel, AUDIT), finds=has_items),
    Case("events of a document", "GET", "/api/events", query={"stream": "{doc}"}, sees=anyone,
         shows=either(VIEW_DOCS, AUDIT), finds=has_items),
    Case("events of another workspace", "GET", "/api/events", query={"stream": "{ws_b}"},
         sees=anyone, shows=nobody, finds=has_items),
    Case("the workspace as it was", "GET", "/api/streams/{ws}", query={"at": "{doc_created}"},
         target="ws", may=AUDIT),
    # What the caller cannot read does not exist for them (404), as an unknown id (issue 17, #9).
    Case("the private channel's history", "GET", "/api/streams/{priv}", target="priv",
         sees=either(in_private_channel, AUDIT), may=AUDIT),
    Case("a message's history", "GET", "/api/streams/{msg}", target="msg",
         sees=either(VIEW, AUDIT), may=AUDIT),
    Case("a document as it was", "GET", "/api/streams/{doc}", query={"at": "{doc_written}"},
         target="doc", sees=either(VIEW_DOCS, AUDIT), may=AUDIT),
    Case("one's own user stream", "GET", "/api/streams/{me}", sees=anyone),
    Case("someone else's user stream", "GET", "/api/streams/{victim}", target="victim",
         sees=nobody),
    # A global endpoint: only instance auditors (granted at the console, none here).
    Case("verify the log", "GET", "/api/audit/verify", sees=anyone, may=nobody),
    Case("verify the read models", "POST", "/api/audit/verify-read-models", sees=anyone,
         may=nobody),
    # Issue 20: the erasure trail, as global (tests/e2e/test_erasure_audit.py: an auditor's).
    Case("list the erasures", "GET", "/api/audit/erasures", sees=anyone, may=nobody),
]  # fmt: skip


def _fill(template: Any, values: dict[str, Any]) -> Any:
    """Fills ``{name}`` placeholders; a value that is just ``{name}`` keeps its type."""
    if isinstance(template, str):
        whole = re.fullmatch(r"\{(\w+)\}", template)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return template.format(**values)
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    return template


def call(
    api: Api, method: str, path: str, user: User | None, body: Any, query: dict[str, Any]
) -> httpx.Response:
    if method == "GET":
        return api.get(path, user, **query)
    if method == "POST":
        return api.post(path, user, body)
    if method == "PATCH":
        return api.patch(path, user, body)
    if method == "PUT":
        return api.put(path, user) if body is None else api.put(path, user, json=body)
    assert method == "DELETE"
    return api.delete(path, user) if body is None else api.delete(path, user, json=body)


def assert_problem(response: httpx.Response, status: int, context: str) -> dict[str, Any]:
    assert response.status_code == status, (context, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), context
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status and problem["detail"], (context, problem)
    return problem


@pytest.mark.parametrize("actor", ACTORS, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matrix(world: World, case: Case, actor: Actor) -> None:
    user = world.users.get(actor.name)
    me = user.user_id if user is not None else world.ids["victim"]
    fresh = case.setup(world, actor) if case.setup else {}
    values = {**world.ids, "me": me, "nonce": uuid.uuid4().hex[:8], **fresh}
    path, body = _fill(case.path, values), _fill(case.body, values)
    query = _fill(case.query, values)
    expected = case.expected(actor)
    context = f"{case.name} by {actor.name}: {case.method} {path}"
    try:
        before = world.head()
        response = call(world.api, case.method, path, user, body, query)
        after = world.head()
        if expected >= 400:
            problem = assert_problem(response, expected, context)
            assert after == before, f"{context}: refused, yet events were appended"
            if expected == 404 and case.target is not None:
                # Not visible must look exactly like not existing.
                values[case.target] = str(uuid.uuid4())
                unknown = call(world.api, case.method, _fill(case.path, values), user, body, query)
                assert (unknown.status_code, unknown.json()["detail"]) == (
                    404,
                    problem["detail"],
                ), f"{context}: tells an existing {case.target} from an unknown one"
                assert world.head() == before
            return
        assert response.status_code == expected, (context, response.status_code, response.text)
        if case.expects_append(actor):
            assert after[0] > before[0] and after[1] > before[1], f"{context}: nothing appended"
            assert response.json()["position"] == after[1], context
        else:
            assert after == before, f"{context}: appended events"
        if case.shows is not None and case.finds is not None:
            found = case.finds(response.json(), values)
            assert found == case.shows(actor), f"{context}: target {'' if found else 'not '}shown"
    finally:
        if case.teardown is not None:
            case.teardown(world, actor)


def test_the_builtin_roles_are_the_documented_table(world: World) -> None:
    """The permission table the matrix derives from is the one docs/API.md states and the
    one the API reports."""
    roles = world.ok(world.api.get(f"/api/workspaces/{world.ids['ws']}/roles", world.user("owner")))
    builtin = {r["name"]: set(r["permissions"]) for r in roles["items"] if r["builtin"]}
    assert builtin == {name: set(perms) for name, perms in BUILTIN_ROLES.items()}
    contract = (Path(__file__).parents[2] / "docs" / "API.md").read_text()
    documented = re.search(
        r"`owner` \(all\), `admin` \(all but `view_audit`\), `member`\s+\(`([^)]*)`\) and"
        r" `viewer`\s+\(`([^)]*)`\)",
        contract,
    )
    assert documented is not None, "docs/API.md no longer states the built-in roles"

    def perms(text: str) -> set[str]:
        return {p.strip(" `\n") for p in text.split(",")}

    assert BUILTIN_ROLES["owner"] == ALL_PERMISSIONS
    assert BUILTIN_ROLES["admin"] == ALL_PERMISSIONS - {"view_audit"}
    assert set(BUILTIN_ROLES["member"]) == perms(documented.group(1))
    assert set(BUILTIN_ROLES["viewer"]) == perms(documented.group(2))
    members = world.ok(
        world.api.get(f"/api/workspaces/{world.ids['ws']}/members", world.user("owner"))
    )
    held = {m["user_id"]: set(m["roles"]) for m in members["items"]}
    for actor in ACTORS:
        if actor.member:
            assert held[world.user(actor.name).user_id] == set(actor.roles), actor.name


# -- ids of the other workspace (BOLA) --------------------------------------------------------


@dataclass(frozen=True)
class Crossing:
    """A request by ``who`` naming an object of the other workspace (or a user outside it)
    inside a path or body of their own: 404, worded exactly as for an unknown id
    (``unknown`` is the same request with that id replaced by a random one)."""

    name: str
    who: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    foreign: str = ""  # the placeholder holding the other workspace's id
    # User ids and role names are not objects of a workspace (member lists show user ids):
    # for those, any 404 will do.
    worded_as_unknown: bool = True


CROSSINGS = [
    # The owner of A, who may do everything in A, with B's ids.
    Crossing("kick B's owner from A", "owner", "POST", "/api/workspaces/{ws}/members/{stranger}/kick", foreign="stranger", worded_as_unknown=False),
    Crossing("grant B's owner a role in A", "owner", "PUT", "/api/workspaces/{ws}/members/{stranger}/roles/viewer", foreign="stranger", worded_as_unknown=False),
    Crossing("grant a role that only B has", "owner", "PUT", "/api/workspaces/{ws}/members/{victim}/roles/{role_b}", foreign="role_b", worded_as_unknown=False),
    Crossing("add B's owner to A's private channel", "admin", "POST", "/api/channels/{priv}/members", {"user_id": "{stranger}"}, foreign="stranger", worded_as_unknown=False),
    Crossing("reply in A to a message of B", "owner", "POST", "/api/channels/{ch}/messages", {"text": "re", "reply_to": "{msg_b}"}, foreign="msg_b"),
    Crossing("edit a message of B", "owner", "PATCH", "/api/messages/{msg_b}", {"text": "x"}, foreign="msg_b"),
    Crossing("delete a message of B", "owner", "DELETE", "/api/messages/{msg_b}", foreign="msg_b"),
    Crossing("react to a message of B", "owner", "PUT", "/api/messages/{msg_b}/reactions/x", foreign="msg_b"),
    Crossing("post in a channel of B", "owner", "POST", "/api/channels/{ch_b}/messages", {"text": "x"}, foreign="ch_b"),
    Crossing("archive a channel of B", "owner", "POST", "/api/channels/{ch_b}/archive", foreign="ch_b"),
    Crossing("rename a document of B", "owner", "PATCH", "/api/documents/{doc_b}", {"title": "x"}, foreign="doc_b"),
    Crossing("delete a document of B", "owner", "DELETE", "/api/documents/{doc_b}", foreign="doc_b"),
    Crossing("restore a document of B", "owner", "POST", "/api/documents/{doc_b}/restore", {"position": 1}, foreign="doc_b"),
    Crossing("read a document of B", "owner", "GET", "/api/documents/{doc_b}", foreign="doc_b"),
    Crossing("read B's document state", "owner", "GET", "/api/documents/{doc_b}/update", foreign="doc_b"),
    Crossing("read a channel of B", "owner", "GET", "/api/channels/{ch_b}/messages", foreign="ch_b"),
    Crossing("B's workspace history", "owner", "GET", "/api/streams/{ws_b}", foreign="ws_b"),
    Crossing("B's channel history", "owner", "GET", "/api/streams/{ch_b}", foreign="ch_b"),
    Crossing("B's members", "owner", "GET", "/api/workspaces/{ws_b}/members", foreign="ws_b"),
    Crossing("invite to B", "owner", "POST", "/api/workspaces/{ws_b}/invites", {}, foreign="ws_b"),
    Crossing("create a document in B", "owner", "POST", "/api/workspaces/{ws_b}/documents", {"title": "x"}, foreign="ws_b"),
    Crossing("create a channel in B", "owner", "POST", "/api/workspaces/{ws_b}/channels", {"name": "x"}, foreign="ws_b"),
    Crossing("ban from B", "owner", "POST", "/api/workspaces/{ws_b}/members/{victim}/ban", foreign="ws_b"),
    Crossing("read a webhook of B in A", "owner", "GET", "/api/workspaces/{ws}/webhooks/{hook_b}", foreign="hook_b"),
    Crossing("disable a webhook of B in A", "owner", "POST", "/api/workspaces/{ws}/webhooks/{hook_b}/disable", foreign="hook_b"),
    Crossing("B's webhooks", "owner", "GET", "/api/workspaces/{ws_b}/webhooks", foreign="ws_b"),
    # Issue 20: B's workspace, roles, invites and channels, from A.
    Crossing("rename B", "owner", "PATCH", "/api/workspaces/{ws_b}", {"name": "x"}, foreign="ws_b"),
    Crossing("delete B", "owner", "DELETE", "/api/workspaces/{ws_b}", {"confirm_name": "B"}, foreign="ws_b"),
    Crossing("transfer B", "owner", "POST", "/api/workspaces/{ws_b}/transfer", {"user_id": "{victim}"}, foreign="ws_b"),
    Crossing("B's invites", "owner", "GET", "/api/workspaces/{ws_b}/invites", foreign="ws_b"),
    Crossing("B's deleted-means-erased", "owner", "PUT", "/api/workspaces/{ws_b}/settings/deleted-means-erased", {"enabled": False}, foreign="ws_b"),
    Crossing("B's retention", "owner", "GET", "/api/workspaces/{ws_b}/retention", foreign="ws_b"),
    Crossing("set B's retention", "owner", "PUT", "/api/workspaces/{ws_b}/retention", {"days": 1}, foreign="ws_b"),
    Crossing("revoke B's invite in A", "owner", "DELETE", "/api/workspaces/{ws}/invites/{invite_b}", foreign="invite_b"),
    Crossing("delete B's role in A", "owner", "DELETE", "/api/workspaces/{ws}/roles/{role_b}", foreign="role_b", worded_as_unknown=False),
    Crossing("rename B's role in A", "owner", "PATCH", "/api/workspaces/{ws}/roles/{role_b}", {"name": "x"}, foreign="role_b", worded_as_unknown=False),
    Crossing("delete a channel of B", "owner", "DELETE", "/api/channels/{ch_b}", foreign="ch_b"),
    # Issue 21: B's projects and tasks, from A.
    Crossing("create a project in B", "owner", "POST", "/api/workspaces/{ws_b}/projects", {"name": "x"}, foreign="ws_b"),
    Crossing("read a project of B", "owner", "GET", "/api/projects/{proj_b}", foreign="proj_b"),
    Crossing("read B's board", "owner", "GET", "/api/projects/{proj_b}/board", foreign="proj_b"),
    Crossing("rename a project of B", "owner", "PATCH", "/api/projects/{proj_b}", {"name": "x"}, foreign="proj_b"),
    Crossing("create a task in B", "owner", "POST", "/api/projects/{proj_b}/tasks", {"title": "x"}, foreign="proj_b"),
    Crossing("read a task of B", "owner", "GET", "/api/tasks/{task_b}", foreign="task_b"),
    Crossing("change a task of B", "owner", "PATCH", "/api/tasks/{task_b}", {"title": "x"}, foreign="task_b"),
    Crossing("move a task of B", "owner", "POST", "/api/tasks/{task_b}/move", {"status": "done"}, foreign="task_b"),
    Crossing("delete a task of B", "owner", "DELETE", "/api/tasks/{task_b}", foreign="task_b"),
    Crossing("watch a task of B", "owner", "PUT", "/api/tasks/{task_b}/watch", foreign="task_b"),
    Crossing("move a task of A after one of B", "owner", "POST", "/api/tasks/{task}/move", {"status": "todo", "after_id": "{task_b}"}, foreign="task_b", worded_as_unknown=False),
    Crossing("a project of A", "stranger", "GET", "/api/projects/{proj}", foreign="proj"),
    Crossing("a task of A", "stranger", "PATCH", "/api/tasks/{task}", {"title": "x"}, foreign="task"),
    # And the other way round: B's owner with A's ids in B's paths and bodies.
    Crossing("kick a member of A from B", "stranger", "POST", "/api/workspaces/{ws_b}/members/{victim}/kick", foreign="victim", worded_as_unknown=False),
    Crossing("grant a member of A a role in B", "stranger", "PUT", "/api/workspaces/{ws_b}/members/{victim}/roles/viewer", foreign="victim", worded_as_unknown=False),
    Crossing("reply in B to a message of A", "stranger", "POST", "/api/channels/{ch_b}/messages", {"text": "re", "reply_to": "{msg}"}, foreign="msg"),
    Crossing("a message of A", "stranger", "PATCH", "/api/messages/{msg}", {"text": "x"}, foreign="msg"),
    Crossing("a document of A", "stranger", "GET", "/api/documents/{doc}", foreign="doc"),
    Crossing("A's private channel", "stranger", "GET", "/api/channels/{priv}", foreign="priv"),
    Crossing("A's history", "stranger", "GET", "/api/streams/{ws}", foreign="ws"),
    Crossing("A's roles", "stranger", "GET", "/api/workspaces/{ws}/roles", foreign="ws"),
    Crossing("A's presence", "stranger", "GET", "/api/workspaces/{ws}/presence", foreign="ws"),
    Crossing("A's documents", "stranger", "GET", "/api/workspaces/{ws}/documents", foreign="ws"),
    Crossing("the direct channel of two others", "owner", "POST", "/api/channels/{dm}/messages", {"text": "x"}, foreign="dm"),
]  # fmt: skip


@pytest.mark.parametrize("crossing", CROSSINGS, ids=lambda c: c.name)
def test_ids_of_another_workspace_look_unknown(world: World, crossing: Crossing) -> None:
    user = world.user(crossing.who)
    values = {**world.ids, "stranger": world.user("stranger").user_id}
    before = world.head()
    response = call(
        world.api,
        crossing.method,
        _fill(crossing.path, values),
        user,
        _fill(crossing.body, values),
        {},
    )
    problem = assert_problem(response, 404, crossing.name)
    values[crossing.foreign] = "no-such-role" if crossing.foreign == "role_b" else str(uuid.uuid4())
    unknown = call(
        world.api,
        crossing.method,
        _fill(crossing.path, values),
        user,
        _fill(crossing.body, values),
        {},
    )
    if crossing.worded_as_unknown:
        assert (unknown.status_code, unknown.json()["detail"]) == (404, problem["detail"]), (
            crossing.name
        )
    else:
        assert_problem(unknown, 404, crossing.name)
    assert world.head() == before


def test_events_and_subscriptions_of_another_workspace_stay_hidden(world: World) -> None:
    """The log filters rather than refuses: the owner of A (view_audit there) finds nothing
    of B, B's owner nothing of A; a subscription to B's streams is refused like REST."""
    api = world.api
    for who, streams in (
        ("owner", ("ws_b", "ch_b", "msg_b", "doc_b")),
        ("stranger", ("ws", "ch", "msg", "doc", "priv")),
    ):
        for key in streams:
            page = world.ok(api.get("/api/events", world.user(who), stream=world.ids[key]))
            assert page["items"] == [], (who, key)
        seen: set[str] = set()
        after: Any = 0
        while after is not None:  # the whole log, page by page
            page = world.ok(api.get("/api/events", world.user(who), limit=200, after=after))
            seen |= {e["stream"] for e in page["items"]}
            after = page["next"]
        assert seen and not seen & {str(world.ids[k]) for k in streams}, who
    url = world.chorus.server.url.replace("http", "ws") + "/ws"
    owner = world.user("owner")
    with connect(f"{url}?token={owner.access_token}", open_timeout=TIMEOUT) as ws:
        for n, spec in enumerate(
            [{"workspace": world.ids["ws_b"]}, {"channel": world.ids["ch_b"]},
             {"document": world.ids["doc_b"]}, {"channel": world.ids["dm"]}]
        ):  # fmt: skip
            ws.send(json.dumps({"op": "subscribe", "sub": f"s{n}", "streams": [spec]}))
            frame = json.loads(ws.recv(timeout=TIMEOUT))
            assert frame["op"] == "error" and frame["status"] == 404, (spec, frame)
    wait_for_sessions_to_end(world.chorus.database_url)


# -- unknown body fields (mass assignment) ----------------------------------------------------


@dataclass(frozen=True)
class Smuggle:
    who: str
    method: str
    path: str
    body: dict[str, Any]


SMUGGLED = [
    Smuggle("anonymous", "POST", "/api/auth/signup", {"username": "mass_{nonce}", "password": "a good password", "user_id": "{victim}"}),
    Smuggle("anonymous", "POST", "/api/auth/signup", {"username": "mass_{nonce}", "password": "a good password", "roles": ["owner"]}),
    Smuggle("member", "PATCH", "/api/users/me", {"display_name": "x", "user_id": "{victim}"}),
    Smuggle("member", "POST", "/api/users/me/deactivate", {"password": "x", "user_id": "{victim}"}),
    Smuggle("member", "POST", "/api/workspaces", {"name": "x", "owner_id": "{victim}"}),
    Smuggle("member", "POST", "/api/workspaces", {"name": "x", "id": "{ws}"}),
    Smuggle("member", "POST", "/api/workspaces", {"name": "x", "members": {"{victim}": ["owner"]}}),
    Smuggle("outsider", "POST", "/api/workspaces/{ws_b}/join", {"roles": ["owner"]}),
    Smuggle("member", "POST", "/api/workspaces/{ws}/invites", {"created_by": "{victim}"}),
    Smuggle("member", "POST", "/api/workspaces/{ws}/invites", {"workspace_id": "{ws_b}"}),
    Smuggle("member", "POST", "/api/workspaces/{ws}/invites", {"uses": -1000}),
    Smuggle("admin", "POST", "/api/workspaces/{ws}/roles", {"name": "r", "permissions": [], "builtin": True}),
    Smuggle("admin", "POST", "/api/workspaces/{ws}/roles", {"name": "r", "permissions": [], "workspace_id": "{ws_b}"}),
    Smuggle("admin", "POST", "/api/workspaces/{ws}/channels", {"name": "c", "workspace_id": "{ws_b}"}),
    Smuggle("admin", "POST", "/api/workspaces/{ws}/channels", {"name": "c", "member_ids": ["{stranger}"]}),
    Smuggle("admin", "POST", "/api/workspaces/{ws}/channels", {"name": "c", "id": "{ch_b}"}),
    Smuggle("admin", "PATCH", "/api/channels/{ch}", {"topic": "t", "archived": True}),
    Smuggle("admin", "PATCH", "/api/channels/{ch}", {"topic": "t", "workspace_id": "{ws_b}"}),
    Smuggle("admin", "POST", "/api/channels/{priv}/members", {"user_id": "{victim}", "roles": ["admin"]}),
    Smuggle("member", "POST", "/api/channels/{ch}/messages", {"text": "x", "author_id": "{victim}"}),
    Smuggle("member", "POST", "/api/channels/{ch}/messages", {"text": "x", "channel_id": "{ch_b}"}),
    Smuggle("member", "POST", "/api/channels/{ch}/messages", {"text": "x", "id": "{msg}"}),
    Smuggle("member", "POST", "/api/channels/{ch}/messages", {"text": "x", "created_at": "2000-01-01T00:00:00Z"}),
    Smuggle("victim", "PATCH", "/api/messages/{msg}", {"text": "x", "author_id": "{stranger}"}),
    Smuggle("victim", "PATCH", "/api/messages/{msg}", {"text": "x", "version": 1}),
    Smuggle("member", "POST", "/api/dms", {"user_id": "{victim}", "channel_id": "{ch}"}),
    Smuggle("member", "POST", "/api/workspaces/{ws}/documents", {"title": "d", "created_by": "{victim}"}),
    Smuggle("member", "POST", "/api/workspaces/{ws}/documents", {"title": "d", "workspace_id": "{ws_b}"}),
    Smuggle("victim", "PATCH", "/api/documents/{doc}", {"title": "d", "created_by": "{member}"}),
    Smuggle("member", "POST", "/api/documents/{doc}/restore", {"position": 1, "document_id": "{doc_b}"}),
    Smuggle("admin", "POST", "/api/workspaces/{ws}/projects", {"name": "p", "workspace_id": "{ws_b}"}),
    Smuggle("member", "POST", "/api/projects/{proj}/tasks", {"title": "t", "project_id": "{proj_b}"}),
    Smuggle("member", "POST", "/api/projects/{proj}/tasks", {"title": "t", "watcher_ids": ["{victim}"]}),
    Smuggle("member", "PATCH", "/api/tasks/{task}", {"title": "t", "version": 1}),
    Smuggle("member", "POST", "/api/tasks/{task}/move", {"status": "done", "rank": "a0"}),
]  # fmt: skip


@pytest.mark.parametrize(
    "smuggle", SMUGGLED, ids=lambda s: f"{s.method} {s.path} +{list(s.body)[-1]}"
)
def test_unknown_body_fields_are_refused(world: World, smuggle: Smuggle) -> None:
    values = {
        **world.ids,
        "nonce": uuid.uuid4().hex[:8],
        "stranger": world.user("stranger").user_id,
        "member": world.user("member").user_id,
    }
    user = world.users.get(smuggle.who)
    before = world.head()
    response = call(
        world.api,
        smuggle.method,
        _fill(smuggle.path, values),
        user,
        _fill(smuggle.body, values),
        {},
    )
    problem = assert_problem(response, 422, smuggle.path)
    assert "unknown field" in problem["detail"], problem
    assert world.head() == before


# -- the same rules over WebSocket commands ---------------------------------------------------


def _answer(ws: ClientConnection, frame_id: str) -> dict[str, Any]:
    """The ack or error frame answering the command ``frame_id``."""
    while True:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
        if frame.get("id") == frame_id:
            return frame


WS_COMMANDS = {
    "send a message": ("SendMessage", {"channel_id": "{ch}", "text": "ws {nonce}"}),
    "create a channel": ("CreateChannel", {"workspace_id": "{ws}", "name": "ws-{nonce}"}),
    "create an invite": ("CreateInvite", {"workspace_id": "{ws}"}),
    "create a role": (
        "CreateRole",
        {"workspace_id": "{ws}", "name": "w-{nonce}", "permissions": ["view_channels"]},
    ),
    "edit someone else's message": ("EditMessage", {"message_id": "{msg}", "text": "ws {nonce}"}),
    "create a document": ("CreateDocument", {"workspace_id": "{ws}", "title": "ws {nonce}"}),
    "change a channel": ("ChangeChannel", {"channel_id": "{ch}", "topic": "ws {nonce}"}),
    "send in the private channel": ("SendMessage", {"channel_id": "{priv}", "text": "p {nonce}"}),
    "change my display name": ("ChangeProfile", {"display_name": "ws {nonce}"}),
    "create a task": ("CreateTask", {"project_id": "{proj}", "title": "ws {nonce}"}),
    "change the listed project": (
        "ChangeProject",
        {"project_id": "{lproj}", "description": "ws {nonce}"},
    ),
}


@pytest.mark.parametrize("actor", [a for a in ACTORS if a.signed_in], ids=str)
def test_websocket_commands_follow_the_same_matrix(world: World, actor: Actor) -> None:
    """``{"op":"command"}`` frames go through the same handlers: each answers as the REST
    row of the matrix says (ack or error status), refusals append nothing, and unknown
    fields in ``data`` are refused (422) there too."""
    by_name = {c.name: c for c in CASES}
    user = world.user(actor.name)
    url = world.chorus.server.url.replace("http", "ws") + f"/ws?token={user.access_token}"
    with connect(url, open_timeout=TIMEOUT) as ws:
        ws.send(json.dumps({"op": "ping"}))
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"op": "pong"}  # the session is saved
        for n, (name, (kind, data)) in enumerate(WS_COMMANDS.items()):
            case = by_name[name]
            values = {**world.ids, "nonce": uuid.uuid4().hex[:8]}
            before = world.head()
            frame_id = f"c{n}-{uuid.uuid4().hex[:6]}"
            ws.send(
                json.dumps(
                    {"op": "command", "id": frame_id, "type": kind, "data": _fill(data, values)}
                )
            )
            answer = _answer(ws, frame_id)
            expected = case.expected(actor)
            if expected >= 400:
                assert answer["op"] == "error" and answer["status"] == expected, (name, answer)
                assert world.head() == before, name
            else:
                assert answer["op"] == "ack", (name, answer)
                assert answer["position"] == world.head()[1], name
        smuggled = {"channel_id": world.ids["ch"], "text": "x", "author_id": world.ids["victim"]}
        before = world.head()
        ws.send(json.dumps({"op": "command", "id": "m", "type": "SendMessage", "data": smuggled}))
        answer = _answer(ws, "m")
        assert answer["op"] == "error" and answer["status"] == 422, answer
        assert world.head() == before
    wait_for_sessions_to_end(world.chorus.database_url)


# Routes the matrix does not run, each with why. Every other route of the OpenAPI document must
# have a row in CASES, so a new route cannot ship without its authorization being tested.
NOT_IN_MATRIX: dict[tuple[str, str], str] = {
    ("GET", "/health"): "public liveness probe (test_ready.py)",
    ("GET", "/ready"): "public readiness probe (test_ready.py)",
    ("POST", "/api/auth/signup"): "public: creates the caller (test_auth.py)",
    ("POST", "/api/auth/login"): "public: authenticates the caller (test_auth.py)",
    ("POST", "/api/auth/refresh"): "public: the refresh token is the credential (test_auth.py)",
    ("POST", "/api/auth/logout"): "public: the refresh token is the credential (test_auth.py)",
    (
        "POST",
        "/api/auth/password-reset",
    ): "public: the reset token is the credential (test_user_lifecycle.py)",
}


def _route_pattern(method: str, path: str) -> tuple[str, re.Pattern[str]]:
    """A route of the OpenAPI document as a pattern its concrete paths match."""
    parts = [r"[^/]+" if re.fullmatch(r"\{[^}]*\}", p) else re.escape(p) for p in path.split("/")]
    return method.upper(), re.compile("/".join(parts).rstrip("/") + "/?")


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "x", path)


def test_every_route_has_a_row_in_the_matrix(world: World) -> None:
    spec = world.api.ok(world.api.http.get("/schema/openapi.json"))
    routes = [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    rows = [(case.method, _concrete(case.path)) for case in CASES]
    exempt = [(method, _concrete(path)) for method, path in NOT_IN_MATRIX]

    def runs(route: tuple[str, str], requests: list[tuple[str, str]]) -> bool:
        method, pattern = _route_pattern(*route)
        return any(m == method and pattern.fullmatch(p) for m, p in requests)

    untested = [route for route in routes if not runs(route, rows + exempt)]
    assert not untested, f"routes with no row in CASES or NOT_IN_MATRIX: {untested}"
    stale = [
        key
        for key in NOT_IN_MATRIX
        if not any(runs(r, [(key[0], _concrete(key[1]))]) for r in routes)
    ]
    assert not stale, f"NOT_IN_MATRIX names routes that no longer exist: {stale}"
