"""Live delivery over WebSockets: how long a posted message takes to reach each subscriber.

One asyncio client (this process, ``websockets``' asyncio client on uvloop) opens N subscriber
connections, each with one ``{"channel": ...}`` subscription to the same channel, plus a few
poster connections that send ``SendMessage`` commands at a steady rate (open loop: on a
schedule, not waiting for acks). For every event each subscriber receives, the latency is
measured from just before its command was sent (``send→rx``) and from the command's ack
(``ack→rx``, negative when the event beats the ack). The same client runs against a bare
``websockets`` broadcast server (``bench.broadcast``) as the baseline.

Also measured: the server's resident memory per idle connection (``VmRSS`` of the server
process before and after opening N connections, then after subscribing them).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bench.harness import MACHINE, STEAL, CpuProbe, nearest_rank_ms, pid_cpu_seconds

# Commands are spread over several poster connections, as many users would send them: Chorus
# executes one connection's commands one at a time, and allows 50 frames/s per connection.
POSTER_FRAMES_PER_SECOND = 10
# Connections opened (and subscribed) at once.
OPEN_BATCH = 50
OPEN_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 2.0
TEXT = "benchmark message: the quick brown fox jumps over the lazy dog"

T = TypeVar("T")


# -- what the client decodes of the server's frames ---------------------------------------------


class _Envelope(msgspec.Struct):
    position: int = 0
    command_id: str | None = None


class _Frame(msgspec.Struct):
    op: str
    id: str | None = None
    sub: str | None = None
    status: int | None = None
    detail: str | None = None
    reason: str | None = None
    event: _Envelope | None = None


_decode = msgspec.json.Decoder(_Frame).decode


# -- the processes: memory, descriptors, limits -------------------------------------------------


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process (``VmRSS`` in /proc/<pid>/status), KiB."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def nofile_limit_of(pid: int) -> tuple[str, str] | None:
    """The (soft, hard) "Max open files" of a running process, as /proc/<pid>/limits says."""
    try:
        with open(f"/proc/{pid}/limits") as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return soft, hard
    except OSError:
        pass
    return None


def raise_nofile_limit(needed: int) -> dict[str, Any]:
    """Raises this process's soft RLIMIT_NOFILE to its hard limit (child processes, such as
    ``chorus serve``, inherit it). Says whether ``needed`` descriptors fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    new_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)

    def show(value: int) -> int | str:
        return "unlimited" if value == resource.RLIM_INFINITY else value

    return {
        "soft_before": show(soft),
        "soft": show(new_soft),
        "hard": show(hard),
        "needed": needed,
        "enough": new_soft == resource.RLIM_INFINITY or new_soft >= needed,
    }


