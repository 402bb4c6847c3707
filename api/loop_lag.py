"""How late the event loop runs what is due: the symptom of a blocking call on it.

A task sleeps ``interval_s`` again and again and records by how much each wake-up came late
(uvloop's timers have millisecond resolution, so up to ~1 ms of it is the timer's). The
counts are cumulative over the process's life, in fixed buckets, so that whoever reads them
twice (a benchmark, a scraper) gets the distribution between the two reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import msgspec

# Upper bounds of the buckets, in milliseconds; the last bucket takes everything above.
BOUNDS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


class LoopLagCounts(msgspec.Struct):
    """``counts[i]`` wake-ups came at most ``bounds_ms[i]`` late (and more than the bound
    before it); ``counts[-1]`` later than the last bound."""

    interval_ms: float
    bounds_ms: list[float]
    counts: list[int]
    max_ms: float


class LoopLagProbe:
    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self._counts = [0] * (len(BOUNDS_MS) + 1)
        self._max_ms = 0.0
        # The latest wake-up's lateness and when the pending one is due (loop time): what
        # ``late_now_s`` reads for ``/ready`` (a saturated loop is one late *now*, not once).
        self._last_ms = 0.0
        self._due: float | None = None
        self._lock = threading.Lock()  # read from worker threads
        self._task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = self.loop.create_task(self._run(), name="loop-lag-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def record(self, late_ms: float) -> None:
        bucket = next((i for i, bound in enumerate(BOUNDS_MS) if late_ms <= bound), len(BOUNDS_MS))
        with self._lock:
            self._counts[bucket] += 1
            self._max_ms = max(self._max_ms, late_ms)
            self._last_ms = late_ms

    def snapshot(self) -> LoopLagCounts:
        with self._lock:
            counts, max_ms = list(self._counts), self._max_ms
        return LoopLagCounts(self.interval_s * 1000, list(BOUNDS_MS), counts, round(max_ms, 3))

    def late_now_s(self) -> float:
        """How late the loop runs now: the latest wake-up's lateness or, if the pending one is
        already overdue by more (the caller ran first after a block), by how much."""
        loop, due = self.loop, self._due
        overdue = 0.0 if loop is None or due is None else max(0.0, loop.time() - due)
        with self._lock:
            last = self._last_ms / 1000
        return max(last, overdue)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = self._due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.record(max(0.0, loop.time() - due) * 1000)


def percentile_ms(before: LoopLagCounts, after: LoopLagCounts, q: float) -> float | None:
    """The bucket bound under which ``q`` % of the wake-ups between two snapshots fell (the
    upper bound of the bucket holding that rank; None if there were none)."""
    counts = [b - a for a, b in zip(before.counts, after.counts, strict=True)]
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, int(-(-q * total // 100)))  # nearest rank: ceil(q/100 * total)
    seen = 0
    for i, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return after.bounds_ms[i] if i < len(after.bounds_ms) else after.max_ms
    return after.max_ms
