"""How much each user may edit documents: a byte and an update budget per window."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class OverBudget(Exception):
    """A user's document edits went past their budget for the window; ``retry_after`` says
    when the edit that was refused would fit."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Allowance:
    bytes: float
    updates: float
    stamp: float
    # Until when a user refused for going past the budget is refused on opening, too.
    refused_until: float = 0.0


class EditBudget:
    """How many bytes of document updates, and how many updates, each user may send in a
    window, across the documents of this process: one account cannot fill the log (every
    accepted update is a permanent event) faster than the budget lets it.

    Two token buckets per user (bytes and updates), each holding a window's worth and filled
    again at that rate. An update is charged before it is applied or saved, and refused whole
    when it does not fit. ``limit_bytes`` or ``limit_updates`` 0: that one is not limited.
    """

    # Users whose allowance is full again are forgotten once this many are tracked.
    _TRACKED = 10_000

    def __init__(
        self,
        limit_bytes: int,
        limit_updates: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_bytes = limit_bytes
        self.limit_updates = limit_updates
        self.window_s = window_s
        self._clock = clock
        self._users: dict[str, _Allowance] = {}

    def _allowance(self, user_id: str, now: float) -> _Allowance:
        a = self._users.get(user_id)
        if a is None:
            if len(self._users) >= self._TRACKED:
                self._forget_full(now)
            a = _Allowance(float(self.limit_bytes), float(self.limit_updates), now)
            self._users[user_id] = a
            return a
        elapsed = now - a.stamp
        a.stamp = now
        a.bytes = min(self.limit_bytes, a.bytes + elapsed * self.limit_bytes / self.window_s)
        a.updates = min(
            self.limit_updates, a.updates + elapsed * self.limit_updates / self.window_s
        )
        return a

    def _forget_full(self, now: float) -> None:
        for user_id in list(self._users):
            a = self._allowance(user_id, now)
            if (
                a.bytes >= self.limit_bytes
                and a.updates >= self.limit_updates
                and a.refused_until <= now
            ):
                del self._users[user_id]

    def charge(self, user_id: str, size: int) -> None:
        """Takes one update of ``size`` bytes from the user's allowance; raises ``OverBudget``
        (taking nothing) when it does not fit."""
        if not self.limit_bytes and not self.limit_updates:
            return
        now = self._clock()
        a = self._allowance(user_id, now)
        wait = 0.0
        if self.limit_bytes and a.bytes < size:
            wait = (size - a.bytes) * self.window_s / self.limit_bytes
        if self.limit_updates and a.updates < 1:
            wait = max(wait, (1 - a.updates) * self.window_s / self.limit_updates)
        if wait > 0:
            a.refused_until = now + wait
            raise OverBudget(self.describe(), wait)
        if self.limit_bytes:
            a.bytes -= size
        if self.limit_updates:
            a.updates -= 1

    def refusing(self, user_id: str) -> float:
        """Seconds until a user lately refused may edit again (0: they may)."""
        a = self._users.get(user_id)
        if a is None:
            return 0.0
        return max(0.0, a.refused_until - self._clock())

    def describe(self) -> str:
        limits = []
        if self.limit_bytes:
            limits.append(f"{self.limit_bytes} bytes")
        if self.limit_updates:
            limits.append(f"{self.limit_updates} updates")
        return f"edit budget: at most {' and '.join(limits)} per {self.window_s:g} s per user"
