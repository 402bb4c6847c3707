"""Notifications (issue 19): mention → notification frame on the mentioned user's open
``/ws``, and write throughput with the reactions running against the same run without them.

1. Latency: one author sends messages over HTTP at a steady rate (``rate``/s, open loop,
   each mentioning one reader) for ``duration`` seconds; the reader has ``{"user": "me"}``
   open on ``/ws``. For each message: from its POST's answer (it is committed) to the
   ``MentionNotified`` frame naming it. p50/p99 over the messages, and how many arrived.
2. Throughput: ``writers`` closed-loop HTTP writers post messages with one mention each for
   ``duration`` seconds, against ``chorus serve`` with every reaction running, then against
   the same app with none (``python -m bench.notifications serve --no-reactions``); the
   ratio is the first over the second.

``python -m bench.notifications [--quick]`` runs it alone on a private PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench import scenarios
from bench.harness import CpuProbe, pids_probe
from infrastructure.embedded_postgres import EmbeddedPostgres


@dataclass(frozen=True)
class Sizes:
    rate: int  # messages per second, each with one mention
    duration_s: float
    writers: int
    drain_s: float


FULL = Sizes(rate=500, duration_s=10.0, writers=16, drain_s=10.0)
QUICK = Sizes(rate=200, duration_s=2.0, writers=8, drain_s=5.0)


class Server:
    """``python -m bench.notifications serve`` (the app, with or without its reactions)."""

    def __init__(self, url: str, work: Path, *, reactions: bool) -> None:
        self.database_url, self.work, self.reactions = url, work, reactions
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [] if self.proc is None else [self.proc.pid]

    def start(self) -> Server:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            CHORUS_JWT_SECRET=scenarios.BENCH_SECRET,
            CHORUS_RATE_LIMIT_PER_SECOND="0",
            CHORUS_CONNECTIONS_PER_ADDRESS="0",
            CHORUS_SIGNUPS_PER_ADDRESS_PER_HOUR="0",
            CHORUS_SIGNUPS_PER_HOUR="0",
            CHORUS_ACCESS_TOKEN_TTL_S="3600",
            CHORUS_DATA_DIR=str(self.work / "chorus-data"),
        )
        argv = [sys.executable, "-m", "bench.notifications", "serve", "--port", str(self.port)]
        if not self.reactions:
            argv.append("--no-reactions")
        log = open(self.work / f"notifications-{self.reactions}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, cwd=scenarios.REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/health").status_code == 200:
                        return self
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the notifications bench server did not start")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


async def _people(client: httpx.AsyncClient, tag: str) -> dict[str, Any]:
    """An author and a reader in a public workspace with a channel."""
    out: dict[str, Any] = {}
    names: dict[str, str] = {}
    for who in ("author", "reader"):
        names[who] = f"n{tag}_{who}_{time.time_ns() % 10**9}"
        r = await client.post(
            "/api/auth/signup", json={"username": names[who], "password": scenarios.PASSWORD}
        )
        r.raise_for_status()
        out[who] = r.json()
    author = {"Authorization": f"Bearer {out['author']['access_token']}"}
    reader = {"Authorization": f"Bearer {out['reader']['access_token']}"}
    ws = (await client.post("/api/workspaces", json={"name": "n", "visibility": "public"},
                            headers=author)).json()["id"]  # fmt: skip
    (await client.post(f"/api/workspaces/{ws}/join", headers=reader)).raise_for_status()
    ch = (await client.post(f"/api/workspaces/{ws}/channels", json={"name": "n"},
                            headers=author)).json()["id"]  # fmt: skip
    return {
        "author": author,
        "reader_token": out["reader"]["access_token"],
        "reader_name": names["reader"],
        "channel": ch,
    }


async def _latency(base_url: str, rate: int, duration_s: float, drain_s: float) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        p = await _people(client, "lat")
        answered: dict[str, float] = {}
        arrived: dict[str, float] = {}
        ws_url = base_url.replace("http", "ws") + f"/ws?token={p['reader_token']}"
        async with websockets.connect(ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"op": "subscribe", "sub": "me", "streams": [{"user": "me"}]}))
            while json.loads(await ws.recv())["op"] != "subscribed":
                pass

            async def listen() -> None:
                async for raw in ws:
                    frame = json.loads(raw)
                    if frame.get("op") == "event" and frame["event"]["type"] == "MentionNotified":
                        arrived[frame["event"]["data"]["message_id"]] = time.perf_counter()

            listener = asyncio.create_task(listen())
            body = {"text": f"@{p['reader_name']} ping"}
            path = f"/api/channels/{p['channel']}/messages"

            async def send() -> None:
                r = await client.post(path, json=body, headers=p["author"])
                if r.status_code == 201:
                    answered[r.json()["id"]] = time.perf_counter()

            t0 = time.perf_counter()
            count = int(rate * duration_s)
            tasks = []
            for i in range(count):
                # Open loop: each message at its time, whether or not earlier ones answered.
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(send()))
            await asyncio.gather(*tasks)
            sent_s = time.perf_counter() - t0
            deadline = time.perf_counter() + drain_s
            while len(arrived) < len(answered) and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            listener.cancel()
    lat = sorted((arrived[m] - t) * 1000 for m, t in answered.items() if m in arrived)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None

    return {
        "target_rate": rate,
        "achieved_rate": round(len(answered) / sent_s, 1),
        "messages": len(answered),
        "notified": len(lat),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1], 2) if lat else None,
    }


async def _throughput(base_url: str, writers: int, duration_s: float) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        p = await _people(client, "tp")
        body = {"text": f"@{p['reader_name']} load"}
        path = f"/api/channels/{p['channel']}/messages"
        done = 0
        stop = time.perf_counter() + duration_s

        async def writer() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                r = await client.post(path, json=body, headers=p["author"])
                if r.status_code == 201:
                    done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        return done / (time.perf_counter() - t0)


def run(
    pg: EmbeddedPostgres,
    admin_url: str,
    work: Path,
    *,
    quick: bool,
    probes: list[CpuProbe],
) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    result: dict[str, Any] = {}
    for reactions in (True, False):
        name = f"bench_notifications_{'on' if reactions else 'off'}"
        scenarios.create_database(admin_url, name)
        server = Server(pg.url_for(name), work, reactions=reactions).start()
        every = [pids_probe("server", server.pids), *probes]
        try:
            if reactions:
                result["latency"] = asyncio.run(
                    _latency(server.url, sizes.rate, sizes.duration_s, sizes.drain_s)
                )
            before = {p.name: p.sample() for p in every}
            rate = asyncio.run(_throughput(server.url, sizes.writers, sizes.duration_s))
            after = {p.name: p.sample() for p in every}
        finally:
            server.stop()
        key = "with_reactions" if reactions else "without_reactions"
        result[f"writes_per_s_{key}"] = round(rate, 1)
        result[f"cpu_s_{key}"] = {
            p.name: round(CpuProbe.delta(before[p.name], after[p.name]), 3) for p in every
        }
    off = result["writes_per_s_without_reactions"]
    result["ratio"] = round(result["writes_per_s_with_reactions"] / off, 3) if off else None
    print(line(result), flush=True)
    return result


def line(result: dict[str, Any]) -> str:
    lat = result["latency"]
    return (
        f"  mention -> /ws frame at {lat['achieved_rate']}/s (target {lat['target_rate']}):"
        f" p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, {lat['notified']}/{lat['messages']}"
        f" arrived; writes/s with reactions {result['writes_per_s_with_reactions']}, without"
        f" {result['writes_per_s_without_reactions']}, ratio {result['ratio']}"
    )


def serve(argv: Sequence[str]) -> int:
    """The app with every reaction, or (``--no-reactions``) none: a bench-only server."""
    import uvicorn

    from api.app import create_app
    from api.bootstrap import build_services
    from api.contexts import CONTEXTS
    from infrastructure.settings import Settings

    p = argparse.ArgumentParser(prog="python -m bench.notifications serve")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--no-reactions", action="store_true")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    if settings.database_url is None:
        print("DATABASE_URL is required", file=sys.stderr)
        return 2
    services = build_services(
        settings,
        settings.database_url,
        catalogue=CONTEXTS,
        policies=[] if args.no_reactions else None,
    )
    app = create_app(settings, settings.database_url, services=services)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.notifications", description=__doc__)
    p.add_argument("--quick", action="store_true", help="shorter, slower: a smoke run")
    p.add_argument("--output", type=Path, help="where to write the figures as JSON")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-notifications-"))
    work.chmod(0o711)
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
