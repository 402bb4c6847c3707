"""What every projection is: tables it owns, and how each event it cares about changes them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Cursor


@dataclass(frozen=True)
class LogEvent:
    """One stored event as projections (and the public envelope) see it."""

    position: int
    stream: UUID
    version: int
    type: str
    at: datetime
    actor: str | None
    command_id: str | None
    data: dict[str, Any]


class Projection(ABC):
    """A read model: owns its tables and its tracking position (kept by the runner in the
    same transaction as the rows), so it is exactly-once, resumable and rebuildable."""

    name: str
    tables: tuple[str, ...]
    create_sql: str
    handles: frozenset[str]

    @abstractmethod
    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        """Changes the read model for one event (only types in ``handles`` are passed)."""
