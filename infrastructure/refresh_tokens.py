"""Opaque refresh tokens with rotation and reuse detection, stored in PostgreSQL."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from psycopg_pool import ConnectionPool

__all__ = [
    "InvalidRefreshToken",
    "LiveSession",
    "RefreshTokenError",
    "RefreshTokenReused",
    "RefreshTokens",
]

log = logging.getLogger(__name__)

_MAX_TOKEN_CHARS: Final = 256
# token_urlsafe output alphabet. Rejecting anything else up front also keeps strings that
# cannot be UTF-8 encoded (lone surrogates) away from hashlib.
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]+")


class RefreshTokenError(Exception):
    """Base class for refresh-token failures; the HTTP layer maps every one to 401."""


class InvalidRefreshToken(RefreshTokenError):
    """The token is unknown, expired, revoked or malformed."""


class RefreshTokenReused(RefreshTokenError):
    """An already-spent token was presented; its whole family has been revoked."""

    def __init__(self, message: str, session_id: str = "", user_id: str = "") -> None:
        super().__init__(message)
        self.session_id = session_id
        self.user_id = user_id


@dataclass(frozen=True)
class LiveSession:
    """A family not revoked and holding an unexpired token: a session that can go on."""

    session_id: str
    created_at: datetime
    last_used_at: datetime


def _digest(token: str) -> bytes:
    # The tokens carry 256 random bits, so an unsalted fast hash is enough: a leaked table
    # cannot be brute-forced back to usable tokens.
    return hashlib.sha256(token.encode("ascii")).digest()


def _well_formed(token: object) -> bool:
    return (
        isinstance(token, str)
        and 0 < len(token) <= _MAX_TOKEN_CHARS
        and _TOKEN_RE.fullmatch(token) is not None
    )


class RefreshTokens:
    """Refresh tokens organised in families (one family per login).

    ``issue`` starts a family; ``rotate`` spends a token and returns its successor in the
    same family. Presenting a spent token again means two parties hold the same token
    (theft, or a client retrying a refresh it already completed), so the whole family is
    revoked and every later rotation in it fails.

    Only SHA-256 digests of tokens are stored. Expiry is sliding: every rotation issues a
    token valid for ``ttl_s`` from now. Times come from the database clock.

    Concurrency: every state change of a family happens while holding a row lock on the
    family row (``SELECT ... FOR UPDATE``), so of two concurrent rotations of one token
    exactly one succeeds and the other observes the token as spent, and a concurrent
    revocation cannot miss a successor being inserted.
    """

    TABLES_SQL: Final[str] = """
