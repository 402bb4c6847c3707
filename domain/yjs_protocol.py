"""The y-websocket wire protocol (y-protocols' sync, awareness and auth messages).

Binary frames, lib0 encoding: a varUint message type, then its payload. Every length read
here is checked against the bytes that are left, before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from domain.errors import InvalidValue

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

AUTH_PERMISSION_DENIED = 0

# One client's awareness state (a name, a colour, a cursor: a few hundred bytes in practice).
MAX_AWARENESS_STATE = 16 * 1024


class MalformedMessage(InvalidValue):
    """A frame that is not a well-formed y-websocket message."""


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def var_uint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise MalformedMessage("truncated message")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise MalformedMessage("varint too long")

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        if length > self.left:
            raise MalformedMessage("length beyond the end of the message")
        start = self.pos
        self.pos += length
        return self.data[start : self.pos]

    def var_string(self) -> str:
        try:
            return self.var_bytes().decode()
        except UnicodeDecodeError:
            raise MalformedMessage("a string is not UTF-8") from None

    def end(self) -> None:
        if self.left:
            raise MalformedMessage("trailing bytes after the message")


def write_var_uint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def var_string(text: str) -> bytes:
    return var_bytes(text.encode())


# -- messages -------------------------------------------------------------------------------


def sync_step1(state_vector: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, SYNC_STEP1)) + var_bytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, SYNC_STEP2)) + var_bytes(update)


def sync_update(update: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, SYNC_UPDATE)) + var_bytes(update)


def awareness_message(update: bytes) -> bytes:
    return bytes((MESSAGE_AWARENESS,)) + var_bytes(update)


def permission_denied(reason: str) -> bytes:
    return bytes((MESSAGE_AUTH, AUTH_PERMISSION_DENIED)) + var_string(reason)


def query_awareness() -> bytes:
    return bytes((MESSAGE_QUERY_AWARENESS,))


@dataclass(frozen=True)
class Message:
    kind: int
    sync_type: int | None = None
    payload: bytes = b""


def parse(frame: bytes) -> Message:
    reader = Reader(frame)
    kind = reader.var_uint()
    if kind == MESSAGE_SYNC:
        sync_type = reader.var_uint()
        if sync_type not in (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE):
            raise MalformedMessage(f"unknown sync message {sync_type}")
        payload = reader.var_bytes()
        reader.end()
        return Message(kind, sync_type, payload)
    if kind == MESSAGE_AWARENESS:
        payload = reader.var_bytes()
        reader.end()
        return Message(kind, None, payload)
    if kind == MESSAGE_QUERY_AWARENESS:
        return Message(kind)
    if kind == MESSAGE_AUTH:
        # Only the server sends these; a client's is ignored.
        return Message(kind)
    raise MalformedMessage(f"unknown message type {kind}")


def check_state_vector(data: bytes) -> None:
    """A state vector (sync step 1): varUint count, then count (client, clock) pairs. Checked
    before the CRDT library sizes a table from the count."""
    reader = Reader(data)
    count = reader.var_uint()
    if count * 2 > reader.left:
        raise MalformedMessage("state vector count beyond the end of the message")
    for _ in range(count):
        if reader.var_uint() >= 1 << 53 or reader.var_uint() >= 1 << 32:
            raise MalformedMessage("state vector entry out of range")
    reader.end()


# -- awareness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: bytes  # the JSON text as sent; b"null" when the client went away


def parse_awareness(update: bytes) -> list[AwarenessEntry]:
    reader = Reader(update)
    count = reader.var_uint()
    if count * 3 > reader.left:
        raise MalformedMessage("awareness count beyond the end of the message")
    entries = []
    for _ in range(count):
        client_id = reader.var_uint()
        clock = reader.var_uint()
        state = reader.var_bytes()
        if client_id >= 1 << 53 or clock >= 1 << 53:
            raise MalformedMessage("awareness entry out of range")
        if len(state) > MAX_AWARENESS_STATE:
            raise MalformedMessage(f"an awareness state is at most {MAX_AWARENESS_STATE} bytes")
        try:
            msgspec.json.decode(state)
        except msgspec.DecodeError:
            raise MalformedMessage("an awareness state is not JSON") from None
        entries.append(AwarenessEntry(client_id, clock, state))
    reader.end()
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    out = bytearray(write_var_uint(len(entries)))
    for e in entries:
        out += write_var_uint(e.client_id) + write_var_uint(e.clock) + var_bytes(e.state)
    return bytes(out)
