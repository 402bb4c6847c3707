"""The HTTP server ``chorus serve`` runs: uvicorn with bounds a hostile client cannot get around
(issue #16, findings 4, 9, 11 and 12).

- A request head (request line and headers) is at most ``max_header_bytes``: past it the
  connection gets 431 and is closed. httptools (uvicorn's fast parser, kept for speed) has no
  such limit of its own and buffered a never-ending header without bound.
- A connection has ``header_timeout_s`` to send a whole request (head and body) from the moment
  it opens or its previous response ends; then it is closed (408 if it had started one). Idle
  keep-alive connections close after ``keep_alive_s``.
- Open connections (HTTP and WebSocket alike) are capped per client address and in total, per
  server process: past either cap a new connection gets 429 or 503 and is closed at once.
- ``X-Forwarded-For`` is believed only from the operator's ``CHORUS_TRUSTED_PROXIES`` (uvicorn
  trusts 127.0.0.1 by default, so any local client could pick its rate-limit address).
- SIGTERM, SIGINT and SIGHUP each stop the server gracefully, and then whatever ``chorus serve``
  started (the embedded PostgreSQL), with one worker or several.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors.multiprocess import Multiprocess

from infrastructure.settings import Settings

log = logging.getLogger("chorus.server")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class ServerLimits:
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    connections_per_address: int = 64  # 0: no cap
    max_connections: int = 4096  # 0: no cap

    @classmethod
    def of(cls, settings: Settings) -> ServerLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            connections_per_address=settings.connections_per_address,
            max_connections=_within_file_limit(settings.max_connections),
        )


# File descriptors kept for everything but client sockets: database and Redis connections,
# the log, the data directory.
FD_RESERVE = 256


def _within_file_limit(max_connections: int) -> int:
    """``max_connections``, lowered to what the process's file limit allows (raised to its
    hard limit first): past the limit accept() fails for everyone, the database's new
    connections included, so the server's own cap must come first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and soft != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return max_connections
    allowed = max(64, soft - FD_RESERVE)
    return allowed if max_connections == 0 else min(max_connections, allowed)


