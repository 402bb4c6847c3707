"""The log read a page at a time, filtered by position, stream, event type and actor (the
auditor's ``chorus events``)."""

from __future__ import annotations

from uuid import UUID

from projections.log import SELECT_EVENTS
from projections.queries import Query, Rows, Statement


def events_page(
    after: int,
    limit: int,
    *,
    until: int | None = None,
    stream: UUID | None = None,
    type: str | None = None,
    actor: str | None = None,
) -> Query[Rows]:
    """Up to ``limit`` stored events after position ``after`` (and up to ``until``) that
    match every filter given, in position order; rows as ``projections.log.to_log_event``
    reads them."""
    where = ["e.notification_id > %(after)s"]
    if until is not None:
        where.append("e.notification_id <= %(until)s")
    if stream is not None:
        where.append("e.originator_id = %(stream)s")
    if type is not None:
        where.append("right(e.topic, length(%(type)s) + 1) = '.' || %(type)s")
    if actor is not None:
        where.append("convert_from(e.state, 'UTF8')::jsonb ->> 'actor_id' = %(actor)s")
    rows = yield Statement(
        f"{SELECT_EVENTS} WHERE {' AND '.join(where)} ORDER BY e.notification_id LIMIT %(limit)s",
        {
            "after": after,
            "until": until,
            "stream": stream,
            "type": type,
            "actor": actor,
            "limit": limit,
        },
    )
    return rows
