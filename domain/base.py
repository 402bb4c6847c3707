"""The common base of every aggregate and event in Chorus."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, Self, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import NotFound


@dataclass(frozen=True)
class Cause:
    """Who issued a command, and the command id that makes its retries idempotent.

    Every event records both, so the log answers "who did this, and by which request".
    """

    actor_id: str | None
    command_id: str | None = None

    @property
    def actor(self) -> str:
        """The actor's id, or "" for none (a sign-up): what the rules compare ids with."""
        return self.actor_id or ""


# The cause of the domain method running now (see ``caused``); None outside one.
_CAUSE: ContextVar[Cause | None] = ContextVar("chorus_cause", default=None)

P = ParamSpec("P")
R = TypeVar("R")


def caused(method: Callable[P, R]) -> Callable[P, R]:
    """Marks a domain method whose events carry its ``cause`` argument: each event it
    triggers (directly or through the aggregates it creates) records the cause's
    ``actor_id`` and ``command_id``, unless the event method is given them explicitly (a
    user who registers is the actor of their own creation). So no event method lists the
    two, and no call passes them by hand."""
    index = list(inspect.signature(method).parameters).index("cause")

    @wraps(method)
    def with_cause(*args: P.args, **kwargs: P.kwargs) -> R:
        cause = kwargs["cause"] if "cause" in kwargs else args[index]
        # ``recording``, without a generator's cost on every command.
        token = _CAUSE.set(cause)  # type: ignore[arg-type]
        try:
            return method(*args, **kwargs)
        finally:
            _CAUSE.reset(token)

    return with_cause


@contextmanager
def recording(cause: Cause) -> Iterator[None]:
    """Events triggered inside carry ``cause`` (what ``caused`` does for a whole method; for
    the odd event written outside one, such as a test's legacy stream)."""
    token = _CAUSE.set(cause)
    try:
        yield
    finally:
        _CAUSE.reset(token)


def _stamped(kwargs: dict[str, Any]) -> dict[str, Any]:
    cause = _CAUSE.get()
    if cause is None:
        # Outside a @caused method the event method must be given both itself (an
        # operator's record, domain/operations.py): eventsourcing refuses it otherwise.
        return kwargs
    return {"actor_id": cause.actor_id, "command_id": cause.command_id, **kwargs}


class ChorusAggregate(Aggregate):
    """An aggregate whose every event carries ``actor_id`` and ``command_id``: those of the
    cause of the ``@caused`` domain method that triggered it."""

    class Event(Aggregate.Event):
        actor_id: str | None
        command_id: str | None

    class Created(Event, Aggregate.Created):
        pass

    @classmethod
    def _create(cls, event_class: type[Any], *, id: Any = None, **kwargs: Any) -> Self:
        return super()._create(event_class, id=id, **_stamped(kwargs))

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        super().trigger_event(event_class, **_stamped(kwargs))


def as_uuid(value: str | UUID) -> UUID:
    """Parses an id given by a client; a malformed id is simply not found."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"unknown id {value!r:.80}") from None
