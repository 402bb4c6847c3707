"""``python -m bench.observability``: what metrics and JSON logs cost (issue 22, Numbers).

Two arms of ``chorus serve`` on the same private PostgreSQL, alternated (off, on, off, on,
...) so that drift on a shared machine falls on both:

- **off**: ``CHORUS_METRICS=off`` (no HTTP metrics middleware, no ``/metrics``) and
  ``--log-level warning`` (no access line per request);
- **on**: ``CHORUS_METRICS=ops`` scraped every ``--scrape-every`` seconds (15: a common
  Prometheus interval; the first scrape at the start), ``CHORUS_LOG_FORMAT=json`` at
  ``--log-level info`` (one JSON access line per request, to a file).

The counters the code increments where things happen (commands, events, deliveries) run in
both arms: they cannot be switched off, so their cost is in neither ratio.

In each round, ``--writers`` closed-loop HTTP clients post messages to one channel while
``--subscribers`` ``/ws`` connections subscribed to it count the event frames they receive:
HTTP write throughput (POSTs/s) and delivery throughput (frames/s) in the same window. The
figures are each arm's mean over its rounds and the ratio on/off (target >= 0.95).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from bench.harness import run_load
from bench.scenarios import (
    BENCH_OPS_HEADERS,
    ChorusServer,
    create_database,
    http_factory,
    prepare_http_chat,
)
from infrastructure.embedded_postgres import EmbeddedPostgres

ARMS = {
    "off": ({"CHORUS_METRICS": "off"}, "warning"),
    "on": ({"CHORUS_METRICS": "ops", "CHORUS_LOG_FORMAT": "json"}, "info"),
}


class Subscribers:
    """``count`` /ws connections subscribed to a channel, each counting event frames in a
    thread while ``counting`` is set."""

    def __init__(self, url: str, token: str, channel_id: str, count: int) -> None:
        ws_url = url.replace("http", "ws", 1) + f"/ws?token={token}"
        self._stack = contextlib.ExitStack()
        self.conns = [
            self._stack.enter_context(connect(ws_url, open_timeout=30)) for _ in range(count)
        ]
        for conn in self.conns:
            conn.send(
                json.dumps({"op": "subscribe", "sub": "s", "streams": [{"channel": channel_id}]})
            )
            while json.loads(conn.recv(timeout=30))["op"] != "subscribed":
                pass
        self.counting = threading.Event()
        self.stopping = threading.Event()
        self.frames = 0
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._read, args=(c,), daemon=True) for c in self.conns
        ]
        for thread in self.threads:
            thread.start()

    def _read(self, conn: Any) -> None:
        while not self.stopping.is_set():
            try:
                frame = conn.recv(timeout=0.5)
            except TimeoutError:
                continue
            except Exception:
                return
            if self.counting.is_set() and '"op":"event"' in str(frame).replace(" ", ""):
                with self._lock:
                    self.frames += 1

    def close(self) -> None:
        self.stopping.set()
        with contextlib.suppress(Exception):
            self._stack.close()
        for thread in self.threads:
            thread.join(timeout=5)


@contextlib.contextmanager
def scraping(url: str, on: bool, every_s: float, took: list[float]) -> Iterator[None]:
    """A scrape of /metrics every ``every_s``, as Prometheus would, in the "on" arm (the
    first at once); each one's seconds go to ``took``."""
    stop = threading.Event()

    def scrape() -> None:
        with httpx.Client(base_url=url, headers=BENCH_OPS_HEADERS, timeout=10) as client:
            while True:
                t0 = time.perf_counter()
                client.get("/metrics")
                took.append(time.perf_counter() - t0)
                if stop.wait(every_s):
                    return

    thread = threading.Thread(target=scrape, daemon=True)
    if on:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if on:
            thread.join()


def one_round(
    arm: str, admin_url: str, work: Path, index: int, args: argparse.Namespace
) -> dict[str, Any]:
    env, level = ARMS[arm]
    name = f"obs_{arm}_{index}"
    create_database(admin_url, name)
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    run_dir = work / name
    run_dir.mkdir()
    server = ChorusServer(url, run_dir, env=env, log_level=level).start()
    try:
        chat = prepare_http_chat(server.url)
        subs = Subscribers(server.url, chat.access_token, chat.channel_id, args.subscribers)
        try:
            scrapes: list[float] = []
            with scraping(server.url, arm == "on", args.scrape_every, scrapes):
                # Frames are counted from the window's start (after the warm-up) to its end.
                timer = threading.Timer(args.warmup, subs.counting.set)
                timer.start()
                result = run_load(
                    f"{arm}-{index}",
                    http_factory(server.url, chat, post=True),
                    concurrency=args.writers,
                    warmup_s=args.warmup,
                    duration_s=args.seconds,
                )
                subs.counting.clear()
                timer.cancel()
        finally:
            subs.close()
        log_lines = len(server.log_path.read_text(errors="replace").splitlines())
    finally:
        server.stop()
    return {
        "arm": arm,
        "round": index,
        "posts_per_s": round(result.rate, 1),
        "deliveries_per_s": round(subs.frames / args.seconds, 1),
        "post_p50_ms": result.percentile_ms(0.5),
        "errors": result.errors,
        "first_error": result.first_error,
        "server_log_lines": log_lines,
        "scrapes": len(scrapes),
        "scrape_ms_mean": round(sum(scrapes) / len(scrapes) * 1000, 1) if scrapes else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.observability")
    p.add_argument("--rounds", type=int, default=2, help="rounds per arm (alternated)")
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--subscribers", type=int, default=20)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--scrape-every", type=float, default=15.0, help="seconds between scrapes")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-obs-"))
    pg = EmbeddedPostgres(work / "pg")
    rows: list[dict[str, Any]] = []
    try:
        admin_url = pg.start()
        for i in range(args.rounds):
            for arm in ("off", "on"):
                rows.append(one_round(arm, admin_url, work, i, args))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    def mean(arm: str, key: str) -> float:
        values = [float(r[key]) for r in rows if r["arm"] == arm]
        return sum(values) / len(values)

    summary = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": vars(args) | {"out": str(args.out)},
        "rounds": rows,
        "posts_per_s": {arm: round(mean(arm, "posts_per_s"), 1) for arm in ARMS},
        "deliveries_per_s": {arm: round(mean(arm, "deliveries_per_s"), 1) for arm in ARMS},
        "ratio_posts": round(mean("on", "posts_per_s") / mean("off", "posts_per_s"), 3),
        "ratio_deliveries": round(
            mean("on", "deliveries_per_s") / mean("off", "deliveries_per_s"), 3
        ),
    }
    print(json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
