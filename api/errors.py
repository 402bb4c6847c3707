"""Every error leaves as ``application/problem+json`` (RFC 9457), never a 500 for bad input."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import eventsourcing.persistence
import msgspec
import psycopg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from application.chorus import IdempotencyKeyReused
from domain.errors import Conflict, DomainError, Gone, InvalidValue, NotFound, PermissionDenied
from infrastructure.refresh_tokens import RefreshTokenError
from infrastructure.tokens import InvalidToken

log = logging.getLogger("chorus.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem document."""

    status: int
    title: str
    detail: str
    type: str = "about:blank"
    errors: list[dict[str, Any]] | None = msgspec.field(default=None)


class ServiceUnavailable(Exception):
    """A dependency (the database, a read model) is not answering in time."""


class ReadPositionInFuture(InvalidValue):
    """``min_position`` names a position no event has yet."""


_DOMAIN_STATUS: list[tuple[type[DomainError], int]] = [
    (IdempotencyKeyReused, 422),
    (NotFound, 404),
    (PermissionDenied, 403),
    (InvalidValue, 422),
    (Gone, 410),
    (Conflict, 409),
]


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[Any]:
    body = Problem(status=status, title=HTTPStatus(status).phrase, detail=detail)
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def status_of(exc: DomainError) -> int:
    """The contract's status for a refused command (HTTP and WebSocket alike)."""
    for kind, status in _DOMAIN_STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def _domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    return problem(status_of(exc), str(exc))


def _unauthorized(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return problem(401, detail or "authentication required", {"WWW-Authenticate": "Bearer"})


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    messages = [str(e.get("message", "")) for e in (exc.extra or []) if isinstance(e, dict)] or [
        exc.detail
    ]
    malformed = any("malformed" in m.lower() or "truncated" in m.lower() for m in messages)
    status = 400 if malformed else 422
    body = Problem(
        status=status,
        title=HTTPStatus(status).phrase,
        detail="; ".join(m for m in messages if m) or exc.detail,
        errors=[e for e in (exc.extra or []) if isinstance(e, dict)] or None,
    )
    return Response(
        content=msgspec.json.encode(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE
    )


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return problem(exc.status_code, exc.detail, dict(exc.headers or {}))


def _unavailable(_: Request[Any, Any, Any], exc: ServiceUnavailable) -> Response[Any]:
    return problem(503, str(exc), {"Retry-After": "1"})


def _database_down(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning("the database is not answering: %s", exc)
    return problem(503, "the database is not answering; try again", {"Retry-After": "1"})


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: _domain_error,
    ValidationException: _validation,
    NotAuthorizedException: _unauthorized,
    InvalidToken: _unauthorized,
    RefreshTokenError: _unauthorized,
    HTTPException: _http,
    ServiceUnavailable: _unavailable,
    # A lost or refused connection (PostgreSQL restarting, the pool exhausted): a retry may
    # well succeed, so 503, not 500.
    psycopg.OperationalError: _database_down,
    eventsourcing.persistence.OperationalError: _database_down,
    eventsourcing.persistence.InterfaceError: _database_down,
    Exception: _internal,
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI declarations of the problem responses a route can give."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=HTTPStatus(status).phrase,
            media_type=PROBLEM_MEDIA_TYPE,
            examples=[
                Example(
                    summary=HTTPStatus(status).phrase,
                    value={"status": status, "title": HTTPStatus(status).phrase, "detail": "..."},
                )
            ],
        )
        for status in statuses
    }


__all__ = ["EXCEPTION_HANDLERS", "MediaType", "Problem", "problem", "problems"]
