"""Collaborative documents over ``/yjs``: a real typing trace replayed through ``chorus serve``.

The trace is ``automerge-paper.json.gz`` (beside the repository, in ``../shared/data``): the
259,778 single-character patches of writing a paper. Each figure stands beside a baseline
measured in the same run:

1. **convergence**: a writer connection (the y-websocket handshake, then raw frames) sends one
   Yjs update per patch; a second connection to the same document, on the same server,
   applies what the server passes on until its text equals the trace's. updates/s = N /
   (first send → the second client's text is right). Twice, each on a new document: the
   writer **unpaced** (as fast as the socket takes frames) and **paced** (never more than
   ``WINDOW`` updates ahead of what the second client has received). Baseline: a bare
   pycrdt ``Doc`` applying the same N updates in this process;
2. **events per update**: ``DocumentUpdateApplied`` events in ``chorus_events`` for the
   document once the server has saved everything (``GET /api/documents/{id}`` shows the whole
   text; both connections stay open until then), ÷ N, for each writer;
3. **cold open**: on a freshly started server (the document never loaded in that process,
   then again after the room is unloaded for idleness), a new connection from connect to a
   synced local copy holding the full text; beside a bare ``Doc().apply_update`` of the full
   state (``GET /api/documents/{id}/update``); ``GET /api/documents/{id}`` timed as well; and
   the same client opening the same state from a bare y-websocket server that holds it in
   memory (``python -m bench.broadcast --yjs-state``): the floor of connecting, sending and
   the client's apply on this machine, which no server can go under;
4. **memory per open document**: the server's RSS before and after opening K copies of the
   finished document, one idle editor each, and after K more editors on one of them (what a
   connection costs, to tell the two apart); beside the RSS per bare pycrdt ``Doc`` holding
   the same state in a fresh Python process.

The updates are generated before anything is timed (one pycrdt transaction per patch, the
update captured from ``Doc.observe``). Servers run with ``CHORUS_YJS_FRAMES_PER_SECOND``
raised to 1,000,000 (the default 200 frames/s per connection would close the writer) and the
per-user edit budget off (``CHORUS_DOCUMENT_UPDATES_PER_USER=0``, ``..._BYTES_PER_USER=0``:
one user replaying a whole paper in seconds is far past what one person types).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pycrdt import Doc, Text, TransactionEvent
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench import delivery, scenarios
from bench.harness import MACHINE, STEAL, CpuProbe, pids_probe
from domain import yjs_protocol as protocol
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.settings import Settings

TRACE = scenarios.REPO.parent / "shared" / "data" / "automerge-paper.json.gz"
ROOT = "content"  # the Text root the document's content lives in
QUICK_PATCHES = 20_000
COPIES = 20  # documents opened for the memory figure
COLD_OPENS = {"full": 7, "quick": 3}
REST_REPEATS = 5
BARE_REPEATS = 20
# Server settings for every server this group starts.
FRAMES_PER_SECOND = "1000000"  # the maximum the setting takes; the default (200) would close us
IDLE_S = 0.5  # the cold-open server unloads a room this long after its last editor leaves
CONVERGE_TIMEOUT_S = 600.0
SAVE_TIMEOUT_S = 120.0
OPEN_TIMEOUT_S = 30.0
# The writer lets the event loop run the reader every this many frames.
YIELD_EVERY = 64
# The paced writer keeps at most this many updates ahead of the second client (the server
# queues at most 4,096 frames for a connection: api/yjs/endpoint.py OUTBOX_FRAMES) and then
# waits until the reader has caught up by WINDOW_STEP.
WINDOW = 1000
WINDOW_STEP = 100
# A second client that receives nothing for this long while the writer is done has stalled.
STALL_S = 5.0
# Close codes after which y-websocket clients reconnect (and resync): the reader does too.
RECONNECT_CODES = (1012, 1013)
UPDATE_TOPIC = "%.DocumentUpdateApplied"

# Targets from the issue: reported as met or missed, never tuned for.
TARGET_EVENTS_PER_UPDATE = 0.1
TARGET_UPDATES_PER_S = 5_000.0
TARGET_COLD_OPEN_RATIO = 2.0


# -- the trace and its updates ------------------------------------------------------------------


@dataclass
class Trace:
    start: str
    expected: str  # the text after the patches used
    patches: list[tuple[int, int, str]]
    total_patches: int  # in the file


def load_trace(path: Path, limit: int | None) -> Trace:
    """The first ``limit`` patches (all if None), and the text they produce: the file's
    ``endContent`` for the whole trace, else computed by applying them to ``startContent``."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    patches = [(int(p[0]), int(p[1]), str(p[2])) for t in data["txns"] for p in t["patches"]]
    total = len(patches)
    if limit is not None and limit < total:
        patches = patches[:limit]
        text = data["startContent"]
        for pos, ndel, ins in patches:
            text = text[:pos] + ins + text[pos + ndel :]
        expected = text
    else:
        expected = data["endContent"]
    return Trace(data["startContent"], expected, patches, total)


@dataclass
class Updates:
    initial: bytes  # the writer's state when it connects (startContent; empty here)
    updates: list[bytes]
    seconds: float


