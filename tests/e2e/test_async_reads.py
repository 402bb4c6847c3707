"""Reads of the read models are served on the event loop (api/reads.py: read_cursor_async):
a read that waits for the projections to reach its ``min_position`` holds no thread and no
connection, is answered as soon as the runner moves, and a read the database cannot serve
answers 503 like every other outage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api, ServerThread, User, chorus_settings, running_chorus
from tests.fixtures.polling import wait_until
from tests.fixtures.relays import TcpRelay
from tests.fixtures.servers import new_database

TIMEOUT = 30.0  # any single bounded wait of these tests
# More waiting reads than Litestar has worker threads for sync handlers (the loop's default
# executor: at most 32): were reads run in threads, the last ones, and any other request in
# a thread, would queue behind them.
WAITING_READS = 60


@contextmanager
def projections_held(database_url: str) -> Iterator[None]:
    """Holds every projection's tracking row (in the runner's lock order), so the runner's
    next batch waits on the lock: the read models stop moving until the block ends."""
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT projection FROM rm_tracking ORDER BY projection FOR UPDATE")
        yield
        blocker.commit()


def channel_of(api: Api, owner: User) -> str:
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "reads"}), 201)["id"]
    created = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)
    return str(created["id"])


def test_reads_waiting_for_the_read_models_are_answered_when_the_runner_moves(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path, read_wait_timeout_s=TIMEOUT) as chorus:
        api, runner = chorus.api, chorus.server.services.runner
        owner, other = api.signup("owner"), api.signup("other")
        path = f"/api/channels/{channel_of(api, owner)}/messages"
        assert runner.wait_for(api.position, TIMEOUT)
        limits = httpx.Limits(max_connections=WAITING_READS + 10)
        with (
            httpx.Client(base_url=chorus.server.url, timeout=TIMEOUT, limits=limits) as http,
            ThreadPoolExecutor(WAITING_READS) as clients,
        ):
            with projections_held(chorus.database_url):
                sent = api.ok(api.post(path, owner, {"text": "hi"}), 201)
                reads = [
                    clients.submit(
                        http.get,
                        path,
                        params={"min_position": sent["position"]},
                        headers=owner.headers,
                    )
                    for _ in range(WAITING_READS)
                ]
                wait_until("the reads to wait", lambda: runner.waiting() >= WAITING_READS)
                # Meanwhile the loop serves everyone else: a read that needs nothing newer.
                me = http.get("/api/auth/me", headers=other.headers)
                assert me.status_code == 200, me.text
                assert me.json()["user_id"] == other.user_id
                assert not [r for r in reads if r.done()]
            # The block ends, the runner applies the message and wakes every waiting read.
            answers = [r.result(timeout=TIMEOUT) for r in reads]
        assert {a.status_code for a in answers} == {200}, answers[0].text
        for answer in answers:
            assert [m["id"] for m in answer.json()["items"]] == [sent["id"]]
        assert runner.waiting() == 0


def test_a_read_past_the_log_is_refused_and_one_the_runner_does_not_reach_in_time_is_503(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path, read_wait_timeout_s=0.5) as chorus:
        api, runner = chorus.api, chorus.server.services.runner
        owner = api.signup("owner")
        channel = channel_of(api, owner)
        assert runner.wait_for(api.position, TIMEOUT)
        path = f"/api/channels/{channel}/messages"

        future = api.get(path, owner, min_position=api.position + 1_000)
        assert future.status_code == 422, future.text
        assert "past the last event" in future.json()["detail"]

        with projections_held(chorus.database_url):
            sent = api.ok(api.post(path, owner, {"text": "hi"}), 201)
            late = api.get(path, owner, min_position=sent["position"])
            assert late.status_code == 503, late.text
            assert late.headers["retry-after"] == "1"
            assert "catching up" in late.json()["detail"]
        assert api.ok(api.get(path, owner, min_position=sent["position"]))["items"]
        assert runner.waiting() == 0


# -- the database out of reach ------------------------------------------------------------------


class Relay(TcpRelay):
    """A TCP relay to PostgreSQL that can be cut: the relayed connections are closed and new
    ones refused, as when the database's host drops off the network."""

    def __init__(self, upstream_port: int) -> None:
        self._open = True
        super().__init__(upstream_port, "pg-relay")

    def admits(self) -> bool:
        return self._open

    def cut(self) -> None:
        with self._lock:
            self._open = False
        self.drop_connections()

    def restore(self) -> None:
        with self._lock:
            self._open = True


@pytest.mark.faults
def test_reads_answer_503_while_the_database_is_out_of_reach_and_recover(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    port = postgres_server.port
    assert port is not None
    with new_database(postgres_server) as direct_url:
        relay = Relay(port)
        relayed_url = direct_url.replace(f":{port}/", f":{relay.port}/")
        server = ServerThread(chorus_settings(tmp_path, read_wait_timeout_s=1.0), relayed_url)
        server.start()
        api = Api(server.url)
        try:
            owner = api.signup("owner")
            channel = channel_of(api, owner)
            assert server.services.runner.wait_for(api.position, TIMEOUT)
            paths = ("/api/workspaces", f"/api/channels/{channel}/messages", "/api/auth/me")
            for path in paths:
                assert api.get(path, owner).status_code == 200, path

            relay.cut()
            # The read models are where this user's last write needs them: these reads wait
            # for nothing but a connection, which the async pool cannot make.
            for path in paths:
                r = api.get(path, owner)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.headers["retry-after"] == "1", path
                assert r.headers["content-type"].startswith("application/problem+json"), path
                assert r.json()["detail"] == "the database is not answering; try again", path

            relay.restore()
            for path in paths:

                def recovered(p: str = path) -> bool:
                    return api.get(p, owner).is_success

                wait_until("reads to recover", recovered)
        finally:
            relay.restore()
            api.close()
            server.stop()
            relay.close()


def test_readiness_checks_the_pool_the_http_reads_use(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """HTTP reads go through the event loop's pool: a server whose pool cannot hand out
    connections is not ready, even though its worker threads' pool still works."""
    with running_chorus(postgres_server, tmp_path) as chorus:
        assert chorus.api.http.get("/ready").status_code == 200
        services = chorus.server.services
        loop = chorus.server.app.state.loop_lag.loop
        asyncio.run_coroutine_threadsafe(services.async_read_pool.close(), loop).result(TIMEOUT)
        ready = chorus.api.http.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["database"] is False
        assert ready.json()["detail"] == "PoolClosed"
