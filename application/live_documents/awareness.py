"""Awareness (cursors, names): the bounds on what editors send, the server's stamp of who
they are, and the messages a joiner is sent."""

from __future__ import annotations

import time
from typing import Protocol

import msgspec

from domain import yjs_protocol as protocol

# Awareness (cursors, names) is kept in memory and sent to every editor: bounded per
# connection (client ids, updates and bytes per second) and per document (bytes). What goes
# past a bound is dropped, not closed on: a stock y-websocket client sends other clients'
# states back to the server (it re-broadcasts every awareness change it applies), so an
# honest client can name client ids that are not its own.
AWARENESS_CLIENTS_PER_CONNECTION = 4
AWARENESS_PER_SECOND = 20.0
AWARENESS_BURST = 40.0
AWARENESS_BYTES_PER_SECOND = 32 * 1024.0
AWARENESS_BYTES_BURST = 128 * 1024.0
MAX_AWARENESS_BYTES_PER_DOCUMENT = 1024 * 1024
# A joiner's snapshot of everyone's states comes in messages of at most this many bytes.
MAX_AWARENESS_MESSAGE_BYTES = 64 * 1024

# Awareness states of editors on other instances that were not refreshed for this long are
# not shown to new editors (y-protocols clients renew theirs every 15 s and drop others'
# after 30 s).
REMOTE_AWARENESS_TTL_S = 30.0


class AwarenessRate:
    """Awareness updates one connection may send: ``AWARENESS_PER_SECOND`` messages and
    ``AWARENESS_BYTES_PER_SECOND`` bytes, with bursts of ``AWARENESS_BURST`` and
    ``AWARENESS_BYTES_BURST``."""

    def __init__(self) -> None:
        self.messages = AWARENESS_BURST
        self.bytes = AWARENESS_BYTES_BURST
        self.stamp = time.monotonic()

    def take(self, size: int) -> bool:
        now = time.monotonic()
        elapsed, self.stamp = now - self.stamp, now
        self.messages = min(AWARENESS_BURST, self.messages + elapsed * AWARENESS_PER_SECOND)
        self.bytes = min(AWARENESS_BYTES_BURST, self.bytes + elapsed * AWARENESS_BYTES_PER_SECOND)
        if self.messages < 1 or self.bytes < size:
            return False
        self.messages -= 1
        self.bytes -= size
        return True


class Speaker(Protocol):
    """Whose awareness states are stamped: the connection's real user."""

    user_id: str
    display_name: str


def stamp_awareness(
    entry: protocol.AwarenessEntry, peer: Speaker
) -> protocol.AwarenessEntry | None:
    """The state with ``user.id`` and ``user.name`` set to the connection's real user, over
    whatever the client claimed (other ``user`` fields, a cursor colour say, are kept); None
    for a state that is not a JSON object, which no Yjs client sends. A state without a
    ``user`` gets it first, the client's bytes left as they were after it."""
    try:
        state = msgspec.json.decode(entry.state)
    except msgspec.DecodeError:
        return None
    if not isinstance(state, dict):
        return None
    claimed = state.get("user")
    if claimed is None and "user" not in state:
        stamp = b'{"user":' + msgspec.json.encode({"id": peer.user_id, "name": peer.display_name})
        rest = entry.state.lstrip()[1:].lstrip()
        stamped = stamp + (rest if rest.startswith(b"}") else b"," + rest)
        return protocol.AwarenessEntry(entry.client_id, entry.clock, stamped)
    user = dict(claimed) if isinstance(claimed, dict) else {}
    user["id"], user["name"] = peer.user_id, peer.display_name
    state["user"] = user
    return protocol.AwarenessEntry(entry.client_id, entry.clock, msgspec.json.encode(state))


def awareness_messages(entries: list[protocol.AwarenessEntry]) -> list[bytes]:
    """Awareness messages holding ``entries``, each of at most ``MAX_AWARENESS_MESSAGE_BYTES``
    (one state is never split: a state is far smaller than that)."""
    messages: list[bytes] = []
    chunk: list[protocol.AwarenessEntry] = []
    size = 0
    for entry in entries:
        cost = len(entry.state) + 24  # the state and its client id, clock and lengths
        if chunk and size + cost > MAX_AWARENESS_MESSAGE_BYTES:
            messages.append(protocol.awareness_message(protocol.encode_awareness(chunk)))
            chunk, size = [], 0
        chunk.append(entry)
        size += cost
    if chunk:
        messages.append(protocol.awareness_message(protocol.encode_awareness(chunk)))
    return messages


def awareness_group(document_id: str) -> str:
    """The signal-bus group (Redis channel key) of a document's awareness."""
    return f"yjs:{document_id}"