# -- the bare broadcast server (baseline) -------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BroadcastServer:
    """``python -m bench.broadcast`` in a subprocess on 127.0.0.1 (its own process and GIL, as
    ``chorus serve`` is); with ``yjs_state``, it also serves that document at ``/yjs/...``."""

    def __init__(
        self,
        work_dir: Path,
        repo: Path,
        template: dict[str, Any] | None,
        *,
        yjs_state: Path | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.repo = repo
        self.template = template
        self.yjs_state = yjs_state
        self.log_path = work_dir / "broadcast.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout_s: float = 30.0) -> BroadcastServer:
        self.port = free_port()
        argv = [sys.executable, "-m", "bench.broadcast", "--port", str(self.port)]
        if self.template is not None:
            path = self.work_dir / "broadcast-template.json"
            path.write_text(json.dumps(self.template))
            argv += ["--template", str(path)]
        if self.yjs_state is not None:
            argv += ["--yjs-state", str(self.yjs_state)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.repo,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench.broadcast exited during start-up:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench.broadcast did not listen:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig in (signal.SIGINT, signal.SIGKILL):
            if proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


# -- connections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A server under test: where to connect (token included), which channel, its pid."""

    name: str
    url: str
    channel_id: str
    pid: int


async def _in_batches(
    count: int, make: Callable[[int], Awaitable[T]], batch: int = OPEN_BATCH
) -> list[T]:
    out: list[T] = []
    for start in range(0, count, batch):
        out += await asyncio.gather(*(make(i) for i in range(start, min(count, start + batch))))
    return out


async def open_connections(url: str, count: int) -> list[ClientConnection]:
    """``count`` connections, ``OPEN_BATCH`` handshakes at a time. Client pings are off (the
    servers ping every 20 s; the client answers); permessage-deflate is offered, as browsers do."""

    async def one(_: int) -> ClientConnection:
        return await connect(
            url,
            proxy=None,
            open_timeout=OPEN_TIMEOUT_S,
            close_timeout=CLOSE_TIMEOUT_S,
            ping_interval=None,
        )

    opened: list[ClientConnection] = []
    try:
        for start in range(0, count, OPEN_BATCH):
            n = min(OPEN_BATCH, count - start)
            opened += await asyncio.gather(*(one(i) for i in range(n)))
    except BaseException:
        await close_all(opened)
        raise
    return opened


async def close_all(conns: Iterable[ClientConnection]) -> None:
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def subscribe_all(conns: Sequence[ClientConnection], channel_id: str) -> None:
    """Subscribes each connection to the channel as ``s1`` and waits for ``subscribed``."""
    frame = json.dumps({"op": "subscribe", "sub": "s1", "streams": [{"channel": channel_id}]})

    async def one(i: int) -> None:
        conn = conns[i]
        await conn.send(frame)
        reply = _decode(await asyncio.wait_for(conn.recv(decode=False), OPEN_TIMEOUT_S))
        if reply.op != "subscribed":
            raise RuntimeError(f"subscribe answered {reply.op}: {reply.status} {reply.detail}")

    await _in_batches(len(conns), one)


def negotiated_extensions(conn: ClientConnection) -> str:
    response = conn.response
    value = None if response is None else response.headers.get("Sec-WebSocket-Extensions")
    return value or "none"


# -- memory of idle connections -----------------------------------------------------------------


async def warm_up(endpoint: Endpoint, count: int = 10) -> None:
    """Opens, subscribes and closes a few connections, so that what a server allocates once
    (imports, caches, the compressor's first use) is not counted per connection."""
    warm = await open_connections(endpoint.url, count)
    try:
        await subscribe_all(warm, endpoint.channel_id)
    finally:
        await close_all(warm)


async def open_subscribers(
    endpoint: Endpoint, count: int, settle_s: float = 1.0
) -> tuple[list[ClientConnection], dict[str, Any]]:
    """``count`` connections, each subscribed to the channel, and what they cost: the server's
    RSS before opening them, once open (idle) and once subscribed (no events flowing yet)."""
    pid = endpoint.pid
    before, fds_before = rss_kib(pid), open_fds(pid)
    t0, cpu0 = time.perf_counter(), _cpu(pid)
    conns = await open_connections(endpoint.url, count)
    open_s = time.perf_counter() - t0
    try:
        # Chorus records each connection as a presence session (a command) after the
        # handshake: wait for that work to finish before reading memory or subscribing.
        await asyncio.sleep(settle_s)
        await settle(pid, timeout_s=120)
        opened_s, cpu1 = time.perf_counter() - t0, _cpu(pid)
        opened, fds_opened = rss_kib(pid), open_fds(pid)
        t0 = time.perf_counter()
        await subscribe_all(conns, endpoint.channel_id)
        subscribe_s = time.perf_counter() - t0
        await asyncio.sleep(settle_s)
        await settle(pid, timeout_s=120)
        cpu2 = _cpu(pid)
        subscribed = rss_kib(pid)
    except BaseException:
        await close_all(conns)
        raise

    def cpu_ms_each(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) / count * 1000, 2)

    def per_conn(a: int | None, b: int | None) -> float | None:
        return None if a is None or b is None else round((b - a) / count, 1)

    limit = nofile_limit_of(pid)
    return conns, {
        "server": endpoint.name,
        "connections": count,
        "rss_kib_before": before,
        "rss_kib_opened": opened,
        "rss_kib_subscribed": subscribed,
        "kib_per_connection_idle": per_conn(before, opened),
        "kib_per_connection_subscribed": per_conn(before, subscribed),
        "server_fds_before": fds_before,
        "server_fds_opened": fds_opened,
        "server_nofile_limit": None if limit is None else {"soft": limit[0], "hard": limit[1]},
        "open_s": round(open_s, 2),
        "subscribe_s": round(subscribe_s, 2),
        "subscribes_per_s": round(count / subscribe_s, 1) if subscribe_s > 0 else None,
        "settled_after_open_s": round(opened_s, 2),
        "server_cpu_ms_per_open": cpu_ms_each(cpu0, cpu1),
        "server_cpu_ms_per_subscribe": cpu_ms_each(cpu1, cpu2),
        "extensions": negotiated_extensions(conns[0]),
    }


async def settle(pid: int, *, idle_cores: float = 0.05, timeout_s: float = 120.0) -> float:
    """Waits until the process uses less than ``idle_cores`` over half a second (work left
    from the previous figure: queued frames, projections), up to ``timeout_s``. Returns the
    seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        a = pid_cpu_seconds([pid]).get(pid)
        await asyncio.sleep(0.5)
        b = pid_cpu_seconds([pid]).get(pid)
        if a is None or b is None or (b - a) / 0.5 < idle_cores:
            break
    return time.perf_counter() - t0


def _cpu(pid: int) -> float | None:
    return pid_cpu_seconds([pid]).get(pid)


def all_open(conns: Iterable[ClientConnection]) -> bool:
    return all(c.state is State.OPEN for c in conns)


# -- the delivery run ---------------------------------------------------------------------------


@dataclass
class DeliveryResult:
    server: str
    subscribers: int
    rate: float
    seconds: float  # the measured window, as sampled
    events_posted: int  # commands sent inside the window
    deliveries_in_window: int  # event frames received inside the window (any event)
    expected: int  # window events x subscribers
    received: int  # of those, received before the drain deadline
    duplicates: int  # an event a subscriber had already received, or out of position order
    send_latencies_s: array.array[float] = field(repr=False)
    ack_latencies_s: array.array[float] = field(repr=False)
    command_latencies_s: array.array[float] = field(repr=False)
    cpu_s: dict[str, float]
    command_errors: int = 0
    first_error: str | None = None
    unacked: int = 0
    disconnects: Counter[str] = field(default_factory=Counter)
    ends: Counter[str] = field(default_factory=Counter)
    drain_s: float | None = None  # after the last command, until all arrived (None: never)
    frame_bytes: float | None = None
    extensions: str = ""

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries_in_window / self.seconds if self.seconds > 0 else 0.0

    @property
    def posted_per_s(self) -> float:
        return self.events_posted / self.seconds if self.seconds > 0 else 0.0

    @property
    def missing(self) -> int:
        return self.expected - self.received

    @property
    def failures(self) -> int:
        """Error frames and unexpected closes. Overload is not a failure: events still in
        flight at the drain deadline (``missing``, ``unacked``) and subscribers the server
        ended as too slow (close 1013) are reported, not failed."""
        unexpected = sum(n for why, n in self.disconnects.items() if not why.startswith("1013"))
        return self.command_errors + unexpected

    def percentile_ms(self, q: float, which: str = "send") -> float | None:
        values = {
            "send": self.send_latencies_s,
            "ack": self.ack_latencies_s,
            "command": self.command_latencies_s,
        }[which]
        return nearest_rank_ms(values, q)

    def cpu_ms_per_delivery(self) -> dict[str, float | None]:
        n = self.deliveries_in_window
        return {
            k: (v / n * 1000 if n else None)
            for k, v in self.cpu_s.items()
            if k not in (MACHINE, STEAL)
        }

    def cores_busy(self) -> dict[str, float]:
        if self.seconds <= 0:
            return {}
        busy = {k: v / self.seconds for k, v in self.cpu_s.items() if k != MACHINE}
        if MACHINE in self.cpu_s:
            ours = sum(v for k, v in self.cpu_s.items() if k not in (MACHINE, STEAL))
            busy["other"] = max(0.0, self.cpu_s[MACHINE] - ours) / self.seconds
        return busy

    def to_json(self) -> dict[str, Any]:
        def latency(which: str) -> dict[str, Any]:
            return {
                "p50": _round(self.percentile_ms(50, which)),
                "p90": _round(self.percentile_ms(90, which)),
                "p99": _round(self.percentile_ms(99, which)),
                "max": _round(self.percentile_ms(100, which)),
                "samples": len(
                    {
                        "send": self.send_latencies_s,
                        "ack": self.ack_latencies_s,
                        "command": self.command_latencies_s,
                    }[which]
                ),
            }

        return {
            "server": self.server,
            "subscribers": self.subscribers,
            "rate_offered": self.rate,
            "seconds": round(self.seconds, 3),
            "events_posted": self.events_posted,
            "posted_per_s": round(self.posted_per_s, 1),
            "deliveries_in_window": self.deliveries_in_window,
            "deliveries_per_s": round(self.deliveries_per_s, 1),
            "expected": self.expected,
            "received": self.received,
            "missing": self.missing,
            "duplicates_or_reordered": self.duplicates,
            "latency_send_to_receipt_ms": latency("send"),
            "latency_ack_to_receipt_ms": latency("ack"),
            "command_to_ack_ms": latency("command"),
            "cpu_ms_per_delivery": {k: _round(v, 4) for k, v in self.cpu_ms_per_delivery().items()},
            "cores_busy": {k: round(v, 2) for k, v in self.cores_busy().items()},
            "command_errors": self.command_errors,
            "first_error": self.first_error,
            "unacked": self.unacked,
            "disconnects": dict(self.disconnects),
            "ends": dict(self.ends),
            "drain_s": _round(self.drain_s),
            "event_frame_bytes": _round(self.frame_bytes, 1),
            "extensions": self.extensions,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


class _Run:
    """The state of one delivery run, shared by the receiving tasks."""

    def __init__(self, n_events: int) -> None:
        self.prefix = uuid.uuid4().hex[:12] + "-"
        self.sent = array.array("d", [math.nan] * n_events)
        self.acked = array.array("d", [math.nan] * n_events)
        # Each receipt of an event we posted: its index and when it arrived.
        self.rx_index = array.array("l")
        self.rx_time = array.array("d")
        self.rx_count = array.array("l", [0] * n_events)  # receipts per event
        self.rx_other = 0  # events not posted by this run
        self.frames = 0
        self.frame_bytes = 0
        self.duplicates = 0
        self.errors = 0
        self.first_error: str | None = None
        self.disconnects: Counter[str] = Counter()
        self.ends: Counter[str] = Counter()
        self.closing = False
        self.captured: bytes | None = None  # one event frame, as received

    def index_of(self, command_id: str | None) -> int | None:
        if command_id is None or not command_id.startswith(self.prefix):
            return None
        return int(command_id[len(self.prefix) :])

    def error(self, text: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = text

    async def receive(self, conn: ClientConnection) -> None:
        """A subscriber: timestamps every event frame as soon as this task gets it."""
        last = 0
        try:
            while True:
                raw = await conn.recv(decode=False)
                t = time.perf_counter()
                frame = _decode(raw)
                if frame.op == "event" and frame.event is not None:
                    self.frames += 1
                    self.frame_bytes += len(raw)
                    if frame.event.position <= last:
                        self.duplicates += 1
                    last = frame.event.position
                    i = self.index_of(frame.event.command_id)
                    if i is None:
                        self.rx_other += 1
                        continue
                    self.rx_index.append(i)
                    self.rx_time.append(t)
                    self.rx_count[i] += 1
                    if self.captured is None:
                        self.captured = bytes(raw)
                elif frame.op == "end":
                    self.ends[frame.reason or "?"] += 1
                elif frame.op == "error":
                    self.error(f"subscriber got error {frame.status}: {frame.detail}")
        except ConnectionClosed as exc:
            if not self.closing:
                rcvd = exc.rcvd
                reason = "no close frame" if rcvd is None else f"{rcvd.code} {rcvd.reason}"
                self.disconnects[reason] += 1

    async def acks(self, conn: ClientConnection) -> None:
        """A poster's replies: acks (timestamped) and errors."""
        try:
            while True:
                raw = await conn.recv(decode=False)
                t = time.perf_counter()
                frame = _decode(raw)
                if frame.op == "ack":
                    i = self.index_of(frame.id)
                    if i is not None:
                        self.acked[i] = t
                elif frame.op == "error":
                    self.error(f"command error {frame.status}: {frame.detail}")
        except ConnectionClosed as exc:
            if not self.closing:
                rcvd = exc.rcvd
                reason = "no close frame" if rcvd is None else f"{rcvd.code} {rcvd.reason}"
                self.disconnects[f"poster: {reason}"] += 1


async def run_delivery(
    endpoint: Endpoint,
    subs: Sequence[ClientConnection],
    *,
    rate: float,
    warmup_s: float,
    duration_s: float,
    drain_s: float,
    probes: Sequence[CpuProbe],
) -> tuple[DeliveryResult, bytes | None]:
    """One figure: ``subs`` (connections each subscribed to the channel, left open), ``rate``
    commands per second over a few poster connections for ``warmup_s + duration_s``, then up
    to ``drain_s`` for the last events to arrive. Returns the result and one event frame as
    received."""
    subscribers = len(subs)
    n_events = max(1, round(rate * (warmup_s + duration_s)))
    run = _Run(n_events)
    posters_needed = max(1, math.ceil(rate / POSTER_FRAMES_PER_SECOND))
    posters: list[ClientConnection] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        posters = await open_connections(endpoint.url, posters_needed)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(run.receive(c)) for c in subs]
        tasks += [loop.create_task(run.acks(c)) for c in posters]

        t0 = time.perf_counter() + 0.05
        window: dict[str, float] = {}
        samples: dict[str, dict[str, dict[Any, float]]] = {}

        async def sample_at(name: str, when: float) -> None:
            await asyncio.sleep(max(0.0, when - time.perf_counter()))
            window[name] = time.perf_counter()
            samples[name] = {p.name: p.sample() for p in probes}

        sampler = [
            loop.create_task(sample_at("start", t0 + warmup_s)),
            loop.create_task(sample_at("end", t0 + warmup_s + duration_s)),
        ]
        data = {"channel_id": endpoint.channel_id, "text": TEXT}
        for i in range(n_events):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = {"op": "command", "id": f"{run.prefix}{i}", "type": "SendMessage"}
            text = json.dumps(frame | {"data": data | {"text": f"{TEXT} ({i})"}})
            run.sent[i] = time.perf_counter()
            try:
                await posters[i % len(posters)].send(text)
            except ConnectionClosed as exc:
                run.error(f"poster closed: {exc}")
        await asyncio.gather(*sampler)
        start, end = window["start"], window["end"]
        in_window = [i for i in range(n_events) if start <= run.sent[i] < end]
        expected = len(in_window) * subscribers
        wanted = set(in_window)

        # Drain: until every subscriber has every window event (or the deadline).
        last_sent = max(run.sent[i] for i in range(n_events))
        drain_deadline = time.perf_counter() + drain_s
        drained: float | None = None
        live = subscribers
        while True:
            received = sum(run.rx_count[i] for i in in_window)
            acked = all(not math.isnan(run.acked[i]) for i in in_window)
            live = subscribers - sum(run.disconnects.values())
            if received >= len(in_window) * live and acked:
                drained = time.perf_counter() - last_sent
                break
            if time.perf_counter() > drain_deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        run.closing = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_all(posters)

    send_lat, ack_lat, cmd_lat = array.array("d"), array.array("d"), array.array("d")
    deliveries_in_window = sum(1 for t in run.rx_time if start <= t < end)
    for i, t in zip(run.rx_index, run.rx_time, strict=True):
        if i not in wanted:
            continue
        send_lat.append(t - run.sent[i])
        if not math.isnan(run.acked[i]):
            ack_lat.append(t - run.acked[i])
    for i in in_window:
        if not math.isnan(run.acked[i]):
            cmd_lat.append(run.acked[i] - run.sent[i])
    received = len(send_lat)
    send_lat, ack_lat, cmd_lat = (array.array("d", sorted(a)) for a in (send_lat, ack_lat, cmd_lat))
    result = DeliveryResult(
        server=endpoint.name,
        subscribers=subscribers,
        rate=rate,
        seconds=end - start,
        events_posted=len(in_window),
        deliveries_in_window=deliveries_in_window,
        expected=expected,
        received=received,
        duplicates=run.duplicates,
        send_latencies_s=send_lat,
        ack_latencies_s=ack_lat,
        command_latencies_s=cmd_lat,
        cpu_s={
            p.name: CpuProbe.delta(samples["start"][p.name], samples["end"][p.name]) for p in probes
        },
        command_errors=run.errors,
        first_error=run.first_error,
        unacked=sum(1 for i in in_window if math.isnan(run.acked[i])),
        disconnects=run.disconnects,
        ends=run.ends,
        drain_s=drained,
        frame_bytes=run.frame_bytes / run.frames if run.frames else None,
        extensions=negotiated_extensions(subs[0]) if subs else "",
    )
    return result, run.captured


def event_template(frame: bytes | None) -> dict[str, Any] | None:
    """The envelope of a captured event frame, for the baseline server to imitate."""
    if frame is None:
        return None
    envelope = json.loads(frame).get("event")
    return envelope if isinstance(envelope, dict) else None


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's, as ``chorus serve`` (uvicorn) and the baseline server use, when installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.new_event_loop
    return uvloop.new_event_loop
