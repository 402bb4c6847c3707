"""``python -m bench``: every benchmark, each beside its baseline, on a private PostgreSQL.

Starts its own PostgreSQL (default durability: fsync on) in a temporary directory, runs

1. raw single-row INSERT + COMMIT into an events-shaped table (the baseline): autocommit, in
   an explicit transaction, and with the recorder's LOCK TABLE + NOTIFY;
2. ``Chorus.execute(SendMessage)`` in this process;
3. ``POST /api/channels/{ch}/messages`` and ``GET /api/auth/me`` against ``chorus serve`` (the
   POSTs with projections in-process, off, and in a ``chorus project`` process),

each at every concurrency level, then

4. live delivery over ``/ws`` to 1, 100 and 1,000 subscriber connections, beside a bare
   ``websockets`` broadcast server, and the server's memory per idle connection,
5. reading the whole log back: a raw decoded read (the baseline), the projection rebuild
   (``chorus replay --all``) and the hash-chain walk (``chorus verify``) over the same events,
6. collaborative documents over ``/yjs``: a real typing trace replayed as Yjs updates
   (updates/s to convergence beside a bare pycrdt ``Doc``, events per update, cold open beside
   a bare full-state load and a bare y-websocket server, memory per open document),
7. catch-up over ``/ws``: server and PostgreSQL CPU per event the subscriber may see and per
   event stored, for a subscriber who sees few of a log's events (``bench/catch_up.py``),
8. unread counts: one user's unread and mention counts in 1,000 channels from the read model
   (``bench/unread.py``),
9. notifications: mention -> notification frame on the mentioned user's ``/ws`` under a
   steady message rate, and write throughput with the reactions against without them
   (``bench/notifications.py``),

prints tables and writes JSON to bench/results/latest.json. Everything it starts is stopped
and the temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from api.bootstrap import build_services
from api.contexts import CONTEXTS
from api.loop_lag import LoopLagCounts, percentile_ms
from bench import catch_up, delivery, documents, notifications, rebuild, scenarios, unread
from bench.delivery import DeliveryResult
from bench.harness import (
    CpuProbe,
    LoadResult,
    WorkerFactory,
    machine_probes,
    pids_probe,
    run_load,
    self_probe,
)
from bench.machine import machine_info, postgres_info
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.settings import Settings

RESULTS_DIR = scenarios.REPO / "bench" / "results"
# Above this many cores busy with other work during a window, the run is flagged as noisy.
NOISY_CORES = 0.25


@dataclass(frozen=True)
class Timing:
    warmup_s: float
    duration_s: float
    drain_s: float = 10.0
    rebuild_events: int = 20_000


FULL = Timing(warmup_s=2.0, duration_s=8.0, drain_s=10.0, rebuild_events=20_000)
QUICK = Timing(warmup_s=0.3, duration_s=1.0, drain_s=3.0, rebuild_events=3_000)
GROUPS = ("write", "delivery", "rebuild", "documents", "catch_up", "unread", "notifications")

# Figure keys, labels and what each is compared with (at the same concurrency).
LABELS = {
    "raw_insert": "raw INSERT, autocommit (baseline)",
    "raw_insert_transaction": "  BEGIN; INSERT; COMMIT",
    "raw_insert_locked": "  BEGIN; LOCK; INSERT; NOTIFY; COMMIT",
    "app_send_message": "Chorus.execute(SendMessage), one commit each",
    "app_send_message_group_commit": "  same, group commit (the default)",
    "http_get_me": "HTTP GET /api/auth/me (baseline)",
    "http_send_message": "HTTP POST /api/channels/{ch}/messages, one commit each",
    "http_send_message_group_commit": "  same, group commit (the default)",
    "http_send_no_projections": "  same, projection runner off (diagnostic)",
    "http_send_external_projections": "  same, projections in `chorus project`",
}
COMPARISONS = {
    "raw_insert_transaction": ("raw_insert",),
    "raw_insert_locked": ("raw_insert",),
    "app_send_message": ("raw_insert",),
    "app_send_message_group_commit": ("raw_insert", "app_send_message"),
    "http_send_message_group_commit": ("raw_insert", "app_send_message", "http_get_me"),
    "http_send_message": ("raw_insert", "app_send_message", "http_get_me"),
    "http_send_no_projections": ("raw_insert", "app_send_message", "http_get_me"),
    "http_send_external_projections": ("raw_insert", "app_send_message", "http_get_me"),
}


def _delivery_level(text: str, default_rate: float) -> tuple[int, float]:
    """``N`` or ``N@rate``: N subscriber connections, messages per second."""
    count, _, rate = text.strip().partition("@")
    return int(count), float(rate) if rate else default_rate


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows: about 30 s in all")
    p.add_argument(
        "--concurrency",
        default="1,16",
        help="comma-separated thread/client counts to run each figure at (default 1,16)",
    )
    p.add_argument("--duration", type=float, help="measured seconds per figure (overrides mode)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per figure (overrides mode)")
    p.add_argument(
        "--payload-bytes",
        type=int,
        default=420,
        help="bytes of 'state' per baseline row (default: about a stored MessageSent)",
    )
    p.add_argument(
        "--subscribers",
        default="1,100,1000,1000@5",
        help="delivery: comma-separated subscriber connection counts, each at --rate or at its"
        " own N@rate (default 1,100,1000,1000@5)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="delivery: messages posted per second, open loop (default 100)",
    )
    p.add_argument(
        "--drain",
        type=float,
        help="delivery: seconds to wait for the last events after posting stops (full 10, quick 3)",
    )
    p.add_argument(
        "--events",
        type=int,
        help="rebuild: events to write and read back (full 20000, quick 3000)",
    )
    p.add_argument(
        "--patches",
        type=int,
        help="documents: patches of the editing trace to replay (full: all 259,778, quick 20000)",
    )
    p.add_argument(
        "--groups",
        default=",".join(GROUPS),
        help=f"figure groups to run (default {','.join(GROUPS)})",
    )
    p.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "latest.json", help="where to write JSON"
    )
    p.add_argument(
        "--keep-data", action="store_true", help="keep the temporary directory (database, logs)"
    )
    args = p.parse_args(argv)
    try:
        args.levels = sorted({int(x) for x in args.concurrency.split(",") if x.strip()})
    except ValueError:
        p.error("--concurrency takes whole numbers, e.g. 1,16")
    if not args.levels or min(args.levels) < 1:
        p.error("--concurrency needs at least one level >= 1")
    if args.rate <= 0:
        p.error("--rate must be positive")
    try:
        args.delivery_levels = sorted(
            {_delivery_level(x, args.rate) for x in args.subscribers.split(",") if x.strip()}
        )
    except ValueError:
        p.error("--subscribers takes counts, each optionally @rate: e.g. 1,100,1000,1000@10")
    if not args.delivery_levels or min(n for n, _ in args.delivery_levels) < 1:
        p.error("--subscribers needs at least one level >= 1")
    if min(r for _, r in args.delivery_levels) <= 0:
        p.error("--subscribers: rates must be positive")
    args.group_set = {g.strip() for g in args.groups.split(",") if g.strip()}
    if not args.group_set or not args.group_set <= set(GROUPS):
        p.error(f"--groups takes some of {','.join(GROUPS)}")
    base = QUICK if args.quick else FULL
    args.timing = Timing(
        warmup_s=base.warmup_s if args.warmup is None else args.warmup,
        duration_s=base.duration_s if args.duration is None else args.duration,
        drain_s=base.drain_s if args.drain is None else args.drain,
        rebuild_events=base.rebuild_events if args.events is None else args.events,
    )
    if args.timing.rebuild_events < 1:
        p.error("--events must be positive")
    if args.patches is not None and args.patches < 1:
        p.error("--patches must be positive")
    return args


class Bench:
    """Runs figures and keeps their results, printing each as it completes."""

    def __init__(self, timing: Timing, levels: list[int]) -> None:
        self.timing = timing
        self.levels = levels
        self.results: dict[tuple[str, int], LoadResult] = {}

    def run(
        self,
        key: str,
        factory: WorkerFactory,
        probes: list[CpuProbe],
        after: Callable[[LoadResult], None] | None = None,
        loop_lag: Callable[[], LoopLagCounts] | None = None,
    ) -> None:
        for n in self.levels:
            lag_before = None if loop_lag is None else loop_lag()
            result = run_load(
                key,
                factory,
                concurrency=n,
                warmup_s=self.timing.warmup_s,
                duration_s=self.timing.duration_s,
                probes=probes,
            )
            if loop_lag is not None and lag_before is not None:
                # The server's event loop over the warm-up and the window (api/loop_lag.py).
                lag_after = loop_lag()
                result.extra["loop_lag_ms"] = {
                    "p50": percentile_ms(lag_before, lag_after, 50),
                    "p99": percentile_ms(lag_before, lag_after, 99),
                    "max_since_start": lag_after.max_ms,
                }
            if after is not None:
                after(result)
            self.results[key, n] = result
            p50, p99 = result.percentile_ms(50), result.percentile_ms(99)
            line = f"  {LABELS[key]:<40} x{n:<3} {result.rate:>9.0f}/s  p50 {_ms(p50)}"
            line += f"  p99 {_ms(p99)}"
            if result.errors:
                line += f"  ERRORS {result.errors}: {result.first_error}"
            print(line, flush=True)

    def ratio(self, key: str, other: str, n: int) -> float | None:
        a, b = self.results.get((key, n)), self.results.get((other, n))
        if a is None or b is None or b.rate == 0:
            return None
        return a.rate / b.rate


def _ms(value: float | None) -> str:
    return "      -" if value is None else f"{value:7.2f}"


def _lag_p99(result: LoadResult) -> str:
    lag = result.extra.get("loop_lag_ms")
    return "-" if lag is None or lag["p99"] is None else f"{lag['p99']:g}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(bench: Bench) -> str:
    header = (
        f"{'figure':<40} {'conc':>4} {'ops/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'÷raw':>5} {'÷app':>5} {'÷GET':>5}  {'CPU ms/op bench/server/pg':<25} "
        f"{'other':>5} {'err':>3} {'lag p99':>7}"
    )
    lines = [header, "-" * len(header)]
    for key in LABELS:
        for n in bench.levels:
            result = bench.results.get((key, n))
            if result is None:
                continue
            ratios = [
                _ratio(bench.ratio(key, other, n) if other in COMPARISONS.get(key, ()) else None)
                for other in ("raw_insert", "app_send_message", "http_get_me")
            ]
            cpu = result.cpu_ms_per_op()
            cpu_text = "/".join(
                "-" if cpu.get(k) is None else f"{cpu[k]:.2f}" for k in ("bench", "server", "pg")
            )
            other = result.cores_busy().get("other")
            lines.append(
                f"{LABELS[key]:<40} {n:>4} {result.rate:>7.0f} "
                f"{_ms(result.percentile_ms(50))} {_ms(result.percentile_ms(99))} "
                + " ".join(f"{r:>5}" for r in ratios)
                + f"  {cpu_text:<25} {'-' if other is None else f'{other:.2f}':>5}"
                f" {result.errors:>3} {_lag_p99(result):>7}"
            )
    lines.append("")
    lines.append(
        "÷x: ops/s divided by figure x's at the same concurrency. CPU ms/op: CPU time of this"
        " process (bench),"
    )
    lines.append(
        "chorus serve (server) and PostgreSQL (pg) per operation. other: CPU cores busy with"
        " anything else (steal too)."
    )
    lines.append(
        "lag p99: how late the server's event loop ran its timers (ms, bucket bound), over the"
        " warm-up and the window."
    )
    return "\n".join(lines)


def _raise_on_sigterm(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A kill (not only Ctrl-C) still runs the clean-up below.
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = dt.datetime.now(dt.UTC)
    t_start = time.perf_counter()
    # Every WebSocket connection is a descriptor here and one in the server: raise the soft
    # limit to the hard one before starting anything (chorus serve inherits it).
    extra: dict[str, Any] = {
        "nofile_limit": delivery.raise_nofile_limit(
            max(n for n, _ in args.delivery_levels) * 2 + 256
        )
    }
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-"))
    # The unprivileged user running PostgreSQL (when we are root) must traverse it.
    os.chmod(work, 0o711)
    # No settings: PostgreSQL's default durability (fsync on, synchronous_commit on).
    pg = EmbeddedPostgres(work / "pg")
    bench = Bench(args.timing, args.levels)
    report = DeliveryReport()
    reads: list[rebuild.ReadFigure] = []
    docs: dict[str, Any] | None = None
    catch: dict[str, Any] | None = None
    unread_figure: dict[str, Any] | None = None
    notes: dict[str, Any] | None = None
    try:
        admin_url = pg.start()
        machine = machine_info(work, scenarios.REPO)
        pg_info = postgres_info(admin_url)
        print_header(args, machine, pg_info, work)
        probes = Probes(
            bench=self_probe("bench"), pg=pids_probe("pg", pg.server_pids), machine=machine_probes()
        )
        if "write" in args.group_set:
            write_group(args, pg, admin_url, work, bench, probes, extra)
        if "delivery" in args.group_set:
            delivery_group(args, pg, admin_url, work, report, probes)
        if "rebuild" in args.group_set:
            reads = rebuild_group(args, pg, admin_url, work, probes, extra)
        if "documents" in args.group_set:
            docs = documents.run(
                pg,
                admin_url,
                work,
                quick=args.quick,
                patches=args.patches,
                probes=[probes.bench, probes.pg, *probes.machine],
            )
        if "catch_up" in args.group_set:
            print("7. catch-up over /ws: CPU per visible and per stored event")
            catch = catch_up.run(
                pg, admin_url, work, quick=args.quick, probes=[probes.pg, *probes.machine]
            )
        if "unread" in args.group_set:
            print("8. unread counts: one user in 1,000 channels, from the read model")
            unread_figure = unread.run_figure(
                pg,
                admin_url,
                quick=args.quick,
                levels=args.levels,
                warmup_s=args.timing.warmup_s,
                duration_s=args.timing.duration_s,
                probes=[probes.bench, probes.pg, *probes.machine],
            )
        if "notifications" in args.group_set:
            print("9. notifications: mention -> /ws frame, writes with and without reactions")
            notes = notifications.run(
                pg, admin_url, work, quick=args.quick, probes=[probes.pg, *probes.machine]
            )
    finally:
        pg.stop()
        if args.keep_data:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    elapsed = time.perf_counter() - t_start
    print()
    if bench.results:
        print(table(bench))
        print()
    for (key, n), result in bench.results.items():
        if "breakdown" in result.extra:
            parts = result.extra["breakdown"]
            print(
                f"{LABELS[key]} x{n}, per call (CPU/wall ms): "
                + ", ".join(
                    f"{name} x{p['calls_per_op']} {p['cpu_ms_per_call']}/{p['wall_ms_per_call']}"
                    for name, p in parts.items()
                )
            )
        if "projection_lag_after_run" in result.extra:
            print(
                f"read models after {LABELS[key]} x{n}: "
                f"{result.extra['projection_lag_after_run']} events behind when the run ended, "
                f"caught up in {result.extra['projection_catch_up_s']} s"
            )
    if extra.get("message_sent_state_bytes") is not None:
        print(
            f"stored MessageSent state: {extra['message_sent_state_bytes']:.0f} bytes on average "
            f"(baseline rows: {args.payload_bytes})"
        )
    if report.results or report.memory:
        print()
        print(delivery_table(report, extra["nofile_limit"]))
    if reads:
        print()
        print(rebuild.table(reads))
    if docs is not None:
        print()
        print(documents.table(docs))
    if catch is not None:
        print()
        print(catch_up.line(catch))
    if notes is not None:
        print()
        print(notifications.line(notes))
    busiest = max(
        [r.cores_busy().get("other", 0.0) for r in bench.results.values()]
        + [r.cores_busy().get("other", 0.0) for r in report.results]
        + [r.other_cores() or 0.0 for r in reads]
        + [c.get("other_cores") or 0.0 for c in (docs or {}).get("convergence", [])],
        default=0.0,
    )
    extra["other_cores_busy_max"] = round(busiest, 2)
    extra["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if busiest > NOISY_CORES:
        print(
            f"WARNING: other work (processes, hypervisor steal) kept up to {busiest:.2f} cores "
            "busy during the measurements (column 'other'): figures are lower than on a quiet "
            "machine"
        )
    print(f"total time {elapsed:.0f} s")
    extra["delivery"] = [r.to_json() for r in report.results]
    extra["delivery_memory"] = report.memory
    baseline = next((r for r in reads if r.name == "raw_read"), None)
    extra["rebuild"] = [r.to_json(baseline) for r in reads]
    if docs is not None:
        extra["documents"] = docs
    if catch is not None:
        extra["catch_up"] = catch
    if unread_figure is not None:
        extra["unread"] = unread_figure
    if notes is not None:
        extra["notifications"] = notes
    write_json(args, started, elapsed, machine, pg_info, bench, extra)
    failed = any(r.errors for r in bench.results.values())
    failed = failed or any(r.failures for r in report.results) or report.errors > 0
    failed = failed or bool(docs is not None and docs["errors"])
    return 1 if failed else 0


@dataclass(frozen=True)
class Probes:
    bench: CpuProbe
    pg: CpuProbe
    machine: list[CpuProbe]


def write_group(
    args: argparse.Namespace,
    pg: EmbeddedPostgres,
    admin_url: str,
    work: Path,
    bench: Bench,
    probes_: Probes,
    extra: dict[str, Any],
) -> None:
    bench_probe, pg_probe, everything = probes_.bench, probes_.pg, probes_.machine
    server: scenarios.ChorusServer | None = None
    try:
        print("1. baseline: raw single-row inserts (psycopg, one connection per thread)")
        scenarios.create_database(admin_url, "bench_raw")
        raw_url = pg.url_for("bench_raw")
        scenarios.prepare_baseline(raw_url)
        for key, mode in (
            ("raw_insert", "autocommit"),
            ("raw_insert_transaction", "transaction"),
            ("raw_insert_locked", "locked"),
        ):
            factory = scenarios.raw_insert_factory(
                raw_url, payload_bytes=args.payload_bytes, mode=mode
            )
            bench.run(key, factory, [bench_probe, pg_probe, *everything])

        print("2. application layer: Chorus.execute(SendMessage) in this process")
        scenarios.create_database(admin_url, "bench_app")
        app_url = pg.url_for("bench_app")
        settings = Settings(
            jwt_secret=scenarios.BENCH_SECRET,
            rate_limit_per_second=0,
            data_dir=work / "app",
            group_commit=False,
        )
        services = build_services(settings, app_url, catalogue=CONTEXTS, run_projections=False)
        extra["db_pool_size"] = settings.db_pool_size
        try:
            chat = scenarios.prepare_chat(services.app)
            timers = scenarios.instrument(services.app)
            factory = scenarios.send_message_factory(services.app, chat)

            def breakdown(result: LoadResult) -> None:
                # Means over this level's warm-up and window (timers restart per level).
                commands = timers["execute"].calls
                result.extra["breakdown"] = {k: t.to_json(commands) for k, t in timers.items()}
                for timer in timers.values():
                    timer.calls, timer.cpu_s, timer.wall_s = 0, 0.0, 0.0

            bench.run(
                "app_send_message", factory, [bench_probe, pg_probe, *everything], after=breakdown
            )
        finally:
            services.close()
        extra["message_sent_state_bytes"] = scenarios.mean_state_bytes(app_url, "%MessageSent")

        # The same commands committed together by one writer thread (application/group_commit.py).
        scenarios.create_database(admin_url, "bench_app_group_commit")
        grouped = build_services(
            replace(settings, group_commit=True, data_dir=work / "app-gc"),
            pg.url_for("bench_app_group_commit"),
            catalogue=CONTEXTS,
            run_projections=False,
        )
        try:
            factory = scenarios.send_message_factory(
                grouped.app, scenarios.prepare_chat(grouped.app)
            )
            bench.run(
                "app_send_message_group_commit", factory, [bench_probe, pg_probe, *everything]
            )
            committer = grouped.app.group_committer
            assert committer is not None
            extra["group_commit"] = vars(committer.stats).copy()
        finally:
            grouped.close()

        print("3. HTTP: chorus serve (uvicorn, one process) and httpx clients, one per thread")
        scenarios.create_database(admin_url, "bench_http")
        server = scenarios.ChorusServer(
            pg.url_for("bench_http"), work, env={"CHORUS_GROUP_COMMIT": "false"}
        ).start()

        def server_pids() -> list[int]:
            # Whichever server is running now (each HTTP figure starts its own), with its
            # projector process when it has one.
            return [] if server is None else server.pids

        server_probe = pids_probe("server", server_pids)
        probes = [bench_probe, server_probe, pg_probe, *everything]
        http_chat = scenarios.prepare_http_chat(server.url)
        scenarios.wait_for_projections(server.url, timeout_s=30)

        def loop_lag() -> LoopLagCounts:
            assert server is not None
            return scenarios.loop_lag(server.url)

        bench.run(
            "http_get_me",
            scenarios.http_factory(server.url, http_chat, post=False),
            probes,
            loop_lag=loop_lag,
        )

        def catch_up(result: LoadResult) -> None:
            # The server projects what was written while the next figure runs otherwise.
            assert server is not None
            lag, seconds = scenarios.wait_for_projections(server.url, timeout_s=60)
            result.extra["projection_lag_after_run"] = lag
            result.extra["projection_catch_up_s"] = None if seconds is None else round(seconds, 2)

        post = scenarios.http_factory(server.url, http_chat, post=True)
        bench.run("http_send_message", post, probes, after=catch_up, loop_lag=loop_lag)
        server.stop()
        server = None

        def posts_on_a_new_server(
            figure: str, database: str, *, projections: bool = True, projector: bool = False
        ) -> None:
            """``figure``: the POSTs against a new server (see ChorusServer) on a database of
            its own."""
            nonlocal server
            scenarios.create_database(admin_url, database)
            server = scenarios.ChorusServer(
                pg.url_for(database), work, projections=projections, projector=projector
            ).start()
            chat = scenarios.prepare_http_chat(server.url)
            if projections:
                scenarios.wait_for_projections(server.url, timeout_s=30)
            post = scenarios.http_factory(server.url, chat, post=True)
            bench.run(
                figure, post, probes, after=catch_up if projections else None, loop_lag=loop_lag
            )
            server.stop()
            server = None

        posts_on_a_new_server("http_send_message_group_commit", "bench_http_group_commit")
        # The same writes with no projection runner behind them: what projecting costs.
        posts_on_a_new_server(
            "http_send_no_projections", "bench_http_no_projections", projections=False
        )
        # The same writes, projected by `chorus project` in a process of its own.
        posts_on_a_new_server(
            "http_send_external_projections", "bench_http_external_projections", projector=True
        )
    finally:
        if server is not None:
            server.stop()


def rebuild_group(
    args: argparse.Namespace,
    pg: EmbeddedPostgres,
    admin_url: str,
    work: Path,
    probes_: Probes,
    extra: dict[str, Any],
) -> list[rebuild.ReadFigure]:
    """Writes the events through the application layer (projections off), then reads them
    all back three ways on the same database, one after the other."""
    target = args.timing.rebuild_events
    print(
        f"5. reading the log back: {target} events written through Chorus.execute, then a raw"
        " decoded read (baseline), replay --all and verify over them"
    )
    scenarios.create_database(admin_url, "bench_rebuild")
    url = pg.url_for("bench_rebuild")
    settings = Settings(
        jwt_secret=scenarios.BENCH_SECRET, rate_limit_per_second=0, data_dir=work / "rebuild"
    )
    services = build_services(settings, url, catalogue=CONTEXTS, run_projections=False)
    try:
        t0 = time.perf_counter()
        chat = scenarios.prepare_chat(services.app)
        events = rebuild.populate(services.app, chat, url, target)
        seconds = time.perf_counter() - t0
    finally:
        services.close()
    extra["rebuild_populate"] = {"events": events, "seconds": round(seconds, 1)}
    print(f"  wrote {events} events in {seconds:.1f} s ({events / seconds:.0f}/s)", flush=True)
    figures = rebuild.measure_all(
        url, [probes_.bench, probes_.pg, *probes_.machine], args.timing.duration_s
    )
    for f in figures:
        print(
            f"  {rebuild.LABELS[f.name]:<40} {f.events:>7} in {f.seconds:6.2f} s {f.rate:>8.0f}/s",
            flush=True,
        )
    return figures


DELIVERY_LABELS = {
    "chorus": "Chorus /ws, SendMessage → event",
    "bare": "bare websockets broadcast (baseline)",
}


@dataclass
class DeliveryReport:
    results: list[DeliveryResult] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0

    def result(self, server: str, subscribers: int, rate: float) -> DeliveryResult | None:
        for r in self.results:
            if r.server == server and r.subscribers == subscribers and r.rate == rate:
                return r
        return None


def delivery_group(
    args: argparse.Namespace,
    pg: EmbeddedPostgres,
    admin_url: str,
    work: Path,
    report: DeliveryReport,
    probes_: Probes,
) -> None:
    """Chorus first (which also captures a real event frame), then the bare broadcast server
    imitating that frame; one server process at a time, each stopped before the next."""
    timing = args.timing
    print(
        "4. delivery over WebSockets: messages posted to 1 channel, one subscription per "
        f"connection, connections@rate {args.delivery_levels} (one asyncio client: this process)"
    )
    captured: bytes | None = None
    with asyncio.Runner(loop_factory=delivery.event_loop_factory()) as runner:

        def measure(endpoint: delivery.Endpoint, probes: list[CpuProbe]) -> bytes | None:
            """Every level against one server: the most connections first (the memory
            figure is taken as they open, on a server that has served only a warm-up),
            each count's rates in increasing order on the same subscribed connections."""
            frame: bytes | None = None
            rates: dict[int, list[float]] = {}
            for n, r in args.delivery_levels:
                rates.setdefault(n, []).append(r)
            runner.run(delivery.warm_up(endpoint))
            runner.run(delivery.settle(endpoint.pid))
            for n in sorted(rates, reverse=True):
                subs, memory = runner.run(delivery.open_subscribers(endpoint, n))
                try:
                    if n == max(rates):
                        report.memory.append(memory)
                        print(_memory_line(memory), flush=True)
                    todo = sorted(rates[n])
                    for i, rate in enumerate(todo):
                        result, got = runner.run(
                            delivery.run_delivery(
                                endpoint,
                                subs,
                                rate=rate,
                                warmup_s=timing.warmup_s,
                                duration_s=timing.duration_s,
                                drain_s=timing.drain_s,
                                probes=probes,
                            )
                        )
                        frame = frame or got
                        report.results.append(result)
                        print(_delivery_line(result), flush=True)
                        if i + 1 == len(todo):
                            break
                        if result.missing or not delivery.all_open(subs):
                            # Frames still queued for these connections would run into the
                            # next figure: start it on fresh connections.
                            runner.run(delivery.close_all(subs))
                            runner.run(delivery.settle(endpoint.pid))
                            subs, _ = runner.run(delivery.open_subscribers(endpoint, n))
                        else:
                            runner.run(delivery.settle(endpoint.pid))
                finally:
                    runner.run(delivery.close_all(subs))
                runner.run(delivery.settle(endpoint.pid))
            return frame

        scenarios.create_database(admin_url, "bench_ws")
        chorus = scenarios.ChorusServer(pg.url_for("bench_ws"), work)
        try:
            chorus.start()
            chat = scenarios.prepare_http_chat(chorus.url)
            scenarios.wait_for_projections(chorus.url, timeout_s=30)
            assert chorus.pid is not None
            pid = chorus.pid
            limit = delivery.nofile_limit_of(pid)
            print(f"  chorus serve (pid {pid}) open-file limit soft/hard: {limit}")
            endpoint = delivery.Endpoint(
                "chorus",
                chorus.url.replace("http://", "ws://") + f"/ws?token={chat.access_token}",
                chat.channel_id,
                pid,
            )
            server_probe = pids_probe("server", lambda: [pid])
            chorus_probes = [probes_.bench, server_probe, probes_.pg, *probes_.machine]
            captured = measure(endpoint, chorus_probes)
        except Exception as exc:
            report.errors += 1
            print(f"  chorus delivery FAILED: {type(exc).__name__}: {exc}", flush=True)
            print(chorus.log_tail(2000))
        finally:
            chorus.stop()

        bare = delivery.BroadcastServer(work, scenarios.REPO, delivery.event_template(captured))
        try:
            bare.start()
            assert bare.pid is not None
            bare_pid = bare.pid
            endpoint = delivery.Endpoint("bare", bare.ws_url, str(uuid.uuid4()), bare_pid)
            bare_probe = pids_probe("server", lambda: [bare_pid])
            measure(endpoint, [probes_.bench, bare_probe, probes_.pg, *probes_.machine])
        except Exception as exc:
            report.errors += 1
            print(f"  bare broadcast FAILED: {type(exc).__name__}: {exc}", flush=True)
            print(bare.log_tail(2000))
        finally:
            bare.stop()


