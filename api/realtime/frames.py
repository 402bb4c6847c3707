"""WebSocket frames: what clients send (a tagged union decoded by one typed decoder) and the
frames the server sends back."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

SubId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class Frame(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, frozen=True):
    """Base of client frames; ``op`` names the kind."""


class Subscribe(Frame, tag="subscribe", frozen=True):
    sub: SubId
    streams: Annotated[list[dict[str, Id]], msgspec.Meta(min_length=1, max_length=16)]
    after: int | None = None


class Unsubscribe(Frame, tag="unsubscribe", frozen=True):
    sub: SubId


class CommandFrame(Frame, tag="command", frozen=True):
    id: Id
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    data: dict[str, Any]


class SignalFrame(Frame, tag="signal", frozen=True):
    """About exactly one channel or one document, whose readers alone receive it;
    ``workspace``, when given, must be the one the channel or document belongs to."""

    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    workspace: Id | None = None
    channel: Id | None = None
    document: Id | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class Ping(Frame, tag="ping", frozen=True):
    pass


ClientFrame = Subscribe | Unsubscribe | CommandFrame | SignalFrame | Ping


class _FrameDecoder:
    """msgspec's decoder, but a frame nested past the recursion limit is a malformed frame
    (``msgspec.DecodeError``, an error frame) instead of a ``RecursionError`` that ended the
    socket with 4500."""

    def __init__(self) -> None:
        self._decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)

    def decode(self, raw: bytes) -> ClientFrame:
        try:
            return self._decoder.decode(raw)
        except RecursionError:
            raise msgspec.DecodeError("JSON is malformed: nested too deeply") from None


decoder = _FrameDecoder()
encoder = msgspec.json.Encoder()


def error(status: int, detail: str, *, id: str | None = None, sub: str | None = None) -> bytes:
    frame: dict[str, Any] = {"op": "error", "status": status, "detail": detail}
    if id is not None:
        frame["id"] = id
    if sub is not None:
        frame["sub"] = sub
    return encoder.encode(frame)


def ack(id: str, position: int | None, result: dict[str, Any]) -> bytes:
    return encoder.encode({"op": "ack", "id": id, "position": position, "result": result})


def end(sub: str, reason: str, position: int | None = None) -> bytes:
    return encoder.encode({"op": "end", "sub": sub, "reason": reason, "position": position})


def subscribed(sub: str, after: int, head: int) -> bytes:
    """The subscription is live: events after ``after`` follow, catch-up up to ``head`` first."""
    return encoder.encode({"op": "subscribed", "sub": sub, "after": after, "head": head})


def event(sub: str, envelope: str) -> str:
    """The envelope is encoded once per event and spliced into every subscriber's frame."""
    return '{"op":"event","sub":' + encoder.encode(sub).decode() + ',"event":' + envelope + "}"


PONG = encoder.encode({"op": "pong"})
