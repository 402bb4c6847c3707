from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from infrastructure.refresh_tokens import (
    InvalidRefreshToken,
    RefreshTokenError,
    RefreshTokenReused,
    RefreshTokens,
)


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(
        database_url, min_size=1, max_size=8, kwargs={"autocommit": True}, open=True
    ) as p:
        yield p


@pytest.fixture
def store(pool: ConnectionPool) -> RefreshTokens:
    s = RefreshTokens(pool)
    s.create_tables()
    return s


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _expire(pool: ConnectionPool, token: str) -> None:
    with pool.connection() as conn:
        cur = conn.execute(
            "UPDATE chorus_refresh_tokens SET expires_at = now() - interval '1 second'"
            " WHERE token_hash = %s",
            (_digest(token),),
        )
        assert cur.rowcount == 1


# --- schema -----------------------------------------------------------------------------


def test_create_tables_is_idempotent(store: RefreshTokens) -> None:
    store.create_tables()
    store.create_tables()


def test_create_tables_concurrently(pool: ConnectionPool) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        try:
            barrier.wait()
            RefreshTokens(pool).create_tables()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- issue and storage ------------------------------------------------------------------


def test_issue_returns_distinct_urlsafe_tokens(store: RefreshTokens) -> None:
    a, b = store.issue("user-1"), store.issue("user-1")
    assert a != b
    assert len(a) == 43
    assert all(c.isalnum() or c in "-_" for c in a)


def test_only_a_sha256_of_the_token_is_stored(store: RefreshTokens, pool: ConnectionPool) -> None:
    token = store.issue("user-1")
    with pool.connection() as conn:
        rows = conn.execute("SELECT token_hash, t::text FROM chorus_refresh_tokens t").fetchall()
        families = conn.execute("SELECT f::text FROM chorus_refresh_token_families f").fetchall()
    assert [bytes(r[0]) for r in rows] == [_digest(token)]
    dump = " ".join(r[1] for r in rows) + " ".join(r[0] for r in families)
    assert token not in dump


def test_issue_sets_expiry_from_ttl(pool: ConnectionPool) -> None:
    store = RefreshTokens(pool, ttl_s=3600)
    store.create_tables()
    token = store.issue("user-1")
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM expires_at - now()) FROM chorus_refresh_tokens"
            " WHERE token_hash = %s",
            (_digest(token),),
        ).fetchone()
    assert row is not None
    assert 3590 <= float(row[0]) <= 3600


def test_issue_rejects_empty_user_id(store: RefreshTokens) -> None:
    with pytest.raises(ValueError):
        store.issue("")


@pytest.mark.parametrize("ttl", [0, -5])
def test_non_positive_ttl_rejected(pool: ConnectionPool, ttl: int) -> None:
    with pytest.raises(ValueError):
        RefreshTokens(pool, ttl_s=ttl)


# --- rotation ---------------------------------------------------------------------------


def test_rotate(store: RefreshTokens) -> None:
    old = store.issue("user-1")
    user_id, new = store.rotate(old)
    assert user_id == "user-1"
    assert new != old
    assert len(new) == 43


def test_rotate_chain(store: RefreshTokens, pool: ConnectionPool) -> None:
    token = store.issue("user-1")
    seen = {token}
    for _ in range(5):
        user_id, token = store.rotate(token)
        assert user_id == "user-1"
        assert token not in seen
        seen.add(token)
    with pool.connection() as conn:
        families = conn.execute("SELECT DISTINCT family_id FROM chorus_refresh_tokens").fetchall()
        unspent = conn.execute(
            "SELECT token_hash FROM chorus_refresh_tokens WHERE spent_at IS NULL"
        ).fetchall()
    assert len(families) == 1
    assert [bytes(r[0]) for r in unspent] == [_digest(token)]


def test_rotation_extends_expiry(pool: ConnectionPool) -> None:
    store = RefreshTokens(pool, ttl_s=120)
    store.create_tables()
    old = store.issue("user-1")
    with pool.connection() as conn:
        conn.execute(
            "UPDATE chorus_refresh_tokens SET expires_at = now() + interval '5 seconds'"
            " WHERE token_hash = %s",
            (_digest(old),),
        )
    _, new = store.rotate(old)
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM expires_at - now()) FROM chorus_refresh_tokens"
            " WHERE token_hash = %s",
            (_digest(new),),
        ).fetchone()
    assert row is not None
    assert float(row[0]) > 100


