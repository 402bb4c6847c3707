"""Group commit (on by default, ``CHORUS_GROUP_COMMIT``): concurrent commands committed together.

One writer thread per ``Chorus`` takes the commands queued by callers (up to ``max_batch``,
or what arrived within ``max_wait_s``), decides each of them in order through the one
command path (application/command_path.py ``decide``, as ``Chorus.execute_now`` does: the
same idempotency, authorization and domain rules), and saves all their events, idempotency
records and credentials in one transaction, under the event store's table lock, as one
command's would be. Each caller is answered only after that commit (or with its own
command's error). This module only schedules: batches, working sets, fallbacks.

- Isolation: a command is decided on the batch's working set (what earlier commands of the
  batch made of each aggregate, read once a batch from the repository). A command refused
  (any exception) leaves no trace: the aggregates it loaded are read again and the batch's
  earlier events for them applied (state changes only through events), so the next command
  sees the state before it. Copying every aggregate before each decision instead cost ~40 %
  of the writer's time.
- Idempotency: a key already recorded is replayed by ``decide``. A command with the same key
  as an earlier one of the batch waits for the next batch, which follows at once: the first
  one's record is then stored, so it gets the first result (or IdempotencyKeyReused).
- Conflicts: another writer (another process, or ``execute_now`` here) may have written one of
  the batch's aggregates, or recorded one of its keys: the insert fails with IntegrityError
  and nothing of the batch is stored. Each command of the batch is then run again alone
  through ``execute_now`` (which decides again and retries), so a conflict fails only the
  commands it concerns.
- Remembered aggregates: what a committed batch left its aggregates as is kept (up to
  KNOWN_AGGREGATES, least recently used dropped), and the next batches decide on it without
  reading the store (two reads a SendMessage, a quarter of the writer's time before). The
  store may have moved since (another process, or a command run outside the batches): the
  batch's transaction checks, under the table lock, that each remembered aggregate it read
  is still at the version it was read at (``chorus_expect_versions``) and fails like a
  conflict otherwise; a batch that writes nothing checks the same with one query. Either way
  the memory is dropped and the batch's commands run again alone. The same holds for what a
  batch reads fresh from the store: another process may commit between that read and the
  batch's insert (a kick, a role revoked), so every aggregate a batch read is checked, not
  only remembered ones (issue 17: a write decided before an access change is not stored
  after it).
- The repository's cache only ever holds state read from the store (the app runs with
  AGGREGATE_CACHE_FASTFORWARD, which never caches saved aggregates), so a rolled-back batch
  leaves nothing in it.
- Commands carrying a password (sign-up, password-protected workspaces) are not batched: their
  hashing (argon2, ~0.3 s) would stall every other command behind it. They run in the
  caller's thread through ``execute_now``, with the same optimistic concurrency.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.domain import CanMutateAggregate, DomainEventProtocol
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Mapper,
    OperationalError,
    StoredEvent,
)

from application.command_path import (
    CommandRecord,
    CommandResult,
    Reads,
    decide,
    idempotency_scope,
)
from application.commands import Command
from application.decisions import Handler
from application.ports import (
    CommandStore,
    DecisionContext,
    Directory,
    PasswordHashing,
    Recorder,
    StoredCommand,
)
from domain.base import Cause, ChorusAggregate, as_uuid
from domain.errors import NotFound
from infrastructure import metrics, tracing

Event = CanMutateAggregate[UUID]


class Host(DecisionContext, Protocol):
    """What the group committer uses of its application: ``Chorus``, which builds the
    committer (naming the class here would be an import cycle)."""

    @property
    def store(self) -> Recorder: ...
    @property
    def repository(self) -> Repository[UUID]: ...
    @property
    def mapper(self) -> Mapper[UUID]: ...
    @property
    def handlers(self) -> Mapping[type[Command], Handler]: ...

    def execute_now(
        self, command: Command, cause: Cause, *, scope: str | None = None
    ) -> CommandResult: ...

    def take_due_snapshots(
        self,
        events: Sequence[DomainEventProtocol[UUID]],
        aggregates: Mapping[UUID, ChorusAggregate],
    ) -> None: ...


A = TypeVar("A", bound=ChorusAggregate)
log = logging.getLogger(__name__)

MAX_BATCH = 256
# Aggregates remembered between batches (see the module's docstring).
KNOWN_AGGREGATES = 10_000
# How long the writer keeps trying to store a decided batch while PostgreSQL is unreachable
# (its callers wait meanwhile), and its pause between tries.
OUTAGE_WAIT_S = 60.0
OUTAGE_PAUSE_S = 0.25


@dataclass
class _Item:
    command: Command
    cause: Cause
    future: Future[CommandResult]
    scope: str | None = None  # the idempotency keys' owner, when not the actor (reactions)
    result: CommandResult | None = None
    error: BaseException | None = None
    record: CommandRecord | None = None
    events: list[Event] = field(default_factory=list)
    # The submitting command's span (tracing on): its commit span is a child of it.
    trace: str | None = None
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class Stats:
    """Counters, for tests and benchmarks."""

    batches: int = 0  # transactions committed by the writer
    batched_commands: int = 0  # commands answered from those transactions
    largest_batch: int = 0
    fallbacks: int = 0  # batches that hit IntegrityError and were run again one by one
    bypassed: int = 0  # commands with a password, run in the caller's thread
    store_reads: int = 0  # aggregates the writer read from the store
    remembered_reads: int = 0  # aggregates it took from what earlier batches left
    # Batches that wrote nothing, decided on remembered aggregates that the store had moved
    # past (a batch that writes finds out in its transaction: a fallback).
    stale: int = 0


class _BatchView:
    """The ``DecisionContext`` a command of a batch is decided on: the batch's working set
    over the store. What the batch reads from outside it (remembered or from the store) is
    noted in ``reads`` at the version read: the batch's transaction expects it unchanged."""

    def __init__(
        self,
        committer: GroupCommitter,
        working: dict[UUID, ChorusAggregate],
        credentials: dict[UUID, str],
        reads: Reads,
    ) -> None:
        self._committer = committer
        self._app = committer.app
        self._working = working
        self._credentials = credentials
        self._reads = reads
        self.loaded: dict[UUID, ChorusAggregate] = {}

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._app.clock

    @property
    def passwords(self) -> PasswordHashing:
        return self._app.passwords

    @property
    def directory(self) -> Directory | None:
        return self._app.directory

    @property
    def store(self) -> CommandStore:
        return self

    def find_command(self, scope: str, key: str) -> StoredCommand | None:
        asked = self._committer.commands_asked
        if (scope, key) in asked:
            return asked[(scope, key)]
        return self._app.store.find_command(scope, key)

    def find_password_hash(self, subject_id: UUID) -> str | None:
        if subject_id in self._credentials:
            return self._credentials[subject_id]
        return self._app.store.find_password_hash(subject_id)

    def load(self, kind: type[A], aggregate_id: str | UUID, what: str | None = None) -> A:
        label = what or kind.__name__.lower()
        uid = as_uuid(aggregate_id)
        aggregate = self.loaded.get(uid)
        if aggregate is None:
            if uid not in self._working:
                known = self._committer.known.get(uid)
                if known is not None:
                    self._working[uid] = known
                    self._reads.versions[uid] = known.version
                    self._committer.stats.remembered_reads += 1
                else:
                    # A fresh object (the repository copies what it caches), read once
                    # a batch; the batch's commands decide on it in turn.
                    self._working[uid] = self._reads.load(ChorusAggregate, uid, label)
                    self._committer.stats.store_reads += 1
            aggregate = self._working[uid]
            self.loaded[uid] = aggregate
        if not isinstance(aggregate, kind):
            raise NotFound(f"unknown {label}")
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        if (
            aggregate_id in self.loaded
            or aggregate_id in self._working
            or aggregate_id in self._committer.known
        ):
            return True
        # Absent when an earlier command of the batch asked, and none has created it since
        # (it would be in the working set): one query per batch, not per command.
        absent = self._committer.absent
        if aggregate_id in absent:
            return False
        if self._app.exists(aggregate_id):
            return True
        absent.add(aggregate_id)
        return False

    def existing(self, aggregate_ids: Sequence[UUID]) -> set[UUID]:
        held = self.loaded.keys() | self._working.keys() | self._committer.known.keys()
        found = {uid for uid in aggregate_ids if uid in held}
        return found | self._app.existing([uid for uid in aggregate_ids if uid not in found])


