"""Fuzzing ``/yjs/{doc}`` with hostile updates (issue #7, item 11), against a running server.

Hypothesis sends random bytes and mutated real updates (tests/unit/test_yjs_fuzz.py builds
both) as sync-update frames to a document with content. Each frame must be refused cleanly
(close 4400, or a sync step 1 asking the client to resync while the connection stays
usable) or accepted; either way the server keeps answering. Whether anything was appended
is read from the log: after each frame a second user (the sentinel) sends an update of its
own, and the document's events up to the sentinel's are collected from a ``/ws``
subscription. Editors' updates are saved in the order they arrive, one event per run of
one user's updates, so every event the fuzzed frame caused comes before the sentinel's.
"""

from __future__ import annotations

import json
import resource
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from domain import yjs_protocol as protocol
from domain.documents import MAX_ROOT_NAME, MAX_ROOTS
from domain.yjs_update import inspect_update
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Running, User, running_chorus
from tests.fixtures.yjs import map_set_update, text_insert_update, unstamped
from tests.fixtures.yjs_corpus import BASE_STATE, CORPUS, mutated

pytestmark = pytest.mark.security

TIMEOUT = 10
EMPTY_STATE_VECTOR = b"\x00"


@dataclass
class Target:
    chorus: Running
    fuzzer: User
    sentinel: User
    document_id: str
    events: ClientConnection
    sentinel_keys: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    # The log position of the last sentinel's update.
    position: int = 0

    @property
    def yjs_url(self) -> str:
        return self.chorus.server.url.replace("http", "ws", 1) + f"/yjs/{self.document_id}"


def _saved_until_sentinel(target: Target) -> list[dict[str, Any]]:
    """Sends a sentinel update as the other user and returns the document's events saved
    before it (the sentinel's own excluded)."""
    key = f"k{uuid.uuid4().hex[:8]}"
    doc: Doc[Any] = Doc()
    doc.get("sentinel", type=Map)[key] = len(target.sentinel_keys)
    with connect(f"{target.yjs_url}?token={target.sentinel.access_token}") as ws:
        ws.send(protocol.sync_update(doc.get_update()))
        # Answered in order: once the step 2 is back, the update was taken.
        _until_step2(ws)
    target.sentinel_keys.append(key)
    before: list[dict[str, Any]] = []
    while True:
        frame = json.loads(target.events.recv(timeout=TIMEOUT))
        assert frame["op"] == "event", frame
        event = frame["event"]
        assert event["type"] == "DocumentUpdateApplied", event
        if event["actor"] == target.sentinel.user_id:
            target.position = event["position"]
            return before
        before.append(event)


def _until_step2(ws: ClientConnection) -> list[protocol.Message]:
    """Sends sync step 1 (an empty state vector) and reads up to the step 2 answering it;
    returns what came before it."""
    ws.send(protocol.sync_step1(EMPTY_STATE_VECTOR))
    seen: list[protocol.Message] = []
    while True:
        data = ws.recv(timeout=TIMEOUT)
        assert isinstance(data, bytes), data
        message = protocol.parse(data)
        if message.kind == protocol.MESSAGE_SYNC and message.sync_type == protocol.SYNC_STEP2:
            inspect_update(message.payload)  # what the server answers is a valid update
            return seen
        seen.append(message)


