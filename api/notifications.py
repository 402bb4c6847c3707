"""The notification inbox and notification preferences over HTTP (issue 19)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.connection import ASGIConnection
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response

from api.commands import Written, execute, reply
from api.errors import problems
from api.reads import (
    DEFAULT_LIMIT,
    check_limit,
    check_position,
    paged,
    parse_cursor,
    read_cursor_async,
)
from application.commands import Command, MarkNotificationsRead, SetNotificationPreference
from domain.errors import InvalidValue
from domain.notifications import MAX_READ_IDS
from projections import notifications as views
from projections.log import log_end
from projections.queries import run_async

Req = Request[str, Any, Any]
WRITE_ERRORS = problems(400, 401, 403, 404, 409, 413, 422, 429)
READ_ERRORS = problems(401, 422, 429)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Notification(msgspec.Struct):
    id: str
    kind: str
    # The notification's own position in the log (``up_to`` takes it; ``/ws`` frames carry it).
    position: int
    # The position of the event that caused it.
    cause_position: int
    workspace_id: str | None
    channel_id: str | None
    message_id: str | None
    # Who caused it (the author, the member who joined, who granted the role).
    from_id: str | None
    # The role granted (``role_granted``).
    detail: str | None
    created_at: datetime
    read: bool


class NotificationPage(msgspec.Struct):
    items: list[Notification]
    next: str | None


class UnreadCount(msgspec.Struct):
    unread: int
    mentions: int


class ReadBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_READ_IDS)] | None = None
    up_to: int | None = None


class PreferenceBody(msgspec.Struct, forbid_unknown_fields=True):
    level: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    muted_until: datetime | None = None
    unmute: bool = False


class Preference(msgspec.Struct):
    target: str
    target_id: str
    level: str
    muted_until: datetime | None


class PreferenceList(msgspec.Struct):
    items: list[Preference]


class NotificationController(Controller):
    path = "/api"
    tags = ["notifications"]

    @get("/notifications", operation_id="ListNotifications", responses=READ_ERRORS)
    async def list_notifications(
        self,
        request: Req,
        unread: FromQuery[bool] = False,
        limit: FromQuery[int] = DEFAULT_LIMIT,
        before: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> NotificationPage:
        """My notifications, newest first, about what I may read now (withdrawn ones left
        out); ``unread=true`` for unread ones only. Pass ``next`` back as ``before``."""
        check_limit(limit)
        before_position = parse_cursor(before, "before")
        async with read_cursor_async(request, min_position) as cur:
            rows = await run_async(
                cur,
                views.list_notifications(
                    request.user, unread=unread, before=before_position, limit=limit
                ),
            )
        page, next_cursor = paged(rows, limit, "position")
        return NotificationPage(
            items=[msgspec.convert(r, Notification) for r in page], next=next_cursor
        )

    @get(
        "/notifications/unread-count",
        operation_id="CountUnreadNotifications",
        responses=READ_ERRORS,
    )
    async def unread_count(
        self, request: Req, min_position: FromQuery[int | None] = None
    ) -> UnreadCount:
        """How many of my notifications are unread, and how many of those are mentions."""
        async with read_cursor_async(request, min_position) as cur:
            counts = await run_async(cur, views.unread_counts(request.user))
        return UnreadCount(**counts)

    @post(
        "/notifications/read",
        operation_id="MarkNotificationsRead",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def mark_read(self, request: Req, data: JSONBody[ReadBody]) -> Response[Written]:
        """Marks notifications read: ``{"ids": [...]}`` (my unread ones among them; others'
        and unknown ids change nothing) or ``{"up_to": position}`` (every notification at or
        before it, also ones the read models have not shown yet). ``position`` is null when
        nothing changed."""
        cmd = await checked_mark_read(
            request, request.user, MarkNotificationsRead(ids=data.ids, up_to=data.up_to)
        )
        if cmd is None:
            return Response(Written(position=None), status_code=200)
        return reply(await execute(request, cmd, request.user), Written)

    @get(
        "/notification-preferences",
        operation_id="ListNotificationPreferences",
        responses=READ_ERRORS,
    )
    async def preferences(
        self, request: Req, min_position: FromQuery[int | None] = None
    ) -> PreferenceList:
        """My settings per workspace and channel (those without one: everything notifies)."""
        async with read_cursor_async(request, min_position) as cur:
            rows = await run_async(cur, views.list_preferences(request.user))
        return PreferenceList(items=[msgspec.convert(r, Preference) for r in rows])

    @put(
        "/notification-preferences/{target:str}/{target_id:str}",
        operation_id="SetNotificationPreference",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def set_preference(
        self,
        request: Req,
        target: FromPath[str],
        target_id: FromPath[str],
        data: JSONBody[PreferenceBody],
    ) -> Response[Written]:
        """``target``: ``workspace`` or ``channel`` (a channel's setting wins over its
        workspace's; a direct channel takes only a mute). ``level``: all / mentions /
        nothing / default; ``muted_until`` (a time with its zone) or ``unmute``. Only for a
        workspace I belong to or a channel I can read (404 otherwise, as for an unknown id)."""
        cmd = SetNotificationPreference(
            target=target,
            target_id=target_id,
            level=data.level,
            muted_until=None if data.muted_until is None else data.muted_until.isoformat(),
            unmute=data.unmute,
        )
        return reply(await execute(request, cmd, request.user), Written)


async def checked_mark_read(
    connection: ASGIConnection[Any, Any, Any, Any], user: str, cmd: MarkNotificationsRead
) -> MarkNotificationsRead | None:
    """The one check of a ``MarkNotificationsRead`` from a client, over HTTP and ``/ws``
    alike: ``ids`` keeps the caller's own unread notifications (another user's id, an
    unknown one or one that is no id changes nothing: the same answer, so ids cannot be
    probed), ``up_to`` must not be past the log's end. None when nothing is left to mark.
    The inbox takes ids as given (it holds no list of its notifications), so without this
    a client could append ids that are not theirs to their inbox's log."""
    if (cmd.ids is None) == (cmd.up_to is None):
        raise InvalidValue("give ids or up_to")
    if cmd.ids is not None:
        if not cmd.ids or len(cmd.ids) > MAX_READ_IDS:
            raise InvalidValue(f"give 1 to {MAX_READ_IDS} notification ids")
        async with read_cursor_async(connection, None) as cur:
            ids = await run_async(cur, views.unread_ids(user, _uuids(cmd.ids)))
        return MarkNotificationsRead(ids=ids) if ids else None
    check_position("up_to", cmd.up_to)
    async with read_cursor_async(connection, None) as cur:
        if (cmd.up_to or 0) > await run_async(cur, log_end()):
            raise InvalidValue("up_to is past the last event")
    return cmd


ClientCheck = Callable[[ASGIConnection[Any, Any, Any, Any], str, Any], Awaitable[Command | None]]
# Client commands checked against the read models before they run, by type: /ws runs the
# same check as the route (api/realtime/socket.py).
CLIENT_CHECKS: dict[type[Command], ClientCheck] = {MarkNotificationsRead: checked_mark_read}


def _uuids(ids: list[str]) -> list[str]:
    """Ids that are not notification ids are nobody's: left out (the answer is the same
    as for another user's id)."""
    out = []
    for value in ids:
        try:
            out.append(str(UUID(value)))
        except ValueError:
            continue
    return out
