"""`chorus serve` with no DATABASE_URL runs its own PostgreSQL and keeps data across restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api
from tests.fixtures.polling import wait_until
from tests.fixtures.processes import ChorusProcess, is_running, processes, start_all
from tests.fixtures.servers import new_database
from tests.fixtures.websocket import send, until

CHORUS = str(Path(sys.executable).with_name("chorus"))


@contextmanager
def serve(cwd: Path, port: int) -> Iterator[httpx.Client]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("CHORUS_JWT_SECRET", None)
    log = (cwd / "serve.log").open("ab")
    proc = subprocess.Popen(
        [CHORUS, "serve", "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=log
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 90
        while True:  # bounded readiness poll of a real endpoint
            assert proc.poll() is None, (cwd / "serve.log").read_text()[-3000:]
            try:
                if client.get("/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "chorus serve did not become ready"
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
def test_serve_keeps_its_data_across_restarts(tmp_path: Path, free_port: int) -> None:
    with serve(tmp_path, free_port) as http:
        signup = http.post(
            "/api/auth/signup",
            json={"username": "persistent", "password": "durable-Kettle-orbit-9"},
        )
        assert signup.status_code == 201, signup.text
        token = signup.json()["access_token"]
        ws = http.post(
            "/api/workspaces",
            json={"name": "Kept"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert ws.status_code == 201
    # It stopped its PostgreSQL on exit, and keeps the data and the signing key on disk.
    assert EmbeddedPostgres(tmp_path / ".chorus" / "pg").server_pids() == []
    assert (tmp_path / ".chorus" / "jwt-secret").exists()

    with serve(tmp_path, free_port) as http:
        # The old access token still verifies: the generated key was kept, not regenerated.
        mine = http.get("/api/workspaces", headers={"Authorization": f"Bearer {token}"})
        assert [w["name"] for w in mine.json()["items"]] == ["Kept"]
        login = http.post(
            "/api/auth/login", json={"username": "persistent", "password": "durable-Kettle-orbit-9"}
        )
        assert login.status_code == 200
        assert login.json()["user_id"] == signup.json()["user_id"]
    assert EmbeddedPostgres(tmp_path / ".chorus" / "pg").server_pids() == []


def test_serve_refuses_a_public_address_without_consent(tmp_path: Path) -> None:
    result = subprocess.run(
        [CHORUS, "serve", "--host", "0.0.0.0"], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert result.returncode == 2 and b"--public" in result.stderr


def test_cli_lists_its_commands() -> None:
    result = subprocess.run([CHORUS, "--help"], capture_output=True, timeout=60, check=True)
    assert b"serve" in result.stdout and b"migrate" in result.stdout


@pytest.mark.slow
def test_serve_with_several_workers(postgres_server: EmbeddedPostgres, tmp_path: Path) -> None:
    """`--workers 2`: the workers migrate the schema together (advisory lock), and together
    serve requests and WebSocket subscriptions as one service."""
    with new_database(postgres_server) as url, processes() as instances:
        server = ChorusProcess(tmp_path, url, args=("--workers", "2"))
        start_all(instances, server)
        api = Api(server.url)
        try:
            owner = api.signup("workers")
            ws = api.ok(api.post("/api/workspaces", owner, {"name": "W"}), 201)["id"]
            ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)["id"]
            with connect(
                f"{server.url.replace('http', 'ws')}/ws?token={owner.access_token}"
            ) as sock:
                send(sock, {"op": "subscribe", "sub": "s", "streams": [{"channel": ch}]})
                until(sock, "subscribed")
                sent = [
                    api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": str(i)}), 201)
                    for i in range(20)
                ]
                got = [until(sock, "event")["event"]["stream"] for _ in range(20)]
            assert got == [m["id"] for m in sent]
            workers = _children(server)
            assert len(workers) >= 2, "expected two worker processes"
        finally:
            api.close()
    # Stopping the server stops its workers too: none is left serving, orphaned.
    wait_until("the workers to exit", lambda: not any(is_running(pid) for pid in workers))


def _children(server: ChorusProcess) -> list[int]:
    assert server.proc is not None
    pid = server.proc.pid
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


# -- signals (issue #16, finding 9) ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=lambda n: f"{n}-workers")
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: signal.Signals(s).name
)
def test_every_stop_signal_stops_the_embedded_postgres(
    tmp_path: Path, free_port: int, sig: signal.Signals, workers: int
) -> None:
    """`docker stop`, systemd and `kill` send SIGTERM, a closed terminal SIGHUP, Ctrl-C SIGINT:
    each stops `chorus serve` and the PostgreSQL it started, whatever the number of workers."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("CHORUS_JWT_SECRET", None)
    log_path = tmp_path / "serve.log"
    pg = EmbeddedPostgres(tmp_path / ".chorus" / "pg")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [CHORUS, "serve", "--port", str(free_port), "--workers", str(workers)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,  # the signal goes to it alone, as `kill PID` does
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as client:
            wait_until(
                "chorus serve to be ready",
                lambda: proc.poll() is None and _ready(client),
                timeout=120,
            )
        assert pg.server_pids(), "the embedded PostgreSQL is not running"
        proc.send_signal(sig)
        proc.wait(timeout=90)
        wait_until("the embedded PostgreSQL to stop", lambda: pg.server_pids() == [], timeout=30)
        # Its workers are gone too (and the multiprocessing helpers, which notice the parent
        # has gone a moment after it: waited for, bounded, so an orphan still fails).
        wait_until(
            "the workers to exit",
            lambda: not [p for p in _session_pids(proc.pid) if is_running(p)],
            timeout=30,
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in pg.server_pids():  # never leave a cluster running, whatever failed
            os.kill(pid, signal.SIGKILL)


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/ready").status_code == 200
    except httpx.TransportError:
        return False


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == sid:  # the session id (fields after the command name)
            pids.append(int(entry.name))
    return pids
