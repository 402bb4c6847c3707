"""Runs the reaction policies (application/reactions.py) over the log, with the read models'
guarantees.

- In order, committed events only, in bounded batches: a policy reads the next
  ``batch_size`` positions after its mark and the events of its types among them.
- Exactly once per event and policy: a command's events, its idempotency record and the
  policy's new mark commit in one transaction (``execute_now(..., reaction=step)``), the
  mark moving by compare-and-set from where this runner read it. Its key is derived from
  the causing event (``command_id``), so a rerun of an event whose command did commit
  replays the stored answer and appends nothing. A command that appends nothing (the world
  changed: its handler decided there is nothing to do) moves the mark alone.
- Resumes after kill -9: the mark says which event, and which of its commands, come next.
- Several processes: one runs a policy at a time (a PostgreSQL advisory lock per policy,
  released with its connection when the process dies); the others try again at each wake-up
  and take over.
- Isolated: a policy that fails on an event (its function raises, the event does not
  decode, a command fails other than by a business rule) is held at that event, recorded as
  stuck with the error, and tried again with backoff; the other policies and the read
  models go on. A command refused by a business rule is the business's answer: the policy
  moves on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent

from application.chorus import Chorus, IdempotencyKeyReused
from application.command_path import CommandResult
from application.commands import Command
from application.group_commit import GroupCommitter
from application.reactions import SCOPE as REACTIONS_SCOPE
from application.reactions import Mark, Occurred, Policy, Step, command_id
from domain.base import Cause
from domain.errors import Conflict, DomainError
from infrastructure.stop_signal import StopSignal

log = logging.getLogger(__name__)

RETRY_S = 1.0
RETRY_MAX_S = 60.0
ERROR_CHARS = 500
# Errors that say nothing about the event: the database is away, or the data kept changing
# while a command was decided. The policy is simply tried again at the next wake-up.
_TRANSIENT = (OperationalError, InterfaceError, Conflict)


class PolicyState(Protocol):
    position: int
    done: int
    stuck_position: int | None
    error: str | None
    since: datetime | None


class ReactionStore(Protocol):
    """What the runner needs from the database (infrastructure/reaction_log.py)."""

    def ensure(self, policies: Sequence[str]) -> None: ...

    def lock(self, policy: str) -> bool: ...

    def check_locks(self) -> None: ...

    def release(self) -> None: ...

    def states(self) -> dict[str, Any]: ...

    def advance(self, move: Step) -> None: ...

    def advance_many(self, moves: Sequence[Step]) -> set[str]: ...

    def stick(self, policy: str, position: int, error: str) -> datetime: ...

    def events(
        self, *, after: int, topics: Sequence[str], limit: int
    ) -> tuple[int, int, list[tuple[int, StoredEvent]]]: ...

    def log_end(self) -> int: ...

    def first_of(self, topics: Sequence[str], *, after: int, upto: int) -> int | None: ...

    def skipped(self, position: int, policy: str | None = None) -> bool: ...


class Follow(Protocol):
    """Calls ``on_commit`` now and after commits to the store until ``stop`` is set
    (projections.log.follow_store, bound to the database)."""

    def __call__(self, stop: StopSignal, on_commit: Callable[[], None], what: str) -> None: ...


@dataclass(frozen=True)
class Stuck:
    """A policy held before the event at ``position``, which it cannot handle."""

    position: int
    error: str
    since: datetime


@dataclass(frozen=True)
class PolicyStatus:
    position: int
    lag: int
    stuck: Stuck | None


class _Lost(Exception):
    """Another process moved the policy's mark: this one stops running it for now."""


