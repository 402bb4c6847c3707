"""Events to stored records and back, as JSON with msgspec.

eventsourcing's ``Transcoder.decode`` is given no target type, so a plain msgspec transcoder
would hand back strings where the event had UUIDs and datetimes. This mapper instead decodes
each record with a msgspec type built from its event class's annotations. JSON (not msgpack)
keeps the log readable in SQL: ``convert_from(state, 'UTF8')::jsonb``. No pickle anywhere.

Personal fields (``PERSONAL``, issue 20) are stored sealed under a data key of their own
event (infrastructure/keys.py) when the application has a key ring: the JSON stays JSON,
the field's value becomes ``{"$shred": key id, "c": ciphertext}``, and every other field
stays readable in SQL. Reading opens them again, or gives None once their key is erased.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, get_origin
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic

from infrastructure.keys import KeyRing, NewKey, open_states, seal

# Kept in the record's own columns, not in its JSON state.
_COLUMNS = ("originator_id", "originator_version")

_encoder = msgspec.json.Encoder()

# The stream's own id names the owner of its personal data (a user's own stream).
STREAM = "originator_id"


@dataclass(frozen=True)
class Personal:
    """Fields of an event type that hold personal data, erasable by destroying their key.
    Their subject is the event's stream (a message, a user: erasing it shreds them), and
    ``owner`` names the field holding the user who owns that subject (erasing the user
    shreds every subject they own)."""

    fields: tuple[str, ...]
    owner: str


# The one declaration of personal data in events. A new event type's text-like fields must
# be named here or in NOT_PERSONAL, with the reason (tests/e2e/test_erasure.py walks every
# event class).
PERSONAL: dict[str, Personal] = {
    "MessageSent": Personal(("text",), owner="author_id"),
    "MessageEdited": Personal(("text",), owner="actor_id"),
    "UserRegistered": Personal(("username", "display_name"), owner=STREAM),
    "UsernameClaimed": Personal(("username",), owner="user_id"),
    # A user's later names and picture (issue 20's profile changes), on their own stream.
    "DisplayNameChanged": Personal(("display_name",), owner=STREAM),
    "AvatarChanged": Personal(("avatar_url",), owner=STREAM),
    "UsernameChanged": Personal(("username", "previous"), owner=STREAM),
}

# Events whose storing erases the personal data of their own stream when the named field is
# true: the data keys of that subject are destroyed in the same transaction
# (infrastructure/eventstore.py), so the text reads as erased from the moment the event is
# visible, and never after a failed write.
SHREDS: dict[str, str] = {"MessageDeleted": "text_erased"}

# Text-like fields that are not personal data, and why (the class test requires a reason).
NOT_PERSONAL: dict[str, dict[str, str]] = {
    # Issue 21: projects and tasks are the workspace's work, not a person's data (as
    # channel names and document titles): they stay when their author is erased.
    "ProjectCreated": {
        "name": "workspace content",
        "description": "workspace content",
        "access": "a fixed set",
        "member_ids": "user ids",
        "columns": "workflow structure",
    },
    "ProjectRenamed": {"name": "workspace content"},
    "ProjectDescribed": {"description": "workspace content"},
    "ProjectAccessChanged": {"access": "a fixed set", "member_ids": "user ids"},
    "ProjectColumnAdded": {"column_id": "an id", "name": "workflow structure"},
    "ProjectColumnRenamed": {"column_id": "an id", "name": "workflow structure"},
    "ProjectColumnsReordered": {"column_ids": "ids"},
    "TaskCreated": {
        "title": "workspace content",
        "status": "a column id",
        "rank": "an order key",
        "priority": "a fixed set",
        "assignee_ids": "user ids",
        "due": "a date",
        "labels": "workspace content",
        "parent_id": "an id",
        "watcher_ids": "user ids",
    },
    "TaskChanged": {
        "title": "workspace content",
        "priority": "a fixed set",
        "assignee_ids": "user ids",
        "due": "a date",
        "labels": "workspace content",
        "parent_id": "an id",
        "watcher_ids": "user ids",
    },
    "TaskMoved": {"status": "a column id", "rank": "an order key"},
    "UserReactivated": {"reactivated_by": "an operator's login, as ProjectionEventSkipped's"},
    "PasswordResetIssued": {"issued_by": "as UserReactivated", "token_hash": "a hash"},
    "PasswordReset": {"token_hash": "a hash"},
    "ReactionEventSkipped": {
        "policy": "a policy's name",
        "error": "the server's own message",
        "reason": "operators' record, as ProjectionEventSkipped's",
        "operator": "as reason",
    },
    "WorkspaceRenamed": {"name": "workspace structure"},
    "WorkspaceVisibilityChanged": {"visibility": "a fixed set"},
    "InviteRevoked": {"code_hash": "a hash"},
    "RoleRenamed": {"name": "workspace structure", "new_name": "workspace structure"},
    "RolePermissionsChanged": {"name": "workspace structure", "permissions": "a fixed set"},
    "RolesReordered": {"names": "workspace structure"},
    "RoleDeleted": {"name": "workspace structure"},
    "MessageSent": {"mentions": "user ids parsed from the text: who was named, not what"},
    "MessageEdited": {"mentions": "as MessageSent"},
    "WorkspaceCreated": {"name": "workspace structure", "visibility": "a fixed set"},
    "MemberJoined": {"invite_hash": "a hash of an invite code"},
    "InviteCreated": {"code_hash": "a hash"},
    "RoleCreated": {"name": "workspace structure", "permissions": "a fixed set"},
    "RoleGranted": {"role": "a role's name"},
    "RoleRevoked": {"role": "a role's name"},
    "ChannelCreated": {
        "name": "structure",
        "topic": "structure",
        "kind": "a fixed set",
        "member_tenures": "ids and positions",
    },
    "ChannelChanged": {"name": "structure", "topic": "structure"},
    "ReactionAdded": {"emoji": "an emoji"},
    "ReactionRemoved": {"emoji": "an emoji"},
    "DocumentCreated": {"title": "structure"},
    "DocumentRenamed": {"title": "structure"},
    "DocumentUpdateApplied": {
        "update": "collaborative content, not a person's: erasable per workspace later",
        "roots": "root type names",
    },
    "InstanceRoleGranted": {"role": "a fixed set", "granted_by": "the operator's account name"},
    "InstanceRoleRevoked": {"role": "a fixed set", "granted_by": "as InstanceRoleGranted"},
    "SessionEnded": {"reason": "a fixed set"},
    "SignedOut": {"reason": "a fixed set"},
    "Notified": {"kind": "a fixed set", "detail": "a role's name or a fixed set"},
    "NotificationsWithdrawn": {"kinds": "a fixed set"},
    "NotificationsRead": {"ids": "ids"},
    "NoticeGiven": {"kind": "a fixed set"},
    "NoticeWithdrawn": {"kinds": "a fixed set"},
    "NotificationLevelSet": {"target": "a fixed set", "level": "a fixed set"},
    "NotificationsMuted": {"target": "a fixed set"},
    "WebhookRegistered": {
        "url": "workspace configuration",
        "event_types": "a fixed set",
        "secret_hint": "a digest",
        "registered_by": "a user id",
    },
    "WebhookChanged": {"url": "configuration", "event_types": "a fixed set"},
    "WebhookSecretRotated": {"secret_hint": "a digest"},
    "WebhookDisabled": {"reason": "a fixed set"},
    "DeliveryQueued": {"event_type": "an event type's name"},
    "DeliveryAttempted": {"error": "what a receiver did"},
    "ProjectionEventSkipped": {
        "projection": "operators' record",
        "error": "operators' record",
        "reason": "operators' record",
        "operator": "an operator's account name",
    },
    "UserErased": {"kinds": "a fixed set: what kind of data was erased"},
}


@dataclass(frozen=True)
class SealedStoredEvent(StoredEvent):
    """A stored event with the data keys its sealed fields need: the recorder stores their
    rows in the event's own transaction (infrastructure/eventstore.py), so a failed
    transaction leaves neither and a committed one both."""

    keys: tuple[NewKey, ...] = ()
    # Subjects whose data keys storing this event destroys (``SHREDS``).
    erases: tuple[UUID, ...] = ()


def keys_of(stored_events: Sequence[StoredEvent]) -> list[NewKey]:
    """The data keys the stored events' sealed fields were sealed under, to be stored with
    them."""
    return [k for e in stored_events if isinstance(e, SealedStoredEvent) for k in e.keys]


def erasures_of(stored_events: Sequence[StoredEvent]) -> list[UUID]:
    """The subjects whose keys storing these events destroys."""
    return [s for e in stored_events if isinstance(e, SealedStoredEvent) for s in e.erases]


@cache
def state_type(event_class: type[Any]) -> type[msgspec.Struct]:
    """A msgspec Struct with the event class's fields, for typed decoding."""
    return _struct(event_class, ())


