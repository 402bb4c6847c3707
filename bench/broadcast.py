"""``python -m bench.broadcast``: a bare WebSocket broadcast server, the baseline of the delivery
figures. Never a way to run Chorus.

It speaks just enough of Chorus's ``/ws`` protocol for the benchmark client: ``subscribe`` is
answered ``subscribed`` and adds the connection to one in-memory set; a ``command`` is answered
``ack`` at once and then, with no storage, no access check and no thread hand-off, an ``event``
frame shaped like Chorus's (an envelope copied from ``--template``, a real one when the bench
has captured it) is pushed to every subscribed connection with ``websockets.broadcast`` (no
per-connection task, no backpressure). Same library as the client (``websockets``, asyncio,
on uvloop like ``chorus serve``), same permessage-deflate default as uvicorn, 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

# Used when no template is given: the shape of a Chorus MessageSent envelope.
DEFAULT_TEMPLATE: dict[str, Any] = {
    "position": 0,
    "stream": "00000000-0000-0000-0000-000000000000",
    "version": 1,
    "type": "MessageSent",
    "at": "2026-01-01T00:00:00.000000Z",
    "actor": "00000000-0000-0000-0000-000000000000",
    "command_id": None,
    "data": {
        "channel_id": "00000000-0000-0000-0000-000000000000",
        "workspace_id": "00000000-0000-0000-0000-000000000000",
        "author_id": "00000000-0000-0000-0000-000000000000",
        "text": "",
    },
}

encoder = msgspec.json.Encoder()


class Frame(msgspec.Struct):
    op: str
    sub: str | None = None
    id: str | None = None
    data: dict[str, Any] | None = None


decoder = msgspec.json.Decoder(Frame)


class Broadcaster:
    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.position = 0
        # Subscribers grouped by subscription name: one encoded frame per name.
        self.subscribers: dict[str, set[ServerConnection]] = {}

    def envelope(self, command_id: str, data: dict[str, Any]) -> bytes:
        self.position += 1
        body = dict(self.template)
        body.update(
            position=self.position,
            stream=str(uuid.uuid4()),
            at=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            command_id=command_id,
            data={**self.template.get("data", {}), **data},
        )
        return encoder.encode(body)

    async def handle(self, conn: ServerConnection) -> None:
        mine: list[str] = []
        try:
            while True:
                raw = await conn.recv(decode=False)
                try:
                    frame = decoder.decode(raw)
                except msgspec.DecodeError as exc:
                    await conn.send(encoder.encode({"op": "error", "detail": str(exc)}), text=True)
                    continue
                if frame.op == "subscribe" and frame.sub:
                    self.subscribers.setdefault(frame.sub, set()).add(conn)
                    mine.append(frame.sub)
                    reply = {"op": "subscribed", "sub": frame.sub, "after": self.position}
                    await conn.send(encoder.encode(reply | {"head": self.position}), text=True)
                elif frame.op == "command" and frame.id:
                    envelope = self.envelope(frame.id, frame.data or {})
                    ack = {"op": "ack", "id": frame.id, "position": self.position, "result": {}}
                    await conn.send(encoder.encode(ack), text=True)
                    for name, conns in self.subscribers.items():
                        event = b'{"op":"event","sub":' + encoder.encode(name) + b',"event":'
                        broadcast(conns, event + envelope + b"}", text=True)
                elif frame.op == "ping":
                    await conn.send(b'{"op":"pong"}', text=True)
        except ConnectionClosed:
            pass
        finally:
            for name in mine:
                self.subscribers.get(name, set()).discard(conn)


async def serve_until_signalled(port: int, template: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    hub = Broadcaster(template)
    # Pings as uvicorn's defaults (every 20 s); permessage-deflate is the library's default,
    # with the same settings uvicorn uses.
    async with serve(hub.handle, "127.0.0.1", port, ping_interval=20, ping_timeout=20):
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.broadcast")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--template", type=Path, help="JSON of an event envelope to imitate")
    args = p.parse_args(argv)
    template = DEFAULT_TEMPLATE
    if args.template is not None:
        template = json.loads(args.template.read_text())
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(serve_until_signalled(args.port, template))
    else:
        uvloop.run(serve_until_signalled(args.port, template))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