def _memory_line(m: dict[str, Any]) -> str:
    lim = m.get("server_nofile_limit") or {}
    return (
        f"  {m['server']}: {m['connections']} connections: server RSS {m['rss_kib_before']} → "
        f"{m['rss_kib_opened']} KiB open and idle ({m['kib_per_connection_idle']} KiB each) → "
        f"{m['rss_kib_subscribed']} KiB subscribed ({m['kib_per_connection_subscribed']} KiB "
        f"each); fds {m['server_fds_before']} → {m['server_fds_opened']} (limit "
        f"{lim.get('soft')}/{lim.get('hard')}); opened in {m['open_s']} s (server busy until "
        f"{m['settled_after_open_s']} s, {m['server_cpu_ms_per_open']} ms CPU each), "
        f"subscribed in {m['subscribe_s']} s ({m['server_cpu_ms_per_subscribe']} ms CPU each); "
        f"{m['extensions']}"
    )


def _delivery_line(r: DeliveryResult) -> str:
    line = (
        f"  {DELIVERY_LABELS[r.server]:<40} x{r.subscribers:<5} @{r.rate:<4g} "
        f"posted {r.posted_per_s:5.0f}/s "
        f"delivered {r.deliveries_per_s:8.0f}/s  p50 {_ms(r.percentile_ms(50))}  "
        f"p99 {_ms(r.percentile_ms(99))}"
    )
    if r.missing:
        line += f"  MISSING {r.missing}/{r.expected}"
    if r.disconnects:
        line += f"  DISCONNECTS {dict(r.disconnects)}"
    if r.ends:
        line += f"  ENDS {dict(r.ends)}"
    if r.command_errors or r.unacked:
        line += f"  ERRORS {r.command_errors} unacked {r.unacked}: {r.first_error}"
    return line


