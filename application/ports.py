"""What the application needs from the outside, as protocols (wired in ``api/bootstrap``)."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID


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
