"""Bad input gets a clear 4xx problem and appends nothing."""

from __future__ import annotations

import json
import sys
import time
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.fixtures.chorus import SHORT_LINGER, TEST_SECRET, Running, User, wait_for_sessions_to_end

# Its tests wait for closed sockets' sessions to end: not a linger of 2 s each time.
CHORUS_SETTINGS = SHORT_LINGER

PROBLEM = "application/problem+json"


@dataclass
class World:
    owner: User
    member: User
    outsider: User
    workspace: str
    channel: str
    message: str
    document: str
    # Issue 21: a project of the workspace, and a task on its board.
    project: str
    task: str


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
    doc = api.ok(api.post(f"/api/workspaces/{ws['id']}/documents", owner, {"title": "d"}), 201)
    project = api.ok(api.post(f"/api/workspaces/{ws['id']}/projects", owner, {"name": "P"}), 201)
    task = api.ok(api.post(f"/api/projects/{project['id']}/tasks", owner, {"title": "T"}), 201)
    yield World(
        owner, member, outsider, ws["id"], ch["id"], msg["id"], doc["id"], project["id"], task["id"]
    )


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


# -- hostile text (issue 16, finding 1): refused at the boundary, nothing appended ------------

# Every code point the character rule refuses in a one-line text, as a family: C0 (ANSI
# escapes start with ESC, U+001B), DEL, C1, the 32 non-characters U+FDD0..U+FDEF and the two
# at the end of each of the 17 planes. PostgreSQL refuses NUL in text and jsonb: a stored
# event holding one wedges every read model, forever.
FORBIDDEN_ONE_LINE = (
    [chr(c) for c in range(0x20)]
    + ["\x7f"]
    + [chr(c) for c in range(0x80, 0xA0)]
    + [chr(c) for c in range(0xFDD0, 0xFDF0)]
    + [chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF)]
)


def test_reactions_with_forbidden_characters_are_refused(chorus: Running, world: World) -> None:
    """The reproduced poison: ``PUT /api/messages/{id}/reactions/%00`` was committed."""
    before = chorus.events()
    accepted = []
    for character in FORBIDDEN_ONE_LINE:
        for emoji in (character, f"\N{THUMBS UP SIGN}{character}"):
            path = f"/api/messages/{world.message}/reactions/{quote(emoji, safe='')}"
            for r in (chorus.api.put(path, world.member), chorus.api.delete(path, world.member)):
                if r.status_code != 422:
                    accepted.append((f"U+{ord(character):04X}", r.request.method, r.status_code))
                else:
                    assert_problem(r, 422, "emoji")
    assert not accepted
    assert chorus.events() == before


def test_forbidden_idempotency_keys_are_refused(chorus: Running, world: World) -> None:
    """The key is stored beside the events (and echoed on /ws): the same rule as any text.
    What of the family a header can carry to the application (the HTTP parsers refuse the
    other C0 characters and DEL) is tab and C1."""
    before = chorus.events()
    path = f"/api/channels/{world.channel}/messages"
    for character in ["\t", *map(chr, range(0x80, 0xA0))]:
        key = f"key{character}1".encode("latin-1")
        r = chorus.api.post(path, world.member, {"text": "x"}, headers={"Idempotency-Key": key})
        assert_problem(r, 422, "Idempotency-Key")
    assert chorus.events() == before


@pytest.mark.parametrize(
    "subject",
    ["\x00", "not-a-uuid", "0", " ", "{00000000-0000-0000-0000-000000000000}", "A" * 36],
)
def test_a_token_whose_subject_is_not_a_user_id_is_refused(
    chorus: Running, world: World, subject: str
) -> None:
    """A token signed with the server's key but naming no user id (a bug in another issuer
    sharing the secret, or a leaked key) must not reach the log: on /ws it appended a
    ``SessionStarted`` whose actor was that subject."""
    now = int(time.time())
    claims = {
        "iss": "chorus", "aud": "chorus-api", "sub": subject, "iat": now, "nbf": now,
        "exp": now + 600, "jti": uuid.uuid4().hex, "typ": "access",
    }  # fmt: skip
    token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    before = chorus.events()
    r = chorus.api.http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(r, 401, "sub")
    with ws_connect(chorus, token) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.send(json.dumps({"op": "ping"}))
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert chorus.events() == before