def generate_updates(trace: Trace) -> Updates:
    """One transaction per patch on a local ``Doc``; the update each produced. Positions in
    the trace count characters, pycrdt's ``Text`` counts UTF-8 bytes: with non-ASCII text
    they are converted through a copy of the text kept alongside."""
    t0 = time.perf_counter()
    doc: Doc[Any] = Doc()
    text = doc.get(ROOT, type=Text)
    if trace.start:
        text.insert(0, trace.start)
    initial = doc.get_update()
    ascii_only = trace.start.isascii() and all(ins.isascii() for _, _, ins in trace.patches)
    model = trace.start
    captured: list[bytes] = []

    def on_change(event: TransactionEvent) -> None:
        captured.append(event.update)

    sub = doc.observe(on_change)
    try:
        for pos, ndel, ins in trace.patches:
            at, length = pos, ndel
            if not ascii_only:
                at = len(model[:pos].encode())
                length = len(model[pos : pos + ndel].encode())
                model = model[:pos] + ins + model[pos + ndel :]
            with doc.transaction():
                if length:
                    del text[at : at + length]
                if ins:
                    text.insert(at, ins)
    finally:
        doc.unobserve(sub)
    if str(text) != trace.expected:
        raise RuntimeError("the generated updates do not give the trace's text")
    return Updates(initial, captured, time.perf_counter() - t0)


def bare_apply(updates: Updates, expected: str) -> float:
    """The baseline of figure 1: the same updates applied to a bare ``Doc``, in seconds."""
    doc: Doc[Any] = Doc()
    text = doc.get(ROOT, type=Text)
    doc.apply_update(updates.initial)
    t0 = time.perf_counter()
    for update in updates.updates:
        doc.apply_update(update)
    same = str(text) == expected
    seconds = time.perf_counter() - t0
    if not same:
        raise RuntimeError("the bare Doc did not converge to the trace's text")
    return seconds


def bare_load(state: bytes, expected: str) -> float:
    """The baseline of figure 3: a full state applied to an empty ``Doc`` and its text read."""
    t0 = time.perf_counter()
    doc: Doc[Any] = Doc()
    doc.apply_update(state)
    same = str(doc.get(ROOT, type=Text)) == expected
    seconds = time.perf_counter() - t0
    if not same:
        raise RuntimeError("the document's full state does not hold the trace's text")
    return seconds


_BARE_MEMORY = """
import gc, sys
from pycrdt import Doc

def rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

state, k = open(sys.argv[1], "rb").read(), int(sys.argv[2])
warm = Doc()
warm.apply_update(state)
del warm
gc.collect()
before = rss()
docs = []
for _ in range(k):
    doc = Doc()
    doc.apply_update(state)
    docs.append(doc)
print((rss() - before) / k)
"""


