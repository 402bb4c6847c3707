"""The public event envelope (the contract's shape), shared by REST and the WebSocket."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from projections.base import LogEvent


class Envelope(msgspec.Struct):
    """The contract's event envelope."""

    position: int
    stream: str
    version: int
    type: str
    at: datetime
    actor: str | None
    command_id: str | None
    data: dict[str, Any]


def envelope(event: LogEvent) -> Envelope:
    return Envelope(
        position=event.position,
        stream=str(event.stream),
        version=event.version,
        type=event.type,
        at=event.at,
        actor=event.actor,
        command_id=event.command_id,
        data=event.data,
    )
