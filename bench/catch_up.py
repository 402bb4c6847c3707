"""Catch-up over ``/ws``: CPU per event the subscriber may see, and per event stored.

A log of N events of which one subscriber may see k: its own channel, in a workspace of its
own, written over HTTP last; the rest are another workspace's messages (with edits and
reactions), written first in this process through ``Chorus.execute``. On ``chorus serve``
(catch-up budget off), the subscriber catches up M times from position 0 on one connection,
one subscription after another, each ending when its last event arrives. The CPU seconds of
the server and of PostgreSQL over the M catch-ups, divided by k·M, give the cost per visible
event, and divided by N·M the cost per stored event. Catch-up work that follows what the
subscriber may see keeps the first independent of N and the second near zero; a catch-up
that reads the whole log has a per-stored figure that is the whole per-event decode cost.

``python -m bench.catch_up`` runs it alone on a private PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
from websockets.sync.client import connect

from api.bootstrap import build_services
from api.contexts import CONTEXTS
from bench import rebuild, scenarios
from bench.harness import CpuProbe, pids_probe
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.settings import Settings

DATABASE = "bench_catch_up"
FULL = {"stored": 20_000, "visible": 100, "catch_ups": 10}
QUICK = {"stored": 3_000, "visible": 50, "catch_ups": 5}
TIMEOUT_S = 120.0


def _write_noise(url: str, work: Path, stored: int) -> None:
    """Another user's workspace, filled through the application layer (fast: no HTTP)."""
    settings = Settings(
        jwt_secret=scenarios.BENCH_SECRET, rate_limit_per_second=0, data_dir=work / "noise"
    )
    services = build_services(settings, url, catalogue=CONTEXTS, run_projections=False)
    try:
        chat = scenarios.prepare_chat(services.app)
        rebuild.populate(services.app, chat, url, stored)
    finally:
        services.close()


def _write_visible(base_url: str, visible: int) -> tuple[str, str, int]:
    """The subscriber, its workspace and channel, and ``visible`` - 1 messages in it (the
    channel's creation is the first event it sees): its token, channel and last position."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post(
            "/api/auth/signup", json={"username": "bench_reader", "password": scenarios.PASSWORD}
        )
        body = r.json()
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        ws = client.post("/api/workspaces", json={"name": "mine"}, headers=headers).json()
        ch = client.post(
            f"/api/workspaces/{ws['id']}/channels", json={"name": "mine"}, headers=headers
        ).json()
        last = int(ch["position"])
        for i in range(visible - 1):
            sent = client.post(
                f"/api/channels/{ch['id']}/messages",
                json={"text": f"{scenarios.MESSAGE_TEXT} {i}"},
                headers=headers,
            )
            last = int(sent.json()["position"])
    return body["access_token"], ch["id"], last


def _wait_for_read_models(url: str) -> None:
    """Until every read model has reached the log's end (read in the database: the bench
    does not depend on what ``/ready`` shows)."""
    deadline = time.monotonic() + TIMEOUT_S
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT (SELECT min(position) FROM rm_tracking),"
                " (SELECT coalesce(max(notification_id), 0) FROM chorus_events)"
            ).fetchone()
            if row is not None and row[0] is not None and row[0] >= row[1]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"read models did not catch up: {row}")
            time.sleep(0.1)


def _stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM chorus_events").fetchone()
    return int(row[0]) if row else 0


def _catch_ups(base_url: str, token: str, channel: str, last: int, count: int) -> list[int]:
    """``count`` catch-ups from 0 on one connection; the events each one received."""
    received: list[int] = []
    url = base_url.replace("http", "ws") + f"/ws?token={token}"
    with connect(url, open_timeout=30, max_size=None) as ws:
        for i in range(count):
            name = f"c{i}"
            ws.send(
                json.dumps(
                    {"op": "subscribe", "sub": name, "streams": [{"channel": channel}], "after": 0}
                )
            )
            got = 0
            while True:
                frame = json.loads(ws.recv(timeout=TIMEOUT_S))
                if frame["op"] in ("error", "end"):
                    raise RuntimeError(f"catch-up refused: {frame}")
                if frame["op"] == "event":
                    got += 1
                    if frame["event"]["position"] >= last:
                        break
            received.append(got)
            ws.send(json.dumps({"op": "unsubscribe", "sub": name}))
            while json.loads(ws.recv(timeout=TIMEOUT_S))["op"] != "end":
                pass
    return received


def run(
    pg: EmbeddedPostgres,
    admin_url: str,
    work: Path,
    *,
    quick: bool,
    probes: list[CpuProbe],
) -> dict[str, Any]:
    """The figure: returns it as JSON (and prints one line)."""
    sizes = QUICK if quick else FULL
    scenarios.create_database(admin_url, DATABASE)
    url = pg.url_for(DATABASE)
    _write_noise(url, work, sizes["stored"] - sizes["visible"])
    server = scenarios.ChorusServer(
        url, work, env={"CHORUS_WS_CATCH_UP_EVENTS_PER_MINUTE": "0"}
    ).start()
    try:
        token, channel, last = _write_visible(server.url, sizes["visible"])
        _wait_for_read_models(url)
        stored = _stored(url)
        _catch_ups(server.url, token, channel, last, 1)  # warm-up
        every = [pids_probe("server", lambda: server.pids), *probes]
        before = {p.name: p.sample() for p in every}
        t0 = time.perf_counter()
        received = _catch_ups(server.url, token, channel, last, sizes["catch_ups"])
        wall = time.perf_counter() - t0
        after = {p.name: p.sample() for p in every}
    finally:
        server.stop()
    cpu = {p.name: CpuProbe.delta(before[p.name], after[p.name]) for p in every}
    m, k = len(received), received[0]
    if set(received) != {k}:
        raise RuntimeError(f"catch-ups received different counts: {received}")
    result: dict[str, Any] = {
        "stored_events": stored,
        "visible_events": k,
        "catch_ups": m,
        "wall_ms_per_catch_up": round(wall / m * 1000, 2),
        "cpu_s": {name: round(v, 3) for name, v in cpu.items()},
        "cpu_us_per_visible_event": {
            name: round(v / (k * m) * 1e6, 2) for name, v in cpu.items() if name in ("server", "pg")
        },
        "cpu_us_per_stored_event": {
            name: round(v / (stored * m) * 1e6, 3)
            for name, v in cpu.items()
            if name in ("server", "pg")
        },
    }
    print(line(result), flush=True)
    return result


def line(result: dict[str, Any]) -> str:
    visible, per_stored = result["cpu_us_per_visible_event"], result["cpu_us_per_stored_event"]
    return (
        f"  catch-up of {result['visible_events']} visible among {result['stored_events']} stored"
        f" events, x{result['catch_ups']}: {result['wall_ms_per_catch_up']} ms each;"
        f" CPU µs per visible event server {visible['server']} pg {visible['pg']};"
        f" per stored event server {per_stored['server']} pg {per_stored['pg']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.catch_up", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a smaller log, fewer catch-ups")
    p.add_argument("--output", type=Path, help="where to write the figure as JSON")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-catch-up-"))
    work.chmod(0o711)  # the unprivileged user running PostgreSQL (when we are root)
    pg = EmbeddedPostgres(work / "pg")
    try:
        admin_url = pg.start()
        result = run(
            pg, admin_url, work, quick=args.quick, probes=[pids_probe("pg", pg.server_pids)]
        )
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