def bare_memory_kib(path: Path, copies: int) -> float:
    """The baseline of figure 4: RSS per ``Doc`` holding the state in ``path``, ``copies`` of
    them in a fresh Python process."""
    done = subprocess.run(
        [sys.executable, "-c", _BARE_MEMORY, str(path), str(copies)],
        cwd=scenarios.REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return round(float(done.stdout.strip()), 1)


# -- the server ---------------------------------------------------------------------------------


class DocumentServer(scenarios.ChorusServer):
    """``chorus serve`` with the document settings this group needs, logging to its own file."""

    def __init__(self, database_url: str, work_dir: Path, name: str, env: dict[str, str]):
        super().__init__(database_url, work_dir, env=env)
        self.log_path = work_dir / f"chorus-serve-documents-{name}.log"

    def log_problems(self, limit: int = 3000) -> str:
        """The log from its first error or traceback on (empty when there is none)."""
        text = self.log_tail(1_000_000)
        marks = [i for i in (text.find("ERROR"), text.find("Traceback")) if i >= 0]
        return text[min(marks) : min(marks) + limit] if marks else ""


@dataclass(frozen=True)
class Account:
    base_url: str
    token: str
    workspace_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def yjs_url(self, base_url: str, document_id: str) -> str:
        return base_url.replace("http://", "ws://") + f"/yjs/{document_id}?token={self.token}"


def _expect(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json()


def sign_up(base_url: str) -> Account:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post(
            "/api/auth/signup", json={"username": "bench_docs", "password": scenarios.PASSWORD}
        )
        token = _expect(r, 201)["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        r = client.post("/api/workspaces", json={"name": "documents"}, headers=headers)
        workspace_id = _expect(r, 201)["id"]
    return Account(base_url, token, workspace_id)


def create_document(client: httpx.Client, account: Account, title: str) -> tuple[str, int]:
    r = client.post(
        f"/api/workspaces/{account.workspace_id}/documents",
        json={"title": title},
        headers=account.headers,
    )
    body = _expect(r, 201)
    return str(body["id"]), int(body["position"])


def saved_text(client: httpx.Client, account: Account, document_id: str) -> str | None:
    r = client.get(f"/api/documents/{document_id}", headers=account.headers)
    body = _expect(r, 200)
    value = body["content"].get(ROOT)
    return value if isinstance(value, str) else None


def wait_saved(
    client: httpx.Client, account: Account, document_id: str, expected: str, timeout_s: float
) -> float | None:
    """Seconds until ``GET /api/documents/{id}`` shows ``expected`` (None: not in time)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if saved_text(client, account, document_id) == expected:
            return time.perf_counter() - t0
        # Each GET of a large document costs the server tens of ms: poll slower after 1 s.
        time.sleep(0.1 if time.perf_counter() - t0 < 1.0 else 0.5)
    return None


def count_update_events(database_url: str, document_id: str) -> tuple[int, int]:
    """``DocumentUpdateApplied`` events of the document's stream, and their stored bytes."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(octet_length(state)), 0) FROM chorus_events"
            " WHERE originator_id = %s AND topic LIKE %s",
            (document_id, UPDATE_TOPIC),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# -- y-websocket clients -------------------------------------------------------------------------


async def _connect(url: str) -> ClientConnection:
    # permessage-deflate is offered, as browsers do (chorus serve declines it by default).
    return await connect(
        url,
        proxy=None,
        max_size=None,
        open_timeout=OPEN_TIMEOUT_S,
        close_timeout=2,
        ping_interval=None,
    )


class Peer:
    """One y-websocket client: a connection and the local ``Doc`` it keeps in sync."""

    def __init__(self, ws: ClientConnection, doc: Doc[Any]) -> None:
        self.ws = ws
        self.doc = doc
        self.text = doc.get(ROOT, type=Text)
        self.frames = 0
        self.first_frame_at: float | None = None
        self.step2_at: float | None = None

    @classmethod
    async def open(cls, url: str, initial: bytes | None = None) -> Peer:
        doc: Doc[Any] = Doc()
        if initial:
            doc.apply_update(initial)
        return cls(await _connect(url), doc)

    async def sync(self) -> None:
        """The handshake, as y-websocket's provider does it: our step 1, an answer to the
        server's step 1, until the server's step 2 has been applied."""
        await self.ws.send(protocol.sync_step1(self.doc.get_state()))
        answered = False
        while not answered or self.step2_at is None:
            kind = await self.receive()
            answered = answered or kind == protocol.SYNC_STEP1

    async def receive(self) -> int | None:
        """Handles one frame; returns its sync type (None for other messages)."""
        frame = await self.ws.recv(decode=False)
        if self.first_frame_at is None:
            self.first_frame_at = time.perf_counter()
        self.frames += 1
        message = protocol.parse(frame)
        if message.kind == protocol.MESSAGE_AUTH:
            raise RuntimeError(f"the server refused an update: {frame!r}")
        if message.kind != protocol.MESSAGE_SYNC:
            return None
        if message.sync_type == protocol.SYNC_STEP1:
            await self.ws.send(protocol.sync_step2(self.doc.get_update(message.payload)))
        else:
            if message.sync_type == protocol.SYNC_STEP2:
                self.step2_at = time.perf_counter()
            self.doc.apply_update(message.payload)
        return message.sync_type

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()

    def close_info(self) -> str:
        code = self.ws.close_code
        return "open" if code is None else f"closed: {code} {self.ws.close_reason!r}"


# -- 1. updates/s to convergence -----------------------------------------------------------------


@dataclass
class Convergence:
    window: int | None  # the most updates the writer keeps ahead of the reader (None: no limit)
    updates: int
    seconds: float  # first send → the reader's text is right (or → the stall was seen)
    send_s: float | None  # first send → last frame handed to the socket
    reader_frames: int
    frame_bytes: int
    converged: bool
    started_at: float  # perf_counter() at the first send
    stall: str | None = None
    reconnects: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        if not self.converged or self.seconds <= 0:
            return None
        return self.updates / self.seconds

    def to_json(self, bare_rate: float) -> dict[str, Any]:
        rate = self.rate
        return {
            "window": self.window,
            "updates": self.updates,
            "converged": self.converged,
            "stall": self.stall,
            "reader_reconnects": self.reconnects,
            "seconds": round(self.seconds, 3),
            "updates_per_s": None if rate is None else round(rate, 1),
            "vs_bare": None if rate is None else round(rate / bare_rate, 4),
            "send_s": None if self.send_s is None else round(self.send_s, 3),
            "reader_frames": self.reader_frames,
            "frame_bytes_mean": round(self.frame_bytes / max(self.updates, 1), 1),
            "cpu_us_per_update": _cpu_us_per(self.cpu_s, self.updates),
            "cores_busy": {
                k: round(v / self.seconds, 2)
                for k, v in self.cpu_s.items()
                if k not in (MACHINE, STEAL) and self.seconds > 0
            },
            "other_cores": _other_cores(self.cpu_s, self.seconds),
        }


async def converge(
    url: str,
    updates: Updates,
    expected: str,
    probes: list[CpuProbe],
    *,
    window: int | None,
    before_close: Callable[[], object],
) -> tuple[Convergence, object]:
    """The writer sends every update, the reader applies what the server passes on until its
    text is ``expected``. With ``window``, the writer waits whenever it is that many updates
    ahead of what the reader has received; without, it sends as fast as the socket takes
    them. A reader that receives nothing for ``STALL_S`` while the writer is done (or
    waiting) has stalled: reported, not waited for.

    ``before_close`` then runs in a thread (its result is returned) while both connections
    stay open: the writer's last frames may still wait in the server's socket buffer, and
    closing first would drop them (the close handshake times out and resets the connection)."""
    frames = [protocol.sync_update(u) for u in updates.updates]
    target_len = len(expected.encode())
    reader = await Peer.open(url)
    writer = await Peer.open(url, updates.initial)
    wake: list[tuple[int, asyncio.Future[None]]] = []
    sent = reconnects = 0
    try:
        await asyncio.gather(reader.sync(), writer.sync())
        reader.frames = 0

        async def read() -> float:
            nonlocal reconnects
            text = reader.text
            while True:
                try:
                    await reader.receive()
                except ConnectionClosed:
                    # As y-websocket does: reconnect after 1012/1013 and resync.
                    if reader.ws.close_code not in RECONNECT_CODES:
                        raise
                    reconnects += 1
                    reader.ws, reader.step2_at = await _connect(url), None
                    await reader.sync()
                if wake and reader.frames >= wake[0][0]:
                    wake.pop()[1].set_result(None)
                if len(text) == target_len and str(text) == expected:
                    return time.perf_counter()

        async def write() -> float:
            nonlocal sent
            send = writer.ws.send
            loop = asyncio.get_running_loop()
            for i, frame in enumerate(frames):
                if window is not None and i - reader.frames >= window:
                    future = loop.create_future()
                    wake.append((i - window + WINDOW_STEP, future))
                    await future
                await send(frame)
                sent = i + 1
                if i % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            return time.perf_counter()

        before = {p.name: p.sample() for p in probes}
        t0 = time.perf_counter()
        reading = asyncio.ensure_future(read())
        writing = asyncio.ensure_future(write())
        stall: str | None = None
        seen, seen_at = (-1, -1), t0
        while not reading.done():
            await asyncio.wait([reading], timeout=0.5)
            if writing.done() and writing.exception() is not None:
                break
            now = time.perf_counter()
            if now - t0 > CONVERGE_TIMEOUT_S:
                stall = f"no convergence in {CONVERGE_TIMEOUT_S:.0f} s"
                break
            if (reader.frames, sent) != seen:
                seen, seen_at = (reader.frames, sent), now
            elif now - seen_at > STALL_S:
                stall = (
                    f"the second client stopped receiving: {reader.frames:,} frames of "
                    f"{len(frames):,} updates sent ({sent:,}), nothing for "
                    f"{now - seen_at:.0f} s; its text {len(reader.text):,} of "
                    f"{target_len:,} bytes; its connection {reader.close_info()}, the "
                    f"writer's {writer.close_info()}"
                )
                break
        stopped_at = time.perf_counter()
        after = {p.name: p.sample() for p in probes}
        for task in (reading, writing):
            if not task.done():
                task.cancel()
        await asyncio.gather(reading, writing, return_exceptions=True)
        for task in (reading, writing):
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                stall = stall or f"{type(exc).__name__}: {exc}"
        converged = stall is None and reading.done() and not reading.cancelled()
        after_run = await asyncio.to_thread(before_close)
    finally:
        await asyncio.gather(reader.close(), writer.close())
    result = Convergence(
        window=window,
        updates=len(frames),
        seconds=(reading.result() if converged else stopped_at) - t0,
        send_s=writing.result() - t0
        if writing.done() and not writing.cancelled() and writing.exception() is None
        else None,
        reader_frames=reader.frames,
        frame_bytes=sum(len(f) for f in frames),
        converged=converged,
        started_at=t0,
        stall=stall,
        reconnects=reconnects,
        cpu_s={p.name: CpuProbe.delta(before[p.name], after[p.name]) for p in probes},
    )
    return result, after_run


async def populate(url: str, state: bytes) -> None:
    """A document's content sent as one update by one editor (the memory copies)."""
    peer = await Peer.open(url)
    try:
        await peer.sync()
        await peer.ws.send(protocol.sync_update(state))
    finally:
        await peer.close()


# -- 3. cold open ------------------------------------------------------------------------------


@dataclass
class Open:
    seconds: float  # connect → the local copy holds the full text
    connected_s: float  # the WebSocket handshake done
    first_frame_s: float  # the server's step 1: after the access check and the room's load
    step2_s: float  # the server's step 2 (the full state) received
    frame_bytes: int


async def open_document(url: str, expected: str) -> tuple[Open, Peer]:
    t0 = time.perf_counter()
    peer = await Peer.open(url)
    connected = time.perf_counter()
    try:
        await peer.sync()
        ok = str(peer.text) == expected
    except BaseException:
        await peer.close()
        raise
    done = time.perf_counter()
    if not ok:
        await peer.close()
        raise RuntimeError("the opened document does not hold the trace's text")
    assert peer.first_frame_at is not None and peer.step2_at is not None
    return (
        Open(
            seconds=done - t0,
            connected_s=connected - t0,
            first_frame_s=peer.first_frame_at - t0,
            step2_s=peer.step2_at - t0,
            frame_bytes=len(peer.doc.get_update()),
        ),
        peer,
    )


async def _bare_server_opens(work: Path, state: Path, expected: str, count: int) -> list[Open]:
    """``count`` opens of the ``state`` file from ``python -m bench.broadcast --yjs-state``,
    paced as the cold opens are (the machine as idle between them)."""
    server = delivery.BroadcastServer(work, scenarios.REPO, None, yjs_state=state).start()
    url = f"ws://127.0.0.1:{server.port}/yjs/bare"
    opens: list[Open] = []
    try:
        for _ in range(count + 1):  # the first warms the server's code paths, as for Chorus
            opened, peer = await open_document(url, expected)
            await peer.close()
            opens.append(opened)
            await asyncio.sleep(IDLE_S + 0.5)
    finally:
        server.stop()
    return opens[1:]


def _floor_json(opens: list[Open], bare_ms: float) -> dict[str, Any]:
    median = statistics.median(o.seconds for o in opens)
    return {
        "opens": len(opens),
        "median_ms": _ms(median),
        "min_ms": _ms(min(o.seconds for o in opens)),
        "connected_ms": _ms(statistics.median(o.connected_s for o in opens)),
        "step2_ms": _ms(statistics.median(o.step2_s for o in opens)),
        "ratio": round(median / bare_ms, 2),
    }


def _timed(call: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


# -- the group -----------------------------------------------------------------------------------


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _cpu_us_per(cpu_s: dict[str, float], n: int) -> dict[str, float]:
    return {k: round(v / n * 1e6, 1) for k, v in cpu_s.items() if k not in (MACHINE, STEAL)}


def _other_cores(cpu_s: dict[str, float], seconds: float) -> float | None:
    if MACHINE not in cpu_s or seconds <= 0:
        return None
    ours = sum(v for k, v in cpu_s.items() if k not in (MACHINE, STEAL))
    return round(max(0.0, cpu_s[MACHINE] - ours) / seconds, 2)


def _verdict(value: float | None, target: float, *, at_most: bool) -> str:
    if value is None:
        return "n/a"
    return "met" if (value <= target if at_most else value >= target) else "MISSED"


def run(
    pg: EmbeddedPostgres,
    admin_url: str,
    work: Path,
    *,
    quick: bool,
    patches: int | None,
    probes: list[CpuProbe],
) -> dict[str, Any]:
    """Every figure of the group; returns what goes under ``documents`` in the JSON."""
    mode = "quick" if quick else "full"
    limit = patches if patches is not None else (QUICK_PATCHES if quick else None)
    out: dict[str, Any] = {"trace": str(TRACE), "errors": []}
    if not TRACE.exists():
        out["errors"].append({"error": f"the editing trace is missing: {TRACE}"})
        print(f"6. documents: SKIPPED, the editing trace is missing: {TRACE}", flush=True)
        out["targets"] = targets(out)
        return out
    trace = load_trace(TRACE, limit)
    n = len(trace.patches)
    print(
        f"6. documents over /yjs: {n:,} of the {trace.total_patches:,} patches of "
        f"{TRACE.name}, one Yjs update each ({len(trace.expected):,} characters at the end)",
        flush=True,
    )
    updates = generate_updates(trace)
    print(f"  generated {n:,} updates in {updates.seconds:.1f} s (not timed below)", flush=True)
    bare_s = min(bare_apply(updates, trace.expected) for _ in range(2 if quick else 1))
    defaults = Settings(jwt_secret="x" * 32)
    out.update(
        {
            "mode": mode,
            "patches": n,
            "trace_patches": trace.total_patches,
            "expected_chars": len(trace.expected),
            "generate_s": round(updates.seconds, 2),
            "update_bytes_mean": round(sum(map(len, updates.updates)) / max(n, 1), 1),
            "server_settings": {
                "CHORUS_YJS_FRAMES_PER_SECOND": FRAMES_PER_SECOND,
                "CHORUS_DOCUMENT_UPDATES_PER_USER": "0 (off)",
                "CHORUS_DOCUMENT_BYTES_PER_USER": "0 (off)",
                "CHORUS_DOCUMENT_FLUSH_S": f"default ({defaults.document_flush_s})",
                "CHORUS_DOCUMENT_IDLE_S": f"default ({defaults.document_idle_s}) for the writing "
                f"server, {IDLE_S} for the reopening one",
            },
            "bare_apply": {"seconds": round(bare_s, 3), "updates_per_s": round(n / bare_s, 1)},
        }
    )
    print(f"  bare pycrdt Doc, apply_update x{n:,}: {n / bare_s:,.0f} updates/s", flush=True)

    scenarios.create_database(admin_url, "bench_documents")
    db_url = pg.url_for("bench_documents")
    env = {
        "CHORUS_YJS_FRAMES_PER_SECOND": FRAMES_PER_SECOND,
        "CHORUS_DOCUMENT_UPDATES_PER_USER": "0",
        "CHORUS_DOCUMENT_BYTES_PER_USER": "0",
    }
    runner = asyncio.Runner(loop_factory=delivery.event_loop_factory())
    writing = DocumentServer(db_url, work, "writing", env)
    reopening = DocumentServer(
        db_url, work, "reopening", env | {"CHORUS_DOCUMENT_IDLE_S": str(IDLE_S)}
    )
    try:
        # -- 1 and 2, on the first server ---------------------------------------------------
        writing.start()
        assert writing.pid is not None
        pid = writing.pid
        account = sign_up(writing.url)
        http = httpx.Client(base_url=writing.url, timeout=60)
        doc_id, position = create_document(http, account, "automerge-paper")
        unpaced_id, _ = create_document(http, account, "automerge-paper, unpaced")
        copies = [create_document(http, account, f"copy {i}")[0] for i in range(COPIES + 1)]
        _expect(
            http.get(f"/api/documents/{doc_id}?min_position={position}", headers=account.headers),
            200,
        )
        runner.run(delivery.settle(pid))
        server_probes = [*probes, pids_probe("server", lambda: [pid])]
        bare_rate = n / bare_s
        out["convergence"] = []
        out["saving"] = []
        for target_id, window in ((unpaced_id, None), (doc_id, WINDOW)):

            def saved(target_id: str = target_id) -> float | None:
                """When GET first showed the whole text (perf_counter), None: not in time."""
                waited = wait_saved(http, account, target_id, trace.expected, SAVE_TIMEOUT_S)
                return None if waited is None else time.perf_counter()

            conv, saved_at = runner.run(
                converge(
                    account.yjs_url(writing.url, target_id),
                    updates,
                    trace.expected,
                    server_probes,
                    window=window,
                    before_close=saved,
                )
            )
            out["convergence"].append(conv.to_json(bare_rate))
            how = "unpaced" if window is None else f"at most {window} ahead"
            if conv.converged:
                print(
                    f"  /yjs writer ({how}) → server → second client: {conv.rate:,.0f} "
                    f"updates/s to convergence ({conv.seconds:.2f} s; the writer had sent "
                    f"everything after {conv.send_s:.2f} s); CPU µs/update "
                    f"{out['convergence'][-1]['cpu_us_per_update']}",
                    flush=True,
                )
            else:
                out["errors"].append({"figure": f"convergence, writer {how}", "error": conv.stall})
                print(f"  /yjs writer ({how}): NO CONVERGENCE: {conv.stall}", flush=True)
            if not isinstance(saved_at, float):
                raise RuntimeError(
                    f"the server had not saved the whole text {SAVE_TIMEOUT_S:.0f} s after "
                    "the run (GET /api/documents/{id} differs)"
                )
            all_saved_s = saved_at - conv.started_at
            saved_s = all_saved_s - conv.seconds
            events, event_bytes = count_update_events(db_url, target_id)
            out["saving"].append(
                {
                    "window": window,
                    "saved_after_s": round(saved_s, 2),
                    # First send → GET first seen showing the whole text (polled only after
                    # the run ended: for a stalled run, an upper bound of the server's time).
                    "first_send_to_all_saved_s": round(all_saved_s, 2),
                    "events": events,
                    "events_per_update": round(events / n, 5),
                    "updates_per_event": round(n / events, 1) if events else None,
                    "event_state_bytes_mean": round(event_bytes / events) if events else None,
                }
            )
            print(
                f"  all saved {saved_s:.2f} s after the run ({all_saved_s:.1f} s after the first "
                f"send): {events:,} DocumentUpdateApplied events = "
                f"{events / n:.4f} per update ({n / max(events, 1):,.0f} updates per event)",
                flush=True,
            )
            runner.run(delivery.settle(pid))
        state = http.get(f"/api/documents/{doc_id}/update", headers=account.headers).content
        for copy_id in copies:
            runner.run(populate(account.yjs_url(writing.url, copy_id), state))
        for copy_id in copies:
            if wait_saved(http, account, copy_id, trace.expected, SAVE_TIMEOUT_S) is None:
                raise RuntimeError(f"copy {copy_id} was not saved")
        http.close()
        problems = writing.log_problems()
        if problems:
            out["errors"].append({"server": "writing", "log": problems})
        writing.stop()

        # -- 3 and 4, on a fresh server -------------------------------------------------------
        reopening.start()
        assert reopening.pid is not None
        pid = reopening.pid
        http = httpx.Client(base_url=reopening.url, timeout=60, headers=account.headers)

        def url(document_id: str) -> str:
            return account.yjs_url(reopening.url, document_id)

        # Code paths warmed on a copy, so the first open measures the document, not imports.
        _, peer = runner.run(open_document(url(copies[0]), trace.expected))
        runner.run(peer.close())
        time.sleep(IDLE_S + 0.5)
        runner.run(delivery.settle(pid))
        out["memory"] = runner.run(_memory(pid, [url(c) for c in copies[1:]], trace.expected))
        m = out["memory"]
        print(
            f"  memory: {COPIES} open copies, one idle editor each: server RSS "
            f"{m['rss_kib_before']:,} → {m['rss_kib_documents']:,} KiB "
            f"({m['kib_per_document']:,} KiB per document with its editor); "
            f"{COPIES} more editors on one of them → {m['rss_kib_connections']:,} KiB "
            f"({m['kib_per_editor']:,} KiB per editor; {m['kib_per_editor_kept_after_close']:,} "
            "KiB each still held once they left)",
            flush=True,
        )
        time.sleep(IDLE_S + 0.5)
        runner.run(delivery.settle(pid))

        opens: list[Open] = []
        warm: Open | None = None
        for i in range(COLD_OPENS[mode]):
            cold, peer = runner.run(open_document(url(doc_id), trace.expected))
            opens.append(cold)
            if i == 0:
                warm, second = runner.run(open_document(url(doc_id), trace.expected))
                runner.run(second.close())
            runner.run(peer.close())
            # Unloaded IDLE_S after its last editor left.
            time.sleep(IDLE_S + 0.5)
        state = http.get(f"/api/documents/{doc_id}/update").content
        bare_loads = [bare_load(state, trace.expected) for _ in range(BARE_REPEATS)]
        state_path = work / "document-state.bin"
        state_path.write_bytes(state)
        bare_kib = bare_memory_kib(state_path, COPIES)
        floor = runner.run(_bare_server_opens(work, state_path, trace.expected, COLD_OPENS[mode]))
        get_doc = _timed(lambda: _expect(http.get(f"/api/documents/{doc_id}"), 200), REST_REPEATS)
        get_update = _timed(lambda: http.get(f"/api/documents/{doc_id}/update"), REST_REPEATS)
        http.close()
        bare_ms = statistics.median(bare_loads)
        cold_ms = statistics.median(o.seconds for o in opens)
        assert warm is not None
        out["cold_open"] = {
            "state_bytes": len(state),
            "opens": [
                {
                    "ms": _ms(o.seconds),
                    "connected_ms": _ms(o.connected_s),
                    "server_step1_ms": _ms(o.first_frame_s),
                    "server_step2_ms": _ms(o.step2_s),
                    "client_apply_ms": _ms(o.seconds - o.step2_s),
                }
                for o in opens
            ],
            "first_ms": _ms(opens[0].seconds),
            "median_ms": _ms(cold_ms),
            "warm_open_ms": _ms(warm.seconds),
            "min_ms": _ms(min(o.seconds for o in opens)),
            "bare_load_ms": _ms(bare_ms),
            "bare_load_min_ms": _ms(min(bare_loads)),
            "bare_loads": len(bare_loads),
            "ratio": round(cold_ms / bare_ms, 2),
            "min_ratio": round(min(o.seconds for o in opens) / min(bare_loads), 2),
            "first_ratio": round(opens[0].seconds / bare_ms, 2),
            "rest_get_document_ms": _ms(statistics.median(get_doc)),
            "rest_get_update_ms": _ms(statistics.median(get_update)),
            "bare_server": _floor_json(floor, bare_ms),
        }
        c = out["cold_open"]
        print(
            f"  cold open ({len(state):,}-byte state): median {c['median_ms']} ms over "
            f"{len(opens)} (first {c['first_ms']} ms; warm {c['warm_open_ms']} ms), bare "
            f"Doc.apply_update {c['bare_load_ms']} ms: {c['ratio']}x; GET /api/documents/{{id}} "
            f"{c['rest_get_document_ms']} ms, GET …/update {c['rest_get_update_ms']} ms",
            flush=True,
        )
        f = c["bare_server"]
        print(
            f"  the same open from a bare y-websocket server holding the state in memory: "
            f"median {f['median_ms']} ms ({f['ratio']}x the bare load; connected "
            f"{f['connected_ms']} ms, step 2 at {f['step2_ms']} ms): Chorus adds "
            f"{c['median_ms'] - f['median_ms']:.2f} ms",
            flush=True,
        )
        out["memory"]["bare_pycrdt_kib_per_document"] = bare_kib
        print(f"  memory baseline: a bare pycrdt Doc holding the same state: {bare_kib:,} KiB")
        problems = reopening.log_problems()
        if problems:
            out["errors"].append({"server": "reopening", "log": problems})
    except Exception as exc:
        out["errors"].append({"error": f"{type(exc).__name__}: {exc}"})
        print(f"  documents FAILED: {type(exc).__name__}: {exc}", flush=True)
        for server in (writing, reopening):
            tail = server.log_problems() or server.log_tail(2000)
            if tail:
                print(f"  --- {server.log_path.name} ---\n{tail}", flush=True)
    finally:
        writing.stop()
        reopening.stop()
        runner.close()
    for entry in out["errors"]:
        if "log" in entry:
            print(f"  server log ({entry['server']}) shows errors:\n{entry['log']}", flush=True)
    out["targets"] = targets(out)
    return out


async def _memory(pid: int, urls: list[str], expected: str) -> dict[str, Any]:
    """RSS before, with one editor on each document, with as many more on the first, and
    once those extra editors have left (what RSS keeps of their transient buffers)."""
    k = len(urls)
    before = delivery.rss_kib(pid)
    peers: list[Peer] = []
    try:
        for url in urls:
            peers.append((await open_document(url, expected))[1])
        await asyncio.sleep(0.5)
        await delivery.settle(pid)
        documents = delivery.rss_kib(pid)
        for _ in urls:
            peers.append((await open_document(urls[0], expected))[1])
        await asyncio.sleep(0.5)
        await delivery.settle(pid)
        connections = delivery.rss_kib(pid)
        await asyncio.gather(*(p.close() for p in peers[k:]))
        await asyncio.sleep(0.5)
        await delivery.settle(pid)
        extra_closed = delivery.rss_kib(pid)
    finally:
        await asyncio.gather(*(p.close() for p in peers))
    assert before is not None and documents is not None and connections is not None
    assert extra_closed is not None
    return {
        "documents": k,
        "rss_kib_before": before,
        "rss_kib_documents": documents,
        "rss_kib_connections": connections,
        "rss_kib_extra_editors_closed": extra_closed,
        "kib_per_document": round((documents - before) / k, 1),
        "kib_per_editor": round((connections - documents) / k, 1),
        "kib_per_editor_kept_after_close": round((extra_closed - documents) / k, 1),
        "kib_per_document_without_editor": round(
            (documents - before) / k - (connections - documents) / k, 1
        ),
    }


def _how(window: int | None) -> str:
    return "unpaced" if window is None else f"paced, window {window}"


def targets(out: dict[str, Any]) -> dict[str, Any]:
    """Each target against each writer (unpaced, paced)."""
    found: dict[str, Any] = {}
    for saving in out.get("saving", []):
        value = saving["events_per_update"]
        found[f"events_per_update ({_how(saving['window'])})"] = {
            "target": f"<= {TARGET_EVENTS_PER_UPDATE}",
            "value": value,
            "verdict": _verdict(value, TARGET_EVENTS_PER_UPDATE, at_most=True),
        }
    for conv in out.get("convergence", []):
        value = conv["updates_per_s"]
        found[f"convergence_updates_per_s ({_how(conv['window'])})"] = {
            "target": f">= {TARGET_UPDATES_PER_S:.0f}",
            "value": value,
            "verdict": _verdict(value, TARGET_UPDATES_PER_S, at_most=False)
            if conv["converged"]
            else "MISSED (no convergence)",
        }
    ratio = out.get("cold_open", {}).get("ratio")
    found["cold_open_over_bare_load"] = {
        "target": f"<= {TARGET_COLD_OPEN_RATIO}",
        "value": ratio,
        "verdict": _verdict(ratio, TARGET_COLD_OPEN_RATIO, at_most=True),
    }
    return found


def table(out: dict[str, Any]) -> str:
    """The group's figures, each beside its baseline, and the issue's targets."""
    rows: list[tuple[str, str, str, str]] = []
    bare = out.get("bare_apply")
    if bare:
        rows.append(
            ("bare pycrdt Doc.apply_update (baseline)", f"{bare['updates_per_s']:,.0f}/s", "", "")
        )
    savings = {s["window"]: s for s in out.get("saving", [])}
    for conv in out.get("convergence", []):
        cpu = conv["cpu_us_per_update"]
        cpu_text = "/".join(
            "-" if cpu.get(k) is None else f"{cpu[k]:.0f}" for k in ("bench", "server", "pg")
        )
        label = f"/yjs to convergence, {_how(conv['window'])}"
        if conv["converged"]:
            rows.append(
                (
                    label,
                    f"{conv['updates_per_s']:,.0f}/s",
                    f"{conv['vs_bare']:.3f}",
                    f"CPU µs/update bench/server/pg {cpu_text}, other {conv['other_cores']}",
                )
            )
        else:
            rows.append((label, "STALLED", "", str(conv["stall"])[:200]))
        saving = savings.get(conv["window"])
        if saving:
            rows.append(
                (
                    f"  events per update, {_how(conv['window'])}",
                    f"{saving['events_per_update']:.4f}",
                    "",
                    f"{saving['events']:,} events, ~{saving['event_state_bytes_mean']:,} bytes "
                    f"each; all saved {saving['saved_after_s']} s after the run",
                )
            )
    cold = out.get("cold_open")
    if cold:
        bare_ms = cold["bare_load_ms"]
        rows.append(
            (
                "bare Doc().apply_update(full state) (baseline)",
                f"{bare_ms} ms",
                "",
                f"{cold['state_bytes']:,}-byte state",
            )
        )
        rows.append(
            (
                "/yjs cold open → synced (median)",
                f"{cold['median_ms']} ms",
                f"{cold['ratio']:.2f}",
                f"first {cold['first_ms']} ms, warm {cold['warm_open_ms']} ms",
            )
        )
        floor = cold.get("bare_server")
        if floor:
            rows.append(
                (
                    "bare y-websocket server → synced (floor)",
                    f"{floor['median_ms']} ms",
                    f"{floor['ratio']:.2f}",
                    "state in memory: no token, access check or read",
                )
            )
        for label, key in (
            ("GET /api/documents/{id}", "rest_get_document_ms"),
            ("GET /api/documents/{id}/update", "rest_get_update_ms"),
        ):
            rows.append((label, f"{cold[key]} ms", f"{cold[key] / bare_ms:.2f}", ""))
    memory = out.get("memory")
    if memory:
        rows.append(
            (
                "server RSS per open document + its editor",
                f"{memory['kib_per_document']:,} KiB",
                "",
                f"bare Doc {memory.get('bare_pycrdt_kib_per_document', '-')} KiB; per extra "
                f"editor {memory['kib_per_editor']:,} KiB ({memory['documents']} each)",
            )
        )
    header = f"{'documents figure':<46} {'value':>12} {'÷base':>6}  notes"
    lines = [header, "-" * len(header)]
    lines += [f"{a:<46} {b:>12} {c:>6}  {d}" for a, b, c, d in rows]
    lines.append("")
    lines.append("÷base: the figure over its baseline (rates: higher is better; times: lower).")
    for name, t in out.get("targets", {}).items():
        lines.append(f"target {name}: {t['value']} ({t['target']}): {t['verdict']}")
    if out.get("errors"):
        lines.append(f"ERRORS: {len(out['errors'])} (see above and the JSON)")
    return "\n".join(lines)
