"""The test suite's own servers: a pytest run stopped with SIGTERM (a CI timeout, ``kill``)
still stops the PostgreSQL its session started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]

_HELD_TEST = """
import os
from pathlib import Path


def test_holds_the_session_open(postgres_server):
    report = Path(os.environ["CHORUS_TEST_REPORT"])
    part = report.with_name(report.name + ".part")
    part.write_text(str(postgres_server.data_dir))
    part.replace(report)  # seen whole or not at all
    Path(os.environ["CHORUS_TEST_HOLD"]).read_text()  # a FIFO: blocks until the test ends
"""


def test_a_pytest_stopped_with_sigterm_stops_its_postgres(tmp_path: Path) -> None:
    (tmp_path / "test_held.py").write_text(_HELD_TEST)
    report, hold = tmp_path / "data-dir", tmp_path / "hold"
    os.mkfifo(hold)
    env = {**os.environ, "CHORUS_TEST_REPORT": str(report), "CHORUS_TEST_HOLD": str(hold)}
    inner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.fixtures.servers",
            f"--basetemp={tmp_path / 'inner'}",
            "--rootdir",
            str(tmp_path),
            "-q",
            str(tmp_path / "test_held.py"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    cluster: EmbeddedPostgres | None = None
    try:
        text = wait_until(
            "the inner test's PostgreSQL", lambda: report.exists() and report.read_text()
        )
        # Its processes are found by their data directory: short-lived children come and go,
        # and a PID seen once may be another process's later.
        cluster = EmbeddedPostgres(Path(text))
        assert cluster.server_pids(), "the inner test's PostgreSQL is not running"
        inner.send_signal(signal.SIGTERM)
        output, _ = inner.communicate(timeout=60)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        # This test, too, stops what it started, whatever happened above.
        still = [] if cluster is None else cluster.server_pids()
        for pid in still:
            os.kill(pid, signal.SIGKILL)
    assert inner.returncode != 0, output.decode()
    assert not still, f"PostgreSQL processes left running: {still}\n{output.decode()}"
