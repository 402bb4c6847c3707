"""The workloads: raw inserts (the baseline), the application layer, and HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from psycopg import sql

from api.loop_lag import LoopLagCounts
from application.chorus import Chorus
from application.commands import CreateChannel, CreateWorkspace, RegisterUser, SendMessage
from bench.harness import Worker, WorkerFactory
from domain.base import Cause

REPO = Path(__file__).resolve().parent.parent
BENCH_SECRET = "chorus-benchmark-secret-" + "x" * 32
BENCH_OPS_TOKEN = "chorus-benchmark-ops-" + "o" * 32
BENCH_OPS_HEADERS = {"Authorization": f"Bearer {BENCH_OPS_TOKEN}"}
PASSWORD = "benchmark password"
MESSAGE_TEXT = "benchmark message: the quick brown fox jumps over the lazy dog"


def create_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# -- 1. baseline: raw single-row inserts ------------------------------------------------------

# Shaped like eventsourcing's events table (uuid, bigint, text, bytea, bigserial position with
# a unique index), with none of its locking.
BASELINE_DDL = """
CREATE TABLE bench_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version)
);
CREATE UNIQUE INDEX bench_events_notification_id ON bench_events (notification_id);
"""
BASELINE_INSERT = (
    "INSERT INTO bench_events (originator_id, originator_version, topic, state)"
    " VALUES (%s, %s, %s, %s) RETURNING notification_id"
)
BASELINE_TOPIC = "domain.messages:Message.MessageSent"


def prepare_baseline(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE_DDL)


RAW_MODES = ("autocommit", "transaction", "locked")


def raw_insert_factory(url: str, *, payload_bytes: int, mode: str) -> WorkerFactory:
    """One connection per worker; each operation durably commits one row.

    - ``autocommit``: the INSERT alone, committed by the server (one round trip): the ceiling.
    - ``transaction``: BEGIN, INSERT, COMMIT (three round trips), as most client code does.
    - ``locked``: BEGIN, ``LOCK TABLE ... IN EXCLUSIVE MODE``, INSERT, NOTIFY, COMMIT: the
      statements eventsourcing's recorder sends, still without any Python layer on top, to
      show what the lock alone costs.
    """
    if mode not in RAW_MODES:
        raise ValueError(f"mode must be one of {RAW_MODES}")
    state = os.urandom(payload_bytes)

    def factory(_: int) -> Worker:
        conn = psycopg.connect(url, autocommit=mode == "autocommit")
        cur = conn.cursor()

        def op() -> None:
            if mode == "locked":
                cur.execute("LOCK TABLE bench_events IN EXCLUSIVE MODE")
            cur.execute(BASELINE_INSERT, (uuid.uuid4(), 1, BASELINE_TOPIC, state))
            cur.fetchone()
            if mode == "locked":
                cur.execute("NOTIFY bench_events")
            if mode != "autocommit":
                conn.commit()

        return op, conn.close

    return factory


# -- 2. application layer -----------------------------------------------------------------------


@dataclass(frozen=True)
class Chat:
    user_id: str
    workspace_id: str
    channel_id: str


def prepare_chat(app: Chorus) -> Chat:
    """One user (one argon2 hash, ~0.3 s), one workspace, one channel."""
    registered = app.execute(
        RegisterUser(username="bench_app", password=PASSWORD), Cause(actor_id=None)
    )
    user_id = str(registered.body["user_id"])
    workspace = app.execute(CreateWorkspace(name="bench"), Cause(actor_id=user_id))
    workspace_id = str(workspace.body["id"])
    channel = app.execute(
        CreateChannel(workspace_id=workspace_id, name="general"), Cause(actor_id=user_id)
    )
    return Chat(user_id, workspace_id, str(channel.body["id"]))


class CallTimer:
    """Wraps one method of one object (this instance only) to add up the calls' thread CPU
    time and wall time; worker threads call it concurrently."""

    def __init__(self, owner: object, method: str) -> None:
        self.calls = 0
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self._lock = threading.Lock()
        inner = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
                with self._lock:
                    self.calls += 1
                    self.cpu_s += cpu
                    self.wall_s += wall

        setattr(owner, method, timed)

    def to_json(self, per: int) -> dict[str, float | int | None]:
        """Mean CPU and wall milliseconds per call, and calls per operation (``per`` ops)."""
        calls = max(self.calls, 1)
        return {
            "calls": self.calls,
            "calls_per_op": round(self.calls / per, 2) if per else None,
            "cpu_ms_per_call": round(self.cpu_s / calls * 1000, 3),
            "wall_ms_per_call": round(self.wall_s / calls * 1000, 3),
        }


def instrument(app: Chorus) -> dict[str, CallTimer]:
    """Times ``execute`` (whole command), ``save`` (the write transaction) and
    ``repository.get`` (each aggregate load; the cache fast-forwards with a query)."""
    return {
        "execute": CallTimer(app, "execute"),
        "save": CallTimer(app, "save"),
        "repository_get": CallTimer(app.repository, "get"),
    }


def send_message_factory(app: Chorus, chat: Chat) -> WorkerFactory:
    """Every operation sends a new message: a new stream, so no two writers contend for an
    aggregate, only for the events table."""

    def factory(i: int) -> Worker:
        command = SendMessage(channel_id=chat.channel_id, text=f"{MESSAGE_TEXT} ({i})")
        cause = Cause(actor_id=chat.user_id)

        def op() -> None:
            result = app.execute(command, cause)
            if result.status != 201 or result.position is None:
                raise RuntimeError(f"unexpected result {result}")

        return op, lambda: None

    return factory


def mean_state_bytes(url: str, topic_like: str) -> float | None:
    """The mean stored size of events whose topic matches, to size the baseline's rows alike."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT avg(octet_length(state)) FROM chorus_events WHERE topic LIKE %s",
            (topic_like,),
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