def _us(ms: float | None) -> str:
    return "-" if ms is None else f"{ms * 1000:.0f}"


def delivery_table(report: DeliveryReport, nofile: dict[str, Any]) -> str:
    header = (
        f"{'delivery figure':<40} {'subs':>5} {'rate':>5} {'sent/s':>6} {'deliv/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'ack→rx p50/p99':>15} {'cmd→ack p50/p99':>15} {'÷bare':>5}  "
        f"{'CPU µs/deliv client/server/pg':<30} {'other':>5} {'missing':>7} {'disc':>4}"
    )
    lines = [header, "-" * len(header)]
    order = {name: i for i, name in enumerate(DELIVERY_LABELS)}
    for r in sorted(report.results, key=lambda r: (order[r.server], r.subscribers, -r.rate)):
        bare = report.result("bare", r.subscribers, r.rate)
        ratio = None
        if r.server != "bare" and bare is not None and bare.deliveries_per_s > 0:
            ratio = r.deliveries_per_s / bare.deliveries_per_s
        cpu = r.cpu_ms_per_delivery()
        cpu_text = "/".join(_us(cpu.get(k)) for k in ("bench", "server", "pg"))
        other = r.cores_busy().get("other")

        def pair(which: str, r: DeliveryResult = r) -> str:
            a, b = r.percentile_ms(50, which), r.percentile_ms(99, which)
            return "-" if a is None or b is None else f"{a:.1f}/{b:.1f}"

        lines.append(
            f"{DELIVERY_LABELS[r.server]:<40} {r.subscribers:>5} {r.rate:>5g} "
            f"{r.posted_per_s:>6.0f} "
            f"{r.deliveries_per_s:>8.0f} {_ms(r.percentile_ms(50))} {_ms(r.percentile_ms(99))} "
            f"{pair('ack'):>15} {pair('command'):>15} {_ratio(ratio):>5}  {cpu_text:<30} "
            f"{'-' if other is None else f'{other:.2f}':>5} {r.missing:>7} "
            f"{sum(r.disconnects.values()):>4}"
        )
    lines.append("")
    lines.append(
        "rate: messages/s offered (open loop), sent/s: sent in the window. p50/p99: from just"
        " before a command is sent to"
    )
    lines.append(
        "each subscriber's receipt of its event; ack→rx: from the command's ack (negative: the"
        " event came first);"
    )
    lines.append(
        "cmd→ack: command round trip. ÷bare: deliveries/s over the baseline's at the same count"
        " and rate. CPU µs/deliv:"
    )
    lines.append(
        "CPU time of this process (the client), the server process and PostgreSQL per event"
        " frame received."
    )
    biggest = {m["server"]: m for m in sorted(report.memory, key=lambda m: m["connections"])}
    for m in biggest.values():
        lines.append("memory, " + _memory_line(m).strip())
    lines.append(
        f"open-file limit of this process: soft {nofile['soft_before']} → {nofile['soft']}, "
        f"hard {nofile['hard']} (servers inherit it)"
    )
    return "\n".join(lines)


