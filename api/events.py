"""The event log as envelopes, filtered to what the reader may see."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromQuery

from api.commands import services_of
from api.envelopes import Envelope, envelope
from api.errors import problems
from api.reads import DEFAULT_LIMIT, check_limit, check_position, read_cursor_async
from domain.base import as_uuid
from domain.errors import InvalidValue
from projections.log import visibility_position, visible_events
from projections.queries import run_async
from projections.redaction import redacted

# Positions one page looks through, at most, when no stream is named: a reader who may see
# few events of a long log pages through it in steps of this (with fewer items, or none, and
# a ``next``), so no request makes PostgreSQL scan the whole log. A named stream is read
# through its own index.
SCAN_SPAN = 20_000


class EventPage(msgspec.Struct):
    items: list[Envelope]
    next: str | None


class EventController(Controller):
    path = "/api/events"
    tags = ["events"]

    @get("/", operation_id="ListEvents", responses=problems(401, 422, 429))
    async def list_events(
        self,
        request: Request[str, Any, Any],
        after: FromQuery[int] = 0,
        limit: FromQuery[int] = DEFAULT_LIMIT,
        stream: FromQuery[str | None] = None,
        type: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> EventPage:
        """Events in position order after ``after``: every stream of the workspaces where I
        hold ``view_audit``, otherwise only the streams I may view, with deleted or replaced
        content withheld (``data.redacted`` names the fields). Pass ``next`` back as
        ``after`` (a page may hold fewer than ``limit`` items, even none, and still have a
        ``next``: it looked through as much of the log as one page may)."""
        check_limit(limit)
        check_position("after", after)
        if type is not None and not (type.isalnum() and len(type) <= 64):
            raise InvalidValue("type must be an event type name such as MessageSent")
        stream_id = None if stream is None else str(_stream(stream))
        async with read_cursor_async(request, min_position) as cur:
            bound = await run_async(cur, visibility_position())
            upto = None if stream_id is not None else min(bound, after + SCAN_SPAN)
            events = await run_async(
                cur,
                visible_events(
                    request.user,
                    services_of(request).catalogue.kinds,
                    after=after,
                    limit=limit,
                    stream=stream_id,
                    type_name=type,
                    upto=upto,
                ),
            )
            events = await run_async(cur, redacted(request.user, events))
        items = [envelope(e) for e in events]
        if len(items) == limit:
            return EventPage(items=items, next=str(items[-1].position))
        return EventPage(items=items, next=str(upto) if upto is not None and upto < bound else None)


def _stream(value: str) -> Any:
    try:
        return as_uuid(value)
    except Exception:
        raise InvalidValue("stream must be a stream id") from None
