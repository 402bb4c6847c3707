"""The server's log: one format for everything in it (the app's loggers, uvicorn's access
log and errors), JSON lines for machines or plain lines for a terminal (``CHORUS_LOG_FORMAT``:
``auto`` picks plain on a terminal, JSON otherwise).

Every line written while a request or socket is served carries its ``request_id`` (the
client's ``X-Request-ID`` when it is a sane one, else one made up, and echoed back either
way), the ``user_id`` once authenticated, and, for a command, its ``command_id`` and the
``position`` it was stored at: the access line of ``POST /api/...`` says which events it
wrote. Secrets are redacted on the way out, whatever logger wrote them (api/log_redaction.py).
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import IO

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from pythonjsonlogger.json import JsonFormatter

from api.log_redaction import RedactSecrets
from infrastructure import tracing

log = logging.getLogger("chorus.requests")

REQUEST_ID: ContextVar[str | None] = ContextVar("chorus_request_id", default=None)
USER_ID: ContextVar[str | None] = ContextVar("chorus_user_id", default=None)
COMMAND_ID: ContextVar[str | None] = ContextVar("chorus_command_id", default=None)
POSITION: ContextVar[int | None] = ContextVar("chorus_position", default=None)
_CONTEXT: dict[str, ContextVar[str | None] | ContextVar[int | None]] = {
    "request_id": REQUEST_ID,
    "user_id": USER_ID,
    "command_id": COMMAND_ID,
    "position": POSITION,
}

# A client's request id is kept only if it is short and plain: it is written into every
# line, and a log is no place for a client's control characters or kilobytes.
_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
HEADER = "x-request-id"
FORMATS = ("auto", "json", "text")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class WithContext(logging.Filter):
    """Adds the request's ids to each record (None fields are left out of JSON lines), and
    the parts of uvicorn's access line as fields of their own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            value = var.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        # Tracing on: the trace this line was written in, to find it from a failing
        # request's line.
        trace_id = tracing.current_trace_id()
        if trace_id is not None and not hasattr(record, "trace_id"):
            record.trace_id = trace_id
        # uvicorn's copy of the message with terminal colours: noise in a JSON line.
        record.__dict__.pop("color_message", None)
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, _, status = args
            record.client, record.method = client, method
            record.path, record.status = path, status
        return True


class _Text(logging.Formatter):
    """Plain lines, with the request id in brackets when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [{request_id}]" if request_id else line


def log_handler(fmt: str, stream: IO[str]) -> logging.Handler:
    """The server's handler: ``fmt`` "json" or "text", secrets redacted, ids added."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",  # ISO 8601, UTC
            )
        )
    else:
        handler.setFormatter(_Text(TEXT))
    handler.addFilter(RedactSecrets())
    handler.addFilter(WithContext())
    return handler


def configure(fmt: str, level: str = "info") -> None:
    """One handler on the root logger, on stderr; uvicorn's loggers hand their lines to it
    (``log_config=None`` in api/server.py). Redaction and context on the handler: every
    logger's lines pass them."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = log_handler(fmt, sys.stderr)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


class RequestIds:
    """ASGI middleware, outermost of a route's: gives every HTTP request and WebSocket its
    id and logs a request slower than ``slow_s``; ``echo_request_id`` echoes the id."""

    def __init__(self, app: ASGIApp, slow_s: float) -> None:
        self.app = app
        self.slow_s = slow_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            await self.app(scope, receive, send)
            return
        request_id = _request_id_of(scope)
        REQUEST_ID.set(request_id)
        tracing.set_attribute("chorus.request_id", request_id)
        started = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            took = time.monotonic() - started
            if scope["type"] == ScopeType.HTTP and self.slow_s and took > self.slow_s:
                log.warning(
                    "slow request: %s %s took %.3f s",
                    scope.get("method"),
                    scope.get("path"),
                    took,
                    extra={"duration_s": round(took, 3), "path": scope.get("path")},
                )


async def echo_request_id(message: Message, scope: Scope) -> None:
    """The app's ``before_send`` hook: every HTTP response carries ``X-Request-ID``, also
    those made outside a route's middleware (the authentication middleware's 401 and the
    rate limiter's 429 are answered by the app's exception handling, a 404 or 405 by the
    router), which ``RequestIds`` never sees the response of."""
    if message["type"] != "http.response.start":
        return
    request_id = REQUEST_ID.get()
    if request_id is None:
        # No route's middleware ran: the id is made here, for the access line too.
        request_id = _request_id_of(scope)
        REQUEST_ID.set(request_id)
    MutableScopeHeaders.from_message(message)[HEADER] = request_id


def _request_id_of(scope: Scope) -> str:
    """The client's id when it is a sane one, else a new one."""
    given = _header(scope, HEADER)
    return given if given and _SANE_ID.fullmatch(given) else uuid.uuid4().hex


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            try:
                return bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


def note_command(command_id: str | None, position: int | None) -> None:
    """What a command stored, for the lines its request writes next (the access line)."""
    if command_id is not None:
        COMMAND_ID.set(command_id)
    if position is not None:
        POSITION.set(position)


def note_user(user_id: str) -> None:
    USER_ID.set(user_id)
