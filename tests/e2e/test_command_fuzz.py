"""Issue 16: every command type, fuzzed from its msgspec schema through the real ``/ws``
command op and through its REST route (the operation whose operationId is its name).

The command types are every one a client can send (api/contexts.py) and their data is
generated from ``msgspec.inspect`` type information, so a command added later is fuzzed with
no change here. Each case is a plausible command (the world's own ids and names, so that it
reaches its handler and may succeed) with up to two hostile fields: a forbidden character
(NUL, a lone surrogate, a non-character, an ANSI escape, C1) slipped into a plausible value,
any text of all of Unicode (bidi controls, zero-width characters, right-to-left scripts), a
string at each length limit and one past it, huge and negative numbers, nesting 5,000 deep,
the wrong type; now and then a field no command has.

Each case ends in a refusal (an error frame or a 4xx problem) with the event count
unchanged, or in success: then every read model has caught up with the write (every GET
under /api of the OpenAPI document, asked to wait for its position, answers without a 5xx
or a 503) and the event itself is readable from the log. Never a 5xx, never a closed socket.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from api.contexts import CONTEXTS
from application.commands import Command, RegisterUser
from domain import rules
from tests.fixtures.chorus import (
    NOT_BY_REACTIONS,
    SHORT_LINGER,
    Running,
    User,
    wait_for_sessions_to_end,
)

pytestmark = [pytest.mark.security]

# Its tests wait for closed sockets' sessions to end: not a linger of 2 s each time.
CHORUS_SETTINGS = SHORT_LINGER

EXAMPLES = 12  # per command type and transport: 27 types x 2 x 12 cases, ~40 s in all
TIMEOUT = 10

# REST path parameters are short names of command fields.
PATH_FIELDS = {"ws": "workspace_id", "ch": "channel_id", "msg": "message_id",
               "doc": "document_id", "user": "user_id", "webhook": "webhook_id",
               "invite": "invite_id", "project": "project_id", "task": "task_id",
               "column": "column_id"}  # fmt: skip

LIMITS = sorted(
    {
        value
        for name, value in vars(rules).items()
        if name.startswith("MAX_") and isinstance(value, int) and value <= 64 * 1024
    }
)


def command_types() -> list[type[Command]]:
    """Every command a client can send: over ``/ws`` (the contexts' client commands) or,
    for sign-up, over REST only."""
    reachable: set[type[Command]] = {*CONTEXTS.client_commands.values(), RegisterUser}
    found = sorted(reachable, key=lambda cls: cls.__name__)
    assert len(found) >= 25 and all(issubclass(cls, Command) for cls in found)
    return found


# -- the world the commands act on -----------------------------------------------------------


@dataclass
class World:
    owner: User
    member: User
    names: list[str]  # every id and name a field may take to reach a handler
    by_field: dict[str, str]  # the one a field of that name takes most often
    gets: list[str]  # every GET of the OpenAPI document, its path filled in
    operations: dict[str, tuple[str, str, set[str]]]  # operationId: method, path, body fields


@dataclass
class People:
    owner: User
    member: User
    spec: dict[str, Any]  # the served OpenAPI document


@pytest.fixture(scope="module")
def people(chorus: Running) -> People:
    api = chorus.api
    owner, member = api.signup("fz_owner"), api.signup("fz_member")
    return People(owner, member, api.http.get("/schema/openapi.json").json())


@pytest.fixture
def world(chorus: Running, people: People) -> World:
    """One of everything, new for each command type: what one type's cases delete, archive
    or ban does not stop the next type's from reaching their handlers."""
    api, owner, member = chorus.api, people.owner, people.member
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Fuzz", "visibility": "public"}), 201)
    api.ok(api.post(f"/api/workspaces/{ws['id']}/join", member))
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "general"}), 201)
    msg = api.ok(api.post(f"/api/channels/{ch['id']}/messages", owner, {"text": "hi"}), 201)
    doc = api.ok(api.post(f"/api/workspaces/{ws['id']}/documents", owner, {"title": "d"}), 201)
    code = api.ok(api.post(f"/api/workspaces/{ws['id']}/invites", owner, {}), 201)["code"]
    # An invite's id (issue 20) is its code's SHA-256.
    invite_id = hashlib.sha256(code.encode()).hexdigest()
    role = {"name": "helpers", "permissions": ["send_messages"]}
    api.ok(api.post(f"/api/workspaces/{ws['id']}/roles", owner, role), 201)
    # A webhook (issue 19) at a public address, for an event type nothing here causes.
    hook_body = {"url": "https://93.184.215.14/fuzz", "event_types": ["WorkspaceCreated"]}
    hook = api.ok(api.post(f"/api/workspaces/{ws['id']}/webhooks", owner, hook_body), 201)
    # Issue 21: a project, with a task, another task to be its neighbour or parent.
    project = api.ok(api.post(f"/api/workspaces/{ws['id']}/projects", owner, {"name": "p"}), 201)
    task = api.ok(api.post(f"/api/projects/{project['id']}/tasks", owner, {"title": "t"}), 201)
    other = api.ok(api.post(f"/api/projects/{project['id']}/tasks", owner, {"title": "o"}), 201)
    ids = {"ws": ws["id"], "ch": ch["id"], "msg": msg["id"], "doc": doc["id"],
           "project": project["id"], "task": task["id"], "column": "todo",
           "user": member.user_id, "stream_id": ws["id"], "role": "helpers",
           "emoji": "👍", "code": code, "session_id": str(uuid.uuid4()),
           "target": "workspace", "target_id": ws["id"],
           "webhook": hook["id"], "username": member.username,
           "invite": invite_id}  # fmt: skip
    names = [*ids.values(), owner.user_id, "admin", "member", "viewer", "public"]
    by_field = {"workspace_id": ws["id"], "channel_id": ch["id"], "message_id": msg["id"],
                "reply_to": msg["id"], "document_id": doc["id"], "user_id": member.user_id,
                "role": "helpers", "emoji": "👍", "code": code, "username": "fz_newcomer",
                "password": "a good password", "visibility": "public",
                "permissions": "send_messages", "target": "workspace",
                "target_id": ws["id"], "webhook_id": hook["id"], "invite_id": invite_id,
                "confirm_name": "Fuzz", "project_id": project["id"], "task_id": task["id"],
                "column_id": "todo", "status": "done", "after_id": other["id"],
                "before_id": other["id"], "parent_id": other["id"],
                "access": "workspace"}  # fmt: skip
    spec = people.spec
    gets, operations = [], {}
    for template, methods in spec["paths"].items():
        path = template.format(**{n: ids[n] for n in re.findall(r"{(\w+)}", template)})
        for method, op in methods.items():
            # Reads of read models (not the probes, nor the hash chain's verification).
            if method == "get" and path.startswith("/api/") and path != "/api/audit/verify":
                gets.append(path)
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            fields = set(_properties(spec, body.get("schema", {})))
            operations[op["operationId"]] = (method.upper(), template, fields)
    return World(owner, member, names, by_field, gets, operations)