@contextmanager
def ws_connect(chorus: Running, token: str) -> Iterator[ClientConnection]:
    url = chorus.server.url.replace("http", "ws", 1) + f"/ws?token={token}"
    with connect(url, open_timeout=10) as ws:
        yield ws


def test_forbidden_command_ids_on_ws_get_an_error_frame(chorus: Running, world: World) -> None:
    """A /ws command id is an idempotency key: NUL in one closed the socket with 4500."""
    wait_for_sessions_to_end(chorus.database_url)
    with psycopg.connect(chorus.database_url) as conn:
        row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM chorus_events").fetchone()
    before = row[0] if row else 0
    per_socket = 90  # within a connection's burst of frames
    batches = [
        FORBIDDEN_ONE_LINE[i : i + per_socket]
        for i in range(0, len(FORBIDDEN_ONE_LINE), per_socket)
    ]
    for batch in batches:
        with ws_connect(chorus, world.member.access_token) as ws:
            for character in batch:
                data = {"channel_id": world.channel, "text": "x"}
                frame = {"op": "command", "id": f"id{character}", "type": "SendMessage"}
                ws.send(json.dumps({**frame, "data": data}))
                answer = json.loads(ws.recv(timeout=10))
                assert answer["op"] == "error" and answer["status"] == 422, (character, answer)
                assert "command id" in answer["detail"], answer
            ws.send(json.dumps({"op": "ping"}))
            assert json.loads(ws.recv(timeout=10)) == {"op": "pong"}
    wait_for_sessions_to_end(chorus.database_url)
    # Only the sockets' presence sessions, started and ended (one user's sockets on one
    # instance share a session while they follow each other closely).
    with psycopg.connect(chorus.database_url) as conn:
        topics = conn.execute(
            "SELECT topic FROM chorus_events WHERE notification_id > %s", (before,)
        ).fetchall()
    appended = sorted({topic.rsplit(".", 1)[-1] for (topic,) in topics})
    assert appended == ["SessionEnded", "SessionStarted"], appended


# -- never a 500 for bad input, never 4500 (issue 16, finding 6) ------------------------------

NESTED = 20_000  # far past any parser's recursion limit, well under the body limit


def _nested(depth: int) -> list[bytes]:
    """JSON nested ``depth`` deep, as each kind of container, alone and inside an object."""
    arrays = b"[" * depth + b"]" * depth
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    return [arrays, objects, b'{"text":' + arrays + b"}", b'{"name":' + objects + b"}"]


# Not UTF-8: a stray continuation byte, a byte that never occurs, an encoded surrogate, an
# overlong "/", a truncated sequence; then an escaped lone surrogate, which is valid UTF-8
# but not a string.
BAD_UTF8 = [
    b'{"text": "\x80"}',
    b'{"name": "\xff", "username": "\xff", "password": "\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe"}',
    b'{"text": "\xed\xa0\x80"}',
    b'{"title": "\xc0\xaf"}',
    b'{"name": "\xe2\x82"}',
    b'{"text": "\\ud800"}',
]

NOT_JSON = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "application/xml",
    "application/octet-stream",
    "application/jsonx",
    None,  # no Content-Type at all
]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # with the world's ids in its path parameters
    template: str
    body: bool
    query: list[tuple[str, str]]  # name and schema type ("integer", "string")
    path_parameters: list[str]


def operations(chorus: Running, world: World) -> list[Operation]:
    """Every operation the served OpenAPI document declares, its path filled with the world's
    ids, so each request reaches its handler."""
    spec = chorus.api.http.get("/schema/openapi.json").json()
    ids = path_ids(world)
    found = []
    for template, methods in spec["paths"].items():
        for method, op in methods.items():
            params = op.get("parameters", [])
            query = [(p["name"], _type(p.get("schema", {}))) for p in params if p["in"] == "query"]
            names = [p["name"] for p in params if p["in"] == "path"]
            assert set(names) <= set(ids), f"no id for a path parameter of {template}"
            path = template.format(**{name: ids[name] for name in names})
            found.append(
                Operation(method.upper(), path, template, "requestBody" in op, query, names)
            )
    assert len(found) >= 45 and sum(op.body for op in found) >= 15
    return found


