"""Zero-downtime rebuilds: read models rebuilt from position 0 into fresh tables while the
live ones keep serving, then swapped in atomically (blue/green).

The fresh tables live in the schema ``chorus_rebuild`` (the rebuilding connection puts it
first on its ``search_path``, so the projections' own SQL is unchanged). Once they have
caught up, one transaction locks the live tracking table (pausing every live runner), applies
the last events, replaces the live tables with the rebuilt ones, and recreates the analytics
views: readers see the old model or the new one, never a half-built one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg.rows import dict_row

from projections.analytics import create_views
from projections.base import Projection, SetProjection
from projections.log import max_position
from projections.runner import TRANSIENT, apply_batch, create_tables, run_batch

SCHEMA = "chorus_rebuild"
SWAP_ATTEMPTS = 200
SWAP_LOCK_TIMEOUT_MS = 100


def rebuild(
    database_url: str,
    projections: Sequence[Projection],
    *,
    until: int | None = None,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Rebuilds the given read models and swaps them in; returns the position reached.
    ``progress`` is called with the number of events read by each batch."""
    if not projections:
        # No tracking position would ever move: the bulk pass would read the log forever.
        raise ValueError("no read model to rebuild")
    names = [p.name for p in projections]
    build(database_url, projections, until=until, batch_size=batch_size, progress=progress)
    for _ in range(SWAP_ATTEMPTS):
        try:
            return _swap(database_url, projections, names, until, batch_size, progress)
        except psycopg.errors.LockNotAvailable:
            continue  # readers held a table a moment too long: let them finish, try again
    raise RuntimeError(f"could not take the read models' locks in {SWAP_ATTEMPTS} attempts")


def build(
    database_url: str,
    projections: Sequence[Projection],
    *,
    schema: str = SCHEMA,
    until: int | Mapping[str, int] | None = None,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
    isolate_failures: bool = False,
    stop: threading.Event | None = None,
) -> None:
    """The bulk pass: creates ``schema`` afresh with the projections' tables (and tracking
    rows) and fills them from the log, beside the live models, up to ``until`` (a position,
    or one per read model: each group of models stops at the lowest of its own).

    ``isolate_failures``: a batch that fails is applied again with each model in a savepoint,
    as the live runner does (a model that cannot take an event is marked stuck in the
    schema's tracking table, operators' skips are honoured) instead of raising. ``stop``:
    set from another thread, the pass ends after the batch in progress."""
    options = f"-c search_path={schema},public"
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.execute(f"CREATE SCHEMA {schema}")
    with (
        psycopg.connect(
            database_url, autocommit=True, row_factory=dict_row, options=options
        ) as conn,
        conn.transaction(),
        conn.cursor() as cur,
    ):
        create_tables(cur, projections, views=False)
    # The bulk of the work, beside the live models. Each set-based model has its own
    # connection (its statements then run on their own PostgreSQL backend, on another core);
    # the event-at-a-time ones share one, so each event is read and decoded once.
    groups: list[list[Projection]] = [[p] for p in projections if isinstance(p, SetProjection)]
    one_by_one = [p for p in projections if not isinstance(p, SetProjection)]
    if one_by_one:
        groups.append(one_by_one)
    # Every group reads the whole span: the figure reported is the slowest group's.
    counted = _Progress(progress, len(groups))
    stopping = stop if stop is not None else threading.Event()
    with ThreadPoolExecutor(len(groups), thread_name_prefix="rebuild") as pool:
        futures = [
            pool.submit(
                _bulk,
                database_url,
                options,
                group,
                batch_size,
                _until_of(group, until),
                counted,
                isolate_failures,
                stopping,
            )
            for group in groups
        ]
        try:
            for done in futures:
                done.result()
        except BaseException:
            stopping.set()  # Ctrl-C or a failed group: the others stop after their batch
            raise


def _until_of(group: Sequence[Projection], until: int | Mapping[str, int] | None) -> int | None:
    if until is None or isinstance(until, int):
        return until
    return min(until.get(p.name, 0) for p in group)


def _bulk(
    database_url: str,
    options: str,
    projections: Sequence[Projection],
    batch_size: int,
    until: int | None,
    progress: _Progress,
    isolate_failures: bool,
    stop: threading.Event,
) -> None:
    with psycopg.connect(
        database_url, autocommit=True, row_factory=dict_row, options=options
    ) as conn:
        while not stop.is_set():
            try:
                with conn.transaction(), conn.cursor() as cur:
                    count, _ = apply_batch(cur, projections, batch_size, until)
            except TRANSIENT:
                raise
            except Exception:
                if not isolate_failures:
                    raise
                with conn.transaction(), conn.cursor() as cur:
                    count = run_batch(cur, projections, batch_size, until, isolated=True).count
            progress.add(id(projections), count)
            if count < batch_size:
                return


class _Progress:
    """Reports the events read by the group that has read the fewest so far."""

    def __init__(self, report: Callable[[int], None] | None, groups: int) -> None:
        self._report = report
        self._groups = groups
        self._read: dict[int, int] = {}
        self._reported = 0
        self._lock = threading.Lock()

    def add(self, group: int, count: int) -> None:
        with self._lock:
            self._read[group] = self._read.get(group, 0) + count
            slowest = min(self._read.values()) if len(self._read) == self._groups else 0
            step, self._reported = slowest - self._reported, max(slowest, self._reported)
        if self._report is not None and step > 0:
            self._report(step)


def _swap(
    database_url: str,
    projections: Sequence[Projection],
    names: list[str],
    until: int | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> int:
    tables = [f"public.{t}" for p in projections for t in p.tables]
    with (
        psycopg.connect(database_url, row_factory=dict_row) as conn,
        conn.transaction(),
        conn.cursor() as cur,
    ):
        # Live runners wait here (they hold nothing else yet); readers may go on.
        cur.execute("LOCK TABLE public.rm_tracking IN EXCLUSIVE MODE")
        # Then every table to replace, at once. A reader holding one of them while it waits
        # for another we hold would deadlock with us: give up quickly instead (the reader is
        # only delayed) and try the whole swap again.
        cur.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT_MS}ms'")
        cur.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        cur.execute("SET LOCAL lock_timeout = 0")
        cur.execute(f"SET LOCAL search_path = {SCHEMA}, public")
        while True:  # the events committed since the bulk pass
            count, positions = apply_batch(cur, projections, batch_size, until)
            if progress is not None:
                progress(count)
            if count < batch_size:
                break
        cur.execute("SET LOCAL search_path = public")
        for projection in projections:
            for table in projection.tables:
                cur.execute(f"DROP TABLE IF EXISTS public.{table} CASCADE")
                cur.execute(f"ALTER TABLE {SCHEMA}.{table} SET SCHEMA public")
        cur.execute(
            "INSERT INTO public.rm_tracking (projection, position)"
            f" SELECT projection, position FROM {SCHEMA}.rm_tracking"
            " WHERE projection = ANY(%s)"
            " ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
            (names,),
        )
        create_views(cur)
        cur.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        return min(positions.values(), default=0) or max_position(cur)


def head(database_url: str) -> int:
    with psycopg.connect(database_url, row_factory=dict_row) as conn, conn.cursor() as cur:
        return max_position(cur)


def by_names(
    all_projections: Sequence[Projection], names: Sequence[str] | None
) -> list[Projection]:
    if names is None:
        return list(all_projections)
    known = {p.name: p for p in all_projections}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown projection(s) {', '.join(unknown)}: one of {', '.join(known)}")
    return [known[n] for n in names]
