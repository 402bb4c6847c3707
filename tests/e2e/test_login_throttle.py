"""Hostile input (issue #16, finding 3): a burst of wrong-password logins must not stall the
server. Password hashing has a bounded pool of its own that holds no request thread (a full
queue answers 429 + Retry-After at once), and failed logins are throttled per account and per
address with a growing back-off (429 + Retry-After)."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.settings import Settings, SettingsError
from tests.fixtures.chorus import Api, running_chorus
from tests.fixtures.processes import ChorusProcess, processes, start_all
from tests.fixtures.servers import new_database

pytestmark = pytest.mark.security

BURST = 60


def _refresh_latency(http: httpx.Client, token: str) -> tuple[float, str]:
    """One refresh (a route that runs in a worker thread): its time and the next token."""
    started = time.monotonic()
    r = http.post("/api/auth/refresh", json={"refresh_token": token})
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    return elapsed, r.json()["refresh_token"]


@pytest.mark.parametrize("kind", ["login", "signup"])
def test_a_login_burst_does_not_stall_thread_bound_routes(
    postgres_server: EmbeddedPostgres, tmp_path: Path, kind: str
) -> None:
    """A real `chorus serve` (its own process: the burst's client threads do not share its
    GIL), login throttling and sign-up caps off (the defaults of the process fixture): the
    hashing pool alone. Sign-ups hash too: on the same pool, awaited, not in a thread."""
    with new_database(postgres_server) as url, processes() as started:
        # A queue longer than the worker threads (40): were a hash awaited in a thread, the
        # burst would hold them all.
        server = ChorusProcess(tmp_path, url, env={"CHORUS_PASSWORD_HASH_QUEUE": "100"})
        start_all(started, server)
        api = Api(server.url)
        user = api.signup("victim")
        http = api.http
        token = user.refresh_token
        baseline = []
        for _ in range(5):
            elapsed, token = _refresh_latency(http, token)
            baseline.append(elapsed)
        bound = 5 * statistics.median(baseline) + 1.0

        statuses: list[int] = []
        retry_afters: list[str] = []
        clients = [httpx.Client(base_url=server.url, timeout=120) for _ in range(BURST)]
        go = threading.Barrier(BURST + 1)

        def wrong_login(i: int) -> None:
            go.wait()
            name = f"{kind}{i}_{uuid.uuid4().hex[:8]}"
            # A sign-up's password meets the policy (issue 17), so that it is hashed.
            password = "wrong password" if kind == "login" else "burst-Kettle-orbit-19"
            r = clients[i].post(f"/api/auth/{kind}", json={"username": name, "password": password})
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_afters.append(r.headers.get("retry-after", ""))

        during: list[float] = []
        try:
            with ThreadPoolExecutor(BURST) as pool:
                futures = [pool.submit(wrong_login, i) for i in range(BURST)]
                go.wait()
                # Measured while the burst is in flight, until every login has been answered.
                while not all(f.done() for f in futures) or len(during) < 3:
                    elapsed, token = _refresh_latency(http, token)
                    during.append(elapsed)
                for f in futures:
                    f.result()
        finally:
            for c in clients:
                c.close()
            api.close()
        assert max(during) < bound, (bound, during)
        # Every request was answered: a wrong password (401) or a new account (201), or the
        # hashing queue is full (429).
        assert len(statuses) == BURST
        assert set(statuses) <= ({401, 429} if kind == "login" else {201, 429}), statuses
        assert all(ra.isdigit() and int(ra) >= 1 for ra in retry_afters), retry_afters


def _login(http: httpx.Client, username: str, password: str) -> httpx.Response:
    return http.post("/api/auth/login", json={"username": username, "password": password})


def test_wrong_logins_to_one_account_back_off(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    free = 3
    with running_chorus(
        postgres_server,
        tmp_path,
        login_free_failures_per_account=free,
        login_free_failures_per_address=1000,
        login_backoff_base_s=1.0,
    ) as chorus:
        user = chorus.api.signup("target")
        http = chorus.api.http
        for _ in range(free):
            assert _login(http, user.username, "wrong").status_code == 401
        # The next try is refused before any hashing, even with the right password.
        refused = _login(http, user.username, user.password)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        first_wait = int(refused.headers["retry-after"])
        assert first_wait >= 1
        # Other accounts from the same address are not affected by this account's block.
        other = chorus.api.signup("bystander")
        assert _login(http, other.username, other.password).status_code == 200
        # Waiting out the back-off lets one more try through; another failure doubles it.
        time.sleep(first_wait)  # the contract is time: Retry-After says how long
        assert _login(http, user.username, "wrong again").status_code == 401
        again = _login(http, user.username, user.password)
        assert again.status_code == 429
        assert int(again.headers["retry-after"]) > first_wait
        time.sleep(int(again.headers["retry-after"]))
        # The right password then works, and clears the account's count.
        assert _login(http, user.username, user.password).status_code == 200
        assert _login(http, user.username, "wrong").status_code == 401


def test_wrong_logins_from_one_address_back_off(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    free = 5
    with running_chorus(
        postgres_server,
        tmp_path,
        login_free_failures_per_account=1000,
        login_free_failures_per_address=free,
    ) as chorus:
        http = chorus.api.http
        # Each try names another account: only the per-address count can catch it.
        for _ in range(free):
            r = _login(http, f"guess_{uuid.uuid4().hex[:8]}", "wrong")
            assert r.status_code == 401
        r = _login(http, f"guess_{uuid.uuid4().hex[:8]}", "wrong")
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1


def test_login_throttle_settings() -> None:
    s = Settings.from_env(
        {
            "CHORUS_LOGIN_FREE_FAILURES_PER_ACCOUNT": "7",
            "CHORUS_LOGIN_FREE_FAILURES_PER_ADDRESS": "70",
            "CHORUS_PASSWORD_HASH_QUEUE": "9",
        }
    )
    assert (
        s.login_free_failures_per_account,
        s.login_free_failures_per_address,
        s.password_hash_queue,
    ) == (7, 70, 9)
    with pytest.raises(SettingsError):
        Settings.from_env({"CHORUS_PASSWORD_HASH_QUEUE": "-1"})


# -- sign-up budget (issue #16, finding 13) ------------------------------------------------


def _signup(http: httpx.Client) -> httpx.Response:
    name = f"new_{uuid.uuid4().hex[:10]}"
    return http.post("/api/auth/signup", json={"username": name, "password": "a good password"})


def _client(url: str, source: str) -> httpx.Client:
    # Any 127.0.0.0/8 address is this machine: each source address is another client.
    return httpx.Client(
        base_url=url, transport=httpx.HTTPTransport(local_address=source), timeout=30
    )


def test_signups_per_address_and_in_total_are_capped(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    per_address, total = 3, 5
    with running_chorus(
        postgres_server,
        tmp_path,
        signups_per_address_per_hour=per_address,
        signups_per_hour=total,
    ) as chorus:
        url = chorus.server.url
        with _client(url, "127.0.0.2") as first, _client(url, "127.0.0.3") as second:
            for _ in range(per_address):
                assert _signup(first).status_code == 201
            before = chorus.events()
            refused = _signup(first)
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert 1 <= int(refused.headers["retry-after"]) <= 3600
            assert chorus.events() == before  # nothing appended
            # Another address has its own budget, until the server's hourly total is spent.
            for _ in range(total - per_address):
                assert _signup(second).status_code == 201
            with _client(url, "127.0.0.4") as third:
                over = _signup(third)
            assert over.status_code == 429, over.text
            assert "per hour" in over.json()["detail"]
    s = Settings.from_env(
        {"CHORUS_SIGNUPS_PER_ADDRESS_PER_HOUR": "2", "CHORUS_SIGNUPS_PER_HOUR": "9"}
    )
    assert (s.signups_per_address_per_hour, s.signups_per_hour) == (2, 9)
    assert Settings.from_env({}).signups_per_address_per_hour == 20
