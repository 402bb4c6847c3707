"""Rate limits per client address (``CHORUS_RATE_LIMIT_PER_SECOND``): HTTP requests and
WebSocket handshakes (``/ws``, ``/yjs``) share one budget.

A fixed one-second window per address. With ``REDIS_URL`` set the count lives in Redis
(``INCR`` and ``PEXPIRE`` in one Lua script, atomic), so every instance pointed at the same
Redis shares one budget; without it, or while Redis does not answer, each process counts
alone. A refused request gets 429 (problem+json) with ``Retry-After: 1``; a refused handshake
is accepted and closed at once (a close code reaches every WebSocket client, where an HTTP
refusal of the upgrade shows to browsers as a bare failure): 4429 on ``/ws``, 1013 on
``/yjs``, since stock Yjs clients never retry a code in 4400-4499.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from api.realtime.socket import CLOSE_TOO_MANY
from infrastructure import metrics

# "Try again later" (RFC 6455): what a stock Yjs client retries with backoff.
CLOSE_TRY_AGAIN_LATER = 1013

log = logging.getLogger(__name__)

KEY_PREFIX = "chorus:rate:"
# A window's key outlives its second a little, so clocks a few hundred ms apart still share it.
KEY_TTL_MS = 2000
REDIS_TIMEOUT_S = 0.25
# After Redis failed, counting stays local this long before Redis is tried again: an outage
# costs one timeout per this period, not one per request.
REDIS_RETRY_S = 1.0

_INCR_WITH_EXPIRY = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class _LocalWindow:
    """This process's counts for the current second only: memory stays bounded by the
    addresses seen within one second."""

    def __init__(self) -> None:
        self.window = -1
        self.counts: dict[str, int] = {}

    def hit(self, address: str, window: int) -> int:
        if window != self.window:
            self.window, self.counts = window, {}
        count = self.counts.get(address, 0) + 1
        self.counts[address] = count
        return count


class RateLimiter:
    """Counts requests per client address and second; Redis-backed when given a URL."""

    def __init__(self, per_second: int, redis_url: str | None = None) -> None:
        self.per_second = per_second
        self.redis_url = redis_url
        self._local = _LocalWindow()
        self._redis: aioredis.Redis | None = None
        self._script: Any = None
        self._redis_down_until = 0.0
        self._redis_failing = False

    async def allow(self, address: str) -> bool:
        """Counts one request from ``address``; False when it is over the limit."""
        window = int(time.time())
        count = await self._redis_count(address, window)
        if count is None:
            count = self._local.hit(address, window)
        return count <= self.per_second

    async def _redis_count(self, address: str, window: int) -> int | None:
        if self.redis_url is None or time.monotonic() < self._redis_down_until:
            return None
        try:
            if self._redis is None:
                self._redis = aioredis.from_url(
                    self.redis_url,
                    socket_timeout=REDIS_TIMEOUT_S,
                    socket_connect_timeout=REDIS_TIMEOUT_S,
                )
                self._script = self._redis.register_script(_INCR_WITH_EXPIRY)
            result = await self._script(keys=[f"{KEY_PREFIX}{window}:{address}"], args=[KEY_TTL_MS])
        except Exception as exc:  # Redis down or slow: count here rather than fail requests
            metrics.REDIS_ERRORS.labels("rate_limits").inc()
            if not self._redis_failing:
                log.warning("rate limits: Redis unavailable (%s); counting in this process", exc)
            self._redis_failing = True
            self._redis_down_until = time.monotonic() + REDIS_RETRY_S
            return None
        if self._redis_failing:
            log.warning("rate limits: Redis is back; counting there again")
            self._redis_failing = False
        return int(result)

    async def close(self) -> None:
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception:  # closing a client whose server is gone
                log.debug("rate limits: closing the Redis client failed", exc_info=True)
            self._redis = None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitMiddleware(ASGIMiddleware):
    """429 (or close 4429 for a WebSocket) for an address over its budget; health checks are
    never limited."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)
    exclude_path_pattern = (r"^/health$", r"^/ready$")

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if await self.limiter.allow(client_address(scope)):
            await next_app(scope, receive, send)
            return
        metrics.REFUSED.labels("requests_per_address").inc()
        if scope["type"] == ScopeType.WEBSOCKET:
            yjs = str(scope.get("path", "")).startswith("/yjs")
            code = CLOSE_TRY_AGAIN_LATER if yjs else CLOSE_TOO_MANY
            await _refuse_handshake(receive, send, self.limiter.per_second, code)
            return
        raise TooManyRequestsException(
            detail=f"at most {self.limiter.per_second} requests per second per client address",
            headers={"Retry-After": "1"},
        )


async def _refuse_handshake(receive: Receive, send: Send, per_second: int, code: int) -> None:
    """Before the token is read or anything is loaded: accepted, then closed with ``code``."""
    if (await receive())["type"] != "websocket.connect":
        return  # the client left first
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    await send(
        {
            "type": "websocket.close",
            "code": code,  # as for too many open sockets: try later
            "reason": f"at most {per_second} requests and connections per second per address",
        }
    )