class ReactionRunner:
    def __init__(
        self,
        app: Chorus,
        store: ReactionStore,
        policies: Sequence[Policy],
        *,
        follow: Follow | None = None,
        batch_size: int = 500,
        retry_s: float = RETRY_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.app = app
        self.store = store
        self.policies = list(policies)
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError(f"policy names must be unique: {names}")
        self.follow = follow
        self.batch_size = batch_size
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.commands_run = 0  # commands this process executed (tests read it)
        self._retry_at: dict[str, tuple[float, float]] = {}  # stuck: (when, next delay)
        self._stuck_at: dict[str, tuple[int, float]] = {}  # stuck: (position, looked at)
        self._marks: dict[str, Mark] = {}
        # Every policy's event types, and what one ``catch_up`` read of them, by mark.
        self._topics = sorted({t for p in self.policies for t in p.topics})
        self._read: dict[int, tuple[int, int, list[tuple[int, StoredEvent]]]] = {}
        self._passed: list[Step] = []  # marks to move at the end of this ``catch_up``
        # Per policy with ``starts_with``: the position of its first start event once found
        # (the log is append-only, so it never changes), and up to where none was found.
        self._started: dict[str, int] = {}
        self._not_started_upto: dict[str, int] = {}
        self._locks_checked = 0.0
        self._stop = StopSignal()
        self._thread: threading.Thread | None = None
        self._ensured = False

    # -- background thread -------------------------------------------------------------------

    def start(self) -> None:
        if self.follow is None:
            raise ValueError("a runner started in the background needs ``follow``")
        if not self.policies:
            return
        follow = self.follow
        self._stop.clear()
        self._thread = threading.Thread(
            target=lambda: follow(self._stop, self.catch_up, "reaction runner"),
            name="reactions",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.store.release()

    # -- processing --------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Runs every policy this process may run (its lock is free or held here) and that
        is not waiting out a backoff, until each has read every committed event."""
        try:
            if not self._ensured:
                self.store.ensure([p.name for p in self.policies])
                self._ensured = True
            now = time.monotonic()
            if now - self._locks_checked >= 1.0:  # not at every commit: a round trip
                self.store.check_locks()
                self._locks_checked = now
        except Exception as exc:
            log.warning("reaction runner: %s; retrying", exc)
            return
        self._read = {}
        try:
            for policy in self.policies:
                if self._stop.is_set():
                    return
                if not self._due(policy.name):
                    continue
                try:
                    if self.store.lock(policy.name):
                        self._run(policy)
                except _Lost:
                    log.warning("reaction %s: another process moved it; leaving it", policy.name)
                except Exception as exc:  # the database is away: tried at the next wake-up
                    log.warning("reaction %s: %s; retrying", policy.name, exc)
        finally:
            self._move_passed()

    def _move_passed(self) -> None:
        """Moves, in one statement, the marks of the policies whose last read caused nothing
        (most of them, at most wake-ups): one transaction a wake-up, not one per policy. A
        mark that moved elsewhere meanwhile is read again next time."""
        moves, self._passed = self._passed, []
        if not moves:
            return
        try:
            moved = self.store.advance_many(moves)
        except Exception as exc:  # the database is away: the events are read again later
            log.warning("reaction runner: %s; retrying", exc)
            moved = set()
        for move in moves:
            if move.policy not in moved:
                self._marks.pop(move.policy, None)

    def _due(self, name: str) -> bool:
        """Not stuck, or its backoff has passed, or (looked at once a second) an operator has
        skipped the event it is stuck at since."""
        at = self._retry_at.get(name)
        now = time.monotonic()
        if at is None or at[0] <= now:
            return True
        position, looked = self._stuck_at[name]
        if now - looked < 1.0:
            return False
        self._stuck_at[name] = (position, now)
        return self.store.skipped(position, name)

    def _run(self, policy: Policy) -> None:
        # The mark as this process left it (every move is a compare-and-set from it, so a
        # mark another process moved meanwhile fails the move: it is read again then).
        stored = self._marks.pop(policy.name, None)
        if stored is None:
            state = self.store.states()[policy.name]
            stored = Mark(state.position, state.done)
        while not self._stop.is_set():
            # A mark with commands done holds its event: it may cause more.
            after = stored.position - 1 if stored.done else stored.position
            count, upto, events = self._events(policy, after)
            start = self._start(policy, upto)
            # Before the policy's start it causes nothing.
            todo = [(p, e) for p, e in events if start is not None and p >= start]
            committer = self.app.group_committer
            if committer is not None and todo:
                moved = self._run_together(committer, policy, stored, todo, upto)
                if moved is None:
                    return  # stuck
                stored = moved
            for position, event in todo if committer is None else ():
                moved = self._handle(policy, stored, position, event)
                if moved is None:
                    return  # stuck
                stored = moved
            if upto > stored.position:
                # Past events that caused nothing, up to the end of what was read (the last
                # read's move goes with the other policies', in ``_move_passed``).
                end = Mark(upto, 0)
                if count < self.batch_size:
                    self._passed.append(Step(policy.name, stored, end))
                else:
                    self.store.advance(Step(policy.name, stored, end))
                stored = end
            self._unstick(policy.name, stored.position)
            if count < self.batch_size:
                self._marks[policy.name] = stored
                return

    def _events(self, policy: Policy, after: int) -> tuple[int, int, list[tuple[int, StoredEvent]]]:
        """The store's ``events`` for ``policy``. The policies mostly stand at the same mark:
        one read of every policy's types serves all of them in one ``catch_up``."""
        read = self._read.get(after)
        if read is None:
            read = self.store.events(after=after, topics=self._topics, limit=self.batch_size)
            self._read[after] = read
        count, upto, events = read
        wanted = set(policy.topics)
        return count, upto, [(p, e) for p, e in events if e.topic in wanted]

    def _start(self, policy: Policy, upto: int) -> int | None:
        """The position of the first start event of ``policy`` at or before ``upto`` (0 for a
        policy without start events), or None when there is none yet. Each stretch of the log
        is looked at once per process (a restart looks at the stretch before its mark once)."""
        if not policy.starts_with:
            return 0
        if policy.name in self._started:
            return self._started[policy.name]
        after = self._not_started_upto.get(policy.name, 0)
        if upto > after:
            found = self.store.first_of(policy.start_topics, after=after, upto=upto)
            if found is not None:
                self._started[policy.name] = found
                return found
            self._not_started_upto[policy.name] = upto
        return None

    def _commands(
        self, policy: Policy, position: int, event: StoredEvent
    ) -> list[Command] | Exception:
        """The commands the event at ``position`` causes, or why there are none to be had."""
        try:
            happened = Occurred(position, self.app.mapper.to_domain_event(event))
        except Exception as exc:
            # A stored event nobody can read (written around the application, or by an older
            # release) is the read models' fault too: the operator's audited skip of it for
            # them (``chorus projections skip``) lets the reactions pass it as well.
            if self._skipped(policy, position):
                return []
            return exc
        try:
            return list(policy.react(happened))
        except Exception as exc:
            return [] if self._skipped(policy, position) else exc

    def _skipped(self, policy: Policy, position: int) -> bool:
        """Whether an operator skipped the event at ``position`` for ``policy`` (``chorus
        reactions skip``) or for the read models (an event nobody can read concerns both)."""
        if not self.store.skipped(position, policy.name):
            return False
        log.warning("reaction %s: passes the skipped event at %d", policy.name, position)
        return True

    def _run_together(
        self,
        committer: GroupCommitter,
        policy: Policy,
        stored: Mark,
        events: list[tuple[int, StoredEvent]],
        upto: int,
    ) -> Mark | None:
        """Runs the commands of a batch of events through the group committer, which
        decides them in order and commits many in one transaction, then moves the mark once
        to ``upto``. Exactly once still: a command's key comes from its event, so were the
        process to die before the mark moved, the rerun replays what had committed. Returns
        the mark, or None when the policy is stuck (its mark then says which command of
        which event is next)."""
        submitted: list[tuple[int, int, Future[CommandResult]]] = []
        held: tuple[int, Exception] | None = None
        for position, event in events:
            commands = self._commands(policy, position, event)
            if isinstance(commands, Exception):
                held = (position, commands)
                break
            first = stored.done if position == stored.position else 0
            for index in range(first, len(commands)):
                cause = Cause(actor_id=None, command_id=command_id(policy.name, position, index))
                future = committer.submit(commands[index], cause, scope=REACTIONS_SCOPE)
                submitted.append((position, index, future))
        wait([f for _, _, f in submitted])
        for position, index, future in submitted:
            try:
                future.result()
            except _TRANSIENT:
                raise
            except DomainError as exc:
                log.info("reaction %s: event %d: refused: %s", policy.name, position, exc)
            except Exception as exc:  # IdempotencyKeyReused (a policy not deterministic) too
                if self._skipped(policy, position):
                    continue
                # Held before this command: those after it that committed replay on rerun.
                at = Mark(position, index) if index else Mark(position - 1, 0)
                if at != stored and at.position >= stored.position:
                    self.store.advance(Step(policy.name, stored, at))
                    stored = at
                self._stick(policy.name, stored, position, exc)
                return None
            self.commands_run += 1
        if held is not None:
            self._stick(policy.name, stored, *held)
            return None
        end = Mark(upto, 0)
        if end != stored:
            self.store.advance(Step(policy.name, stored, end))
        return end

    def _handle(
        self, policy: Policy, stored: Mark, position: int, event: StoredEvent
    ) -> Mark | None:
        """Runs the commands the event at ``position`` causes that are not done yet, one
        transaction each (without a group committer). Returns the stored mark afterwards
        (unchanged when there were none: such events are passed in one move at the end of a
        batch), or None when the policy is stuck on it."""
        commands = self._commands(policy, position, event)
        if isinstance(commands, Exception):
            self._stick(policy.name, stored, position, commands)
            return None
        first = stored.done if position == stored.position else 0
        for index in range(first, len(commands)):
            # The last command's move says the event is done (done 0): the next read starts
            # after it, and a mark at the log's end shows the policy has nothing pending.
            last = index == len(commands) - 1
            step = Step(policy.name, stored, Mark(position, 0 if last else index + 1))
            cause = Cause(actor_id=None, command_id=command_id(policy.name, position, index))
            try:
                result = self.app.execute_now(commands[index], cause, reaction=step)
            except _TRANSIENT:
                raise
            except IdempotencyKeyReused as exc:
                # The same key for another command: the policy is not deterministic.
                self._stick(policy.name, stored, position, exc)
                return None
            except DomainError as exc:
                log.info("reaction %s: event %d: refused: %s", policy.name, position, exc)
                self.store.advance(step)
            except Exception as exc:
                if self._moved(policy.name, stored):
                    raise _Lost from exc
                if not self._skipped(policy, position):
                    self._stick(policy.name, stored, position, exc)
                    return None
                self.store.advance(step)
            else:
                if result.replayed or result.position is None:
                    # Nothing appended now: the mark moves alone.
                    self.store.advance(step)
            stored = step.after
            self.commands_run += 1
        return stored

    def _moved(self, name: str, stored: Mark) -> bool:
        state = self.store.states().get(name)
        return state is None or Mark(state.position, state.done) != stored

    def _stick(self, name: str, stored: Mark, position: int, exc: Exception) -> None:
        """Holds the policy before the event at ``position`` (its mark moved up to it, past
        the events before it that caused nothing) and records why."""
        error = _describe(exc)
        if stored.position < position - 1:
            self.store.advance(Step(name, stored, Mark(position - 1, 0)))
        self.store.stick(name, position, error)
        now = time.monotonic()
        _, delay = self._retry_at.get(name, (now, self.retry_s / 2))
        delay = min(delay * 2, self.retry_max_s)
        if name not in self._retry_at:
            log.error(
                "reaction %s cannot handle the event at position %d and stays before it; the"
                " other reactions and the read models go on: %s",
                name,
                position,
                error,
            )
        self._retry_at[name] = (now + delay, delay)
        self._stuck_at[name] = (position, now)

    def _unstick(self, name: str, position: int) -> None:
        self._stuck_at.pop(name, None)
        if self._retry_at.pop(name, None) is not None:
            log.warning("reaction %s moved on (at position %d)", name, position)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, PolicyStatus]:
        """Each policy's position, lag behind the log and, if stuck, where and why (from the
        database: whichever process runs it)."""
        states = self.store.states()
        end = self.store.log_end()
        out = {}
        for policy in self.policies:
            state = states.get(policy.name)
            if state is None:
                out[policy.name] = PolicyStatus(0, end, None)
                continue
            stuck = None
            if state.stuck_position is not None and state.since is not None:
                stuck = Stuck(state.stuck_position, state.error or "", state.since)
            out[policy.name] = PolicyStatus(state.position, max(0, end - state.position), stuck)
        return out


def _describe(exc: Exception) -> str:
    """The error as one line of printable text (it is stored in a text column and logged)."""
    text = f"{type(exc).__name__}: {exc}"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:ERROR_CHARS]
