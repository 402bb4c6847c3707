"""Ephemeral signals (typing, cursors, awareness): fanned out to a group's recipients, across
instances through Redis pub/sub when ``REDIS_URL`` is set, and never stored. A signal about a
channel or a document carries that scope, and a recipient that can decide access
(``ScopedRecipient``) gets only the signals of what it may read.

Redis only carries signals: if it is down, signals reach the sockets of this instance alone,
while commands and event subscriptions carry on through the event store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec
import redis.asyncio as aioredis

from infrastructure import metrics

log = logging.getLogger(__name__)

CHANNEL = "chorus:signals"
KINDS = frozenset({"typing", "cursor", "awareness"})
PUBLISH_TIMEOUT_S = 0.5


class Recipient(Protocol):
    user_id: str

    async def send(self, data: bytes) -> None: ...


@runtime_checkable
class ScopedRecipient(Recipient, Protocol):
    async def deliver_signal(self, scope: str, frame: bytes) -> None:
        """Sends the signal about ``scope`` ("channel:<id>" or "document:<id>") if it may
        reach this recipient; never waits for an access decision (it may send later)."""
        ...


class _Wire(msgspec.Struct, frozen=True):
    instance: str
    workspace: str  # the first group (older instances read only this one)
    sender: str
    frame: bytes
    scope: str | None = None
    groups: list[str] = []


class SignalBus:
    def __init__(self, redis_url: str | None, instance_id: str) -> None:
        self.redis_url = redis_url
        self.instance_id = instance_id
        self._members: dict[str, set[Recipient]] = defaultdict(set)
        self._redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None

    # -- who listens --------------------------------------------------------------------------

    def join(self, group: str, recipient: Recipient) -> None:
        self._members[group].add(recipient)

    def leave(self, group: str, recipient: Recipient) -> None:
        members = self._members.get(group)
        if members is not None:
            members.discard(recipient)
            if not members:
                del self._members[group]

    async def _deliver(
        self,
        groups: Sequence[str],
        frame: bytes,
        sender: Any = None,
        scope: str | None = None,
    ) -> None:
        """To every recipient of the groups once (one may be in several)."""
        recipients: dict[int, Recipient] = {}
        for group in groups:
            for recipient in self._members.get(group, ()):
                recipients.setdefault(id(recipient), recipient)
        for recipient in recipients.values():
            if recipient is sender:
                continue
            if scope is not None and isinstance(recipient, ScopedRecipient):
                await recipient.deliver_signal(scope, frame)
            else:
                await recipient.send(frame)

    # -- sending ------------------------------------------------------------------------------

    async def publish(
        self,
        group: str | Sequence[str],
        frame: bytes,
        sender: Recipient,
        scope: str | None = None,
    ) -> None:
        """Delivers here at once to the recipients of the group (or groups), and to the
        other instances through Redis; with a ``scope``, only to recipients that accept it."""
        groups = [group] if isinstance(group, str) else list(group)
        await self._deliver(groups, frame, sender, scope)
        if self._redis is None or not groups:
            return
        wire = msgspec.msgpack.encode(
            _Wire(self.instance_id, groups[0], sender.user_id, frame, scope, groups)
        )
        try:
            await asyncio.wait_for(self._redis.publish(CHANNEL, wire), PUBLISH_TIMEOUT_S)
        except Exception as exc:  # Redis down: this instance's sockets still got it
            metrics.REDIS_ERRORS.labels("signals_publish").inc()
            log.warning("signals: publish failed: %s", exc)

    # -- Redis --------------------------------------------------------------------------------

    async def redis_up(self, timeout_s: float = 0.5) -> bool | None:
        """Whether Redis answers a PING now (None without Redis): the metrics' health."""
        if self._redis is None:
            return None
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), timeout_s))
        except Exception:
            return False

    async def start(self) -> None:
        if self.redis_url is None:
            return
        self._redis = aioredis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    async def _listen(self) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        wire = msgspec.msgpack.decode(message["data"], type=_Wire)
                        if wire.instance != self.instance_id:
                            groups = wire.groups or [wire.workspace]
                            await self._deliver(groups, wire.frame, scope=wire.scope)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect when Redis comes back
                metrics.REDIS_ERRORS.labels("signals_subscribe").inc()
                log.warning("signals: Redis subscription lost: %s; retrying", exc)
                await asyncio.sleep(1.0)
