"""Real-server tests for EmbeddedPostgres and the server fixtures in tests.fixtures.servers."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from infrastructure.embedded_postgres import EmbeddedPostgres, find_pg_bin

FAST = {"fsync": "off"}


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pg", settings=FAST)
    try:
        yield server
    finally:
        server.stop()
        assert server.server_pids() == []


def _postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def test_find_pg_bin_has_server_programs() -> None:
    bindir = find_pg_bin()
    for tool in ("initdb", "pg_ctl", "postgres"):
        assert os.access(bindir / tool, os.X_OK)


def test_reserved_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EmbeddedPostgres(tmp_path / "pg", settings={"listen_addresses": "*"})


@pytest.mark.slow
def test_data_and_password_survive_restart(pg: EmbeddedPostgres) -> None:
    url = pg.start()
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    assert parts.path == "/chorus"
    assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('kept')")
    password = parts.password

    pg.stop()
    pg.stop()
    assert pg.server_pids() == []
    assert not pg.is_running

    url_again = pg.start()
    assert urlsplit(url_again).password == password
    with psycopg.connect(url_again) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]


@pytest.mark.slow
def test_password_is_required(pg: EmbeddedPostgres) -> None:
    parts = urlsplit(pg.start())
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1", port=parts.port, user=parts.username, password="wrong"
        ).close()


def test_stop_without_start_is_a_no_op(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "never-started")
    server.stop()
    server.stop()


@pytest.mark.slow
def test_context_manager_stops_everything(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg", settings=FAST) as server:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert server.server_pids()
    assert server.server_pids() == []


@pytest.mark.slow
def test_second_owner_is_refused_and_leaves_the_first_alone(pg: EmbeddedPostgres) -> None:
    url = pg.start()
    intruder = EmbeddedPostgres(pg.data_dir, settings=FAST)
    with pytest.raises(RuntimeError, match="in use by another process"):
        intruder.start()
    intruder.stop()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.slow
def test_recovers_after_postmaster_kill_9(pg: EmbeddedPostgres) -> None:
    with psycopg.connect(pg.start()) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('committed')")
    os.kill(_postmaster_pid(pg), signal.SIGKILL)
    # SIGKILL lands asynchronously; start() on a server still dying would just return its URL.
    deadline = time.monotonic() + 10
    while pg.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pg.is_running
    assert (pg.data_dir / "postmaster.pid").exists()

    with psycopg.connect(pg.start()) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("committed",)]


@pytest.mark.slow
def test_recovers_after_owner_process_kill_9(tmp_path: Path) -> None:
    """The owning process dies without stopping its server: the next owner takes over."""
    data_dir = tmp_path / "pg"
    owner_script = textwrap.dedent(
        f"""
        import sys, time, psycopg
        from infrastructure.embedded_postgres import EmbeddedPostgres
        url = EmbeddedPostgres({str(data_dir)!r}, settings={FAST!r}).start()
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE notes (body text)")
            conn.execute("INSERT INTO notes VALUES ('orphaned')")
        print(url, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_script], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().startswith("postgresql://")
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()

    server = EmbeddedPostgres(data_dir, settings=FAST)
    try:
        assert server.server_pids(), "the orphaned server should still be running"
        with psycopg.connect(server.start()) as conn:
            assert conn.execute("SELECT body FROM notes").fetchall() == [("orphaned",)]
    finally:
        server.stop()
    assert server.server_pids() == []


def test_server_fixture_is_private_and_tuned(postgres_server: EmbeddedPostgres) -> None:
    with psycopg.connect(postgres_server.url) as conn:

        def show(name: str) -> str:
            row = conn.execute(f"SHOW {name}").fetchone()
            assert row is not None
            return str(row[0])

        assert show("listen_addresses") == "127.0.0.1"
        assert show("unix_socket_directories") == ""
        assert show("fsync") == "off"
        assert show("max_connections") == "300"
    hba = (postgres_server.data_dir / "pg_hba.conf").read_text()
    assert "trust" not in hba


def test_postgres_url_points_at_the_server(postgres_url: str) -> None:
    assert urlsplit(postgres_url).hostname == "127.0.0.1"
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("chorus",)


_seen_databases: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
def test_database_url_is_distinct_and_empty(run: int, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    assert name.startswith("t_")
    assert name not in _seen_databases
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchone()
        assert tables == (0,)
        # Left behind on purpose: the next run must not see it.
        conn.execute("CREATE TABLE leftover (x int)")
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()}
    # The previous run's database was dropped after that test.
    assert not existing.intersection(_seen_databases)
    _seen_databases.append(name)


def test_redis_url_answers_ping(redis_url: str) -> None:
    assert urlsplit(redis_url).hostname == "127.0.0.1"
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}


def test_free_port_is_bindable(free_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", free_port))


def test_startup_is_fast_enough_for_tests(pg: EmbeddedPostgres) -> None:
    # A guard against readiness detection regressing into fixed sleeps.
    started = time.monotonic()
    pg.start()
    pg.stop()
    restarted = time.monotonic()
    pg.start()
    assert time.monotonic() - restarted < 10
    assert restarted - started < 60
