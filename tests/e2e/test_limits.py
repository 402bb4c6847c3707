"""Resource limits (issue #7, case 10): every limit of docs/API.md answers with its documented
status or close code, rate limits hold across instances through Redis, and a flood leaves the
server's memory bounded.

Already tested elsewhere and not repeated here: a 300 KiB body → 413
(test_bad_input.py::test_oversized_body_is_413), message text 4,001 → 422 and `limit=500` on
the timeline → 422 (test_bad_input.py), a 70 KB `/ws` frame → 413 error frame
(test_websocket.py::test_bad_frames_get_error_frames_and_the_socket_stays_open), `/ws` frame
rate → 429 (test_websocket.py::test_a_flood_is_rate_limited), signals rate
(test_signals.py::test_signals_are_rate_limited), `/yjs` update size → 4413 and frame rate →
1013 (test_documents.py::test_frames_are_bounded_in_size_and_rate), a document's 64 MiB bound
(test_documents.py::test_a_document_cannot_outgrow_its_bound), one instance's HTTP rate limit
(test_http_surface.py::test_rate_limit_answers_429), slow consumers cut off
(test_websocket.py / test_documents.py ``…stops_reading_is_cut_off…``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from api.rate_limits import REDIS_RETRY_S
from api.reads import MAX_LIMIT
from api.realtime.socket import CLOSE_TOO_MANY, MAX_SUBSCRIPTIONS
from domain.rules import MAX_MESSAGE_TEXT
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.settings import Settings, SettingsError
from tests.fixtures.chorus import (
    SHORT_LINGER,
    Api,
    Running,
    ServerThread,
    User,
    chorus_settings,
    running_chorus,
    wait_for_sessions_to_end,
)
from tests.fixtures.processes import ChorusProcess, processes
from tests.fixtures.servers import _free_port, new_database

pytestmark = pytest.mark.security

# Its tests wait for closed sockets' sessions to end: not a linger of 2 s each time.
CHORUS_SETTINGS = SHORT_LINGER

TIMEOUT = 15.0


def ws_url(base: str, token: str | None) -> str:
    url = base.replace("http", "ws", 1) + "/ws"
    return url if token is None else f"{url}?token={token}"


def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    ws.send(json.dumps(frame))


def recv(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
    return frame


def close_code(ws: ClientConnection) -> int:
    """The code the server closed ``ws`` with (it sends nothing before closing)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


# -- sizes and counts on the module's server ----------------------------------------------------


@pytest.fixture(scope="module")
def scene(chorus: Running) -> dict[str, Any]:
    api = chorus.api
    owner = api.signup("lim")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "L", "visibility": "private"}), 201)
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "c"}), 201)
    return {"owner": owner, "ws": ws["id"], "ch": ch["id"]}


LISTS = [
    "/api/workspaces/{ws}/members",
    "/api/workspaces/{ws}/presence",
    "/api/workspaces/{ws}/documents",
    "/api/channels/{ch}/messages",
    "/api/events",
]


@pytest.mark.parametrize("path", LISTS)
def test_page_size_is_1_to_200_on_every_list(
    chorus: Running, scene: dict[str, Any], path: str
) -> None:
    """Not clamped: a `limit` outside 1-200 is a 422, the largest one is served."""
    url = path.format(**scene)
    assert chorus.api.ok(chorus.api.get(url, scene["owner"], limit=MAX_LIMIT))["items"] is not None
    for bad in (MAX_LIMIT + 1, 0, -1, 10**12):
        assert "limit" in problem(chorus.api.get(url, scene["owner"], limit=bad), 422)["detail"]


def test_message_text_is_bounded_at_4000_characters_everywhere(
    chorus: Running, scene: dict[str, Any]
) -> None:
    api, owner = chorus.api, scene["owner"]
    path = f"/api/channels/{scene['ch']}/messages"
    # The limit counts after trimming: exactly 4,000 characters with white space around pass.
    sent = api.ok(api.post(path, owner, {"text": "  " + "a" * MAX_MESSAGE_TEXT + "\n"}), 201)
    shown = api.ok(api.get(path, owner, limit=1))["items"][0]
    assert shown["id"] == sent["id"] and shown["text"] == "a" * MAX_MESSAGE_TEXT
    before = chorus.events()
    edit = api.patch(f"/api/messages/{sent['id']}", owner, {"text": "b" * (MAX_MESSAGE_TEXT + 1)})
    assert "4000" in problem(edit, 422)["detail"]
    with connect(ws_url(chorus.server.url, owner.access_token), open_timeout=TIMEOUT) as ws:
        send(ws, {"op": "ping"})
        assert recv(ws) == {"op": "pong"}
        started = chorus.events()  # the socket's presence session
        too_long = {"channel_id": scene["ch"], "text": "c" * (MAX_MESSAGE_TEXT + 1)}
        send(ws, {"op": "command", "id": "long", "type": "SendMessage", "data": too_long})
        answer = recv(ws)
        assert answer["op"] == "error" and answer["status"] == 422, answer
        assert chorus.events() == started
    assert started == before + 1
    wait_for_sessions_to_end(chorus.database_url)