def _type(schema: dict[str, Any]) -> str:
    types = [schema.get("type")] + [s.get("type") for s in schema.get("oneOf", [])]
    return "integer" if "integer" in types else "string"


def test_bodies_that_are_not_json_are_4xx_on_every_route(chorus: Running, world: World) -> None:
    """Too deeply nested, not UTF-8: a problem (400), never a 500, on every route that takes
    a body, sign-up included (no token needed)."""
    before = chorus.events()
    wrong = []
    for op in operations(chorus, world):
        if not op.body:
            continue
        for body in [*_nested(NESTED), *BAD_UTF8]:
            r = chorus.api.http.request(
                op.method,
                op.path,
                content=body,
                headers={**world.owner.headers, "content-type": "application/json"},
            )
            if r.status_code != 400 or not r.headers["content-type"].startswith(PROBLEM):
                wrong.append((op.method, op.template, body[:24], r.status_code, r.text[:80]))
    assert not wrong, wrong
    assert chorus.events() == before


def test_non_json_content_types_are_415_on_every_route(chorus: Running, world: World) -> None:
    """A body is JSON or refused: a form or a text/plain body (what a cross-site form can
    send without a CORS preflight) is not parsed as JSON."""
    before = chorus.events()
    wrong = []
    for op in operations(chorus, world):
        if not op.body:
            continue
        for content_type in NOT_JSON:
            headers = dict(world.owner.headers)
            if content_type is not None:
                headers["content-type"] = content_type
            r = chorus.api.http.request(op.method, op.path, content=b"{}", headers=headers)
            if r.status_code != 415 or not r.headers["content-type"].startswith(PROBLEM):
                wrong.append((op.method, op.template, content_type, r.status_code, r.text[:80]))
    assert not wrong, wrong
    assert chorus.events() == before


# Numbers no position, cursor or limit can be: past a PostgreSQL bigint, negative, absurdly
# long, not ASCII digits (str.isdigit() takes "²" and "٣", int() refuses "²").
OUT_OF_RANGE = [str(2**63), str(2**64), str(-(2**63) - 1), "-1", "9" * 5000, "\u00b2", "\u0663"]
ODD = ["\x00", "1e400", "NaN", " 1", "1 ", "0x10", "", "\ufdd0", "\U0010ffff"]


def test_query_parameters_out_of_range_are_4xx_on_every_route(
    chorus: Running, world: World
) -> None:
    """Every query parameter of every operation: numbers out of range are refused (4xx) and
    nothing else answers 5xx. Only GETs take query parameters: nothing can be appended."""
    wrong = []
    for op in operations(chorus, world):
        for name, kind in op.query:
            numeric = kind == "integer" or name in ("before", "after")
            for value in OUT_OF_RANGE + ODD:
                r = chorus.api.http.request(
                    op.method, op.path, params={name: value}, headers=world.owner.headers
                )
                refused = 400 <= r.status_code < 500
                if r.status_code >= 500 or (numeric and value in OUT_OF_RANGE and not refused):
                    wrong.append((op.template, name, value, r.status_code, r.text[:80]))
    assert not wrong, wrong


def test_forbidden_path_parameters_are_4xx_on_every_route(chorus: Running, world: World) -> None:
    """Each path parameter of each operation, one at a time, holding a character of the
    forbidden family (the others name real objects): 4xx, nothing appended."""
    before = chorus.events()
    wrong = []
    for op in operations(chorus, world):
        for name in op.path_parameters:
            for value in ["\x00", "a\x1b[0m", "\ufdd0", "\U0001ffff", "x\x85"]:
                ids = {**path_ids(world), name: quote(value, safe="")}
                path = op.template.format(**{n: ids[n] for n in op.path_parameters})
                r = chorus.api.http.request(op.method, path, headers=world.owner.headers)
                if not 400 <= r.status_code < 500:
                    wrong.append((op.method, op.template, name, value, r.status_code))
    assert not wrong, wrong
    assert chorus.events() == before


