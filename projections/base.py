"""What every projection is: tables it owns, and how the events it cares about change them.

Two kinds: an ``EventProjection`` changes its tables one event at a time, in Python; a
``SetProjection`` changes them for a whole span of the log at once, with one SQL statement per
kind of change reading the span's events in PostgreSQL. The high-volume streams (messages,
reactions) are set-based: a batch of a thousand messages is one ``INSERT ... SELECT``, not a
thousand round trips through Python, which is what makes a rebuild fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Cursor

from infrastructure.serialisation import event_type_name


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


@dataclass(frozen=True)
class Span:
    """The ``count`` events with positions in ``(after, upto]``, every one of them committed,
    and the stored topics among them (so statements for absent types are not sent)."""

    after: int
    upto: int
    topics: frozenset[str]
    count: int

    @property
    def types(self) -> frozenset[str]:
        return frozenset(event_type_name(t) for t in self.topics)

    def topics_of(self, types: Iterable[str]) -> list[str]:
        """The span's topics of these event types, sorted."""
        wanted = set(types)
        return sorted(t for t in self.topics if event_type_name(t) in wanted)

    def params(self) -> dict[str, int]:
        return {"after": self.after, "upto": self.upto}


class Projection(ABC):
    """A read model: owns its tables and its tracking position (kept by the runner in the
    same transaction as the rows), so it is exactly-once, resumable and rebuildable."""

    name: str
    tables: tuple[str, ...]
    create_sql: str
    handles: frozenset[str]


class EventProjection(Projection):
    @abstractmethod
    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        """Changes the read model for one event (only types in ``handles`` are passed)."""


class SetProjection(Projection):
    @abstractmethod
    def apply_span(self, cur: Cursor[Any], span: Span) -> None:
        """Changes the read model for every event of the span, as if they had been applied
        one by one in position order. Statements only (nothing read back): the runner
        pipelines them."""