CREATE TABLE IF NOT EXISTS chorus_refresh_token_families (
    family_id   UUID PRIMARY KEY,
    user_id     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS chorus_refresh_token_families_user_idx
    ON chorus_refresh_token_families (user_id) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS chorus_refresh_tokens (
    token_hash  BYTEA PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    family_id   UUID NOT NULL
                REFERENCES chorus_refresh_token_families (family_id) ON DELETE CASCADE,
    issued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    spent_at    TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS chorus_refresh_tokens_family_idx
    ON chorus_refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS chorus_refresh_tokens_expires_idx
    ON chorus_refresh_tokens (expires_at);
"""

    def __init__(self, pool: ConnectionPool, *, ttl_s: int = 30 * 24 * 3600) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._pool = pool
        self._ttl_s = ttl_s

    @property
    def ttl_s(self) -> int:
        """Lifetime of each newly issued refresh token, in seconds."""
        return self._ttl_s

    def create_tables(self) -> None:
        """Create the tables and indexes if they do not exist (idempotent)."""
        with self._pool.connection() as conn, conn.transaction():
            # Serialises concurrent first starts: CREATE ... IF NOT EXISTS alone can still
            # fail with a unique violation on pg_type when two sessions race.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('chorus_refresh_tokens'))")
            conn.execute(self.TABLES_SQL)

    def issue(self, user_id: str, family_id: uuid.UUID | None = None) -> str:
        """Start a new family for ``user_id`` (a login; ``family_id`` is its session's id)
        and return its first token."""
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        token = secrets.token_urlsafe(32)
        family_id = family_id or uuid.uuid4()
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(
                # A retried sign-up adds a token to its first family (a revoked one stays so).
                "INSERT INTO chorus_refresh_token_families (family_id, user_id) VALUES (%s, %s)"
                " ON CONFLICT (family_id) DO NOTHING",
                (family_id, user_id),
            )
            conn.execute(
                "INSERT INTO chorus_refresh_tokens (token_hash, family_id, expires_at)"
                " VALUES (%s, %s, now() + make_interval(secs => %s))",
                (_digest(token), family_id, self._ttl_s),
            )
        return token

    def rotate(self, token: str) -> tuple[str, str]:
        """Spend ``token`` and return ``(user_id, new_token)`` in the same family.

        Raises ``InvalidRefreshToken`` for unknown, expired or revoked tokens, and
        ``RefreshTokenReused`` (after revoking the family) for an already-spent token.
        """
        user_id, _, new_token = self.rotate_in_session(token)
        return user_id, new_token

    def rotate_in_session(self, token: str) -> tuple[str, str, str]:
        """``rotate``, returning ``(user_id, session_id, new_token)``: the session is the
        family."""
        if not _well_formed(token):
            raise InvalidRefreshToken("invalid refresh token")
        token_hash = _digest(token)
        new_token = secrets.token_urlsafe(32)
        # The outcome is decided inside the transaction but raised after it, because the
        # family revocation on reuse must commit rather than roll back with the exception.
        outcome: RefreshTokenError | None = None
        with self._pool.connection() as conn, conn.transaction():
            # The lock-then-reread below relies on each statement taking a fresh snapshot;
            # pin it in case the pool's connections default to a stricter level.
            conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            family = conn.execute(
                "SELECT f.family_id, f.user_id, f.revoked_at IS NOT NULL"
                " FROM chorus_refresh_token_families f"
                " WHERE f.family_id ="
                "   (SELECT t.family_id FROM chorus_refresh_tokens t WHERE t.token_hash = %s)"
                " FOR UPDATE",
                (token_hash,),
            ).fetchone()
            if family is None:
                raise InvalidRefreshToken("invalid refresh token")
            family_id, user_id, revoked = family
            # Re-read after taking the lock: a rotation that held it before us has
            # committed by now, and this statement's snapshot sees its spend.
            state = conn.execute(
                "SELECT spent_at IS NOT NULL, expires_at <= now()"
                " FROM chorus_refresh_tokens WHERE token_hash = %s",
                (token_hash,),
            ).fetchone()
            if state is None or revoked:
                outcome = InvalidRefreshToken("invalid refresh token")
            elif state[0]:
                conn.execute(
                    "UPDATE chorus_refresh_token_families SET revoked_at = now()"
                    " WHERE family_id = %s",
                    (family_id,),
                )
                outcome = RefreshTokenReused(
                    "refresh token reused; session revoked", str(family_id), str(user_id)
                )
            elif state[1]:
                outcome = InvalidRefreshToken("refresh token expired")
            else:
                # Conditional on spent_at IS NULL as a second line of defence: even if the
                # family lock were bypassed, a token can be spent only once.
                spent = conn.execute(
                    "UPDATE chorus_refresh_tokens SET spent_at = now()"
                    " WHERE token_hash = %s AND spent_at IS NULL RETURNING 1",
                    (token_hash,),
                ).fetchone()
                if spent is None:
                    outcome = InvalidRefreshToken("invalid refresh token")
                else:
                    conn.execute(
                        "INSERT INTO chorus_refresh_tokens"
                        " (token_hash, family_id, expires_at)"
                        " VALUES (%s, %s, now() + make_interval(secs => %s))",
                        (_digest(new_token), family_id, self._ttl_s),
                    )
        if outcome is not None:
            if isinstance(outcome, RefreshTokenReused):
                log.warning(
                    "refresh token reuse detected; revoked family %s of user %s",
                    family_id,
                    user_id,
                )
            raise outcome
        return str(user_id), str(family_id), new_token

    # -- sessions (issue 17) -------------------------------------------------------------------

    def session_of(self, token: str) -> tuple[str, str] | None:
        """``(session_id, user_id)`` of the family ``token`` belongs to, whatever its state
        (a logout retried after its family was revoked still names its session)."""
        if not _well_formed(token):
            return None
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT f.family_id, f.user_id FROM chorus_refresh_tokens t"
                " JOIN chorus_refresh_token_families f ON f.family_id = t.family_id"
                " WHERE t.token_hash = %s",
                (_digest(token),),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def live_sessions(self, user_id: str, limit: int = 200) -> list[LiveSession]:
        """The user's sessions that can go on, most recently used first."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT f.family_id, f.created_at, max(t.issued_at)"
                " FROM chorus_refresh_token_families f"
                " JOIN chorus_refresh_tokens t ON t.family_id = f.family_id"
                " WHERE f.user_id = %s AND f.revoked_at IS NULL"
                " GROUP BY f.family_id, f.created_at"
                " HAVING max(t.expires_at) > now()"
                " ORDER BY max(t.issued_at) DESC, f.family_id LIMIT %s",
                (user_id, limit),
            ).fetchall()
        return [LiveSession(str(r[0]), r[1], r[2]) for r in rows]

    def end(self, user_id: str, session_ids: list[str]) -> None:
        """Revoke these families of ``user_id`` (others' ids are ignored)."""
        if not session_ids:
            return
        with self._pool.connection() as conn:
            conn.execute(
                "UPDATE chorus_refresh_token_families SET revoked_at = now()"
                " WHERE user_id = %s AND family_id = ANY(%s::uuid[]) AND revoked_at IS NULL",
                (user_id, session_ids),
            )

    def recently_ended(self, within_s: int) -> list[str]:
        """Families revoked in the last ``within_s`` seconds: what a starting instance must
        refuse the access tokens of."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT family_id FROM chorus_refresh_token_families"
                " WHERE revoked_at > now() - make_interval(secs => %s)",
                (within_s,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def revoke(self, token: str) -> None:
        """Revoke the family ``token`` belongs to (logout). Unknown tokens are ignored."""
        if not _well_formed(token):
            return
        with self._pool.connection() as conn:
            # A single statement; it waits for any in-flight rotation holding the family
            # row, so a successor inserted by that rotation is covered too.
            conn.execute(
                "UPDATE chorus_refresh_token_families SET revoked_at = now()"
                " WHERE revoked_at IS NULL AND family_id ="
                "   (SELECT family_id FROM chorus_refresh_tokens WHERE token_hash = %s)",
                (_digest(token),),
            )

    def revoke_user(self, user_id: str) -> None:
        """Revoke every family of ``user_id`` (log out everywhere, password change)."""
        with self._pool.connection() as conn:
            conn.execute(
                "UPDATE chorus_refresh_token_families SET revoked_at = now()"
                " WHERE user_id = %s AND revoked_at IS NULL",
                (user_id,),
            )

    def purge_expired(self, *, grace_s: int = 0) -> int:
        """Delete tokens expired more than ``grace_s`` ago and families left without tokens.

        Returns the number of token rows deleted. A purged spent token is then merely
        unknown (``InvalidRefreshToken``) instead of triggering reuse detection, which is
        harmless once it is past its expiry. Safe to run concurrently with normal traffic.
        """
        with self._pool.connection() as conn, conn.transaction():
            cur = conn.execute(
                "DELETE FROM chorus_refresh_tokens"
                " WHERE expires_at < now() - make_interval(secs => %s)",
                (grace_s,),
            )
            deleted = cur.rowcount
            conn.execute(
                "DELETE FROM chorus_refresh_token_families f WHERE NOT EXISTS"
                " (SELECT 1 FROM chorus_refresh_tokens t WHERE t.family_id = f.family_id)"
            )
        return deleted