def path_ids(world: World) -> dict[str, str]:
    """What each path parameter of the API names, in the world."""
    return {
        "ws": world.workspace, "ch": world.channel, "msg": world.message,
        "doc": world.document, "user": world.member.user_id, "stream_id": world.workspace,
        "role": "admin", "emoji": "x", "code": "no-such-code",
        "session_id": "00000000-0000-4000-8000-000000000000",
        "target": "workspace", "target_id": world.workspace,
        "webhook": "00000000-0000-4000-8000-000000000001", "username": world.member.username,
        # Issue 20: an invite's id is its code's SHA-256 (this one names none).
        "invite": "0" * 64,
        "project": world.project, "task": world.task, "column": "todo",
    }  # fmt: skip


def test_if_match_that_is_not_a_version_is_4xx(chorus: Running, world: World) -> None:
    before = chorus.events()
    # A header is Latin-1: "²" is what it can carry of the digits int() refuses.
    for value in [str(2**63), str(2**64), "-1", 'W/"\u00b2"', "1\u00b2", '"12\u00b2"']:
        r = chorus.api.patch(
            f"/api/messages/{world.message}",
            world.owner,
            {"text": "changed?"},
            headers={"If-Match": value.encode("latin-1")},
        )
        assert_problem(r, 422, "If-Match")
    assert chorus.events() == before


def test_ws_frames_nested_too_deep_get_an_error_frame(chorus: Running, world: World) -> None:
    """A frame nested past the parser's limit closed the socket with 4500."""
    wait_for_sessions_to_end(chorus.database_url)
    before = chorus.events()
    depth = 30_000  # within the 64 KiB frame limit
    arrays = "[" * depth + "]" * depth
    frames_sent = [
        arrays,
        '{"op":"ping","x":' + arrays + "}",
        '{"op":"command","id":"1","type":"SendMessage","data":{"text":' + arrays + "}}",
        '{"op":"signal","workspace":"w","kind":"typing","data":{"a":' + arrays + "}}",
        '{"op":"subscribe","sub":"s","streams":[' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "]}",
        '{"op":"command","id":"\\ud800","type":"SendMessage","data":{}}',
    ]
    with ws_connect(chorus, world.member.access_token) as ws:
        for frame in frames_sent:
            ws.send(frame)
            answer = json.loads(ws.recv(timeout=10))
            assert answer["op"] == "error" and answer["status"] in (400, 422), answer
        # A signal just within the parser's depth is relayed (encoded again, one level
        # deeper): around the limit, each is relayed (no answer) or refused, never a 4500.
        for depth in range(960, 1000, 4):
            data = '{"a":' + "[" * depth + "]" * depth + "}"
            ws.send(
                f'{{"op":"signal","workspace":"{world.workspace}","kind":"typing","data":{data}}}'
            )
        ws.send(json.dumps({"op": "ping"}))
        while (answer := json.loads(ws.recv(timeout=10))) != {"op": "pong"}:
            assert answer["op"] == "error" and answer["status"] in (400, 422), answer
        ws.send(json.dumps({"op": "ping"}))
        assert json.loads(ws.recv(timeout=10)) == {"op": "pong"}
    wait_for_sessions_to_end(chorus.database_url)
    assert chorus.events() == before + 2  # the socket's own session started and ended


# -- display names that impersonate (issue 16, finding 7) -------------------------------------


def _every(*categories: str) -> list[str]:
    return [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in categories]


def test_display_names_that_hide_or_reorder_are_refused(chorus: Running) -> None:
    """Every format character (bidi overrides and isolates, zero-width spaces and joiners,
    the BOM...), line and paragraph separators, invisible fillers and control characters
    (ANSI escapes): 422 at sign-up, nothing appended."""
    before = chorus.events()
    hiding = [*_every("Cf", "Zl", "Zp", "Cc"), "\u115f", "\u1160", "\u3164", "\uffa0"]
    accepted = []
    for character in hiding:
        body = {
            "username": f"disp_{uuid.uuid4().hex[:10]}",
            "password": "a good password",
            "display_name": f"Ad{character}min",
        }
        r = chorus.api.http.post("/api/auth/signup", json=body)
        if r.status_code != 422 or "display_name" not in r.json()["detail"]:
            accepted.append((f"U+{ord(character):04X}", r.status_code))
    assert not accepted, accepted
    assert chorus.events() == before


