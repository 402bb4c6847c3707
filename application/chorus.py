"""The Chorus application service: runs commands against the event store."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import EnvType

from application.command_path import (
    CommandResult,
    IdempotencyKeyReused,
    Reads,
    decide,
    replayed,
)
from application.commands import Command
from application.decisions import Handler
from application.group_commit import GroupCommitter
from application.ports import Directory, PasswordHashing, Recorder
from application.reactions import SCOPE as REACTIONS_SCOPE
from application.reactions import Step
from domain.base import Cause, ChorusAggregate, as_uuid
from domain.errors import Conflict, NotFound

# Answers of ``execute``, importable from here as before the command path had a module.
__all__ = ["Chorus", "CommandResult", "IdempotencyKeyReused"]

A = TypeVar("A", bound=ChorusAggregate)

# A concurrent write to the same aggregate makes a save fail; the command is then decided
# again against the newer state, so no write is lost or silently overwritten. A short random
# pause spreads out writers that keep colliding on one hot aggregate.
MAX_ATTEMPTS = 30
BACKOFF_S = 0.002


class Chorus(Application[UUID]):
    """One application, one event store, one global order of events."""

    name = "Chorus"
    # Which aggregates are snapshotted, and how often, is declared by the aggregates
    # (``snapshot_interval``) and handed in; the snapshot store always exists.
    is_snapshotting_enabled = True

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        passwords: PasswordHashing,
        handlers: Mapping[type[Command], Handler],
        snapshotting: Mapping[type[ChorusAggregate], int],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        directory: Directory | None = None,
    ) -> None:
        # The library reads the intervals from the instance once it runs (``save``); they are
        # per set of contexts here, not per class.
        setattr(self, "snapshotting_intervals", dict(snapshotting))  # noqa: B010
        super().__init__(env)
        # The command handlers of every context (api/contexts.py), by command type.
        self.handlers = handlers
        recorder = self.recorder
        if not isinstance(recorder, Recorder):
            raise TypeError(
                "Chorus records idempotency records and credentials with its events: its"
                " recorder must be infrastructure.eventstore.ChorusRecorder"
            )
        # The recorder, as the command path drives it (application/ports.py).
        self.store: Recorder = recorder
        self.passwords = passwords
        # Without one, a direct message needs the workspace the two share named.
        self.directory = directory
        self.clock = clock
        # Group commit (application/group_commit.py); None: each command commits alone.
        self.group_committer: GroupCommitter | None = None
        self._group_commit_lock = threading.Lock()
        # Called between a command's decision and its save (tests hold a race open there).
        self.before_save: Callable[[], None] | None = None

    def enable_group_commit(self, **options: Any) -> GroupCommitter:
        """Routes ``execute`` through one writer thread that commits concurrent commands
        together (see application/group_commit.py). Idempotent."""
        with self._group_commit_lock:
            if self.group_committer is None:
                self.group_committer = GroupCommitter(self, **options)
            return self.group_committer

    def close(self) -> None:
        committer = self.group_committer
        if committer is not None:
            committer.close()
        super().close()

    # -- loading (the DecisionContext handlers see, application/ports.py) ----------------

    def load(self, kind: type[A], aggregate_id: str | UUID, what: str | None = None) -> A:
        """The current state of an aggregate of the given kind, or NotFound."""
        label = what or kind.__name__.lower()
        try:
            aggregate: object = self.repository.get(as_uuid(aggregate_id))
        except AggregateNotFoundError:
            raise NotFound(f"unknown {label}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"unknown {label}")
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        # Not ``in self.repository``: eventsourcing answers that by rebuilding the aggregate.
        return bool(self.store.current_versions([aggregate_id]))

    def existing(self, aggregate_ids: Sequence[UUID]) -> set[UUID]:
        """Which of ``aggregate_ids`` have events: one query, however many are asked."""
        if not aggregate_ids:
            return set()
        return set(self.store.current_versions(aggregate_ids))

    # -- running commands -----------------------------------------------------------------

    def execute(self, command: Command, cause: Cause) -> CommandResult:
        """Decides a command against current state and saves its events atomically with its
        idempotency record. A retry with the same key gets the first result back."""
        committer = self.group_committer
        if committer is not None:
            return committer.execute(command, cause)
        return self.execute_now(command, cause)

    def execute_now(
        self,
        command: Command,
        cause: Cause,
        *,
        reaction: Step | None = None,
        scope: str | None = None,
    ) -> CommandResult:
        """``execute`` in the calling thread, committing this command alone. ``reaction``: a
        reaction's mark moves with the command's events, in their transaction (and its key
        is in the reactions' own scope). ``scope``: whose keys the command's key is among
        (the actor's unless given)."""
        if reaction is not None:
            scope = REACTIONS_SCOPE
        for attempt in range(MAX_ATTEMPTS):
            reads = Reads(self)
            decided = decide(reads, command, cause, self.handlers, scope=scope)
            if not decided.aggregates:
                return decided.result
            events = [e for a in decided.aggregates for e in a.pending_events]
            if self.before_save is not None:
                self.before_save()
            try:
                # Every aggregate the decision read must still be as it was read: a command
                # decided before an access change (a kick, a role revoked) committed by
                # another writer is decided again, not stored after it.
                recordings = self.save(
                    *decided.aggregates,
                    command=decided.record,
                    credentials=decided.credentials,
                    expect=reads.versions,
                    reaction=reaction,
                )
            except IntegrityError:
                record = decided.record
                if record is not None:
                    replay = replayed(self.store, record.scope, record.key, record.fingerprint)
                    if replay is not None:
                        return replay
                # The store retries an insert whose COMMIT lost its answer; if the first
                # attempt did commit, these very events are there: done, not decided again.
                position = self._recorded(events)
                if position is not None:
                    return decided.saved_at(position)
                if attempt == MAX_ATTEMPTS - 1:
                    raise Conflict("the data changed while this was decided; try again") from None
                time.sleep(random.uniform(0, BACKOFF_S * min(attempt + 1, 10)))
                continue
            return decided.saved_at(max(r.notification.id for r in recordings))
        raise AssertionError("unreachable")

    def _recorded(self, events: Sequence[DomainEventProtocol[UUID]]) -> int | None:
        """The position of the last of ``events`` if all of them are already stored as they
        are (an append that committed although its caller was not told), else None."""
        if not events:
            return None
        return self.store.find_recorded([self.mapper.to_stored_event(e) for e in events])

    def take_due_snapshots(
        self,
        events: Sequence[DomainEventProtocol[UUID]],
        aggregates: Mapping[UUID, ChorusAggregate],
    ) -> None:
        """What ``Application.save`` does once it has recorded events, for events recorded
        another way (a group commit): a snapshot of each aggregate whose snapshotting
        interval one of them reached, through the library's public ``take_snapshot``."""
        for event in events:
            aggregate = aggregates.get(event.originator_id)
            if aggregate is None:
                continue
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is not None and event.originator_version % interval == 0:
                self.take_snapshot(event.originator_id, version=event.originator_version)