@pytest.fixture(scope="module")
def db(chorus: Running) -> Iterator[psycopg.Connection[Any]]:
    """One connection for the event counts of every case (a connection each costs more
    than the case)."""
    with psycopg.connect(chorus.database_url, autocommit=True) as conn:
        yield conn


def _properties(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return dict(schema.get("properties", {}))


# -- values generated from msgspec type information ------------------------------------------

POISON = ["\x00", "\ud800", "\udfff", "\ufdd0", "\uffff", "\U0010fffe", "\x1b[31m", "\x85",
          "\x7f", "\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\u2028", "\r\n",
          "\t"]  # fmt: skip
RTL = ["שלום", "مرحبا\u200f", "\u202egnp.exe", "a\u2067b\u2069c"]
PLAIN = ["fuzzed", "Ünïcödé, 日本語", "שלום", "👍 ok", "two\nlines"]


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(st.characters(codec=None), max_size=12),  # all of Unicode, surrogates too
        st.sampled_from(POISON + RTL + ["", " ", "\n"]),
        st.builds(lambda n, c: c * n, st.sampled_from(LIMITS).flatmap(
            lambda limit: st.sampled_from([limit, limit + 1])), st.sampled_from(["x", "é", "👍"])),
    )  # fmt: skip


@dataclass(frozen=True)
class Nested:
    """A value nested ``depth`` arrays deep (written out by ``wire``: json.dumps itself
    would recurse too deep)."""

    depth: int


DEEP = st.sampled_from([64, 5000]).map(Nested)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 60, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
)


def valid(kind: msgspec.inspect.Type, own: str | None, names: list[str]) -> st.SearchStrategy[Any]:
    """A plausible value of the msgspec type ``kind``: for a string, the world's own value
    for the field, else one of its names or an ordinary text."""
    if isinstance(kind, msgspec.inspect.StrType):
        return st.just(own) if own else st.sampled_from([*PLAIN, *names])
    if isinstance(kind, msgspec.inspect.IntType):
        return st.integers(1, 3600)
    if isinstance(kind, msgspec.inspect.BoolType):
        return st.booleans()
    if isinstance(kind, msgspec.inspect.NoneType):
        return st.none()
    if isinstance(kind, msgspec.inspect.ListType):
        return st.lists(valid(kind.item_type, own, names), min_size=1, max_size=2)
    if isinstance(kind, msgspec.inspect.DictType):
        return st.just({})
    if isinstance(kind, msgspec.inspect.UnionType):
        return st.one_of([valid(t, own, names) for t in kind.types])
    if isinstance(kind, msgspec.inspect.BytesType):
        return st.binary(max_size=16).map(lambda b: b.hex())
    raise AssertionError(f"a command field of a type this test cannot generate: {kind}")