# -- 3. HTTP ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ChorusServer:
    """``chorus serve`` (one uvicorn process, its own GIL) on 127.0.0.1 and a free port; with
    ``projections=False``, the same app without its projection runner (``bench.server``); with
    ``projector=True``, ``chorus serve`` with ``CHORUS_PROJECTIONS=external`` beside a
    ``chorus project`` process."""

    def __init__(
        self,
        database_url: str,
        work_dir: Path,
        *,
        projections: bool = True,
        projector: bool = False,
        env: dict[str, str] | None = None,
        log_level: str = "warning",
    ) -> None:
        self.database_url = database_url
        self.log_level = log_level
        self.work_dir = work_dir
        self.projections = projections
        self.extra_env = dict(env or {})
        name = "chorus-serve" if projections else "chorus-serve-no-projections"
        if projector:
            self.extra_env["CHORUS_PROJECTIONS"] = "external"
            name = "chorus-serve-external-projections"
        self.log_path = work_dir / f"{name}.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.projector: subprocess.Popen[bytes] | None = None
        self.with_projector = projector

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def pids(self) -> list[int]:
        """The server's process and its projector's, if it has one."""
        return [p.pid for p in (self.proc, self.projector) if p is not None]

    def start(self, timeout_s: float = 60.0) -> ChorusServer:
        self.port = _free_port()
        env = self._env()
        if self.projections:
            argv = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1"]
        else:
            argv = [sys.executable, "-m", "bench.server"]
        argv += ["--port", str(self.port), "--log-level", self.log_level]
        self.proc = self._spawn(argv, self.log_path, env)
        if self.with_projector:
            log_path = self.work_dir / "chorus-project.log"
            self.projector = self._spawn(
                [sys.executable, "-m", "api.cli", "project"], log_path, env
            )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"chorus serve exited during start-up:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/health").status_code == 200:
                        return self
                if time.monotonic() > deadline:
                    raise RuntimeError(f"chorus serve did not answer /health:\n{self.log_tail()}")
                time.sleep(0.1)

    def _spawn(
        self, argv: list[str], log_path: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            # Own session: a Ctrl-C reaches the bench first, which then stops the server.
            return subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "CHORUS_JWT_SECRET": BENCH_SECRET,
                "CHORUS_OPS_TOKEN": BENCH_OPS_TOKEN,
                "CHORUS_RATE_LIMIT_PER_SECOND": "0",
                # The delivery benchmark opens 1,000 sockets as one user.
                "CHORUS_WS_CONNECTIONS_PER_USER": "0",
                # ...from one address, after signing up many users from it (issue 16 budgets).
                "CHORUS_CONNECTIONS_PER_ADDRESS": "0",
                "CHORUS_SIGNUPS_PER_ADDRESS_PER_HOUR": "0",
                "CHORUS_SIGNUPS_PER_HOUR": "0",
                "CHORUS_LOGIN_FREE_FAILURES_PER_ACCOUNT": "0",
                "CHORUS_LOGIN_FREE_FAILURES_PER_ADDRESS": "0",
                "CHORUS_ACCESS_TOKEN_TTL_S": "3600",
                "CHORUS_DATA_DIR": str(self.work_dir / "chorus-data"),
                **self.extra_env,
            }
        )
        return env

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Graceful shutdown (SIGINT, as a Ctrl-C), escalating if it does not exit; the
        server first, then its projector."""
        procs = [self.proc, self.projector]
        self.proc = self.projector = None
        for proc in procs:
            if proc is not None:
                _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGINT, 20.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)


@dataclass(frozen=True)
class HttpChat:
    access_token: str
    user_id: str
    channel_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def prepare_http_chat(base_url: str) -> HttpChat:
    """Signs one user up (one argon2 hash) and creates a workspace and channel over HTTP."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post("/api/auth/signup", json={"username": "bench_http", "password": PASSWORD})
        body = _expect(r, 201)
        chat_headers = {"Authorization": f"Bearer {body['access_token']}"}
        r = client.post("/api/workspaces", json={"name": "bench"}, headers=chat_headers)
        workspace_id = _expect(r, 201)["id"]
        r = client.post(
            f"/api/workspaces/{workspace_id}/channels",
            json={"name": "general"},
            headers=chat_headers,
        )
        channel_id = _expect(r, 201)["id"]
    return HttpChat(body["access_token"], body["user_id"], channel_id)


