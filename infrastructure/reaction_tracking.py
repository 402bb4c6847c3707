"""Where each reaction policy is in the log: the ``chorus_reactions`` table and how a mark
moves (the event store moves it with a command's events; infrastructure/reaction_log.py
otherwise).

A policy's mark (``position``, ``done``: every event up to ``position`` is handled, but when
``done`` is not 0, only the first ``done`` commands of the event at ``position``) moves in
the transaction that appends its command's events (infrastructure/eventstore.py,
``ADVANCE``), or alone when a command appends nothing. Each move is a compare-and-set from
the mark the runner last read: a process that lost its lock, or raced another one, finds the
mark moved and appends nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

TRACKING_SQL = """
CREATE TABLE IF NOT EXISTS chorus_reactions (
    policy text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    done integer NOT NULL DEFAULT 0,
    -- A policy that cannot handle the event at stuck_position (its mark is before it): why
    -- and since when.
    stuck_position bigint,
    error text,
    since timestamptz
);
"""

# Compare-and-set of a policy's mark; no row back: the mark is not where the caller read it.
ADVANCE = (
    "UPDATE chorus_reactions SET position = %s, done = %s,"
    " stuck_position = NULL, error = NULL, since = NULL"
    " WHERE policy = %s AND position = %s AND done = %s RETURNING 1"
)
# The first key of the two-key advisory locks that let one process at a time run a policy.
LOCK_CLASS = 7_140_412


class MarkMoved(Exception):
    """A policy's mark is not where this process read it: another process moved it."""


class Move(Protocol):
    """A move of a policy's mark (application.reactions.Step)."""

    @property
    def policy(self) -> str: ...

    @property
    def before(self) -> Any: ...

    @property
    def after(self) -> Any: ...


def advance_params(move: Move) -> tuple[Any, ...]:
    return (
        move.after.position,
        move.after.done,
        move.policy,
        move.before.position,
        move.before.done,
    )
