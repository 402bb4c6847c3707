"""What the application needs from the outside, and what a command handler sees of the
application, as protocols (the outside is wired in ``api/bootstrap``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from domain.base import ChorusAggregate

A = TypeVar("A", bound=ChorusAggregate)


class PasswordHashing(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, stored_hash: str | None, password: str) -> bool: ...


class StoredCommand(Protocol):
    @property
    def fingerprint(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def result(self) -> dict[str, Any]: ...


class CommandStore(Protocol):
    """The event store's record of commands and credentials (see infrastructure.eventstore)."""

    def find_command(self, scope: str, key: str) -> StoredCommand | None: ...

    def find_password_hash(self, subject_id: UUID) -> str | None: ...


class CommandRecord(Protocol):
    """A command's idempotency record, saved with its events (application/command_path.py)."""

    @property
    def scope(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def result(self) -> dict[str, Any]: ...


@runtime_checkable
class Recorder(CommandStore, Protocol):
    """What the application calls on its event store's recorder beyond eventsourcing's own
    (implemented by infrastructure.eventstore.ChorusRecorder)."""

    def insert_batch(
        self,
        stored_events: Sequence[StoredEvent],
        commands: Sequence[tuple[CommandRecord, int, int]],
        credentials: Mapping[UUID, str],
        expect: Mapping[UUID, int] | None = None,
    ) -> Sequence[int]: ...

    def current_versions(self, ids: Sequence[UUID]) -> dict[UUID, int]: ...

    def find_recorded(self, stored_events: Sequence[StoredEvent]) -> int | None: ...


class Directory(Protocol):
    """Who knows whom, from the read models: candidates only, which a handler confirms
    against the aggregates (a read model may lag or lead what it decides on)."""

    def shared_workspaces(self, user_a: str, user_b: str) -> list[str]: ...


class DecisionContext(Protocol):
    """Everything a command handler may use: the current state of aggregates and the
    collaborators a decision needs. ``Chorus`` implements it over the event store; a group
    commit's batch over the batch's working set (application/group_commit.py)."""

    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def passwords(self) -> PasswordHashing: ...
    @property
    def directory(self) -> Directory | None: ...
    @property
    def store(self) -> CommandStore: ...

    def load(self, kind: type[A], aggregate_id: str | UUID, what: str | None = None) -> A:
        """The current state of an aggregate of the given kind, or NotFound."""
        ...

    def exists(self, aggregate_id: UUID) -> bool: ...

    def existing(self, aggregate_ids: Sequence[UUID]) -> set[UUID]:
        """Which of ``aggregate_ids`` have events."""
        ...
