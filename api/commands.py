"""Running a command from an HTTP request: idempotency key, actor, read-your-writes."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import anyio.to_thread
import msgspec
from litestar.connection import ASGIConnection
from litestar.response import Response

from api.bootstrap import Services
from api.logs import note_command
from application.chorus import CommandResult
from application.commands import Command
from domain.base import Cause
from domain.errors import DomainError, InvalidValue
from domain.rules import check_every_text, check_text
from infrastructure import metrics, tracing

MAX_IDEMPOTENCY_KEY = 128
T = TypeVar("T")


class BadIdempotencyKey(InvalidValue):
    pass


class Written(msgspec.Struct):
    """A write that appended events at ``position`` (None when nothing changed)."""

    position: int | None


class Created(msgspec.Struct):
    id: str
    position: int | None


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state.services
    return services


async def execute(
    connection: ASGIConnection[Any, Any, Any, Any],
    command: Command,
    actor: str | None,
) -> CommandResult:
    """Runs a command as ``actor`` (the signed-in user; None only for sign-up); the
    ``Idempotency-Key`` header makes retries safe."""
    key = connection.headers.get("idempotency-key")
    if key is not None:
        if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise BadIdempotencyKey(
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
            )
        check_text(key, field="Idempotency-Key")
    services = services_of(connection)
    result = await run_command(services, command, Cause(actor_id=actor, command_id=key))
    if actor is not None and result.position is not None:
        services.last_writes.record(actor, result.position)
    return result


async def run_command(services: Services, command: Command, cause: Cause) -> CommandResult:
    """``Chorus.execute`` from the event loop. A command the group committer takes is queued
    and awaited, holding no thread while it waits for its batch's commit; the others
    (group commit off, or a password to hash) run in a worker thread.

    Every command a client sends passes here (HTTP and ``/ws``): here every text in it, and
    its command id, meet the character rule, before anything is looked up or stored."""
    check_every_text(command, field=type(command).__name__)
    if cause.command_id is not None:
        check_text(cause.command_id, field="command id")
    kind = type(command).__name__
    try:
        # Tracing on: a span per command type; the commit's span (in the writer's thread, or
        # the worker's) is its child, and its events carry the trace on.
        with tracing.span(f"chorus.command {kind}", attributes={"chorus.command": kind}):
            committer = services.app.group_committer
            if committer is not None and committer.takes(command):
                result = await asyncio.wrap_future(committer.submit(command, cause))
            else:
                result = await anyio.to_thread.run_sync(services.app.execute, command, cause)
    except DomainError:
        metrics.COMMANDS.labels(kind, "refused").inc()
        raise
    except Exception:
        metrics.COMMANDS.labels(kind, "failed").inc()
        raise
    metrics.COMMANDS.labels(kind, "accepted").inc()
    note_command(cause.command_id, result.position)
    return result


def reply(result: CommandResult, body_type: type[T]) -> Response[T]:
    return Response(msgspec.convert(result.body, body_type), status_code=result.status)