def test_unknown_token(store: RefreshTokens) -> None:
    store.issue("user-1")
    with pytest.raises(InvalidRefreshToken):
        store.rotate("A" * 43)


@pytest.mark.parametrize("bad", ["", "x" * 257, "has space", "é" * 10, "\ud800", "a.b"])
def test_malformed_token_rejected_without_database(database_url: str, bad: str) -> None:
    # A pool that was never opened fails on any connection attempt, so getting
    # InvalidRefreshToken (rather than PoolClosed) proves the database was not touched.
    closed = ConnectionPool(database_url, open=False)
    store = RefreshTokens(closed)
    with pytest.raises(InvalidRefreshToken):
        store.rotate(bad)
    store.revoke(bad)


def test_256_char_token_is_looked_up(store: RefreshTokens) -> None:
    with pytest.raises(InvalidRefreshToken):
        store.rotate("a" * 256)


# --- reuse detection --------------------------------------------------------------------


def test_reuse_revokes_family(store: RefreshTokens) -> None:
    first = store.issue("user-1")
    _, second = store.rotate(first)
    _, third = store.rotate(second)

    with pytest.raises(RefreshTokenReused):
        store.rotate(first)
    # The legitimate holder's newest token is dead too.
    with pytest.raises(InvalidRefreshToken):
        store.rotate(third)
    # Replaying again keeps failing.
    with pytest.raises(RefreshTokenError):
        store.rotate(first)
    with pytest.raises(RefreshTokenError):
        store.rotate(second)


def test_reuse_of_latest_spent_token(store: RefreshTokens) -> None:
    first = store.issue("user-1")
    _, second = store.rotate(first)
    with pytest.raises(RefreshTokenReused):
        store.rotate(first)
    with pytest.raises(InvalidRefreshToken):
        store.rotate(second)


def test_reuse_is_contained_to_its_family(store: RefreshTokens) -> None:
    laptop = store.issue("user-1")
    phone = store.issue("user-1")
    _, laptop2 = store.rotate(laptop)
    with pytest.raises(RefreshTokenReused):
        store.rotate(laptop)
    with pytest.raises(InvalidRefreshToken):
        store.rotate(laptop2)
    assert store.rotate(phone)[0] == "user-1"


# --- revocation -------------------------------------------------------------------------


def test_revoke(store: RefreshTokens) -> None:
    token = store.issue("user-1")
    other = store.issue("user-1")
    store.revoke(token)
    with pytest.raises(InvalidRefreshToken):
        store.rotate(token)
    assert store.rotate(other)[0] == "user-1"


def test_revoke_with_spent_token_revokes_the_latest(store: RefreshTokens) -> None:
    first = store.issue("user-1")
    _, second = store.rotate(first)
    store.revoke(first)
    with pytest.raises(InvalidRefreshToken):
        store.rotate(second)


def test_revoke_is_idempotent_and_ignores_unknown(store: RefreshTokens) -> None:
    token = store.issue("user-1")
    store.revoke(token)
    store.revoke(token)
    store.revoke("B" * 43)
    store.revoke("")
    store.revoke("x" * 1000)


def test_revoke_user(store: RefreshTokens) -> None:
    a = store.issue("user-1")
    b = store.issue("user-1")
    _, b = store.rotate(b)
    other = store.issue("user-2")
    store.revoke_user("user-1")
    for token in (a, b):
        with pytest.raises(InvalidRefreshToken):
            store.rotate(token)
    assert store.rotate(other)[0] == "user-2"
    store.revoke_user("nobody")


def test_new_login_after_revoke_user_works(store: RefreshTokens) -> None:
    store.issue("user-1")
    store.revoke_user("user-1")
    assert store.rotate(store.issue("user-1"))[0] == "user-1"


# --- expiry -----------------------------------------------------------------------------


