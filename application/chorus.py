"""The Chorus application service: runs commands against the event store."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import EnvType

from application import (
    channels,
    documents,
    identity,
    instance,
    messages,
    presence,
    workspaces,
)
from application.commands import Command
from application.decisions import HANDLERS, Decision, Handler
from application.ports import CommandStore, Directory, PasswordHashing
from application.reactions import SCOPE as REACTIONS_SCOPE
from application.reactions import Step
from domain.base import Cause, ChorusAggregate, as_uuid
from domain.documents import Document
from domain.errors import Conflict, InvalidValue, NotFound

if TYPE_CHECKING:
    from application.group_commit import GroupCommitter

A = TypeVar("A", bound=ChorusAggregate)

# Importing the context modules registers their handlers.
_CONTEXTS = (identity, workspaces, channels, messages, presence, documents, instance)

# A concurrent write to the same aggregate makes a save fail; the command is then decided
# again against the newer state, so no write is lost or silently overwritten. A short random
# pause spreads out writers that keep colliding on one hot aggregate.
MAX_ATTEMPTS = 30
DOCUMENT_SNAPSHOT_INTERVAL = 20
BACKOFF_S = 0.002


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


class _AppendCheck(Protocol):
    def find_recorded(self, stored_events: Sequence[StoredEvent]) -> int | None: ...


@dataclass(frozen=True)
class _Record:
    scope: str
    key: str
    fingerprint: str
    status: int
    result: dict[str, Any]


class Chorus(Application[UUID]):
    """One application, one event store, one global order of events."""

    name = "Chorus"
    # A document's stream is its content's history (every event carries update bytes):
    # loading one from a snapshot reads at most this many of them.
    snapshotting_intervals = {Document: DOCUMENT_SNAPSHOT_INTERVAL}

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        passwords: PasswordHashing,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        directory: Directory | None = None,
    ) -> None:
        super().__init__(env)
        self.passwords = passwords
        # Without one, a direct message needs the workspace the two share named.
        self.directory = directory
        self.clock = clock
        # Group commit (application/group_commit.py); None: each command commits alone.
        self.group_committer: GroupCommitter | None = None
        self._group_commit_lock = threading.Lock()
        # What the command being decided in this thread read: aggregate id -> version.
        self._reads = threading.local()
        # Called between a command's decision and its save (tests hold a race open there).
        self.before_save: Callable[[], None] | None = None

    def enable_group_commit(self, **options: Any) -> GroupCommitter:
        """Routes ``execute`` through one writer thread that commits concurrent commands
        together (see application/group_commit.py). Idempotent."""
        with self._group_commit_lock:
            if self.group_committer is None:
                from application.group_commit import GroupCommitter

                self.group_committer = GroupCommitter(self, **options)
            return self.group_committer

    def close(self) -> None:
        committer = self.group_committer
        if committer is not None:
            committer.close()
        super().close()

    @property
    def store(self) -> CommandStore:
        return cast(CommandStore, self.recorder)

    # -- loading ------------------------------------------------------------------------

    def load(self, kind: type[A], aggregate_id: str | UUID, what: str | None = None) -> A:
        """The current state of an aggregate of the given kind, or NotFound."""
        label = what or kind.__name__.lower()
        uid = as_uuid(aggregate_id)
        try:
            aggregate: object = self.repository.get(uid)
        except AggregateNotFoundError:
            raise NotFound(f"unknown {label}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"unknown {label}")
        reads: dict[UUID, int] | None = getattr(self._reads, "versions", None)
        if reads is not None:
            reads.setdefault(uid, aggregate.version)
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        return aggregate_id in self.repository

    def existing(self, aggregate_ids: Sequence[UUID]) -> set[UUID]:
        """Which of ``aggregate_ids`` have events: one query, however many are asked."""
        if not aggregate_ids:
            return set()
        versions = getattr(self.recorder, "current_versions", None)
        if versions is None:
            return {uid for uid in aggregate_ids if self.exists(uid)}
        return set(cast(Callable[[Sequence[UUID]], dict[UUID, int]], versions)(aggregate_ids))

    # -- running commands -----------------------------------------------------------------

    def execute(self, command: Command, cause: Cause) -> CommandResult:
        """Decides a command against current state and saves its events atomically with its
        idempotency record. A retry with the same key gets the first result back."""
        committer = self.group_committer
        if committer is not None:
            return committer.execute(command, cause)
        return self.execute_now(command, cause)

    def execute_now(
        self, command: Command, cause: Cause, *, reaction: Step | None = None
    ) -> CommandResult:
        """``execute`` in the calling thread, committing this command alone. ``reaction``: a
        reaction's mark moves with the command's events, in their transaction (and its key
        is in the reactions' own scope)."""
        handler = HANDLERS[type(command)]
        scope = REACTIONS_SCOPE if reaction is not None else cause.actor_id or "anonymous"
        record: _Record | None = None
        if cause.command_id is not None:
            fingerprint = _fingerprint(command)
            replay = self._replay(scope, cause.command_id, fingerprint)
            if replay is not None:
                return replay
        for attempt in range(MAX_ATTEMPTS):
            decision, reads = self._decide(handler, command, cause)
            pending = any(a.pending_events for a in decision.aggregates)
            if not pending:
                return CommandResult(decision.status, {**decision.body, "position": None})
            if cause.command_id is not None:
                record = _Record(
                    scope, cause.command_id, fingerprint, decision.status, decision.body
                )
            events = [e for a in decision.aggregates for e in a.pending_events]
            if self.before_save is not None:
                self.before_save()
            try:
                # Every aggregate the decision read must still be as it was read: a command
                # decided before an access change (a kick, a role revoked) committed by
                # another writer is decided again, not stored after it.
                recordings = self.save(
                    *decision.aggregates,
                    command=record,
                    credentials=decision.credentials,
                    expect=reads,
                    reaction=reaction,
                )
            except IntegrityError:
                if cause.command_id is not None:
                    replay = self._replay(scope, cause.command_id, fingerprint)
                    if replay is not None:
                        return replay
                # The store retries an insert whose COMMIT lost its answer; if the first
                # attempt did commit, these very events are there: done, not decided again.
                position = self._recorded(events)
                if position is not None:
                    return CommandResult(decision.status, {**decision.body, "position": position})
                if attempt == MAX_ATTEMPTS - 1:
                    raise Conflict("the data changed while this was decided; try again") from None
                time.sleep(random.uniform(0, BACKOFF_S * min(attempt + 1, 10)))
                continue
            position = max(r.notification.id for r in recordings)
            return CommandResult(decision.status, {**decision.body, "position": position})
        raise AssertionError("unreachable")

    def _decide(
        self, handler: Handler, command: Command, cause: Cause
    ) -> tuple[Decision, dict[UUID, int]]:
        """The handler's decision, and the version of each aggregate it loaded."""
        reads: dict[UUID, int] = {}
        self._reads.versions = reads
        try:
            return handler(self, command, cause), reads
        finally:
            self._reads.versions = None

    def _recorded(self, events: Sequence[Any]) -> int | None:
        """The position of the last of ``events`` if all of them are already stored as they
        are (an append that committed although its caller was not told), else None."""
        if not events or not hasattr(self.recorder, "find_recorded"):
            return None
        recorder = cast(_AppendCheck, self.recorder)
        return recorder.find_recorded([self.mapper.to_stored_event(e) for e in events])

    def _replay(self, scope: str, key: str, fingerprint: str) -> CommandResult | None:
        stored = self.store.find_command(scope, key)
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used for a different request"
            )
        return CommandResult(stored.status, dict(stored.result), replayed=True)


def _fingerprint(command: Command) -> str:
    """Identifies the request a key was first used for. Passwords are left out: their
    digest would be a cheap offline guessing target, and a replayed sign-up checks the
    password anyway."""
    fields = msgspec.structs.asdict(command)
    fields.pop("password", None)
    fields.pop("password_hash", None)  # salted: a retry's differs
    payload = msgspec.json.encode([type(command).__name__, fields])
    return hashlib.sha256(payload).hexdigest()
