"""``python -m bench.broadcast``: a bare WebSocket broadcast server, the baseline of the delivery
figures; with ``--yjs-state``, also a bare y-websocket server for one document, the floor of
the documents' cold open. Never a way to run Chorus.

It speaks just enough of Chorus's ``/ws`` protocol for the benchmark client: ``subscribe`` is
answered ``subscribed`` and adds the connection to one in-memory set; a ``command`` is answered
``ack`` at once and then, with no storage, no access check and no thread hand-off, an ``event``
frame shaped like Chorus's (an envelope copied from ``--template``, a real one when the bench
has captured it) is pushed to every subscribed connection with ``websockets.broadcast`` (no
per-connection task, no backpressure). Same library as the client (``websockets``, asyncio,
on uvloop like ``chorus serve``), 127.0.0.1 only. Like ``chorus serve`` by default
(``CHORUS_WS_COMPRESSION``), it declines permessage-deflate unless ``--compression`` is given,
so both send the same bytes.

``/yjs/...`` with ``--yjs-state FILE``: the server's half of the y-websocket handshake over a
state held in memory, and nothing else: the client's sync step 1 is answered with the whole
state (step 2) and the server's own step 1; whatever comes after is read and dropped. No token,
no access check, no read from a store: what any server must at least spend to hand a document
to this client (connect, send, the client's apply).
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
from pycrdt import Doc
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from domain import yjs_protocol as protocol

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


class BareDocument:
    """One document's state, handed to every y-websocket client that asks."""

    def __init__(self, state: bytes) -> None:
        doc: Doc[Any] = Doc()
        doc.apply_update(state)
        self.step2 = protocol.sync_step2(state)
        self.step1 = protocol.sync_step1(doc.get_state())

    async def handle(self, conn: ServerConnection) -> None:
        try:
            await conn.recv(decode=False)  # the client's step 1
            await conn.send(self.step2, text=False)
            await conn.send(self.step1, text=False)
            async for _ in conn:
                pass
        except ConnectionClosed:
            pass


async def serve_until_signalled(
    port: int, template: dict[str, Any], *, compression: bool, document: BareDocument | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    hub = Broadcaster(template)

    async def handle(conn: ServerConnection) -> None:
        request = conn.request
        if document is not None and request is not None and request.path.startswith("/yjs/"):
            await document.handle(conn)
        else:
            await hub.handle(conn)

    # Pings as uvicorn's defaults (every 20 s); permessage-deflate, when on, with the library's
    # settings, which are uvicorn's.
    async with serve(
        handle,
        "127.0.0.1",
        port,
        ping_interval=20,
        ping_timeout=20,
        compression="deflate" if compression else None,
    ):
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.broadcast")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--template", type=Path, help="JSON of an event envelope to imitate")
    p.add_argument("--compression", action="store_true", help="accept permessage-deflate")
    p.add_argument("--yjs-state", type=Path, help="a Yjs update to serve at /yjs/...")
    args = p.parse_args(argv)
    template = DEFAULT_TEMPLATE
    if args.template is not None:
        template = json.loads(args.template.read_text())
    document = None if args.yjs_state is None else BareDocument(args.yjs_state.read_bytes())
    serving = serve_until_signalled(
        args.port, template, compression=args.compression, document=document
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(serving)
    else:
        uvloop.run(serving)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
