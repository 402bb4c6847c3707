"""Ephemeral signals (typing, cursors, awareness): fanned out to the workspace's subscribers,
across instances through Redis pub/sub when ``REDIS_URL`` is set, and never stored.

Redis only carries signals: if it is down, signals reach the sockets of this instance alone,
while commands and event subscriptions carry on through the event store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

CHANNEL = "chorus:signals"
KINDS = frozenset({"typing", "cursor", "awareness"})
PUBLISH_TIMEOUT_S = 0.5


class Recipient(Protocol):
    user_id: str

    async def send(self, data: bytes) -> None: ...


class _Wire(msgspec.Struct, frozen=True):
    instance: str
    workspace: str
    sender: str
    frame: bytes


class SignalBus:
    def __init__(self, redis_url: str | None, instance_id: str) -> None:
        self.redis_url = redis_url
        self.instance_id = instance_id
        self._members: dict[str, set[Recipient]] = defaultdict(set)
        self._redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None

    # -- who listens --------------------------------------------------------------------------

    def join(self, workspace_id: str, recipient: Recipient) -> None:
        self._members[workspace_id].add(recipient)

    def leave(self, workspace_id: str, recipient: Recipient) -> None:
        members = self._members.get(workspace_id)
        if members is not None:
            members.discard(recipient)
            if not members:
                del self._members[workspace_id]

    async def _deliver(self, workspace_id: str, frame: bytes, sender: Any = None) -> None:
        for recipient in list(self._members.get(workspace_id, ())):
            if recipient is not sender:
                await recipient.send(frame)

    # -- sending ------------------------------------------------------------------------------

    async def publish(self, workspace_id: str, frame: bytes, sender: Recipient) -> None:
        """Delivers here at once, and to the other instances through Redis."""
        await self._deliver(workspace_id, frame, sender)
        if self._redis is None:
            return
        wire = msgspec.msgpack.encode(_Wire(self.instance_id, workspace_id, sender.user_id, frame))
        try:
            await asyncio.wait_for(self._redis.publish(CHANNEL, wire), PUBLISH_TIMEOUT_S)
        except Exception as exc:  # Redis down: this instance's sockets still got it
            log.warning("signals: publish failed: %s", exc)

    # -- Redis --------------------------------------------------------------------------------

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
                            await self._deliver(wire.workspace, wire.frame)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect when Redis comes back
                log.warning("signals: Redis subscription lost: %s; retrying", exc)
                await asyncio.sleep(1.0)