@pytest.fixture(scope="module")
def target(
    postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    # A short flush window: each sentinel is saved within milliseconds.
    with running_chorus(
        postgres_server, tmp_path_factory.mktemp("yjs-fuzz"), document_flush_s=0.01
    ) as chorus:
        api = chorus.api
        fuzzer, sentinel = api.signup("fuzzer"), api.signup("sentinel")
        ws = api.ok(api.post("/api/workspaces", fuzzer, {"name": "f", "visibility": "public"}), 201)
        api.ok(api.post(f"/api/workspaces/{ws['id']}/join", sentinel, {}))
        doc = api.ok(api.post(f"/api/workspaces/{ws['id']}/documents", fuzzer, {"title": "d"}), 201)
        url = chorus.server.url.replace("http", "ws", 1)
        with connect(f"{url}/ws?token={fuzzer.access_token}", open_timeout=TIMEOUT) as events:
            events.send(
                json.dumps({"op": "subscribe", "sub": "d", "streams": [{"document": doc["id"]}]})
            )
            assert json.loads(events.recv(timeout=TIMEOUT))["op"] == "subscribed"
            t = Target(chorus, fuzzer, sentinel, str(doc["id"]), events)
            # The content every mutated edit of the corpus builds on.
            with connect(f"{t.yjs_url}?token={fuzzer.access_token}") as editor:
                editor.send(protocol.sync_update(BASE_STATE))
                _until_step2(editor)
            saved = _saved_until_sentinel(t)
            assert [e["actor"] for e in saved] == [fuzzer.user_id]
            yield t


def _frame(data: bytes, outer: int | None) -> bytes:
    """A sync-update frame; ``outer`` replaces its length prefix (a lying frame)."""
    if outer is None:
        return protocol.sync_update(data)
    return (
        bytes((protocol.MESSAGE_SYNC, protocol.SYNC_UPDATE)) + protocol.write_var_uint(outer) + data
    )


def _send_hostile(target: Target, frame: bytes) -> str:
    """Sends one frame as an editor; returns "closed 4400", "resync" or "taken"."""
    with connect(f"{target.yjs_url}?token={target.fuzzer.access_token}") as ws:
        data = ws.recv(timeout=TIMEOUT)
        assert isinstance(data, bytes), data
        first = protocol.parse(data)  # the server's step 1 on joining
        assert (first.kind, first.sync_type) == (protocol.MESSAGE_SYNC, protocol.SYNC_STEP1)
        ws.send(frame)
        try:
            before_answer = _until_step2(ws)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            assert closed.rcvd.code == 4400, (closed.rcvd.code, closed.rcvd.reason, frame.hex())
            return "closed 4400"
        kinds = {(m.kind, m.sync_type) for m in before_answer}
        assert kinds <= {(protocol.MESSAGE_SYNC, protocol.SYNC_STEP1)}, kinds
        return "resync" if kinds else "taken"


FRAMES = st.tuples(
    st.one_of(
        mutated(),
        mutated(),
        mutated(),
        st.binary(max_size=256),
        # Honest edits between the hostile ones, as in a real session.
        st.sampled_from(CORPUS),
    ),
    # Mostly honest framing; sometimes a length prefix that lies about the update's size.
    st.one_of(st.none(), st.none(), st.none(), st.none(), st.integers(0, 1 << 40)),
)
EXAMPLES = 120


def _fuzz_one(target: Target, data: bytes, outer: int | None) -> None:
    outcome = _send_hostile(target, _frame(data, outer))
    target.outcomes[outcome] = target.outcomes.get(outcome, 0) + 1
    saved = _saved_until_sentinel(target)
    by_fuzzer = [e for e in saved if e["actor"] == target.fuzzer.user_id]
    assert len(saved) == len(by_fuzzer), saved  # nobody else writes to the document
    if outcome == "taken":
        # Applied (one event) or a no-op (none).
        assert len(by_fuzzer) <= 1, by_fuzzer
    else:
        assert by_fuzzer == [], (outcome, data.hex())


def test_hostile_updates_are_refused_cleanly_or_taken(target: Target) -> None:
    """Each hostile frame is refused with 4400, answered with a resync, or taken; a refused
    one appends nothing. Afterwards the server is ready, the stored document is a valid
    update holding every sentinel's key, and the document still takes and saves an edit."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=FRAMES)
    def fuzz(case: tuple[bytes, int | None]) -> None:
        _fuzz_one(target, *case)

    fuzz()
    # Not vacuous: both clean refusals and accepted updates were met.
    assert {"closed 4400", "taken"} <= set(target.outcomes), target.outcomes
    assert sum(target.outcomes.values()) >= EXAMPLES, target.outcomes

    api = target.chorus.api
    assert api.http.get("/ready").status_code == 200
    shown = api.ok(api.get(f"/api/documents/{target.document_id}", target.fuzzer))
    assert set(target.sentinel_keys) <= set(shown["content"]["sentinel"]), shown["content"]
    stored = api.http.get(
        f"/api/documents/{target.document_id}/update", headers=target.fuzzer.headers
    )
    assert stored.status_code == 200
    inspect_update(stored.content)
    replica: Doc[Any] = Doc()
    replica.apply_update(stored.content)
    assert set(target.sentinel_keys) <= set(replica.get("sentinel", type=Map).keys())

    # The live copy still takes a well-formed edit, and saves it.
    doc: Doc[Any] = Doc()
    doc.get("after", type=Map)["ok"] = True
    with connect(f"{target.yjs_url}?token={target.fuzzer.access_token}") as ws:
        ws.recv(timeout=TIMEOUT)
        ws.send(protocol.sync_update(doc.get_update()))
        assert _until_step2(ws) == []
    saved = _saved_until_sentinel(target)
    assert [e["actor"] for e in saved] == [target.fuzzer.user_id]


@pytest.mark.parametrize(
    "frame",
    [
        protocol.sync_update(bytes.fromhex("8080808001")),  # yrs would reserve ~0.5 GB
        protocol.sync_update(b"\x01" + b"\xff" * 9 + b"\x01"),  # a ten-byte struct count
        protocol.sync_update(b"\x01\x01" + b"\xff" * 7 + b"\x10\x00"),  # client 2**53 + …
        _frame(CORPUS[1], 1 << 30),  # a length prefix of a gigabyte
    ],
    ids=["half-gigabyte count", "struct count past 2**53", "client past 2**53", "lying length"],
)
def test_costly_frames_are_refused_within_bounded_memory(target: Target, frame: bytes) -> None:
    """Frames that cost memory if read naively: closed with 4400, nothing appended, and the
    server's peak memory (this process: it runs in a thread here) grows by < 64 MiB."""
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(3):
        assert _send_hostile(target, frame) == "closed 4400"
        assert _saved_until_sentinel(target) == []
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak_after - peak_before < 64 * 1024, (peak_before, peak_after)


# -- names and awareness states that could wedge the read side (issue 16, finding 1) ----------


def _poisoned(text: str) -> bool:
    """What the read side cannot take (PostgreSQL text/jsonb refuse NUL; lone surrogates are
    not UTF-8) or no text should hold (non-characters): the test's own statement of the rule,
    written independently of the server's."""
    return any(
        ord(c) == 0
        or 0xD800 <= ord(c) <= 0xDFFF
        or 0xFDD0 <= ord(c) <= 0xFDEF
        or ord(c) & 0xFFFE == 0xFFFE
        for c in text
    )


def _raw(text: str) -> bytes:
    """UTF-8, except that a lone surrogate becomes the three bytes a careless encoder writes
    (which are not UTF-8)."""
    return text.encode("utf-8", "surrogatepass")


POISON = ["\x00", "a\x00b", "\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe", "\U0010ffff"]
LONE_SURROGATES = ["\ud800", "x\udfff"]


def _read_model_caught_up(target: Target) -> dict[str, Any]:
    """The document as the read side shows it once it has reached the last sentinel: a
    wedged projection answers 503 here (the read waits for that position)."""
    api = target.chorus.api
    r = api.http.get(
        f"/api/documents/{target.document_id}",
        params={"min_position": target.position},
        headers=target.fuzzer.headers,
    )
    assert r.status_code == 200, (r.status_code, r.text)
    shown: dict[str, Any] = r.json()
    assert set(target.sentinel_keys) <= set(shown["content"]["sentinel"]), shown["content"]
    return shown


@pytest.mark.parametrize("where", ["map root", "map key", "text root"])
@pytest.mark.parametrize("name", POISON + LONE_SURROGATES, ids=ascii)
def test_names_the_read_side_cannot_take_are_refused(target: Target, where: str, name: str) -> None:
    """A root type or map key holding NUL, a lone surrogate or a non-character: closed with
    4400, nothing appended, and the documents read model keeps moving."""
    client_id = uuid.uuid4().int % (1 << 31)
    if where == "map root":
        update = map_set_update(_raw(name), b"k", b"v", client_id)
    elif where == "map key":
        update = map_set_update(b"m", _raw(name), b"v", client_id)
    else:
        update = text_insert_update(_raw(name), "hi", client_id)
    assert _send_hostile(target, protocol.sync_update(update)) == "closed 4400"
    assert _saved_until_sentinel(target) == []
    _read_model_caught_up(target)


# Text from all of Unicode, surrogates included, with the characters that matter here
# (NUL, non-characters, bidi controls, zero-width) over-represented.
_SPECIAL = st.sampled_from(
    ["\x00", "\ufffe", "\uffff", "\ufdd0", "\U0010ffff", "\ud800", "\udc00", "\u202e",
     "\u2066", "\u200b", "\ufeff", "\x1b", "\n", "é", "\U0001f600"]
)  # fmt: skip
_CHARS = st.one_of(_SPECIAL, st.characters(codec=None, exclude_categories=()))
NAMES = st.text(_CHARS, min_size=0, max_size=12)
CONTENT = st.text(_CHARS, min_size=1, max_size=40)
_KEYS = st.text(_CHARS, max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(_CHARS, max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


def _json_text(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


AWARENESS_STATES = st.one_of(
    JSON_VALUES.map(_json_text), JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary()
)
GENERATED = st.tuples(st.sampled_from(["map", "text"]), NAMES, NAMES, CONTENT, AWARENESS_STATES)


def _awareness_outcome(target: Target, client_id: int, state: bytes) -> str:
    """Sets an awareness state as the fuzzer: "refused" (closed 4400), "relayed" (a joiner
    then receives exactly that state in its snapshot), or "removed" for ``null`` (a client
    leaving: of a client id nobody set, nothing to pass on)."""
    entry = protocol.AwarenessEntry(client_id, 1, state)
    with connect(f"{target.yjs_url}?token={target.fuzzer.access_token}") as ws:
        ws.send(protocol.awareness_message(protocol.encode_awareness([entry])))
        try:
            _until_step2(ws)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4400, closed.rcvd
            return "refused"
        url = f"{target.yjs_url}?token={target.sentinel.access_token}"
        with connect(url, max_size=None) as joiner:
            # The snapshot of every state comes on joining, before the answer to a step 1.
            states = {
                e.client_id: e.state
                for m in _until_step2(joiner)
                if m.kind == protocol.MESSAGE_AWARENESS
                for e in protocol.parse_awareness(m.payload)
            }
    if state == b"null":
        assert client_id not in states
        return "removed"
    if not isinstance(json.loads(state), dict):
        # No Yjs client sends a state that is not an object: dropped, not relayed.
        assert client_id not in states, (state, states.get(client_id))
        return "dropped"
    # Relayed as sent, but for the user the server stamps on it (issue 17, finding 10).
    stamp, relayed = unstamped(states[client_id])
    assert stamp is not None and stamp["id"] == target.fuzzer.user_id
    if "user" not in json.loads(state):
        assert relayed == state, (state, relayed)
    return "relayed"


def test_generated_names_content_and_awareness_through_yjs(target: Target) -> None:
    """Generated updates (a map entry or a text, under generated root names and keys from
    all of Unicode) and awareness states go through a real ``/yjs`` connection. Each update
    ends refused (4400, nothing appended) when a name holds what the read side cannot take
    or is not a root name Chorus records, else saved as one event with the read model
    caught up and showing it; each awareness state is refused or relayed intact."""
    seen: dict[str, int] = {}
    roots = [len(_read_model_caught_up(target)["roots"])]  # how many the document has

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=GENERATED)
    def fuzz(case: tuple[str, str, str, str, bytes]) -> None:
        kind, root, key, content, state = case
        client_id = uuid.uuid4().int % (1 << 31)
        if roots[0] >= MAX_ROOTS - 1:
            # A document holds at most 64 root types, and each example names a new one.
            _next_document(target)
        # Fresh names each time, so the document's 64 roots are never used up here.
        if not _poisoned(root) and root:
            root = f"{root}{uuid.uuid4().hex[:6]}"
        if kind == "map":
            update = map_set_update(_raw(root), _raw(key), _raw(content), client_id)
            bad = _poisoned(root) or _poisoned(key) or _poisoned_content(content)
        else:
            update = text_insert_update(_raw(root), "x", client_id)
            bad = _poisoned(root)
        bad = bad or not root or len(root) > MAX_ROOT_NAME
        outcome = _send_hostile(target, protocol.sync_update(update))
        saved = _saved_until_sentinel(target)
        shown = _read_model_caught_up(target)
        roots[0] = len(shown["roots"])
        if bad:
            assert (outcome, saved) == ("closed 4400", []), (outcome, ascii(root), ascii(key))
        else:
            assert outcome == "taken", (outcome, ascii(root), ascii(key), ascii(content))
            assert [e["actor"] for e in saved] == [target.fuzzer.user_id]
            if kind == "map":
                assert shown["content"][root] == {key: content}
            else:
                assert shown["content"][root] == "x"
        seen[outcome] = seen.get(outcome, 0) + 1
        aware = _awareness_outcome(target, client_id, state)
        seen[f"awareness {aware}"] = seen.get(f"awareness {aware}", 0) + 1

    fuzz()
    # Not vacuous: every outcome was met.
    expected = {
        "closed 4400",
        "taken",
        "awareness refused",
        "awareness relayed",
        "awareness dropped",
    }
    assert expected <= set(seen), seen
    assert target.chorus.api.http.get("/ready").status_code == 200


def _next_document(target: Target) -> None:
    """Moves the target to a new document of the same workspace, followed by the same
    ``/ws`` connection."""
    api = target.chorus.api
    doc = api.ok(api.get(f"/api/documents/{target.document_id}", target.fuzzer))
    ws = doc["workspace_id"]
    created = api.ok(
        api.post(f"/api/workspaces/{ws}/documents", target.fuzzer, {"title": "n"}), 201
    )
    target.document_id = str(created["id"])
    target.sentinel_keys = []
    target.events.send(
        json.dumps(
            {
                "op": "subscribe",
                "sub": target.document_id,
                "streams": [{"document": target.document_id}],
            }
        )
    )
    assert json.loads(target.events.recv(timeout=TIMEOUT))["op"] == "subscribed"
    _saved_until_sentinel(target)


def _poisoned_content(text: str) -> bool:
    """Content is not a name: only what cannot be UTF-8 (a lone surrogate) is refused."""
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)