class ChorusConfig(uvicorn.Config):
    """uvicorn's configuration plus our limits; pickled to ``--workers`` processes whole."""

    def __init__(self, app: Any, *, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class _AddressSlots:
    """Open connections per client address in one server (one per uvicorn ServerState)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def take(self, address: str, cap: int) -> bool:
        count = self.counts.get(address, 0)
        if cap and count >= cap:
            return False
        self.counts[address] = count + 1
        return True

    def give_back(self, address: str) -> None:
        count = self.counts.get(address, 0) - 1
        if count > 0:
            self.counts[address] = count
        else:
            self.counts.pop(address, None)


# Protocols run on their server's event loop only: no lock needed.
_slots: weakref.WeakKeyDictionary[ServerState, _AddressSlots] = weakref.WeakKeyDictionary()


def _slots_of(state: ServerState) -> _AddressSlots:
    slots = _slots.get(state)
    if slots is None:
        slots = _slots[state] = _AddressSlots()
    return slots


def _raw_response(status: int, reason: str, detail: str, headers: dict[str, str]) -> bytes:
    body = (
        f'{{"status":{status},"title":"{reason}","detail":"{detail}"}}'.encode()  # ASCII only
    )
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/problem+json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head size cap, a request-read deadline and
    per-address / total connection caps."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: ServerLimits = getattr(config, "limits", ServerLimits())
        self._address: str | None = None  # holds a slot of this address while set
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # the bytes arriving now belong to a request head
        self._head_bytes = 0
        self._awaiting_request = True  # a request is being received (or is awaited)
        self._started = False  # some of that request has arrived

    # -- connection caps -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        if limits.max_connections and len(self.connections) > limits.max_connections:
            self._refuse(503, "Service Unavailable", "the server is at its connection limit")
            return
        address = self.client[0] if self.client else "unknown"
        if not _slots_of(self.server_state).take(address, limits.connections_per_address):
            self._refuse(
                429,
                "Too Many Requests",
                f"at most {limits.connections_per_address} open connections per address",
            )
            return
        self._address = address
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._give_back()
        super().connection_lost(exc)

    def _give_back(self) -> None:
        if self._address is not None:
            _slots_of(self.server_state).give_back(self._address)
            self._address = None

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        address, self._address = self._address, None
        super().handle_websocket_upgrade()
        # The socket's slot passes to the WebSocket protocol, which gives it back on close.
        protocol = self.transport.get_protocol()
        if isinstance(protocol, BoundedWebSocketProtocol):
            protocol.slot = (_slots_of(self.server_state), address)
        elif address is not None:
            _slots_of(self.server_state).give_back(address)

    # -- request head size -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"a request head may be at most {self.limits.max_header_bytes} bytes",
            )

    def on_message_begin(self) -> None:
        self._in_head, self._awaiting_request, self._started = True, True, True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    # -- request-read deadline -----------------------------------------------------------

    def on_message_complete(self) -> None:
        self._awaiting_request = self._started = False
        self._in_head, self._head_bytes = True, 0  # what follows is the next request's head
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy and not self._awaiting_request:
            return  # a whole request arrived and is being answered: not the client's delay
        if self._started:
            self._refuse(408, "Request Timeout", "the request took too long to arrive")
        else:
            self.transport.close()

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        headers = {"retry-after": "1"} if status in (429, 503) else {}
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_raw_response(status, reason, detail, headers))
        if self.cycle is not None:
            self.cycle.disconnected = True
        self.transport.close()


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """Gives back the connection's per-address slot it took over from the HTTP protocol."""

    slot: tuple[_AddressSlots, str | None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.slot is not None:
            slots, address = self.slot
            if address is not None:
                slots.give_back(address)
            self.slot = None
        super().connection_lost(exc)


def config(
    app: Any, settings: Settings, *, host: str, port: int, log_level: str, workers: int = 1
) -> ChorusConfig:
    """The one place ``chorus serve``'s uvicorn options are decided."""
    trusted = list(settings.trusted_proxies)
    return ChorusConfig(
        app,
        limits=ServerLimits.of(settings),
        host=host,
        port=port,
        log_level=log_level,
        # Our handler, our format (api/logs.py): uvicorn's loggers only hand lines to it.
        log_config=None,
        workers=workers,
        factory=isinstance(app, str),
        http=BoundedHttpToolsProtocol,
        ws=BoundedWebSocketProtocol,
        ws_per_message_deflate=settings.ws_compression,
        # Forwarded headers only from proxies the operator lists: uvicorn's default believes
        # any client on 127.0.0.1 (and then logs and rate-limits the forged address).
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        timeout_keep_alive=settings.keep_alive_s,
        # Not uvicorn's limit_concurrency: once that many connections are open it answers
        # every request 503, the admitted connections' too; max_connections refuses the new
        # connection instead (BoundedHttpToolsProtocol).
    )


class Stopped(BaseException):
    """A stop signal arrived (a BaseException, as KeyboardInterrupt, so no ``except
    Exception`` on the way swallows it)."""


@contextmanager
def stop_signals() -> Iterator[None]:
    """While inside: SIGTERM, SIGINT and SIGHUP raise Stopped in the main thread, so every
    ``finally`` runs (the embedded PostgreSQL is stopped); SIGTERM's default would end the
    process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def run(cfg: ChorusConfig) -> None:
    """Serves until a stop signal, then returns (inside ``stop_signals``)."""
    if cfg.workers > 1:
        sock = cfg.bind_socket()
        _Workers(cfg, sockets=[sock]).run()
        return
    server = uvicorn.Server(cfg)

    def stop(sig: int, frame: FrameType | None) -> None:
        _graceful(server, sig, frame)

    # uvicorn handles SIGINT and SIGTERM itself while it serves, then raises the signal again
    # for whatever handler was there before (ours: Stopped, once it has shut down). SIGHUP it
    # does not handle: the same graceful stop.
    previous = signal.signal(signal.SIGHUP, stop) if _main_thread() else None
    try:
        server.run()
    except Stopped:
        pass
    else:
        if not server.started:  # as uvicorn.run: it could not bind, or start-up failed
            raise SystemExit(STARTUP_FAILURE)
    finally:
        if previous is not None:
            signal.signal(signal.SIGHUP, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _graceful(server: uvicorn.Server, sig: int, frame: FrameType | None) -> None:
    if server.should_exit:
        raise Stopped(signal.Signals(sig).name)
    server.handle_exit(sig, frame)


class _Workers(Multiprocess):
    """uvicorn's supervisor of ``--workers N``, where SIGHUP stops (as it does with one
    worker) instead of restarting the workers."""

    def handle_hup(self) -> None:
        log.info("Received SIGHUP, exiting.")
        self.should_exit.set()