def test_expired_token(pool: ConnectionPool) -> None:
    store = RefreshTokens(pool, ttl_s=2)
    store.create_tables()
    token = store.issue("user-1")
    _expire(pool, token)
    with pytest.raises(InvalidRefreshToken, match="expired"):
        store.rotate(token)


def test_expired_rotated_token(pool: ConnectionPool) -> None:
    store = RefreshTokens(pool, ttl_s=2)
    store.create_tables()
    _, token = store.rotate(store.issue("user-1"))
    _expire(pool, token)
    with pytest.raises(InvalidRefreshToken):
        store.rotate(token)


def test_purge_expired(store: RefreshTokens, pool: ConnectionPool) -> None:
    dead = store.issue("user-1")
    first = store.issue("user-2")
    _, live = store.rotate(first)
    _expire(pool, dead)
    _expire(pool, first)

    assert store.purge_expired() == 2
    with pool.connection() as conn:
        families = conn.execute("SELECT user_id FROM chorus_refresh_token_families").fetchall()
    assert families == [("user-2",)]
    with pytest.raises(InvalidRefreshToken):
        store.rotate(dead)
    assert store.rotate(live)[0] == "user-2"


def test_purge_expired_keeps_recent_within_grace(
    store: RefreshTokens, pool: ConnectionPool
) -> None:
    token = store.issue("user-1")
    _expire(pool, token)
    assert store.purge_expired(grace_s=3600) == 0


# --- concurrency ------------------------------------------------------------------------


def _rotate_in_threads(store: RefreshTokens, token: str, n: int) -> list[object]:
    results: list[object] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def worker() -> None:
        barrier.wait()
        try:
            outcome: object = store.rotate(token)
        except RefreshTokenError as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return results


def _waiting_on_locks(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_concurrent_rotations_exactly_one_wins(
    store: RefreshTokens, pool: ConnectionPool, database_url: str
) -> None:
    token = store.issue("user-1")
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(store.rotate(token))
        except RefreshTokenError as exc:
            results.append(exc)

    # Hold the family row so both rotations get past their lookup and queue on the lock;
    # releasing it then lets them run back to back, the worst interleaving.
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM chorus_refresh_token_families FOR UPDATE")
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while _waiting_on_locks(database_url) < 2:
            assert time.monotonic() < deadline, "rotations never blocked on the family lock"
            time.sleep(0.02)
        blocker.commit()
    for t in threads:
        t.join(timeout=30)

    wins = [r for r in results if isinstance(r, tuple)]
    losses = [r for r in results if isinstance(r, RefreshTokenReused)]
    assert len(wins) == 1
    assert len(losses) == 1
    # Two presentations of one token are indistinguishable from theft: the family is gone.
    with pytest.raises(InvalidRefreshToken):
        store.rotate(wins[0][1])


def test_concurrent_rotation_race_repeated(store: RefreshTokens) -> None:
    for _ in range(15):
        results = _rotate_in_threads(store, store.issue("user-1"), 4)
        wins = [r for r in results if isinstance(r, tuple)]
        losses = [r for r in results if isinstance(r, RefreshTokenError)]
        assert len(wins) == 1, results
        assert len(losses) == 3, results
        # The first loser detects the reuse and revokes; later ones find the family revoked.
        assert any(isinstance(r, RefreshTokenReused) for r in losses)


def test_revoke_racing_rotation_covers_the_successor(
    store: RefreshTokens, pool: ConnectionPool, database_url: str
) -> None:
    token = store.issue("user-1")
    rotated: list[tuple[str, str]] = []
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM chorus_refresh_token_families FOR UPDATE")
        rotator = threading.Thread(target=lambda: rotated.append(store.rotate(token)))
        rotator.start()
        deadline = time.monotonic() + 10
        while _waiting_on_locks(database_url) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        revoker = threading.Thread(target=lambda: store.revoke(token))
        revoker.start()
        while _waiting_on_locks(database_url) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        blocker.commit()
    rotator.join(timeout=30)
    revoker.join(timeout=30)
    assert len(rotated) == 1
    with pytest.raises(InvalidRefreshToken):
        store.rotate(rotated[0][1])
