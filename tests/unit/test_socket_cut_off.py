"""Cutting off a ``/ws`` consumer too slow to read: the connection's handler is cancelled only
while it still serves the socket, never once it has moved on to recording the session's end.

The socket here is a stand-in (the cut-off's timing is what is tested, and a real peer cannot
be held at the exact moment); the whole path runs against a real server in
``tests/e2e/test_websocket.py::test_a_consumer_that_stops_reading_is_cut_off``."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

from api.realtime.socket import Connection, Subscription
from infrastructure.tokens import AccessClaims


class _GoneSocket:
    """A socket whose peer has already left: ``receive`` says so at once."""

    async def receive(self) -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1006}

    async def send_data(self, data: Any, mode: str = "text") -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def _connection() -> Connection:
    claims = AccessClaims(user_id="u", expires_at=int(time.time()) + 60, token_id="t")
    # A stand-in for the services: the connection reads only its settings when made.
    services = SimpleNamespace(settings=SimpleNamespace(ws_catch_up_events_per_minute=0))
    return Connection(cast(Any, _GoneSocket()), cast(Any, services), claims)


def test_a_cut_off_after_the_handler_left_its_loop_does_not_cancel_what_follows() -> None:
    async def scenario() -> str:
        connection = _connection()
        after_run = asyncio.Event()
        proceed = asyncio.Event()

        async def handler() -> str:
            await connection.run()  # the peer is gone: returns at once
            after_run.set()
            try:
                await proceed.wait()  # as the session's end is being recorded
            except asyncio.CancelledError:
                return "cancelled"
            return "finished"

        task = asyncio.get_running_loop().create_task(handler())
        await after_run.wait()
        # The slow consumer is noticed only now (its inbox overflowed a moment earlier).
        sub = Subscription(connection, "s", [])
        await connection.too_slow(sub)
        proceed.set()
        return await task

    assert asyncio.run(scenario()) == "finished"


def test_a_cut_off_while_the_handler_serves_the_socket_ends_it_cleanly() -> None:
    async def scenario() -> tuple[int, bool]:
        connection = _connection()
        blocked = asyncio.Event()

        async def never() -> dict[str, Any]:
            blocked.set()
            await asyncio.Event().wait()  # a peer that sends nothing and reads nothing
            raise AssertionError("unreachable")

        async def handler() -> int:
            await connection.run()
            # What follows (recording the session's end) runs as in a task never cancelled.
            current = asyncio.current_task()
            assert current is not None
            return current.cancelling()

        cast(Any, connection.socket).receive = never
        task = asyncio.get_running_loop().create_task(handler())
        await blocked.wait()
        await connection.too_slow(Subscription(connection, "s", []))
        return await asyncio.wait_for(task, 5), connection.cut_off

    assert asyncio.run(scenario()) == (0, True)
