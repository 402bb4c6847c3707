"""Password hashing with argon2id."""

from __future__ import annotations

import os
import secrets
import threading

from argon2 import PasswordHasher as _Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY

__all__ = ["DEFAULT_PARAMETERS", "PasswordHasher"]

# RFC 9106's "second recommended option" (argon2id, t=3, m=64 MiB, p=4, 16-byte salt,
# 32-byte tag). It is above every OWASP argon2id row (e.g. m=19 MiB/t=2/p=1,
# m=46 MiB/t=1/p=1) while staying cheap enough for a login endpoint on a small server.
DEFAULT_PARAMETERS = RFC_9106_LOW_MEMORY


class PasswordHasher:
    """Hashes and verifies user passwords with argon2id (RFC 9106 low-memory profile).

    Hashes are self-describing PHC strings (``$argon2id$v=19$m=65536,t=3,p=4$...``), so the
    parameters can be raised later: after a successful ``verify`` call ``needs_rehash`` and
    store a fresh ``hash`` when it returns True.
    """

    def __init__(self, max_concurrent: int | None = None) -> None:
        self._hasher = _Argon2Hasher.from_parameters(DEFAULT_PARAMETERS)
        # Each hash takes 64 MiB and a core for ~0.3 s: a burst of logins queues here
        # instead of running forty at once and exhausting memory.
        self._slots = threading.BoundedSemaphore(max_concurrent or os.cpu_count() or 2)
        # Unknown usernames are verified against this so a login probe for a non-existent
        # account costs the same argon2 work as one for a real account (no user enumeration
        # by timing). The password is random so nothing can ever match it.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))

    @property
    def parameters(self) -> str:
        """The PHC parameter segment new hashes are created with, e.g. ``m=65536,t=3,p=4``."""
        p = self._hasher
        return f"m={p.memory_cost},t={p.time_cost},p={p.parallelism}"

    def hash(self, password: str) -> str:
        """Return a salted argon2id PHC string for ``password``."""
        with self._slots:
            return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True iff ``password`` matches ``stored_hash``.

        ``None`` (no such user) runs a full verification against a dummy hash and returns
        False. A wrong password or a malformed/unsupported stored hash returns False rather
        than raising, so callers have a single failure path.
        """
        target = self._dummy_hash if stored_hash is None else stored_hash
        try:
            with self._slots:
                ok = self._hasher.verify(target, password)
        except (VerificationError, InvalidHashError):
            return False
        except (TypeError, ValueError):
            # Non-str input or, e.g., lone surrogates that cannot be UTF-8 encoded.
            return False
        return ok and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        """True if ``stored_hash`` was made with other parameters than the current ones.

        A hash that cannot be parsed also reports True: whatever it is, it is not what we
        would produce today.
        """
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError, TypeError):
            return True
