"""Group commit (application/group_commit.py) against the default write path, standalone.

    .venv/bin/python -m bench.group_commit [--seconds 5] [--warmup 1] [--levels 1,16,64]

One embedded PostgreSQL (default durability), then, at each concurrency level, closed-loop
threads doing: raw single-row inserts (autocommit, and BEGIN/LOCK/INSERT/NOTIFY/COMMIT as
eventsourcing's recorder does), and ``Chorus.execute(SendMessage)`` in this process, with
and without group commit. Prints commands/s and p50/p99 latency.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from api.bootstrap import migrate
from api.contexts import CONTEXTS, all_projections
from application.chorus import Chorus
from bench import scenarios
from bench.harness import LoadResult, WorkerFactory, run_load
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.eventstore import eventsourcing_env


class _CheapPasswords:
    """Only the set-up registers a user; argon2 is not what is measured."""

    def hash(self, password: str) -> str:
        return "plain:" + password

    def verify(self, stored_hash: str | None, password: str) -> bool:
        return stored_hash == "plain:" + password


def _row(result: LoadResult) -> str:
    p50, p99 = result.percentile_ms(50), result.percentile_ms(99)
    return (
        f"{result.name:<28} {result.concurrency:>4} {result.rate:>10.0f}"
        f" {p50 or 0:>9.2f} {p99 or 0:>9.2f} {result.errors:>6}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--pool-size", type=int, default=8)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-gc-"))
    os.chmod(work, 0o711)
    pg = EmbeddedPostgres(work / "pg")
    results: list[LoadResult] = []

    def run(name: str, factory: WorkerFactory, level: int) -> None:
        result = run_load(
            name, factory, concurrency=level, warmup_s=args.warmup, duration_s=args.seconds
        )
        results.append(result)
        print(_row(result), flush=True)

    try:
        admin_url = pg.start()
        print(
            f"{'scenario':<28} {'thr':>4} {'ops/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>6}"
        )
        scenarios.create_database(admin_url, "gc_raw")
        raw_url = pg.url_for("gc_raw")
        scenarios.prepare_baseline(raw_url)
        for mode in ("autocommit", "locked"):
            factory = scenarios.raw_insert_factory(raw_url, payload_bytes=300, mode=mode)
            for level in levels:
                run(f"raw_insert_{mode}", factory, level)
        for group in (False, True):
            name = "app_send_message" + ("_group_commit" if group else "")
            scenarios.create_database(admin_url, name)
            url = pg.url_for(name)
            migrate(url, all_projections())
            app = Chorus(
                eventsourcing_env(url, pool_size=args.pool_size),
                passwords=_CheapPasswords(),
                handlers=CONTEXTS.handlers,
                snapshotting=CONTEXTS.snapshotting,
            )
            try:
                chat = scenarios.prepare_chat(app)
                committer = (
                    app.enable_group_commit(max_wait_s=args.max_wait_ms / 1000) if group else None
                )
                factory = scenarios.send_message_factory(app, chat)
                for level in levels:
                    run(name, factory, level)
                if committer is not None:
                    stats = committer.stats
                    print(
                        f"  group commit: {stats.batches} transactions for"
                        f" {stats.batched_commands} commands"
                        f" (largest {stats.largest_batch}, fallbacks {stats.fallbacks})"
                    )
            finally:
                app.close()
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
