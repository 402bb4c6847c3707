"""What the application needs from the outside, and what a command handler sees of the
application, as protocols (the outside is wired in ``api/bootstrap``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from pycrdt import Doc

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
        traces: Sequence[str | None] | None = None,
    ) -> Sequence[int]: ...

    def current_versions(self, ids: Sequence[UUID]) -> dict[UUID, int]: ...

    def find_commands(
        self, keys: Sequence[tuple[str, str]]
    ) -> Mapping[tuple[str, str], StoredCommand]: ...

    def find_recorded(self, stored_events: Sequence[StoredEvent]) -> int | None: ...


class Directory(Protocol):
    """Who knows whom, from the read models: candidates only, which a handler confirms
    against the aggregates (a read model may lag or lead what it decides on)."""

    def shared_workspaces(self, user_a: str, user_b: str) -> list[str]: ...

    def online(self, user_ids: Sequence[str]) -> set[str]:
        """Which of these users have a session open (``@here``), from the presence read
        model: as it is when the reaction runs."""
        ...


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


# -- what application services need of the process's log follower, signal bus and read models
# (implemented in api/realtime and projections; wired in api/bootstrap) -------------------------


class LoggedEvent(Protocol):
    """One stored event, as the log follower hands it on (projections.base.LogEvent)."""

    @property
    def stream(self) -> UUID: ...

    @property
    def type(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def data(self) -> dict[str, Any]: ...


class EventScope(Protocol):
    @property
    def workspace(self) -> str | None: ...


class Delivered(Protocol):
    """An event delivered by the log follower, with the workspace it belongs to."""

    @property
    def event(self) -> LoggedEvent: ...

    @property
    def scope(self) -> EventScope: ...


class LogListener(Protocol):
    def deliver(self, batch: Sequence[Delivered]) -> None: ...


class LogFollower(Protocol):
    """The process's one subscription to the log (api/realtime/hub.py ``EventHub``)."""

    @property
    def delivered(self) -> int:
        """The log position delivered to every listener so far."""
        ...

    def add(self, listener: LogListener) -> None: ...

    def remove(self, listener: LogListener) -> None: ...


class SignalRecipient(Protocol):
    user_id: str

    async def send(self, data: bytes) -> None: ...


class Signals(Protocol):
    """Passing short-lived frames to the other instances (api/realtime/signals.py)."""

    def join(self, group: str, recipient: SignalRecipient) -> None: ...

    def leave(self, group: str, recipient: SignalRecipient) -> None: ...

    async def publish(self, group: str, frame: bytes, sender: SignalRecipient) -> None: ...


class BuiltDocument(Protocol):
    """A document's CRDT state built from what is stored."""

    @property
    def doc(self) -> Doc[Any]: ...

    @property
    def version(self) -> int: ...

    @property
    def size(self) -> int: ...


class StoredDocument(Protocol):
    """A document as stored (projections/documents.py): a snapshot's state and the updates
    of the log after it, as of ``position``."""

    @property
    def updates(self) -> list[bytes]: ...

    @property
    def position(self) -> int: ...

    @property
    def state_vector(self) -> bytes: ...

    def build(self) -> BuiltDocument: ...
