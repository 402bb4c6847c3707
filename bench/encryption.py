"""Crypto-shredding's cost (issue 20), plain and sealed in the same run.

    .venv/bin/python -m bench.encryption [--seconds 5] [--warmup 1] [--levels 1,16]
        [--decode 5000] [--erase 10000]

One embedded PostgreSQL. For each of "plain" (no key ring: personal fields stored as they
are) and "sealed" (the key ring of ``CHORUS_MASTER_KEY``: a data key row per message, text
sealed with AES-GCM), closed-loop threads run ``Chorus.execute(SendMessage)`` in this process
with group commit (the server's default), the two modes taking turns ``--rounds`` times per
level (a shared machine's noise then weighs on both alike); then the rebuild path's decoding
(``projections.log.to_log_events``) of ``--decode`` stored messages is timed per event; then
erasing an author owning ``--erase`` message keys (one UPDATE through the owner index).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from uuid import uuid4

import psycopg
from psycopg.rows import dict_row

from api.bootstrap import migrate
from api.contexts import CONTEXTS, all_projections
from application.chorus import Chorus
from bench import scenarios
from bench.group_commit import _CheapPasswords
from bench.harness import LoadResult, run_load
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.eventstore import EVENTS_TABLE, eventsourcing_env
from infrastructure.keys import KeyRing, new_master_key
from infrastructure.serialisation import close_key_ring
from projections.log import SELECT_EVENTS, to_log_events


def _decode_us(url: str, count: int) -> float:
    """Microseconds per event to read and decode the last ``count`` messages sent."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute(
            f"{SELECT_EVENTS} WHERE e.topic LIKE '%%MessageSent'"
            " ORDER BY e.notification_id DESC LIMIT %s",
            (count,),
        ).fetchall()
    started = time.perf_counter()
    for i in range(0, len(rows), 500):  # the rebuild's batches read pages of this order
        to_log_events(rows[i : i + 500])
    return (time.perf_counter() - started) / max(1, len(rows)) * 1e6


def _open(url: str, master_key: str | None) -> Chorus:
    migrate(url, all_projections())
    return Chorus(
        eventsourcing_env(url, pool_size=8, master_key=master_key),
        passwords=_CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0, help="per mode and level, in all")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the two modes")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--levels", default="1,16")
    parser.add_argument("--decode", type=int, default=5000)
    parser.add_argument("--erase", type=int, default=10_000)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-enc-"))
    os.chmod(work, 0o711)
    pg = EmbeddedPostgres(work / "pg")
    master = new_master_key()
    modes = ("plain", "sealed")
    apps: dict[str, Chorus] = {}
    try:
        admin_url = pg.start()
        factories = {}
        for mode in modes:
            scenarios.create_database(admin_url, f"enc_{mode}")
            app = apps[mode] = _open(
                pg.url_for(f"enc_{mode}"), master if mode == "sealed" else None
            )
            chat = scenarios.prepare_chat(app)
            app.enable_group_commit()
            factories[mode] = scenarios.send_message_factory(app, chat)
        # The two modes take turns, ``--rounds`` times per level, so that what else the
        # machine runs meanwhile weighs on both alike (the ratio is the figure that matters).
        print(f"{'mode':<8} {'thr':>4} {'msgs/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>6}")
        rates: dict[tuple[str, int], float] = {}
        for level in levels:
            ops = {m: 0 for m in modes}
            took = {m: 0.0 for m in modes}
            latencies: dict[str, list[float]] = {m: [] for m in modes}
            errors = {m: 0 for m in modes}
            for _ in range(args.rounds):
                for mode in modes:
                    result: LoadResult = run_load(
                        mode,
                        factories[mode],
                        concurrency=level,
                        warmup_s=args.warmup / args.rounds,
                        duration_s=args.seconds / args.rounds,
                    )
                    ops[mode] += result.ops
                    took[mode] += result.seconds
                    latencies[mode] += result.latencies_s
                    errors[mode] += result.errors
            for mode in modes:
                rates[mode, level] = ops[mode] / took[mode]
                ms = sorted(latencies[mode])
                p50 = ms[len(ms) // 2] * 1000 if ms else 0
                p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] * 1000 if ms else 0
                print(
                    f"{mode:<8} {level:>4} {rates[mode, level]:>10.0f} {p50:>9.2f}"
                    f" {p99:>9.2f} {errors[mode]:>6}",
                    flush=True,
                )
        for mode in modes:
            url = pg.url_for(f"enc_{mode}")
            print(
                f"  {mode}: decode on the rebuild path: {_decode_us(url, args.decode):.1f} µs/event"
            )
        for level in levels:
            ratio = rates["sealed", level] / rates["plain", level]
            print(f"sealed/plain at {level} threads: {ratio:.2f}x")
        url = pg.url_for("enc_sealed")
        ring = KeyRing.connect(url, master)
        try:
            author = uuid4()
            ring.new_keys([(uuid4(), author) for _ in range(args.erase)])
            started = time.perf_counter()
            erased = ring.erase(subjects=[author], owners=[author]).keys
            erase_s = time.perf_counter() - started
            print(f"erasing an author of {erased} messages: {erase_s * 1000:.1f} ms")
        finally:
            ring.close()
        with psycopg.connect(url) as conn:
            row = conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
        print(f"  ({row[0] if row else 0} events in the sealed store)")
    finally:
        for app in apps.values():
            close_key_ring(app.mapper)
            app.close()
        pg.stop()


if __name__ == "__main__":
    main()
