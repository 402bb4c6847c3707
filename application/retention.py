"""Per-workspace retention (issue 20): the commands' handlers and the worker that runs it.

Retention is time-driven, not event-driven, so it is no ``Policy`` (those react to events):
a worker looks, every ``poll_s``, for workspaces whose cut-off (now minus their retention)
has moved past their last run, and records a ``RetentionApplied`` for the messages sent in
between (``ApplyRetention``). The erasure itself, destroying those messages' data keys, is
the retention read model's (projections/retention.py), from that event, in its own
transaction with its tracking position: exactly once, again on a rebuild, and with no window
in which a crash between the command and the key store leaves the texts readable.

Exactly once per message: each run covers ``[since, cutoff)`` where ``since`` is the last
run's cut-off, which the workspace aggregate keeps; the handler refuses (appends nothing for)
a run decided from a stale ``since``, and the event store's version check refuses the second
of two runs decided at once by two servers. A worker killed at any point leaves either no
event (the next run covers the same ground) or the event (the next run starts past it).

Known limit: a message is found through the timelines read model, once it has caught up with
the log's head as read at the start of the run. A message whose command was decided before
the cut-off but committed after that read (an in-flight write, milliseconds against a
retention of days) is passed over by that run and by every later one: its text stays until an
erasure of its author or of the message itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from application.commands import ApplyRetention, SetRetention
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause
from domain.retention import Expired, Kept, cutoff_for, run_is_due
from domain.workspaces import Workspace

log = logging.getLogger(__name__)

HANDLERS = HandlerTable()


@HANDLERS.on(SetRetention)
def set_retention(app: DecisionContext, cmd: SetRetention, cause: Cause) -> Decision:
    workspace = app.load(Workspace, cmd.workspace_id)
    workspace.check_member(cause.actor)
    workspace.set_retention(cmd.days, cause)
    return Decision([workspace])


@HANDLERS.on(ApplyRetention)
def apply_retention(app: DecisionContext, cmd: ApplyRetention, cause: Cause) -> Decision:
    workspace = app.load(Workspace, cmd.workspace_id)
    if not cmd.message_ids or not workspace.retention_due(cmd.since, cmd.cutoff):
        # A stale run (another server's, or a rerun after a crash): the run that moved the
        # cut-off covered these messages.
        return Decision([])
    workspace.apply_retention(cmd.cutoff, list(cmd.message_ids), cause)
    return Decision([workspace])


class RetentionReads(Protocol):
    """What the worker reads (projections/retention.py)."""

    def workspaces(self) -> Sequence[Kept]:
        """Every workspace with a retention."""
        ...

    def expired(
        self, workspace_id: str, since: datetime | None, cutoff: datetime, limit: int
    ) -> Sequence[Expired]:
        """Its messages sent in ``[since, cutoff)``, oldest first, at most ``limit``."""
        ...

    def head(self) -> int:
        """The log's last position."""
        ...


class RetentionWorker:
    """Runs every workspace's retention every ``poll_s``, in a thread of its own. ``day``
    is the length of a retention day (tests shorten it rather than wait); ``clock`` can be
    replaced by a test."""

    def __init__(
        self,
        reads: RetentionReads,
        *,
        record: Callable[[ApplyRetention, Cause], int | None],
        wait_for: Callable[[int], object],
        poll_s: float = 60.0,
        batch: int = 500,
        day: timedelta = timedelta(days=1),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.reads = reads
        self.record = record
        self.wait_for = wait_for
        self.poll_s = poll_s
        self.batch = batch
        self.day = day
        self.clock = clock
        self.runs_recorded = 0  # by this process (tests read it)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        """Runs now rather than at the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the database is away: tried again at the next poll
                log.warning("retention: %s; retrying", exc)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def run_once(self, max_runs: int | None = None) -> int:
        """Erases what every workspace's retention says is due now; the runs recorded.
        ``max_runs``: stop after that many (a test's crash half-way)."""
        now = self.clock()
        # Every message committed before this read is in the timelines read model once it
        # has caught up with it (see the module's known limit for the rest).
        if not self.wait_for(self.reads.head()):
            return 0  # the read models lag: tried again at the next poll
        recorded = 0
        for kept in self.reads.workspaces():
            since = kept.retained_before
            cutoff = cutoff_for(now, kept.days, self.day)
            while not self._stop.is_set() and run_is_due(since, cutoff):
                if max_runs is not None and recorded >= max_runs:
                    return recorded
                found = self.reads.expired(kept.workspace_id, since, cutoff, self.batch + 1)
                if not found:
                    break
                # A full batch ends before the first message it leaves out, so a run never
                # splits messages sent at the same instant (unless all of them were).
                upto = cutoff
                if len(found) > self.batch:
                    upto = found[self.batch].sent_at
                    found = [m for m in found if m.sent_at < upto] or [
                        m for m in found if m.sent_at == upto
                    ]
                    if found[-1].sent_at == upto:
                        upto = upto + timedelta(microseconds=1)
                command = ApplyRetention(
                    workspace_id=kept.workspace_id,
                    since=since,
                    cutoff=upto,
                    message_ids=[m.message_id for m in found],
                )
                position = self.record(command, Cause(actor_id=None))
                if position is None:
                    break  # another server ran it: its run is read at the next poll
                self.runs_recorded += 1
                recorded += 1
                if not self.wait_for(position):
                    break
                since = upto
        return recorded