def hostile(
    kind: msgspec.inspect.Type, own: str | None, names: list[str]
) -> st.SearchStrategy[Any]:
    """A hostile value for a field of type ``kind``: a forbidden character slipped into a
    plausible string, any text at all, huge or negative numbers, nesting, the wrong type."""
    typed: st.SearchStrategy[Any]
    if isinstance(kind, msgspec.inspect.StrType):
        slipped = st.tuples(valid(kind, own, names), st.sampled_from(POISON), st.integers(0, 2))
        typed = weighted(slipped.map(slip), slipped.map(slip), hostile_text())
    elif isinstance(kind, msgspec.inspect.IntType):
        typed = NUMBERS
    elif isinstance(kind, msgspec.inspect.ListType):
        item = weighted(valid(kind.item_type, own, names), hostile(kind.item_type, own, names))
        typed = st.lists(item, min_size=1, max_size=4)
    elif isinstance(kind, msgspec.inspect.DictType):
        typed = st.dictionaries(
            hostile(kind.key_type, own, names), hostile(kind.value_type, own, names), max_size=3
        )
    elif isinstance(kind, msgspec.inspect.UnionType):
        typed = st.one_of([hostile(t, own, names) for t in kind.types])
    else:
        typed = valid(kind, own, names)
    wrong = st.one_of(DEEP, NUMBERS, hostile_text(), st.none(), st.just([own]))
    return weighted(typed, typed, typed, wrong)


def slip(parts: tuple[str, str, int]) -> str:
    """``character`` at the start, in the middle or at the end of ``text``."""
    text, character, where = parts
    at = [0, len(text) // 2, len(text)][where]
    return text[:at] + character + text[at:]


def weighted(*choices: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One of ``choices``, each equally likely (``st.one_of`` favours the first, as the
    simplest); list one several times to weigh it."""
    return st.integers(0, len(choices) - 1).flatmap(lambda i: choices[i])


def command_data(cls: type[Command], world: World) -> st.SearchStrategy[dict[str, Any]]:
    """A plausible command of type ``cls`` (so it reaches its handler) in which up to two
    fields are hostile; now and then with a field no command has (mass assignment)."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f for f in info.fields}

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        spoiled = draw(st.sets(st.sampled_from(sorted(fields)), max_size=2))
        data: dict[str, Any] = {}
        for name, f in fields.items():
            own = world.by_field.get(name)
            if name in spoiled:
                data[name] = draw(hostile(f.type, own, world.names))
            elif f.required or draw(st.booleans()):
                data[name] = draw(valid(f.type, own, world.names))
        if draw(weighted(*[st.just(False)] * 7, st.just(True))):
            data["author_id"] = world.owner.user_id
        return data

    return build()


def wire(value: Any) -> str:
    """JSON as a client sends it: a lone surrogate travels as its ``\\ud800`` escape."""
    text = json.dumps(value, ensure_ascii=True, default=lambda v: f"<nested {v.depth}>")
    return re.sub(r'"<nested (\d+)>"', lambda m: "[" * int(m[1]) + "1" + "]" * int(m[1]), text)


# -- checking each case ----------------------------------------------------------------------


class Checker:
    def __init__(self, chorus: Running, world: World, db: psycopg.Connection[Any]) -> None:
        self.chorus, self.world, self.db = chorus, world, db
        self.outcomes: dict[str, int] = {}

    def events(self) -> int:
        row = self.db.execute(
            f"SELECT count(*) FROM chorus_events WHERE {NOT_BY_REACTIONS}"
        ).fetchone()
        assert row is not None
        return int(row[0])

    def refused(self, label: str, before: int) -> None:
        self.outcomes["refused"] = self.outcomes.get("refused", 0) + 1
        assert self.events() == before, f"{label}: refused, yet events were appended"

    def succeeded(self, label: str, position: int | None, before: int) -> None:
        self.outcomes["ok"] = self.outcomes.get("ok", 0) + 1
        if position is None:
            assert self.events() == before, f"{label}: no position, yet events were appended"
            return
        http, headers = self.chorus.api.http, self.world.owner.headers
        for path in self.world.gets:
            r = http.get(path, params={"min_position": position}, headers=headers)
            assert r.status_code < 500, (label, path, r.status_code, r.text[:200])
        r = http.get("/api/events", params={"after": position - 1, "min_position": position},
                     headers=headers)  # fmt: skip
        assert r.status_code == 200, (label, r.status_code, r.text[:200])
        # The event itself, when the owner may audit it (not another user's sign-up).
        items = r.json()["items"]
        assert not items or items[0]["position"] == position, items[0]


@contextmanager
def ws_of(chorus: Running, user: User) -> Iterator[ClientConnection]:
    url = chorus.server.url.replace("http", "ws", 1) + f"/ws?token={user.access_token}"
    with connect(url, open_timeout=TIMEOUT, max_size=None) as ws:
        yield ws


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the working tree
    derandomize=True,  # the same cases on every run: CI is reproducible
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, unshrunk
)


@pytest.mark.parametrize("cls", command_types(), ids=lambda cls: cls.__name__)
def test_every_command_over_ws_is_refused_or_caught_up(
    chorus: Running, world: World, db: psycopg.Connection[Any], cls: type[Command]
) -> None:
    checker = Checker(chorus, world, db)
    frame_ids = itertools.count()
    wait_for_sessions_to_end(chorus.database_url)
    # One socket per command type: the examples stay within its burst of frames.
    with ws_of(chorus, world.owner) as ws:
        # Answered once the socket's session is in the log: counts start after it.
        ws.send(json.dumps({"op": "ping"}))
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"op": "pong"}

        @FUZZ
        @given(data=command_data(cls, world), frame_id=weighted(
            *[st.none()] * 5, hostile_text()))  # fmt: skip
        def case(data: dict[str, Any], frame_id: str | None) -> None:
            # The id is the command's idempotency key: unique, unless a hostile one.
            fid = f"{cls.__name__}-{next(frame_ids)}" if frame_id is None else frame_id
            before = checker.events()
            ws.send(wire({"op": "command", "id": fid, "type": cls.__name__, "data": data}))
            answer = json.loads(ws.recv(timeout=TIMEOUT))
            if answer["op"] == "error":
                assert 400 <= answer["status"] < 500, answer
                checker.refused(cls.__name__, before)
            else:
                assert answer["op"] == "ack", answer
                checker.succeeded(cls.__name__, answer["position"], before)

        case()
        ws.send(json.dumps({"op": "ping"}))
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"op": "pong"}
    print(cls.__name__, "over /ws:", checker.outcomes)