_STOP = object()


class GroupCommitter:
    """One writer thread committing the commands of concurrent callers together."""

    def __init__(
        self,
        app: Host,
        *,
        max_batch: int = MAX_BATCH,
        max_wait_s: float = 0.0,
        batch_passwords: bool = False,
        outage_wait_s: float = OUTAGE_WAIT_S,
    ) -> None:
        self.app = app
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.outage_wait_s = outage_wait_s
        self.batch_passwords = batch_passwords
        self.stats = Stats()
        # What committed batches left their aggregates as (writer thread only).
        self.known: OrderedDict[UUID, ChorusAggregate] = OrderedDict()
        # During a batch (writer thread only): the idempotency records of its commands' keys,
        # read in one query (None: not recorded), and aggregates found not to exist.
        self.commands_asked: dict[tuple[str, str], StoredCommand | None] = {}
        self.absent: set[UUID] = set()
        # Set by a command run outside the batches: what is remembered may be stale.
        self._forget = False
        # Tests: ``hold()`` keeps the writer from starting a batch, so that commands
        # submitted meanwhile share one; ``before_commit`` runs between the decisions and
        # the insert (to make a concurrent writer win the race).
        self._gate = threading.Lock()
        self.before_commit: Callable[[], None] | None = None
        self._queue: queue.Queue[object] = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._bypass_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="chorus-group-commit", daemon=True)
        self._thread.start()

    # -- callers ----------------------------------------------------------------------------

    def submit(
        self, command: Command, cause: Cause, *, scope: str | None = None
    ) -> Future[CommandResult]:
        """Queues ``command``; ``scope``: whose idempotency keys its key is among (the
        actor's unless given: the reactions keep theirs apart)."""
        future: Future[CommandResult] = Future()
        with self._close_lock:
            if self._closed:
                raise RuntimeError("the group committer is closed")
            self._queue.put(_Item(command, cause, future, scope, trace=tracing.traceparent()))
        return future

    def takes(self, command: Command) -> bool:
        """Whether ``command`` goes through the writer (see ``submit``); else the caller runs
        it with ``Chorus.execute_now``."""
        if threading.current_thread() is self._thread:
            return False
        return self.batch_passwords or getattr(command, "password", None) is None

    def execute(self, command: Command, cause: Cause) -> CommandResult:
        if not self.takes(command):
            with self._bypass_lock:  # callers' threads count these
                self.stats.bypassed += 1
            try:
                return self.app.execute_now(command, cause)
            finally:
                self._forget = True  # it may have written what the writer remembers
        return self.submit(command, cause).result()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """While held, the writer starts no batch: what is submitted meanwhile is decided
        and committed together once released (up to ``max_batch``)."""
        with self._gate:
            yield

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- the writer -------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [cast(_Item, first)]
            try:
                with self._gate:
                    stopping = self._fill(batch)
                    pending = batch
                    while pending:
                        now, pending = _split_at_repeated_keys(pending)
                        self._process(now)
            except BaseException as error:  # handed to the callers
                self.known.clear()
                log.exception("group commit failed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)

    def _fill(self, batch: list[_Item]) -> bool:
        """Adds what is queued (waiting up to ``max_wait_s`` for more); True on close."""
        deadline: float | None = None
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if self.max_wait_s <= 0:
                    return False
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.max_wait_s
                if now >= deadline:
                    return False
                try:
                    item = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    return False
            if item is _STOP:
                return True
            batch.append(cast(_Item, item))
        return False

    def _process(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        for item in batch:
            metrics.GROUP_COMMIT_WAIT.observe(started - item.queued_at)
        if self._forget:
            self._forget = False
            self.known.clear()
        working: dict[UUID, ChorusAggregate] = {}
        credentials: dict[UUID, str] = {}
        # Each aggregate's events decided so far in this batch: what undoes a refused
        # command's changes (the aggregate is read again and these applied to it).
        decided: dict[UUID, list[Event]] = {}
        reads = Reads(self.app)
        self.absent = set()
        self.commands_asked = self._ask_commands(batch)
        for item in batch:
            self._decide(item, working, credentials, decided, reads)
        writing = [i for i in batch if i.events]
        if writing:
            events = [e for i in writing for e in i.events]
            mapper = self.app.mapper
            stored = [mapper.to_stored_event(e) for e in events]
            records: list[tuple[CommandRecord, int, int]] = []
            spans: list[tuple[_Item, int, int]] = []
            start = 0
            for item in writing:
                stop = start + len(item.events)
                spans.append((item, start, stop))
                if item.record is not None:
                    records.append((item.record, start, stop))
                start = stop
            if self.before_commit is not None:
                self.before_commit()
            commits, traces = _commit_spans(spans, len(batch))
            try:
                # One transaction for every command of the batch: its statements show in
                # the first traced command's commit span.
                with tracing.current(commits[0] if commits else None):
                    ids = self._insert(stored, records, credentials, reads.versions, traces)
            except IntegrityError:
                _end(commits, "conflict: run again alone")
                self.known.clear()
                self._fall_back(batch, stored, spans)
                return
            except BaseException:
                _end(commits, "failed")
                raise
            _end(commits, None)
            for item, start, stop in spans:
                position = max(ids[start:stop])
                assert item.result is not None
                item.result = CommandResult(
                    item.result.status, {**item.result.body, "position": position}
                )
            self.stats.batches += 1
            self.stats.batched_commands += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            metrics.GROUP_COMMIT_BATCH.observe(len(batch))
            self._take_snapshots(events, working)
        elif reads.versions and self._changed_since(reads.versions):
            # Decided on remembered state that has changed since: the refusals (or no-ops)
            # may be wrong. Decided again, alone, on the store's state.
            self.stats.stale += 1
            self.known.clear()
            self._run_alone(batch)
            return
        self._remember(working)
        for item in batch:
            self._answer(item)

    def _ask_commands(self, batch: list[_Item]) -> dict[tuple[str, str], StoredCommand | None]:
        """The records of the batch's idempotency keys, in one query when there are several
        (a reaction's batch has one per command). A key is in a batch once
        (``_split_at_repeated_keys``), so what this batch records cannot change the answer."""
        keys = [
            (item.scope or idempotency_scope(item.cause), item.cause.command_id)
            for item in batch
            if item.cause.command_id is not None
        ]
        if len(keys) < 2:
            return {}
        found = self.app.store.find_commands(keys)
        return {k: found.get(k) for k in keys}

    def _changed_since(self, read: dict[UUID, int]) -> bool:
        return self.app.store.current_versions(list(read)) != read

    def _remember(self, working: dict[UUID, ChorusAggregate]) -> None:
        for uid, aggregate in working.items():
            self.known[uid] = aggregate
            self.known.move_to_end(uid)
        while len(self.known) > KNOWN_AGGREGATES:
            self.known.popitem(last=False)

    def _insert(
        self,
        stored: list[StoredEvent],
        records: list[tuple[CommandRecord, int, int]],
        credentials: dict[UUID, str],
        expect: dict[UUID, int],
        traces: list[str | None] | None = None,
    ) -> Sequence[int]:
        """The batch's insert, tried again while the database is unreachable (up to
        ``outage_wait_s``): a caller without an idempotency key cannot retry safely, so its
        answer waits for the outcome. An attempt that committed though its answer was lost
        makes the next one fail with IntegrityError, settled by ``_fall_back``."""
        deadline = time.monotonic() + self.outage_wait_s
        while True:
            try:
                return self.app.store.insert_batch(stored, records, credentials, expect, traces)
            except (OperationalError, InterfaceError):
                if time.monotonic() >= deadline:
                    raise
                log.warning("group commit: the database is unreachable; trying again")
                time.sleep(OUTAGE_PAUSE_S)

    def _decide(
        self,
        item: _Item,
        working: dict[UUID, ChorusAggregate],
        credentials: dict[UUID, str],
        decided: dict[UUID, list[Event]],
        reads: Reads,
    ) -> None:
        view = _BatchView(self, working, credentials, reads)
        try:
            outcome = decide(view, item.command, item.cause, self.app.handlers, scope=item.scope)
            events = [e for a in outcome.aggregates for e in a.collect_events()]
        except Exception as error:  # the command's own answer
            item.error = error
            # It may have changed what it loaded before it was refused: those aggregates are
            # rebuilt as the batch's earlier commands left them (state changes only through
            # events, so replaying them is exact).
            for uid in view.loaded:
                self._rebuild(uid, working, decided)
            return
        item.result = outcome.result
        # As on the default path, only the decision's aggregates are saved: changes to any
        # other it loaded are dropped, not left for a later command to save.
        saved = {a.id for a in outcome.aggregates}
        for uid, aggregate in view.loaded.items():
            if uid not in saved and aggregate.pending_events:
                self._rebuild(uid, working, decided)
        if not events:
            return
        item.events = events
        item.record = outcome.record
        for event in events:
            decided.setdefault(event.originator_id, []).append(event)
        for aggregate in outcome.aggregates:
            working[aggregate.id] = aggregate
        credentials.update(outcome.credentials)

    def _rebuild(
        self, uid: UUID, working: dict[UUID, ChorusAggregate], decided: dict[UUID, list[Event]]
    ) -> None:
        earlier = decided.get(uid, [])
        try:
            aggregate: ChorusAggregate | None = cast(ChorusAggregate, self.app.repository.get(uid))
        except AggregateNotFoundError:
            aggregate = None  # created earlier in this batch
        for event in earlier:
            aggregate = event.mutate(aggregate)
        if aggregate is None:
            working.pop(uid, None)
        else:
            working[uid] = aggregate

    def _answer(self, item: _Item) -> None:
        if item.error is not None:
            item.future.set_exception(item.error)
        else:
            assert item.result is not None
            item.future.set_result(item.result)

    def _fall_back(
        self, batch: list[_Item], stored: list[StoredEvent], spans: list[tuple[_Item, int, int]]
    ) -> None:
        """The batch's transaction failed and stored nothing (unless its COMMIT committed
        though its answer was lost, and the store's retry then conflicted with itself)."""
        self.stats.fallbacks += 1
        recorder = self.app.store
        if recorder.find_recorded(stored) is not None:
            for item, start, stop in spans:
                position = recorder.find_recorded(stored[start:stop])
                assert item.result is not None
                item.result = CommandResult(
                    item.result.status, {**item.result.body, "position": position}
                )
            for item in batch:
                self._answer(item)
            return
        self._run_alone(batch)

    def _run_alone(self, batch: list[_Item]) -> None:
        for item in batch:
            try:
                result = self.app.execute_now(item.command, item.cause, scope=item.scope)
            except Exception as error:  # the command's own answer
                item.future.set_exception(error)
            else:
                item.future.set_result(result)

    def _take_snapshots(self, events: list[Event], working: dict[UUID, ChorusAggregate]) -> None:
        try:
            self.app.take_due_snapshots(events, working)
        except Exception:  # a snapshot is a cache: the commands are committed anyway
            log.exception("snapshot after a group commit failed")


def _commit_spans(
    spans: list[tuple[_Item, int, int]], size: int
) -> tuple[list[Any], list[str | None] | None]:
    """One ``chorus.commit`` span per traced command of the batch, child of its command's
    span, and each event's traceparent (its command's commit span): the batch is one
    transaction, but each trace sees its own command committed. Nothing when untraced."""
    if not tracing.ENABLED or not any(item.trace for item, _, _ in spans):
        return [], None
    commits: list[Any] = []
    traces: list[str | None] = []
    for item, start, stop in spans:
        if item.trace is None:
            traces.extend([None] * (stop - start))
            continue
        commit = tracing.start(
            "chorus.commit",
            parent=item.trace,
            attributes={"chorus.batch_size": size, "chorus.events": stop - start},
        )
        commits.append(commit)
        traces.extend([tracing.traceparent_of(commit)] * (stop - start))
    return commits, traces


def _end(commits: list[Any], error: str | None) -> None:
    for commit in commits:
        if error is not None:
            commit.set_attribute("chorus.outcome", error)
        commit.end()


def _split_at_repeated_keys(batch: list[_Item]) -> tuple[list[_Item], list[_Item]]:
    """The batch, and the commands in it whose idempotency key an earlier one of it has:
    those go in a batch of their own right after, where the first one's record is stored
    (``decide`` replays it) or, if it stored nothing, they are decided as usual."""
    keys: set[tuple[str, str]] = set()
    now: list[_Item] = []
    later: list[_Item] = []
    for item in batch:
        key = item.cause.command_id
        if key is not None:
            scoped = (item.scope or idempotency_scope(item.cause), key)
            if scoped in keys:
                later.append(item)
                continue
            keys.add(scoped)
        now.append(item)
    return now, later
