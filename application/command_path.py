"""The one way a command is decided: its idempotency key checked (a retry gets the first
answer back), its handler run on the state a ``DecisionContext`` gives, and what is to be
saved with it (the changed aggregates, the idempotency record, credentials) put together.

``Chorus.execute_now`` saves one ``Decided`` at a time; the group committer
(application/group_commit.py) saves several in one transaction. Neither decides any other
way, so authorization, domain rules and idempotency are the same on both."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec

from application.commands import Command
from application.decisions import Handler
from application.ports import (
    CommandStore,
    DecisionContext,
    Directory,
    PasswordHashing,
)
from domain.base import Cause, ChorusAggregate
from domain.errors import InvalidValue

A = TypeVar("A", bound=ChorusAggregate)


class IdempotencyKeyReused(InvalidValue):
    """The same Idempotency-Key came back with a different request."""


@dataclass(frozen=True)
class CommandResult:
    """``status`` and ``body`` as the client sees them; ``body['position']`` is the global
    position of the last event appended (None when the command changed nothing)."""

    status: int
    body: dict[str, Any]
    replayed: bool = False

    @property
    def position(self) -> int | None:
        value = self.body.get("position")
        return None if value is None else int(value)


@dataclass(frozen=True)
class CommandRecord:
    """What a retry with the same key gets back; saved in the command's transaction."""

    scope: str
    key: str
    fingerprint: str
    status: int
    result: dict[str, Any]


@dataclass(frozen=True)
class Decided:
    """A decided command. ``aggregates`` hold the events to save (none when the command
    changed nothing, or was answered from its idempotency record); ``result`` is its
    answer, whose position is known once they are saved (``saved_at``)."""

    result: CommandResult
    aggregates: list[ChorusAggregate] = field(default_factory=list)
    record: CommandRecord | None = None
    credentials: dict[UUID, str] = field(default_factory=dict)

    def saved_at(self, position: int) -> CommandResult:
        return CommandResult(self.result.status, {**self.result.body, "position": position})


def idempotency_scope(cause: Cause) -> str:
    """Keys are the client's: each actor has their own."""
    return cause.actor_id or "anonymous"


def fingerprint(command: Command) -> str:
    """Identifies the request a key was first used for. Passwords are left out: their
    digest would be a cheap offline guessing target, and a replayed sign-up checks the
    password anyway."""
    fields = msgspec.structs.asdict(command)
    fields.pop("password", None)
    fields.pop("password_hash", None)  # salted: a retry's differs
    payload = msgspec.json.encode([type(command).__name__, fields])
    return hashlib.sha256(payload).hexdigest()


def replayed(store: CommandStore, scope: str, key: str, fingerprint: str) -> CommandResult | None:
    """The first answer given for this key, or None if none is recorded."""
    stored = store.find_command(scope, key)
    if stored is None:
        return None
    if stored.fingerprint != fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was already used for a different request")
    return CommandResult(stored.status, dict(stored.result), replayed=True)


def decide(
    context: DecisionContext,
    command: Command,
    cause: Cause,
    handlers: Mapping[type[Command], Handler],
    *,
    scope: str | None = None,
) -> Decided:
    """Decides ``command`` on what ``context`` shows. A key already recorded is answered
    from its record; otherwise the command's handler (in ``handlers``) decides. ``scope``:
    whose keys these are (the actor's unless given: reactions keep theirs apart)."""
    key = cause.command_id
    if key is not None:
        keys, signature = scope or idempotency_scope(cause), fingerprint(command)
        replay = replayed(context.store, keys, key, signature)
        if replay is not None:
            return Decided(replay)
    decision = handlers[type(command)](context, command, cause)
    result = CommandResult(decision.status, {**decision.body, "position": None})
    # A loop, not any(...): this runs for every command, and a generator costs more.
    for aggregate in decision.aggregates:
        if aggregate.pending_events:
            break
    else:
        return Decided(result)
    record = None
    if key is not None:
        record = CommandRecord(keys, key, signature, decision.status, decision.body)
    return Decided(result, decision.aggregates, record, decision.credentials)


class Reads:
    """A ``DecisionContext`` that notes the version each aggregate was first read at. The
    save expects them all still there (``expect``, checked under the event store's table
    lock): a decision taken before a concurrent change to what it read (a kick, a role
    revoked) is decided again, not stored after that change."""

    def __init__(self, source: DecisionContext) -> None:
        self._source = source
        self.versions: dict[UUID, int] = {}

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._source.clock

    @property
    def passwords(self) -> PasswordHashing:
        return self._source.passwords

    @property
    def directory(self) -> Directory | None:
        return self._source.directory

    @property
    def store(self) -> CommandStore:
        return self._source.store

    def load(self, kind: type[A], aggregate_id: str | UUID, what: str | None = None) -> A:
        aggregate = self._source.load(kind, aggregate_id, what)
        self.versions.setdefault(aggregate.id, aggregate.version)
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        return self._source.exists(aggregate_id)

    def existing(self, aggregate_ids: Sequence[UUID]) -> set[UUID]:
        return self._source.existing(aggregate_ids)
