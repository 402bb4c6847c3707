"""Time travel for auditors: an aggregate as it was at one of its versions, as plain data.

Issue 20: what was erased since (crypto-shredding, infrastructure/keys.py) is not shown as it
was: the aggregate is rebuilt from the log as it reads now, so an erased field is None, and
``erased_fields`` names those fields, so a reader tells "erased" from "never set".
"""

from __future__ import annotations

import dataclasses
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError

from application.chorus import Chorus
from domain.errors import NotFound
from infrastructure.keys import open_states
from infrastructure.serialisation import PERSONAL, event_type_name


def aggregate_at(app: Chorus, stream: UUID, version: int) -> Any:
    """The stream's aggregate rebuilt up to ``version`` (from its events, and a snapshot at
    or before it); NotFound for a stream that is not an aggregate's."""
    try:
        return app.repository.get(stream, version=version)
    except AggregateNotFoundError:
        raise NotFound("unknown stream") from None


def erased_fields(app: Chorus, stream: UUID, version: int, state: dict[str, Any]) -> list[str]:
    """The attributes of ``state`` (the stream's aggregate at ``version``) that read None
    because a personal field of one of its events up to ``version`` was erased."""
    stored = [
        msgspec.json.decode(e.state)
        for e in app.recorder.select_events(stream, lte=version)
        if event_type_name(e.topic) in PERSONAL
    ]
    gone = {field for fields in open_states(stored) for field in fields}
    return sorted(f for f in gone if f in state and state[f] is None)


def state_of(aggregate: object) -> dict[str, Any]:
    """The aggregate's public attributes as JSON-able data."""
    return {k: plain(v) for k, v in vars(aggregate).items() if not k.startswith("_")}


def plain(value: Any) -> Any:
    """Aggregate state as JSON-able data: sets become sorted lists, dataclasses dicts."""
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, UUID):
        return str(value)
    return value