def test_a_display_name_reading_as_another_users_username_is_refused(chorus: Running) -> None:
    victim = chorus.api.signup("victim")
    name = victim.username
    full_width = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in name.upper())
    before = chorus.events()
    for display_name in [name, name.upper(), f" {name.title()} ", full_width]:
        body = {
            "username": f"imp_{uuid.uuid4().hex[:10]}",
            "password": "a good password",
            "display_name": display_name,
        }
        r = chorus.api.http.post("/api/auth/signup", json=body)
        assert_problem(r, 409, "display_name")
    assert chorus.events() == before
    # One's own username, in any case, is one's own; NFKC is what is stored and shown.
    own = f"own_{uuid.uuid4().hex[:10]}"
    body = {"username": own, "password": "a good password", "display_name": own.upper()}
    assert chorus.api.http.post("/api/auth/signup", json=body).status_code == 201
    body = {
        "username": f"nfkc_{uuid.uuid4().hex[:10]}",
        "password": "a good password",
        "display_name": "\uff27\uff52\uff41\uff43\uff45 \u2163",
    }
    signed_up = chorus.api.ok(chorus.api.http.post("/api/auth/signup", json=body), 201)
    me = chorus.api.http.get(
        "/api/auth/me",
        params={"min_position": signed_up["position"]},
        headers={"Authorization": f"Bearer {signed_up['access_token']}"},
    )
    assert chorus.api.ok(me)["display_name"] == "Grace IV"


# -- names that hide, reorder or spill over (the name rule) -----------------------------------

NAME_FIELDS = ("name", "title", "display_name")
# One of each kind the name rule refuses (tests/unit/test_name_rule.py walks every code point).
HIDING_NAMES = [
    "Ad\u202emin",  # right-to-left override
    "Ad\u2067min\u2069",  # isolate
    "Ad\u200bmin",  # zero-width space
    "Ad\u200dmin",  # a joiner between letters
    "Admin\U000e0041\U000e0042",  # tags: invisible ASCII
    "Ad\u2028min",  # line separator
    "\u3164",  # a filler that shows nothing
    "Z" + "\u0336" * 12 + "algo",  # stacked combining marks
]


def _body_schema(spec: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = op["requestBody"]["content"]["application/json"]["schema"]
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_names_that_hide_or_reorder_are_refused_on_every_route(
    chorus: Running, world: World
) -> None:
    """Every operation whose body has a name field (found in the OpenAPI document, so a new
    route is covered as it is declared), with a name of each refused kind: 422 naming the
    field, nothing appended."""
    spec = chorus.api.http.get("/schema/openapi.json").json()
    ids = path_ids(world)
    tried, wrong = set(), []
    before = chorus.events()
    for template, methods in spec["paths"].items():
        for method, op in methods.items():
            if "requestBody" not in op:
                continue
            schema = _body_schema(spec, op)
            properties = schema.get("properties", {})
            for field in (f for f in NAME_FIELDS if f in properties):
                names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
                path = template.format(**{name: ids[name] for name in names})
                for hostile in HIDING_NAMES:
                    body: dict[str, Any] = {
                        "username": f"nm_{uuid.uuid4().hex[:10]}",
                        "password": "a good password",
                        "permissions": [],
                    }
                    body = {k: v for k, v in body.items() if k in schema.get("required", [])}
                    body[field] = hostile
                    r = chorus.api.http.request(
                        method.upper(), path, json=body, headers=world.owner.headers
                    )
                    tried.add((method.upper(), template, field))
                    if r.status_code != 422 or field not in r.json().get("detail", ""):
                        wrong.append((method, template, field, hostile, r.status_code, r.text[:90]))
    assert not wrong, wrong
    assert chorus.events() == before
    # sign-up, workspace, channel (create and rename), document (create and rename), role
    assert len(tried) >= 7, tried