def _struct(event_class: type[Any], erasable: tuple[str, ...]) -> type[msgspec.Struct]:
    hints = typing.get_type_hints(event_class)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, hint in hints.items():
        if name in _COLUMNS or get_origin(hint) is ClassVar or hint is ClassVar:
            continue
        if name in erasable:
            hint = hint | None
        fields.append((name, hint, None) if _optional(hint) else (name, hint))
    # Required fields must come before defaulted ones in a Struct.
    fields.sort(key=lambda f: len(f))
    return msgspec.defstruct(f"{event_class.__qualname__}State", fields)


@cache
def _opened_decoder(event_class: type[Any]) -> msgspec.json.Decoder[Any]:
    """A decoder of states whose personal fields may have been erased (None)."""
    erasable = PERSONAL[event_class.__name__].fields
    return msgspec.json.Decoder(_struct(event_class, erasable))


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

    def __init__(self, transcoder: Transcoder | None = None, cipher: Any = None, **_: Any) -> None:
        super().__init__(transcoder or NullTranscoder())
        # Without a key ring (tools that only read, benchmarks of the plain path), events
        # are stored as they are.
        self.keys: KeyRing | None = cipher if isinstance(cipher, KeyRing) else None

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        state = dict(vars(domain_event))
        personal = PERSONAL.get(type(domain_event).__name__)
        made = None
        if personal is not None and self.keys is not None:
            made = self._seal(state, personal)
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        topic = get_topic(type(domain_event))
        if made is not None:
            return SealedStoredEvent(
                originator_id, originator_version, topic, _encoder.encode(state), keys=(made,)
            )
        shreds = SHREDS.get(type(domain_event).__name__)
        if self.keys is not None and shreds is not None and state.get(shreds):
            subject = originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
            return SealedStoredEvent(
                originator_id, originator_version, topic, _encoder.encode(state), erases=(subject,)
            )
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=topic,
            state=_encoder.encode(state),
        )

    def _seal(self, state: dict[str, Any], personal: Personal) -> NewKey | None:
        present = [f for f in personal.fields if state.get(f) is not None]
        if not present or self.keys is None:
            return None
        owner = state.get(personal.owner)
        (made,) = self.keys.make_keys(
            [(state["originator_id"], None if owner is None else UUID(str(owner)))]
        )
        for field in present:
            state[field] = seal(made.key_id, made.key, field, state[field])
        return made

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        cls = resolve_topic(stored_event.topic)
        if cls.__name__ in PERSONAL:
            # Sealed fields open to their value, or to None once erased.
            raw = msgspec.json.decode(stored_event.state)
            open_states([raw])
            decoded = _opened_decoder(cls).decode(_encoder.encode(raw))
        else:
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


def key_ring(mapper: Any) -> KeyRing | None:
    """The key ring of an application's mapper, if it seals personal fields."""
    keys = getattr(mapper, "keys", None)
    return keys if isinstance(keys, KeyRing) else None


def close_key_ring(mapper: Any) -> None:
    """Closes the key ring's connection of an application's mapper, if it has one."""
    keys = key_ring(mapper)
    if keys is not None:
        keys.close()


def event_type_name(topic: str) -> str:
    """The past-tense name clients see: ``domain.messages:Message.MessageSent`` ->
    ``MessageSent``."""
    return topic.rsplit(".", 1)[-1].rsplit(":", 1)[-1]
