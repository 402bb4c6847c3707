"""Events to stored records and back, as JSON with msgspec.

eventsourcing's ``Transcoder.decode`` is given no target type, so a plain msgspec transcoder
would hand back strings where the event had UUIDs and datetimes. This mapper instead decodes
each record with a msgspec type built from its event class's annotations. JSON (not msgpack)
keeps the log readable in SQL: ``convert_from(state, 'UTF8')::jsonb``. No pickle anywhere.
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any, ClassVar, get_origin
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic

# Kept in the record's own columns, not in its JSON state.
_COLUMNS = ("originator_id", "originator_version")

_encoder = msgspec.json.Encoder()


@cache
def state_type(event_class: type[Any]) -> type[msgspec.Struct]:
    """A msgspec Struct with the event class's fields, for typed decoding."""
    hints = typing.get_type_hints(event_class)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, hint in hints.items():
        if name in _COLUMNS or get_origin(hint) is ClassVar or hint is ClassVar:
            continue
        fields.append((name, hint, None) if _optional(hint) else (name, hint))
    # Required fields must come before defaulted ones in a Struct.
    fields.sort(key=lambda f: len(f))
    return msgspec.defstruct(f"{event_class.__qualname__}State", fields)


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


@cache
def _decoder(event_class: type[Any]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(state_type(event_class))  # type: ignore[arg-type]


class NullTranscoder(Transcoder):
    """The mapper does its own (typed) transcoding; this only satisfies the factory."""

    def encode(self, obj: Any) -> bytes:
        return _encoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        return msgspec.json.decode(data)


class MsgspecMapper(Mapper[UUID]):
    """Maps domain events to JSON records typed by their event class."""

    def __init__(self, transcoder: Transcoder | None = None, **_: Any) -> None:
        super().__init__(transcoder or NullTranscoder())

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=get_topic(type(domain_event)),
            state=_encoder.encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        cls = resolve_topic(stored_event.topic)
        decoded = _decoder(cls).decode(stored_event.state)
        state = {f: getattr(decoded, f) for f in decoded.__struct_fields__}
        originator_id = stored_event.originator_id
        state["originator_id"] = (
            originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
        )
        state["originator_version"] = stored_event.originator_version
        domain_event = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", state)
        return typing.cast(DomainEventProtocol[UUID], domain_event)


def event_type_name(topic: str) -> str:
    """The past-tense name clients see: ``domain.messages:Message.MessageSent`` ->
    ``MessageSent``."""
    return topic.rsplit(".", 1)[-1].rsplit(":", 1)[-1]
