"""Per-workspace message retention (issue 20): the rules, with no I/O.

A workspace's retention is a number of days (``MIN_DAYS``..``MAX_DAYS``) or off. Messages
older than that are erased by destroying their data keys (crypto-shredding, as a user's
erasure does): the log keeps their ciphertext, nobody can open it any more.

Runs are told apart by their cut-off: each ``RetentionApplied`` covers the messages sent in
``[since, cutoff)``, where ``since`` is the previous run's cut-off (the workspace keeps it).
The intervals do not overlap, so no message is erased by two runs, and a run decided
against a stale ``since`` (a second server, a rerun after a crash) is refused by the
aggregate rather than recorded twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import InvalidValue

MIN_DAYS = 1
# Ten years: longer is as good as off, and a bound keeps the cut-off's arithmetic sane.
MAX_DAYS = 3650


def check_days(days: int | None) -> int | None:
    """A retention as set: None (off) or whole days in range."""
    if days is None:
        return None
    if isinstance(days, bool) or not MIN_DAYS <= days <= MAX_DAYS:
        raise InvalidValue(f"retention must be {MIN_DAYS}..{MAX_DAYS} days, or null (off)")
    return days


def cutoff_for(now: datetime, days: int, day: timedelta = timedelta(days=1)) -> datetime:
    """Messages sent before this instant are past a retention of ``days``."""
    return now - days * day


def run_is_due(since: datetime | None, cutoff: datetime) -> bool:
    """A run from ``since`` to ``cutoff`` covers new ground only if the cut-off moved on
    (a retention made longer moves it back: nothing to do until time catches up)."""
    return since is None or cutoff > since


@dataclass(frozen=True)
class Kept:
    """A workspace's retention as the read model has it."""

    workspace_id: str
    days: int
    retained_before: datetime | None


@dataclass(frozen=True)
class Expired:
    """A message past its workspace's retention."""

    message_id: str
    sent_at: datetime
