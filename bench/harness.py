"""A closed-loop load runner: N threads each repeat one operation for a warm-up, then for a
fixed measured window; the CPU time each process spent during that window is sampled too."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# One worker: the operation to repeat, and how to release what the worker set up.
Worker = tuple[Callable[[], None], Callable[[], None]]
# Builds worker ``i`` inside its own thread (connections, HTTP clients...), before the clock.
WorkerFactory = Callable[[int], Worker]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
# A worker whose every operation fails stops after this many errors instead of spinning.
_MAX_ERRORS_PER_WORKER = 100
MACHINE = "machine"
STEAL = "steal"


def pid_cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process given (all its threads)."""
    found = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                # The command name (field 2) may hold spaces; fields after its ")" are fixed.
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
    return found


def _proc_stat_cpu() -> list[int]:
    with open("/proc/stat") as fh:
        return [int(x) for x in fh.readline().split()[1:]]


def machine_cpu_seconds() -> dict[str, float]:
    """CPU seconds the machine's CPUs were busy (from /proc/stat), including time the
    hypervisor gave to other guests (steal)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = _proc_stat_cpu()[:8]
    return {"all": (user + nice + system + irq + softirq + steal) / _CLK_TCK}


def steal_cpu_seconds() -> dict[str, float]:
    """CPU seconds a virtual machine's CPUs waited while the hypervisor ran someone else."""
    return {"steal": _proc_stat_cpu()[7] / _CLK_TCK}


@dataclass
class CpuProbe:
    """Where CPU time is measured. ``sample`` gives CPU seconds per process; a process that
    exits during the window loses its share (never counts negative), one that starts counts
    from zero."""

    name: str
    sample: Callable[[], dict[Any, float]]

    @staticmethod
    def delta(before: dict[Any, float], after: dict[Any, float]) -> float:
        return sum(max(0.0, v - before.get(k, 0.0)) for k, v in after.items())


def pids_probe(name: str, pids: Callable[[], Iterable[int]]) -> CpuProbe:
    return CpuProbe(name, lambda: pid_cpu_seconds(pids()))


def self_probe(name: str = "bench") -> CpuProbe:
    return pids_probe(name, lambda: [os.getpid()])


def machine_probes() -> list[CpuProbe]:
    """All busy CPU on the machine, ours and everyone else's, and the hypervisor's steal
    (to spot a noisy neighbour)."""
    return [CpuProbe(MACHINE, machine_cpu_seconds), CpuProbe(STEAL, steal_cpu_seconds)]


def nearest_rank_ms(latencies_s: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of latencies in seconds, in milliseconds."""
    ordered = sorted(latencies_s)
    if not ordered:
        return None
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1] * 1000


@dataclass
class LoadResult:
    name: str
    concurrency: int
    seconds: float
    ops: int
    errors: int
    latencies_s: list[float] = field(repr=False)
    cpu_s: dict[str, float]
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        """Nearest-rank percentile of the measured latencies, in milliseconds."""
        return nearest_rank_ms(self.latencies_s, q)

    def cpu_ms_per_op(self) -> dict[str, float | None]:
        return {
            k: (v / self.ops * 1000 if self.ops else None)
            for k, v in self.cpu_s.items()
            if k not in (MACHINE, STEAL)
        }

    def cores_busy(self) -> dict[str, float]:
        """Average number of CPU cores each process kept busy during the window, and
        ``other``: what the rest of the machine used, steal included (other people's work
        skews a run); ``steal``: what the hypervisor gave to other guests."""
        busy = {k: v / self.seconds for k, v in self.cpu_s.items() if k != MACHINE}
        if MACHINE in self.cpu_s:
            ours = sum(v for k, v in self.cpu_s.items() if k not in (MACHINE, STEAL))
            busy["other"] = max(0.0, self.cpu_s[MACHINE] - ours) / self.seconds
        return busy

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "ops": self.ops,
            "errors": self.errors,
            "first_error": self.first_error,
            "ops_per_s": round(self.rate, 1),
            "latency_ms": {
                "p50": _round(self.percentile_ms(50)),
                "p90": _round(self.percentile_ms(90)),
                "p99": _round(self.percentile_ms(99)),
                "max": _round(self.percentile_ms(100)),
                "samples": len(self.latencies_s),
            },
            "cpu_ms_per_op": {k: _round(v) for k, v in self.cpu_ms_per_op().items()},
            "cores_busy": {k: round(v, 2) for k, v in self.cores_busy().items()},
            **self.extra,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def run_load(
    name: str,
    factory: WorkerFactory,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    probes: Iterable[CpuProbe] = (),
) -> LoadResult:
    """Runs ``concurrency`` workers in a closed loop (each starts its next operation as soon as
    the previous one returns). Only operations that both start and finish inside the measured
    window count; their latencies are kept. Errors are counted, never raised."""
    probes = list(probes)
    window: dict[str, float] = {}
    setup_errors: list[BaseException] = []
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"ops": 0, "errors": 0}
    first_error: list[str] = []

    def set_window() -> None:
        window["start"] = time.perf_counter() + warmup_s
        window["end"] = window["start"] + duration_s

    barrier = threading.Barrier(concurrency + 1, action=set_window)
    # Workers keep their connections open until the last CPU sample is taken: a PostgreSQL
    # backend that exits first takes its CPU time with it.
    sampled = threading.Event()

    def worker_main(i: int) -> None:
        try:
            op, close = factory(i)
        except BaseException as exc:
            setup_errors.append(exc)
            barrier.abort()
            return
        mine: list[float] = []
        errors = 0
        error_text: str | None = None
        try:
            barrier.wait()
            start, end = window["start"], window["end"]
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    break
                try:
                    op()
                except Exception as exc:
                    errors += 1
                    if error_text is None:
                        error_text = f"{type(exc).__name__}: {exc}"
                    if errors >= _MAX_ERRORS_PER_WORKER:
                        break
                    continue
                t1 = time.perf_counter()
                if t0 >= start and t1 <= end:
                    mine.append(t1 - t0)
        except threading.BrokenBarrierError:
            pass
        finally:
            sampled.wait(timeout=warmup_s + duration_s + 60)
            close()
        with lock:
            latencies.extend(mine)
            totals["ops"] += len(mine)
            totals["errors"] += errors
            if error_text is not None and not first_error:
                first_error.append(error_text)

    threads = [
        threading.Thread(target=worker_main, args=(i,), name=f"{name}-{i}", daemon=True)
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        sampled.set()
        for thread in threads:
            thread.join()
        cause = setup_errors[0] if setup_errors else None
        raise RuntimeError(f"{name}: a worker failed to start: {cause!r}") from cause
    try:
        _sleep_until(window["start"])
        before = {p.name: p.sample() for p in probes}
        _sleep_until(window["end"])
        after = {p.name: p.sample() for p in probes}
    finally:
        sampled.set()
    for thread in threads:
        thread.join()
    return LoadResult(
        name=name,
        concurrency=concurrency,
        seconds=duration_s,
        ops=totals["ops"],
        errors=totals["errors"],
        latencies_s=latencies,
        cpu_s={p.name: CpuProbe.delta(before[p.name], after[p.name]) for p in probes},
        first_error=first_error[0] if first_error else None,
    )


def _sleep_until(deadline: float) -> None:
    while (remaining := deadline - time.perf_counter()) > 0:
        time.sleep(min(remaining, 0.5))
