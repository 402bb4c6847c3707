"""Reactions: policies that turn events into commands ("when X happened, do Y").

A policy is declared once, here in shape and in its context's module in substance: a name
(its tracking row and the scope of its commands' idempotency keys), the event types it
handles, and a pure function from one such event to the commands it causes (no I/O: what
the world looks like when a command runs is its handler's business, decided against the
aggregates as any command is). The reaction runner (application/reaction_runner.py) feeds it
every committed event of those types in log order and runs the commands, exactly once per
event and policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.utils import get_topic

from application.commands import Command

# The idempotency scope of every reaction's commands: client scopes are user ids or
# "anonymous", so no client can take a reaction's key first.
SCOPE = "reactions"


@dataclass(frozen=True)
class Occurred:
    """The causing event as a policy sees it: its global position and the domain event."""

    position: int
    event: Any


@dataclass(frozen=True)
class Policy:
    """``react`` must be pure and deterministic: after a crash an event is given to it again
    and must yield the same commands in the same order (their index is part of their ids)."""

    name: str
    handles: tuple[type[Any], ...]
    react: Callable[[Occurred], Sequence[Command]]
    # When set, the policy can cause nothing before the first stored event of one of these
    # types (webhooks: nothing is delivered before the first registration opened a
    # workspace's webhooks): every event before it is passed without being handed to
    # ``react``, in one move per batch, so an instance without any webhook pays nothing.
    starts_with: tuple[type[Any], ...] = ()

    @property
    def topics(self) -> list[str]:
        """The stored topics of the handled event types."""
        return [get_topic(cls) for cls in self.handles]

    @property
    def start_topics(self) -> list[str]:
        return [get_topic(cls) for cls in self.starts_with]


def command_id(policy: str, position: int, index: int) -> str:
    """The idempotency key of the ``index``-th command that the event at ``position``
    caused: a rerun of that event finds it and appends nothing."""
    return f"{policy}:{position}:{index}"


@dataclass(frozen=True)
class Mark:
    """Where a policy is: every event up to ``position`` is done, except that when ``done``
    is not 0, only the first ``done`` commands of the event at ``position`` are (the runner
    writes 0 with an event's last command; a mark of an older release may say all of them:
    the event is read again to tell)."""

    position: int
    done: int


@dataclass(frozen=True)
class Step:
    """A move of a policy's mark from ``before`` to ``after``, saved in the same transaction
    as the events of the command that made it (the event store's ``reaction`` argument)."""

    policy: str
    before: Mark
    after: Mark
