"""Reading the whole log back: a raw decoded read (the baseline), the zero-downtime projection
rebuild (``chorus replay --all``) and the tamper-evidence walk (``chorus verify``), each over
the same events on the same database, one after the other."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from psycopg.rows import tuple_row

from api.contexts import all_projections
from application.chorus import Chorus
from application.commands import AddReaction, EditMessage, SendMessage
from bench.harness import MACHINE, STEAL, CpuProbe
from bench.scenarios import MESSAGE_TEXT, Chat
from domain.base import Cause
from infrastructure.chain import verify
from projections.replay import rebuild

EVENTS_TABLE = "chorus_events"
RAW_SELECT = (
    "SELECT notification_id, originator_id, originator_version, topic, state"
    f" FROM {EVENTS_TABLE} ORDER BY notification_id"
)
# Rows per server-side cursor fetch, as ``verify`` and ``rebuild`` read them.
BATCH = 2000
# One message in this many is edited, and one in this many gets a reaction.
EDIT_EVERY = 20
REACT_EVERY = 10
POPULATE_THREADS = 4

LABELS = {
    "raw_read": "raw read + msgspec decode (baseline)",
    "rebuild": "rebuild all read models (replay --all)",
    "verify": "verify the hash chain (chorus verify)",
}


def count_events(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
    return 0 if row is None else int(row[0])


def populate(app: Chorus, chat: Chat, url: str, target: int) -> int:
    """Sends messages (with an edit every ``EDIT_EVERY`` and a reaction every ``REACT_EVERY``)
    through the application layer from a few threads until the log holds at least ``target``
    events; returns how many it holds."""
    cause = Cause(actor_id=chat.user_id)
    # Roughly one event per command; the last round tops up what is missing.
    per_message = 1 + 1 / EDIT_EVERY + 1 / REACT_EVERY

    def one(i: int) -> None:
        sent = app.execute(
            SendMessage(channel_id=chat.channel_id, text=f"{MESSAGE_TEXT} {i}"), cause
        )
        if sent.status != 201:
            raise RuntimeError(f"SendMessage: {sent}")
        message_id = str(sent.body["id"])
        if i % EDIT_EVERY == 0:
            app.execute(
                EditMessage(message_id=message_id, text=f"{MESSAGE_TEXT} {i} (edited)"), cause
            )
        if i % REACT_EVERY == 0:
            app.execute(AddReaction(message_id=message_id, emoji="👍"), cause)

    done = 0
    with ThreadPoolExecutor(POPULATE_THREADS, thread_name_prefix="populate") as pool:
        while (have := count_events(url)) < target:
            todo = max(1, int((target - have) / per_message))
            list(pool.map(one, range(done, done + todo)))
            done += todo
    return count_events(url)


class CpuTracker:
    """Samples the probes every ``interval_s`` in a thread while a figure runs and keeps the
    last value seen for every process, so a PostgreSQL backend that exits before the end
    (``rebuild`` closes its connections, one per set-based read model) still counts, less at
    most one interval. The interval is short because a rebuild of the bench's log takes about
    half a second: at 0.25 s, most of its backends' CPU went uncounted (showing as ``other``)."""

    def __init__(self, probes: Iterable[CpuProbe], interval_s: float = 0.02) -> None:
        self.probes = list(probes)
        self.interval_s = interval_s
        self.first: dict[str, dict[Any, float]] = {}
        self.last: dict[str, dict[Any, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-tracker", daemon=True)

    def _sample(self) -> None:
        for p in self.probes:
            self.last.setdefault(p.name, {}).update(p.sample())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> CpuTracker:
        self.first = {p.name: p.sample() for p in self.probes}
        self.last = {name: dict(values) for name, values in self.first.items()}
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def cpu_s(self) -> dict[str, float]:
        return {
            name: CpuProbe.delta(self.first[name], self.last.get(name, {})) for name in self.first
        }


@dataclass
class ReadFigure:
    name: str
    events: int
    seconds: float
    cpu_s: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def cpu_us_per_event(self) -> dict[str, float | None]:
        return {
            k: (v / self.events * 1e6 if self.events else None)
            for k, v in self.cpu_s.items()
            if k not in (MACHINE, STEAL)
        }

    def other_cores(self) -> float | None:
        if MACHINE not in self.cpu_s or self.seconds <= 0:
            return None
        ours = sum(v for k, v in self.cpu_s.items() if k not in (MACHINE, STEAL))
        return max(0.0, self.cpu_s[MACHINE] - ours) / self.seconds

    def to_json(self, baseline: ReadFigure | None) -> dict[str, Any]:
        ratio = None
        if baseline is not None and baseline is not self and baseline.rate > 0:
            ratio = round(self.rate / baseline.rate, 3)
        other = self.other_cores()
        return {
            "name": self.name,
            "label": LABELS[self.name],
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.rate, 1),
            "ratio_to_raw_read": ratio,
            "cpu_us_per_event": {
                k: None if v is None else round(v, 1) for k, v in self.cpu_us_per_event().items()
            },
            "other_cores_busy": None if other is None else round(other, 2),
            **self.extra,
        }


def _measure(
    name: str, probes: Iterable[CpuProbe], run: Callable[[], tuple[int, dict[str, Any]]]
) -> ReadFigure:
    with CpuTracker(probes) as tracker:
        t0 = time.perf_counter()
        events, extra = run()
        seconds = time.perf_counter() - t0
    return ReadFigure(name, events, seconds, tracker.cpu_s(), extra)


def raw_read(conn: psycopg.Connection[Any]) -> tuple[int, dict[str, Any]]:
    """Every event in position order through a server-side cursor, each state decoded."""
    count = 0
    with (
        conn.transaction(),
        conn.cursor(name="bench_raw_read", row_factory=tuple_row) as cur,
    ):
        cur.itersize = BATCH
        cur.execute(RAW_SELECT)
        for row in cur:
            msgspec.json.decode(bytes(row[4]))
            count += 1
    return count, {}


def rebuild_all(url: str) -> tuple[int, dict[str, Any]]:
    read = 0

    def progress(count: int) -> None:
        nonlocal read
        read += count

    position = rebuild(url, all_projections(), batch_size=BATCH, progress=progress)
    return read, {"position": position}


def verify_chain(conn: psycopg.Connection[Any]) -> tuple[int, dict[str, Any]]:
    report = verify(conn, EVENTS_TABLE, batch=BATCH)
    if not report.ok:
        raise RuntimeError(f"verify failed at {report.bad_position}: {report.problem}")
    return report.count, {"head_position": report.head_position}


def repeated(
    url: str, run: Callable[[psycopg.Connection[Any]], tuple[int, dict[str, Any]]], min_s: float
) -> Callable[[], tuple[int, dict[str, Any]]]:
    """Whole passes of ``run`` on one connection until ``min_s`` have gone by: a pass over a
    few thousand events is too short for the CPU clock's resolution, and one backend for
    all passes keeps PostgreSQL's CPU time countable (an exited backend's is lost)."""

    def again() -> tuple[int, dict[str, Any]]:
        total, passes = 0, 0
        extra: dict[str, Any] = {}
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.perf_counter() + min_s
            while passes == 0 or time.perf_counter() < deadline:
                count, extra = run(conn)
                total += count
                passes += 1
        return total, {**extra, "passes": passes}

    return again


def measure_all(url: str, probes: list[CpuProbe], min_s: float) -> list[ReadFigure]:
    """An untimed raw read first (the table into the page cache and shared buffers), then the
    three figures in turn; the two fast ones repeat whole passes for at least ``min_s``."""
    with psycopg.connect(url, autocommit=True) as conn:
        raw_read(conn)
    return [
        _measure("raw_read", probes, repeated(url, raw_read, min_s)),
        _measure("rebuild", probes, lambda: rebuild_all(url)),
        _measure("verify", probes, repeated(url, verify_chain, min_s)),
    ]


def table(figures: list[ReadFigure]) -> str:
    header = (
        f"{'read figure':<40} {'events':>7} {'passes':>6} {'s':>6} {'events/s':>9} {'÷raw':>5}  "
        f"{'CPU µs/event bench/pg':<22} {'other':>5}"
    )
    lines = [header, "-" * len(header)]
    baseline = next((f for f in figures if f.name == "raw_read"), None)
    for f in figures:
        ratio = "-"
        if baseline is not None and f is not baseline and baseline.rate > 0:
            ratio = f"{f.rate / baseline.rate:.2f}"
        cpu = f.cpu_us_per_event()
        cpu_text = "/".join("-" if cpu.get(k) is None else f"{cpu[k]:.0f}" for k in ("bench", "pg"))
        other = f.other_cores()
        lines.append(
            f"{LABELS[f.name]:<40} {f.events:>7} {f.extra.get('passes', 1):>6} "
            f"{f.seconds:>6.2f} {f.rate:>9.0f} {ratio:>5}  "
            f"{cpu_text:<22} {'-' if other is None else f'{other:.2f}':>5}"
        )
    lines.append("")
    lines.append("events: read in all passes (a fast figure repeats whole passes over the log).")
    lines.append(
        "÷raw: events/s over the raw decoded read's. CPU µs/event: CPU time of this process"
        " (bench) and of PostgreSQL (pg)"
    )
    lines.append("per event read; other: CPU cores busy with anything else (steal too).")
    return "\n".join(lines)