@pytest.mark.parametrize("cls", command_types(), ids=lambda cls: cls.__name__)
def test_every_command_over_rest_is_refused_or_caught_up(
    chorus: Running, world: World, db: psycopg.Connection[Any], cls: type[Command]
) -> None:
    """The same through the REST route whose operationId is the command's name (sign-up for
    ``RegisterUser``): its path parameters and body are taken from the command's fields."""
    name = "Signup" if cls.__name__ == "RegisterUser" else cls.__name__
    assert name in world.operations, f"{cls.__name__} has no REST route"
    method, template, body_fields = world.operations[name]
    params = re.findall(r"{(\w+)}", template)
    fields = {f.name for f in msgspec.structs.fields(cls)}
    assert {PATH_FIELDS.get(p, p) for p in params} <= fields, (template, fields)
    checker = Checker(chorus, world, db)
    wait_for_sessions_to_end(chorus.database_url)

    @FUZZ
    @given(data=command_data(cls, world))
    def case(data: dict[str, Any]) -> None:
        path = template.format(
            **{p: quote(str(data.get(PATH_FIELDS.get(p, p), "")), safe="",
                        errors="surrogatepass") for p in params}
        )  # fmt: skip
        # A path no HTTP client sends (httpx refuses URLs past 64 KiB) tests nothing here.
        assume(len(path) < 16_000)
        # The body: the fields the route's body declares, and whatever is not a field at all.
        body = {k: v for k, v in data.items() if k in body_fields or k not in fields}
        before = checker.events()
        r = chorus.api.http.request(
            method,
            path,
            content=wire(body) if body_fields else None,
            headers={**world.owner.headers, "content-type": "application/json"},
        )
        assert r.status_code < 500, (path, body, r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/problem+json"), r.text
            checker.refused(cls.__name__, before)
        else:
            answer = r.json() if r.content else {}
            checker.succeeded(cls.__name__, answer.get("position"), before)
            if "access_token" in answer:  # a sign-up: the new user reads themselves
                me = chorus.api.http.get(
                    "/api/auth/me",
                    params={"min_position": answer["position"]},
                    headers={"Authorization": f"Bearer {answer['access_token']}"},
                )
                assert me.status_code == 200, me.text

    case()
    print(cls.__name__, "over REST:", checker.outcomes)