def test_bodies_over_the_limit_are_413_however_they_are_sent(
    chorus: Running, scene: dict[str, Any]
) -> None:
    """Chunked (no Content-Length) as well as declared; on a public route before any
    sign-in; while a body just under the limit is read (and judged on its values)."""
    http, owner = chorus.api.http, scene["owner"]
    limit = chorus.server.services.settings.max_body_bytes
    before = chorus.events()

    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(total // 65536):
            yield b"n" * 65536
        yield b'"}'

    chunked = http.post(
        "/api/workspaces",
        content=chunks(4 * limit),
        headers={**owner.headers, "content-type": "application/json"},
    )
    assert "content-length" not in chunked.request.headers  # sent chunked
    problem(chunked, 413)
    big = {"username": "u" * 10, "password": "p" * (limit + 1)}
    problem(http.post("/api/auth/signup", json=big), 413)
    just_under = {"name": "n" * (limit - 1024)}
    assert "length" in problem(chorus.api.post("/api/workspaces", owner, just_under), 422)["detail"]
    assert chorus.events() == before


def test_subscriptions_per_connection_are_capped(chorus: Running, scene: dict[str, Any]) -> None:
    owner, ch = scene["owner"], scene["ch"]
    with connect(ws_url(chorus.server.url, owner.access_token), open_timeout=TIMEOUT) as ws:
        for n in range(MAX_SUBSCRIPTIONS):
            send(ws, {"op": "subscribe", "sub": f"s{n}", "streams": [{"channel": ch}]})
            assert recv(ws)["op"] == "subscribed"
        send(ws, {"op": "subscribe", "sub": "one-too-many", "streams": [{"channel": ch}]})
        refused = recv(ws)
        assert refused["op"] == "error" and refused["status"] == 429, refused
        assert refused["sub"] == "one-too-many"
        # The socket stays usable; a freed slot can be taken again.
        send(ws, {"op": "unsubscribe", "sub": "s0"})
        assert recv(ws)["op"] == "end"
        send(ws, {"op": "subscribe", "sub": "again", "streams": [{"channel": ch}]})
        assert recv(ws)["op"] == "subscribed"
    wait_for_sessions_to_end(chorus.database_url)


# -- connections per user ------------------------------------------------------------------------


@contextmanager
def server(postgres_server: EmbeddedPostgres, tmp_path: Path, **settings: Any) -> Iterator[Running]:
    with running_chorus(postgres_server, tmp_path, **settings) as running:
        yield running


@contextmanager
def second_instance(first: Running, tmp_path: Path, **settings: Any) -> Iterator[Running]:
    """Another server process-alike on the same database (and Redis, if given)."""
    thread = ServerThread(chorus_settings(tmp_path, **settings), first.database_url).start()
    api = Api(thread.url)
    try:
        yield Running(first.database_url, thread, api)
    finally:
        api.close()
        thread.stop()


def _open(stack: ExitStack, base: str, user: User) -> ClientConnection:
    ws = stack.enter_context(connect(ws_url(base, user.access_token), open_timeout=TIMEOUT))
    send(ws, {"op": "ping"})
    return ws


def test_connections_per_user_are_capped(postgres_server: EmbeddedPostgres, tmp_path: Path) -> None:
    cap = 3
    with (
        server(postgres_server, tmp_path, ws_connections_per_user=cap) as chorus,
        ExitStack() as open_,
    ):
        user, other = chorus.api.signup("many"), chorus.api.signup("other")
        sockets = [_open(open_, chorus.server.url, user) for _ in range(cap)]
        for ws in sockets:
            assert recv(ws) == {"op": "pong"}
        before = chorus.events()
        with connect(ws_url(chorus.server.url, user.access_token), open_timeout=TIMEOUT) as extra:
            assert close_code(extra) == CLOSE_TOO_MANY
        assert chorus.events() == before  # a refused socket is no presence session
        # Per user: someone else still connects.
        assert recv(_open(open_, chorus.server.url, other)) == {"op": "pong"}
        # A slot freed is a slot to take (the server notices the close asynchronously).
        sockets.pop().close()
        deadline = time.monotonic() + TIMEOUT
        while True:
            with connect(ws_url(chorus.server.url, user.access_token), open_timeout=TIMEOUT) as ws:
                try:
                    send(ws, {"op": "ping"})
                    if recv(ws) == {"op": "pong"}:
                        break
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == CLOSE_TOO_MANY
            assert time.monotonic() < deadline, "the freed slot never came back"
            time.sleep(0.02)  # poll interval
    settings = Settings.from_env({"CHORUS_WS_CONNECTIONS_PER_USER": "7"})
    assert settings.ws_connections_per_user == 7
    assert Settings.from_env({}).ws_connections_per_user == 100
    with pytest.raises(SettingsError):
        Settings.from_env({"CHORUS_WS_CONNECTIONS_PER_USER": "-1"})


# -- HTTP rate limits ----------------------------------------------------------------------------

RATE = 5


def _next_window() -> None:
    """Waits for the top of the next second of the wall clock: the limiter's windows are
    wall-clock seconds, so there is no event to await."""
    time.sleep(1 - time.time() % 1)


def _in_one_window(do: Any, fell_back: Any = lambda: False) -> Any:
    """Runs ``do()`` within one second of the wall clock, the limiter's window: starts at the
    top of a second, and runs again if it still spilled over into the next (a loaded
    machine), or if ``fell_back()`` says a limiter stopped counting in Redis meanwhile (a
    loaded machine can miss Redis's timeout; that fallback has its own test). The result of
    the attempt that fitted."""
    for _ in range(5):
        _next_window()
        start = int(time.time())
        result = do()
        if fell_back():
            # The limiter asks Redis again only after its pause: a wall-clock rule.
            time.sleep(REDIS_RETRY_S)
            continue
        if int(time.time()) == start:
            return result
    raise AssertionError("five attempts in a row took more than a second each or lost Redis")


def _status(http: httpx.Client) -> int:
    return http.get("/api/auth/me").status_code  # 401 when let through: no token


def test_the_rate_limit_is_shared_by_instances_through_redis(
    postgres_server: EmbeddedPostgres,
    tmp_path: Path,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {"rate_limit_per_second": RATE, "redis_url": redis_url}
    with (
        server(postgres_server, tmp_path, **settings) as a,
        second_instance(a, tmp_path, **settings) as b,
    ):
        # Each limiter connects to Redis on its first request: done before any burst.
        assert _status(a.api.http) == 401 and _status(b.api.http) == 401

        def burst() -> tuple[list[int], httpx.Response, int]:
            on_a = [_status(a.api.http) for _ in range(RATE)]
            return on_a, b.api.http.get("/api/auth/me"), _status(a.api.http)

        def fell_back() -> bool:
            """Whether a limiter lost Redis since the last look (the warm-up's included)."""
            lost = any("Redis unavailable" in r.getMessage() for r in caplog.records)
            caplog.clear()
            return lost

        on_a, on_b, a_again = _in_one_window(burst, fell_back)
        assert on_a == [401] * RATE
        # B has served nobody, yet the budget of this address is spent: on both.
        assert problem(on_b, 429)["detail"].startswith(f"at most {RATE} requests per second")
        assert on_b.headers["retry-after"] == "1"
        assert a_again == 429
        # Health checks are never limited.
        assert a.api.http.get("/health").status_code == 200


def test_without_redis_each_instance_counts_alone(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The control: the same burst, no Redis; B has its own budget."""
    settings = {"rate_limit_per_second": RATE}
    with (
        server(postgres_server, tmp_path, **settings) as a,
        second_instance(a, tmp_path, **settings) as b,
    ):

        def burst() -> tuple[list[int], list[int]]:
            on_a = [_status(a.api.http) for _ in range(RATE + 1)]
            return on_a, [_status(b.api.http)]

        on_a, on_b = _in_one_window(burst)
        assert on_a == [401] * RATE + [429]
        assert on_b == [401]


def test_an_unreachable_redis_falls_back_to_counting_in_process(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    nothing_there = f"redis://127.0.0.1:{_free_port()}/0"
    with server(
        postgres_server, tmp_path, rate_limit_per_second=RATE, redis_url=nothing_there
    ) as a:
        statuses = _in_one_window(lambda: [_status(a.api.http) for _ in range(RATE + 2)])
        assert statuses == [401] * RATE + [429, 429]


def test_websocket_handshakes_count_against_the_same_budget(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Opening sockets is an input too: a client may not reconnect in a tight loop. Over the
    budget, a handshake is closed before its token is read or its document looked up (4429 on
    /ws; 1013 on /yjs, a code stock Yjs clients retry with backoff), and the address's HTTP
    requests are refused as well."""
    with server(postgres_server, tmp_path, rate_limit_per_second=RATE) as a:
        user = a.api.signup("hands")
        yjs = a.server.url.replace("http", "ws", 1) + f"/yjs/{uuid.uuid4()}"

        def burst() -> tuple[list[dict[str, Any]], int, int, int]:
            with ExitStack() as stack:
                pongs = []
                for _ in range(RATE):
                    pongs.append(recv(_open(stack, a.server.url, user)))
                refused = stack.enter_context(
                    connect(ws_url(a.server.url, user.access_token), open_timeout=TIMEOUT)
                )
                unknown_document = stack.enter_context(connect(yjs, open_timeout=TIMEOUT))
                return (
                    pongs,
                    close_code(refused),
                    close_code(unknown_document),
                    _status(a.api.http),
                )

        pongs, ws_code, yjs_code, http_status = _in_one_window(burst)
        assert pongs == [{"op": "pong"}] * RATE
        assert (ws_code, yjs_code, http_status) == (4429, 1013, 429)
        # The next second's budget is fresh: the same handshake is let through again.
        _next_window()
        with connect(yjs, open_timeout=TIMEOUT) as later:
            assert close_code(later) == 4401  # no token: refused for that, not for the rate


# -- memory under a flood ------------------------------------------------------------------------

RSS_GROWTH_BOUND_KIB = 64 * 1024
FLOOD_BODY_BYTES = 16 * 1024 * 1024
CONNECTIONS_PER_USER = 20
FLOOD_FRAMES = 20
FLOOD_FRAME_BYTES = 100 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _oversized_upload(base: str, user: User) -> str:
    """A 16 MiB chunked body: 413 once the server has read past its limit (or the server
    stops reading and drops the connection, which is as good)."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(FLOOD_BODY_BYTES // 65536):
            yield b"x" * 65536
        yield b'"}'

    try:
        with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
            response = http.post(
                "/api/workspaces",
                content=chunks(),
                headers={**user.headers, "content-type": "application/json"},
            )
        return str(response.status_code)
    except httpx.TransportError:
        return "dropped"


def _socket_flood(base: str, user: User, token: str | None) -> str:
    """Opens a /ws socket and sends oversized frames until the server answers or closes."""
    try:
        with connect(ws_url(base, token), open_timeout=TIMEOUT) as ws:
            for _ in range(FLOOD_FRAMES):
                ws.send("x" * FLOOD_FRAME_BYTES)
            # Every frame is answered, and all of it read: the close handshake then goes
            # through at once (a client that leaves frames unread stops reading its socket).
            statuses = {
                json.loads(ws.recv(timeout=TIMEOUT)).get("status") for _ in range(FLOOD_FRAMES)
            }
            return " ".join(["error", *map(str, sorted(statuses))])
    except ConnectionClosed as closed:
        return f"closed {closed.rcvd.code if closed.rcvd else None}"
    except InvalidStatus as refused:
        return f"http {refused.response.status_code}"


@pytest.mark.slow
def test_memory_stays_bounded_under_a_flood(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """A `chorus serve` process takes 16 MiB chunked bodies, 120 sockets of one user and 40
    with bad tokens, each sending 2 MB of oversized frames, all at once; its resident memory
    grows by less than 64 MiB (the bodies alone would be 640 MiB if buffered) and it still
    answers."""
    with new_database(postgres_server) as url, processes() as started:
        env = {"CHORUS_WS_CONNECTIONS_PER_USER": str(CONNECTIONS_PER_USER)}
        process = ChorusProcess(tmp_path / "serve", url, env=env)
        started.append(process)
        process.start().wait_ready()
        api = Api(process.url)
        try:
            user = api.signup("flood")
            assert process.proc is not None
            pid = process.proc.pid
            # Warm-up: every kind of request once, so first-use allocations are not counted.
            assert _oversized_upload(process.url, user) in ("413", "dropped")
            assert _socket_flood(process.url, user, user.access_token) == "error 413"
            baseline = rss_kib(pid)
            peak = baseline
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, rss_kib(pid))
                    stop.wait(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                with ThreadPoolExecutor(max_workers=32) as pool:
                    uploads = [pool.submit(_oversized_upload, process.url, user) for _ in range(40)]
                    sockets = [
                        pool.submit(_socket_flood, process.url, user, user.access_token)
                        for _ in range(120)
                    ] + [
                        pool.submit(_socket_flood, process.url, user, "not-a-token")
                        for _ in range(40)
                    ]
                    bodies = [f.result() for f in uploads]
                    answers = [f.result() for f in sockets]
            finally:
                stop.set()
                sampler.join(TIMEOUT)
            assert set(bodies) <= {"413", "dropped"} and "413" in bodies, bodies
            assert answers.count("closed 4401") == 40, answers
            assert set(answers[:120]) <= {"error 413", f"closed {CLOSE_TOO_MANY}"}, answers
            assert answers[:120].count("error 413") >= CONNECTIONS_PER_USER
            growth = peak - baseline
            assert growth < RSS_GROWTH_BOUND_KIB, f"RSS grew {growth} KiB (from {baseline} KiB)"
            assert httpx.get(f"{process.url}/ready", timeout=TIMEOUT).status_code == 200
        finally:
            api.close()
