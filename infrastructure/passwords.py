"""Password hashing with argon2id."""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher as _Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY

__all__ = ["DEFAULT_PARAMETERS", "PasswordHasher", "PasswordsBusy"]

T = TypeVar("T")

# The hashing queue's default depth per running slot (CHORUS_PASSWORD_HASH_QUEUE overrides).
DEFAULT_QUEUED = 16


class PasswordsBusy(Exception):
    """The hashing pool's queue is full: try again in ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many password checks in progress; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


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

    def __init__(self, max_concurrent: int | None = None, max_queued: int | None = None) -> None:
        self._hasher = _Argon2Hasher.from_parameters(DEFAULT_PARAMETERS)
        # Each hash takes 64 MiB and a core for ~0.3 s: hashes run on a pool of their own,
        # one thread per slot, so a burst of logins neither runs forty at once (memory) nor
        # holds the threads every other blocking route needs (it used to wait for a slot in
        # a request's worker thread). Beyond the queue a caller is refused at once.
        slots = max_concurrent or os.cpu_count() or 2
        self._slots = slots
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="argon2")
        self._capacity = slots + (DEFAULT_QUEUED if max_queued is None else max_queued)
        self._lock = threading.Lock()
        self._pending = 0
        self._seconds_per_hash = 0.3  # measured below, for Retry-After
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
        """Return a salted argon2id PHC string for ``password`` (blocks the calling thread;
        raises PasswordsBusy when the queue is full)."""
        return self._submit(self._hasher.hash, password).result()

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True iff ``password`` matches ``stored_hash``.

        ``None`` (no such user) runs a full verification against a dummy hash and returns
        False. A wrong password or a malformed/unsupported stored hash returns False rather
        than raising, so callers have a single failure path. Blocks the calling thread;
        raises PasswordsBusy when the queue is full.
        """
        return self._submit(self._verify, stored_hash, password).result()

    async def hash_async(self, password: str) -> str:
        """``hash`` awaited from the event loop: no thread but the pool's is held while it
        waits. Raises PasswordsBusy at once when the queue is full."""
        return await asyncio.wrap_future(self._submit(self._hasher.hash, password))

    async def verify_async(self, stored_hash: str | None, password: str) -> bool:
        """``verify`` awaited from the event loop: no thread but the pool's is held while it
        waits. Raises PasswordsBusy at once when the queue is full."""
        return await asyncio.wrap_future(self._submit(self._verify, stored_hash, password))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        target = self._dummy_hash if stored_hash is None else stored_hash
        try:
            ok = self._hasher.verify(target, password)
        except (VerificationError, InvalidHashError):
            return False
        except (TypeError, ValueError):
            # Non-str input or, e.g., lone surrogates that cannot be UTF-8 encoded.
            return False
        return ok and stored_hash is not None

    def _submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        with self._lock:
            if self._pending >= self._capacity:
                waves = math.ceil(self._pending / self._slots)
                raise PasswordsBusy(max(1, math.ceil(waves * self._seconds_per_hash)))
            self._pending += 1
        return self._pool.submit(self._timed, fn, *args)

    def _timed(self, fn: Callable[..., T], *args: object) -> T:
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            elapsed = time.monotonic() - started
            with self._lock:
                self._pending -= 1
                self._seconds_per_hash = 0.8 * self._seconds_per_hash + 0.2 * elapsed

    def needs_rehash(self, stored_hash: str) -> bool:
        """True if ``stored_hash`` was made with other parameters than the current ones.

        A hash that cannot be parsed also reports True: whatever it is, it is not what we
        would produce today.
        """
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError, TypeError):
            return True
