"""What the numbers were measured on: CPU, Python, libraries, disk, PostgreSQL settings."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

# Settings that decide what a commit costs; reported so nobody compares fsync=off numbers.
DURABILITY_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "wal_level",
    "shared_buffers",
    "max_connections",
)
LIBRARIES = ("eventsourcing", "psycopg", "psycopg-binary", "litestar", "uvicorn", "httpx", "uvloop")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem_of(path: Path) -> str:
    """The type and device of the mount holding ``path`` (longest mount-point prefix)."""
    best, found = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype, *_ = line.split()
            inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, found = mount, f"{fstype} on {device} (mounted at {mount})"
    return found


def _git_revision(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def fdatasync_probe(directory: Path, count: int = 200) -> dict[str, float]:
    """Latency of an 8 KiB overwrite + fdatasync in ``directory``: the floor under every
    durable commit on this disk."""
    path = directory / "fsync-probe"
    block = os.urandom(8192)
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    samples.sort()
    return {
        "p50_ms": round(samples[len(samples) // 2] * 1000, 3),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 3),
    }


def machine_info(work_dir: Path, repo: Path) -> dict[str, Any]:
    versions = {}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "psycopg_impl": psycopg.pq.__impl__,
        "libraries": versions,
        "data_filesystem": _filesystem_of(work_dir),
        "fdatasync_8k": fdatasync_probe(work_dir),
        "git": _git_revision(repo),
    }


def postgres_info(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        version_row = conn.execute("SHOW server_version").fetchone()
        settings = {}
        for name in DURABILITY_SETTINGS:
            row = conn.execute(f"SHOW {name}").fetchone()
            settings[name] = row[0] if row else None
    return {"version": version_row[0] if version_row else None, "settings": settings}
