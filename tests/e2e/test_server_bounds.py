"""Hostile input (issue #16, findings 4, 11 and 12): the HTTP server of a real `chorus serve`
is bounded against raw-socket attacks — endless or slow request heads, idle and half-sent
connections by the hundred, forged X-Forwarded-For — while other clients stay served."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api
from tests.fixtures.polling import wait_until
from tests.fixtures.processes import ChorusProcess, processes, start_all
from tests.fixtures.servers import HOST, new_database

pytestmark = pytest.mark.security

MiB = 1024 * 1024


@contextmanager
def chorus_serve(
    postgres_server: EmbeddedPostgres, tmp_path: Path, **env: str
) -> Iterator[ChorusProcess]:
    with new_database(postgres_server) as url, processes() as started:
        server = ChorusProcess(tmp_path, url, env=env)
        start_all(started, server)
        yield server


def _raw(port: int, source: str = HOST, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))  # any 127.0.0.0/8 address is this machine: a distinct client
    sock.connect((HOST, port))
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (or the socket's time-out fails the test)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _latency(http: httpx.Client) -> float:
    started = time.monotonic()
    assert http.get("/health").status_code == 200
    return time.monotonic() - started


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# Request heads that never end, in each shape a parser accumulates: one header value, the
# request line, a header name, and endless small headers.
ENDLESS_HEADS: dict[str, tuple[bytes, Callable[[int], bytes]]] = {
    "header value": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: ", lambda n: b"a" * n),
    "request line": (b"GET /health?", lambda n: b"q" * n),
    "header name": (b"GET /health HTTP/1.1\r\nHost: x\r\n", lambda n: b"N" * n),
    "many headers": (
        b"GET /health HTTP/1.1\r\nHost: x\r\n",
        lambda n: b"".join(b"X-%06d: v\r\n" % i for i in range(n // 12)),
    ),
}


@pytest.mark.parametrize("shape", list(ENDLESS_HEADS))
def test_an_endless_request_head_gets_431_and_others_stay_fast(
    postgres_server: EmbeddedPostgres, tmp_path: Path, shape: str
) -> None:
    start, filler = ENDLESS_HEADS[shape]
    with (
        chorus_serve(postgres_server, tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert server.proc is not None
        baseline = statistics.median(_latency(http) for _ in range(10))
        bound = 10 * baseline + 0.5
        rss_before = _rss_kib(server.proc.pid)

        sent = 0
        stop = threading.Event()
        attacker = _raw(server.port, timeout=30)

        def flood() -> None:
            nonlocal sent
            try:
                attacker.sendall(start)
                chunk = filler(64 * 1024)
                while sent < 64 * MiB and not stop.is_set():
                    attacker.sendall(chunk)
                    sent += len(chunk)
            except OSError:  # the server closed the connection: what should happen
                pass

        thread = threading.Thread(target=flood)
        thread.start()
        try:
            during = [_latency(http) for _ in range(20)]
            answer = _read_all(attacker)
        finally:
            stop.set()
            thread.join()
            attacker.close()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert sent < 4 * MiB, f"the server read {sent} bytes of one request head"
        assert max(during) < bound, (bound, during)
        assert _rss_kib(server.proc.pid) - rss_before < 32 * 1024
        # A normal request with headers just under the cap is still served.
        assert http.get("/health", headers={"X-Fill": "f" * 12_000}).status_code == 200


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /health HTTP/1.1\r\nHost: x\r\n",
        b"POST /api/auth/login HTTP/1.1\r\n"
        b'Host: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"user',
    ],
    ids=["nothing", "half a head", "half a body"],
)
def test_a_slow_request_is_cut_off_at_the_deadline(
    postgres_server: EmbeddedPostgres, tmp_path: Path, sent: bytes
) -> None:
    deadline = 1.0
    with chorus_serve(postgres_server, tmp_path, CHORUS_HEADER_TIMEOUT_S=str(deadline)) as server:
        sock = _raw(server.port, timeout=deadline + 10)
        started = time.monotonic()
        sock.sendall(sent)
        answer = _read_all(sock)
        took = time.monotonic() - started
        sock.close()
        assert deadline * 0.9 <= took < deadline + 5, took
        if sent:  # a started request is told why
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_slowloris_from_one_address_is_capped_and_timed_out(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """300 idle or half-sent connections from one address: at most the cap is held open, the
    rest are refused at once (429), the held ones are closed at the deadline, and other
    addresses are served all along."""
    cap, deadline = 20, 2.0
    with (
        chorus_serve(
            postgres_server,
            tmp_path,
            CHORUS_CONNECTIONS_PER_ADDRESS=str(cap),
            CHORUS_HEADER_TIMEOUT_S=str(deadline),
        ) as server,
        ExitStack() as stack,
    ):
        assert server.proc is not None
        fds_before = len(list(Path(f"/proc/{server.proc.pid}/fd").iterdir()))
        socks = []
        for i in range(300):
            sock = stack.enter_context(_raw(server.port, timeout=deadline + 10))
            if i % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(sock)
        # Another address is served meanwhile, within its own cap.
        other = httpx.Client(
            base_url=server.url,
            transport=httpx.HTTPTransport(local_address="127.0.0.2"),
            timeout=10,
        )
        stack.enter_context(other)
        assert other.get("/health").status_code == 200
        fds_during = len(list(Path(f"/proc/{server.proc.pid}/fd").iterdir()))
        assert fds_during - fds_before <= cap + 10, (fds_before, fds_during)

        started = time.monotonic()
        answers = [_read_all(s) for s in socks]
        took = time.monotonic() - started
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 429 ")]
        assert len(refused) >= 300 - cap, len(refused)
        assert b"retry-after: 1" in refused[0].lower()
        # Every held connection was closed by the server at the deadline, none left open.
        assert took < deadline + 5, took
        # The address has its slots back.
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/health").status_code == 200


def test_connections_are_capped_in_total(postgres_server: EmbeddedPostgres, tmp_path: Path) -> None:
    total = 30
    with (
        chorus_serve(
            postgres_server,
            tmp_path,
            CHORUS_MAX_CONNECTIONS=str(total),
            CHORUS_CONNECTIONS_PER_ADDRESS="0",
        ) as server,
        ExitStack() as stack,
    ):
        # From many addresses, so no per-address cap could be what refuses them.
        socks = [
            stack.enter_context(_raw(server.port, source=f"127.0.1.{i + 1}", timeout=5))
            for i in range(total + 10)
        ]
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        firsts = [s.recv(12) for s in socks]
        assert firsts.count(b"HTTP/1.1 200") >= total - 1
        assert firsts.count(b"HTTP/1.1 503") >= 9, firsts


# -- forwarded headers (finding 4) ----------------------------------------------------------


def _forged(http: httpx.Client, n: int) -> list[int]:
    return [
        http.get("/api/workspaces", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(n)
    ]


def test_forged_forwarded_for_does_not_bypass_the_rate_limit(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    rate = 20
    with chorus_serve(postgres_server, tmp_path, CHORUS_RATE_LIMIT_PER_SECOND=str(rate)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            statuses = _forged(http, 60)
        # 60 requests take well under two seconds: at most two windows' worth pass.
        assert statuses.count(429) >= 60 - 2 * rate, statuses
        log = server.log_tail(200_000)
        assert "203.0.113." not in log  # the access log has the real peer
        assert f"{HOST}:" in log


def test_forwarded_for_is_believed_from_a_listed_proxy(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with chorus_serve(
        postgres_server,
        tmp_path,
        CHORUS_RATE_LIMIT_PER_SECOND="20",
        CHORUS_TRUSTED_PROXIES=HOST,
    ) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            statuses = _forged(http, 60)
        # Each forwarded client has a budget of its own (the 401s: no token).
        assert 429 not in statuses, statuses
        assert "203.0.113.59:" in server.log_tail(200_000)


def test_websockets_hold_their_address_slot_until_they_close(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """An upgraded connection keeps counting against its address (the fd it holds is the
    same), and gives its slot back when it closes."""
    cap = 4
    with chorus_serve(postgres_server, tmp_path, CHORUS_CONNECTIONS_PER_ADDRESS=str(cap)) as server:
        api = Api(server.url)
        try:
            user = api.signup("sockets")
        finally:
            api.close()
        url = server.url.replace("http", "ws", 1) + f"/ws?token={user.access_token}"
        with ExitStack() as stack:
            for _ in range(cap):
                ws = stack.enter_context(connect(url, open_timeout=10))
                ws.send(json.dumps({"op": "ping"}))
                assert json.loads(ws.recv(timeout=10)) == {"op": "pong"}
            extra = _raw(server.port)  # refused on connect, before it sends anything
            assert _read_all(extra).startswith(b"HTTP/1.1 429 ")
            extra.close()
        # Closed: the address has its slots back (the server sees the closes asynchronously).
        wait_until("the slots to come back", lambda: _health_from(server.port) == 200)


def _health_from(port: int) -> int:
    with _raw(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return int(_read_all(sock).split(b" ", 2)[1])
