"""What the application needs from the outside, as protocols (wired in ``api/bootstrap``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from uuid import UUID

from pycrdt import Doc


class PasswordHashing(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, stored_hash: str | None, password: str) -> bool: ...


class StoredCommand(Protocol):
    fingerprint: str
    status: int
    result: dict[str, Any]


class CommandStore(Protocol):
    """The event store's record of commands and credentials (see infrastructure.eventstore)."""

    def find_command(self, scope: str, key: str) -> StoredCommand | None: ...

    def find_password_hash(self, subject_id: UUID) -> str | None: ...


class Directory(Protocol):
    """Who knows whom, from the read models: candidates only, which a handler confirms
    against the aggregates (a read model may lag or lead what it decides on)."""

    def shared_workspaces(self, user_a: str, user_b: str) -> list[str]: ...


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