def print_header(
    args: argparse.Namespace, machine: dict[str, Any], pg_info: dict[str, Any], work: Path
) -> None:
    s = pg_info["settings"]
    fsync = machine["fdatasync_8k"]
    mode = "quick" if args.quick else "full"
    print(
        f"Chorus benchmarks ({mode}: {args.timing.warmup_s:g} s warm-up + "
        f"{args.timing.duration_s:g} s measured per figure, concurrency {args.levels})"
    )
    print(
        f"machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs "
        f"({machine['cpus_usable']} usable), {machine['memory_gib']} GiB, "
        f"load {machine['load_average_at_start']}"
    )
    print(
        f"python {machine['python']} ({machine['python_implementation']}), "
        f"psycopg {machine['libraries'].get('psycopg')} ({machine['psycopg_impl']})"
    )
    print(
        f"PostgreSQL {pg_info['version']} in {work}, DEFAULT DURABILITY: fsync={s['fsync']}, "
        f"synchronous_commit={s['synchronous_commit']}, wal_sync_method={s['wal_sync_method']}"
    )
    print(
        f"disk: {machine['data_filesystem']}; 8 KiB write+fdatasync "
        f"p50 {fsync['p50_ms']} ms, p99 {fsync['p99_ms']} ms"
    )
    print("client, server and PostgreSQL share this machine's CPUs")
    print(flush=True)