def _expect(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json()


def projection_lag(base_url: str) -> int | None:
    """How many positions the slowest read model is behind the store (``GET /ready``)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        body = client.get("/ready", headers=BENCH_OPS_HEADERS).json()
    lag = body.get("projection_lag")
    return None if lag is None else int(lag)


def loop_lag(base_url: str) -> LoopLagCounts:
    """The server's event-loop lag counts so far (``GET /ready``, api/loop_lag.py)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        body = client.get("/ready").json()
    return msgspec.convert(body["loop_lag"], LoopLagCounts)


def wait_for_projections(base_url: str, timeout_s: float) -> tuple[int | None, float | None]:
    """The lag now, and how long the read models took to reach the store's head (None if they
    did not within ``timeout_s``)."""
    t0 = time.perf_counter()
    first = projection_lag(base_url)
    lag = first
    while lag is None or lag > 0:
        if time.perf_counter() - t0 > timeout_s:
            return first, None
        time.sleep(0.05)
        lag = projection_lag(base_url)
    return first, time.perf_counter() - t0


def http_factory(base_url: str, chat: HttpChat, *, post: bool) -> WorkerFactory:
    """One keep-alive HTTP/1.1 connection per worker, sending either ``GET /api/auth/me`` or
    ``POST /api/channels/{ch}/messages``."""

    def factory(i: int) -> Worker:
        client = httpx.Client(base_url=base_url, headers=chat.headers, timeout=30)
        path = f"/api/channels/{chat.channel_id}/messages"
        body = {"text": f"{MESSAGE_TEXT} ({i})"}

        def send() -> None:
            r = client.post(path, json=body)
            if r.status_code != 201:
                raise RuntimeError(f"POST {r.status_code}: {r.text[:200]}")

        def me() -> None:
            r = client.get("/api/auth/me")
            if r.status_code != 200:
                raise RuntimeError(f"GET {r.status_code}: {r.text[:200]}")

        return (send if post else me), client.close

    return factory
