"""Budgets of the unauthenticated auth routes (issue #16): failed logins per account and per
address with a doubling back-off, and sign-ups per address and in total per hour.

Counted in this server process (with ``--workers N`` or several instances each counts alone:
an attacker gets N times the budget, still bounded). Memory is bounded: at most
``MAX_KEYS`` keys are kept, the least recently touched dropped first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from infrastructure import metrics

MAX_KEYS = 100_000
# A key's failures are forgotten this long after its last failure.
FORGET_AFTER_S = 3600.0


class Throttled(Exception):
    """Refused before any work: retry in ``retry_after_s`` seconds."""

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = max(1, math.ceil(retry_after_s))


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class _BoundedKeys:
    """An LRU map of key → state, for at most ``MAX_KEYS`` keys."""

    def __init__(self) -> None:
        self.items: OrderedDict[str, _Failures] = OrderedDict()

    def get(self, key: str, now: float) -> _Failures:
        state = self.items.get(key)
        if state is None or now - state.last > FORGET_AFTER_S:
            state = _Failures(last=now)
            self.items[key] = state
        self.items.move_to_end(key)
        while len(self.items) > MAX_KEYS:
            self.items.popitem(last=False)
        return state

    def forget(self, key: str) -> None:
        self.items.pop(key, None)


class LoginThrottle:
    """Each login attempt counts as a failure when it starts (so a concurrent burst is counted
    in full before any hash finishes); a success then clears its account's count (not its
    address's: a valid login between guesses must not reset the per-address count).

    From the ``free``-th failure on, each attempt opens a window of ``base * 2**k`` seconds (up
    to ``cap``) during which that key is refused with 429 before any hashing."""

    def __init__(
        self,
        free_per_account: int,
        free_per_address: int,
        base_s: float = 1.0,
        cap_s: float = 300.0,
    ) -> None:
        self.free = {"account": free_per_account, "address": free_per_address}
        self.base_s = base_s
        self.cap_s = cap_s
        self._keys = _BoundedKeys()
        self._lock = threading.Lock()

    def attempt(self, account: str, address: str) -> None:
        """Counts one attempt; raises Throttled while either key is backing off."""
        now = time.monotonic()
        with self._lock:
            states = self._states(account, address, now)
            for kind, state in states:
                if state.blocked_until > now:
                    metrics.REFUSED.labels(f"login_per_{kind}").inc()
                    raise Throttled(
                        f"too many failed logins for this {kind}; try again later",
                        state.blocked_until - now,
                    )
            for _, state in states:
                state.count += 1
                state.last = now
            self._arm(states, now)

    def failed(self, account: str, address: str) -> None:
        """The attempt failed: its back-off runs from now (a hash takes a while)."""
        now = time.monotonic()
        with self._lock:
            self._arm(self._states(account, address, now), now)

    def _states(self, account: str, address: str, now: float) -> list[tuple[str, _Failures]]:
        keys = [("account", f"u:{account}"), ("address", f"a:{address}")]
        return [(kind, self._keys.get(key, now)) for kind, key in keys if self.free[kind] > 0]

    def _arm(self, states: list[tuple[str, _Failures]], now: float) -> None:
        for kind, state in states:
            over = state.count - self.free[kind] + 1
            if over > 0:
                wait = min(self.cap_s, self.base_s * 2 ** min(over - 1, 32))
                state.blocked_until = max(state.blocked_until, now + wait)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._keys.forget(f"u:{account}")


class HourlyBudget:
    """Sign-ups per address and in total in a fixed one-hour window (0: no cap)."""

    WINDOW_S = 3600.0

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self._window = -1
        self._counts: dict[str, int] = {}
        self._all = 0
        self._lock = threading.Lock()

    def take(self, address: str) -> None:
        """Counts one sign-up; raises Throttled when the address or the server is over."""
        now = time.time()
        window = int(now // self.WINDOW_S)
        retry = (window + 1) * self.WINDOW_S - now
        with self._lock:
            if window != self._window:
                self._window, self._counts, self._all = window, {}, 0
            count = self._counts.get(address, 0)
            if self.per_address and count >= self.per_address:
                metrics.REFUSED.labels("signups_per_address").inc()
                raise Throttled(
                    f"at most {self.per_address} sign-ups per hour from one address", retry
                )
            if self.total and self._all >= self.total:
                metrics.REFUSED.labels("signups").inc()
                raise Throttled(f"at most {self.total} sign-ups per hour; try later", retry)
            if len(self._counts) < MAX_KEYS:
                self._counts[address] = count + 1
            self._all += 1