def write_json(
    args: argparse.Namespace,
    started: dt.datetime,
    elapsed: float,
    machine: dict[str, Any],
    pg_info: dict[str, Any],
    bench: Bench,
    extra: dict[str, Any],
) -> None:
    ratios = {}
    for key, others in COMPARISONS.items():
        for other in others:
            for n in bench.levels:
                value = bench.ratio(key, other, n)
                if value is not None:
                    ratios[f"{key}/{other}@{n}"] = round(value, 3)
    document = {
        "started_at": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "command": " ".join(["python -m bench", *(sys.argv[1:])]),
        "mode": "quick" if args.quick else "full",
        "warmup_s": args.timing.warmup_s,
        "duration_s": args.timing.duration_s,
        "concurrency": bench.levels,
        "baseline_payload_bytes": args.payload_bytes,
        "machine": machine,
        "postgres": pg_info,
        "results": [r.to_json() | {"label": LABELS[r.name]} for r in bench.results.values()],
        "ratios": ratios,
        **extra,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    args.output.write_text(text)
    # A dated copy beside it, so earlier runs can be compared (bench/results/ is git-ignored).
    if args.output == RESULTS_DIR / "latest.json":
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        with contextlib.suppress(OSError):
            (RESULTS_DIR / f"{stamp}-{document['mode']}.json").write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    raise SystemExit(main())
