"""Read markers and the direct-message list over HTTP (issue 19)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response

from api.commands import Written, execute, reply
from api.errors import problems
from api.reads import DEFAULT_LIMIT, MAX_POSITION, check_limit, parse_cursor, read_cursor_async
from application.commands import (
    LeaveGroupDirectMessage,
    MarkChannelRead,
    OpenGroupDirectMessage,
    SetReadReceipts,
)
from domain.base import as_uuid
from domain.channels import MAX_GROUP
from domain.errors import InvalidValue, NotAMember, NotFound
from projections import channels as channel_views
from projections import read_state
from projections.log import log_end
from projections.queries import Query, run_async

Req = Request[str, Any, Any]
WRITE_ERRORS = problems(400, 401, 403, 404, 409, 413, 422, 429)
READ_ERRORS = problems(401, 404, 422, 429)

MessageRef = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Position = Annotated[int, msgspec.Meta(ge=1, le=MAX_POSITION)]


class ReadBody(msgspec.Struct, forbid_unknown_fields=True):
    # A message id of the channel, or a position: the channel's newest message at or before it.
    up_to: MessageRef | Position


class ReadMarker(msgspec.Struct):
    # Of the event that moved the marker; None when it did not move.
    position: int | None
    moved: bool
    # The marker now: the timeline position read up to (None: nothing read yet).
    last_read: int | None


class ReceiptsSetting(msgspec.Struct, forbid_unknown_fields=True):
    send: bool


class ReceiptsSettingWritten(msgspec.Struct):
    position: int | None
    send: bool


class Receipt(msgspec.Struct):
    user_id: str
    last_read: int
    message_id: str
    read_at: datetime


class ReceiptList(msgspec.Struct):
    items: list[Receipt]


class DirectParty(msgspec.Struct):
    id: str
    username: str | None
    display_name: str | None


class LastMessage(msgspec.Struct):
    id: str
    author_id: str
    created_at: datetime
    deleted: bool
    # None once deleted.
    text: str | None
    position: int


class DirectChannelView(msgspec.Struct):
    channel_id: str
    created_at: datetime
    # The other person of a two-person channel (null in a group).
    other: DirectParty | None
    # Every other member (a group direct message has up to 9).
    others: list[DirectParty]
    last_message: LastMessage | None
    unread_count: int
    mention_count: int
    last_read: int | None


class GroupBody(msgspec.Struct, forbid_unknown_fields=True):
    # The others (the caller is in it): 2 to 9.
    user_ids: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=MAX_GROUP - 1)
    ]


class GroupChannel(msgspec.Struct):
    channel_id: str
    position: int | None


class DirectChannelPage(msgspec.Struct):
    items: list[DirectChannelView]
    next: str | None


class ReadStateController(Controller):
    path = "/api"
    tags = ["read state"]

    @put(
        "/channels/{ch:str}/read",
        operation_id="MarkChannelRead",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def mark_read(
        self, request: Req, ch: FromPath[str], data: JSONBody[ReadBody]
    ) -> Response[ReadMarker]:
        """Moves my read marker in a channel I can read up to a message of it (its id), or
        up to its newest message at or before a position. Markers only move forward: an
        older one records nothing (``moved`` false, ``last_read`` where it stays)."""
        channel_id = str(as_uuid(ch))
        async with read_cursor_async(request, None) as cur:
            visible = await run_async(cur, channel_views.visible_channel(channel_id, request.user))
            if visible is None:
                raise NotAMember("unknown channel")
            target = await run_async(cur, _target(channel_id, data.up_to))
            head = await run_async(cur, log_end())
        wait = head if isinstance(data.up_to, str) else min(head, data.up_to)
        if target is None or (isinstance(data.up_to, int) and target[1] < wait):
            # A message (or one at or before the position) another writer has just stored:
            # looked for once the read models reach it, or the log as it is now.
            async with read_cursor_async(request, wait) as cur:
                target = await run_async(cur, _target(channel_id, data.up_to))
        if target is None:
            if isinstance(data.up_to, str):
                raise NotFound("unknown message")
            async with read_cursor_async(request, None) as cur:
                counts = await run_async(cur, read_state.channel_counts(request.user, [channel_id]))
            return Response(ReadMarker(None, False, counts[channel_id]["last_read"]))
        message_id, position = target
        cmd = MarkChannelRead(channel_id=channel_id, message_id=message_id, position=position)
        return reply(await execute(request, cmd, request.user), ReadMarker)

    @get("/channels/{ch:str}/receipts", operation_id="ListReadReceipts", responses=READ_ERRORS)
    async def receipts(
        self, request: Req, ch: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> ReceiptList:
        """How far the other members of a direct or small private channel I can read have
        read (those who send read receipts)."""
        async with read_cursor_async(request, min_position) as cur:
            channel = await run_async(
                cur, channel_views.visible_channel(str(as_uuid(ch)), request.user)
            )
            if channel is None:
                raise NotAMember("unknown channel")
            rows = await run_async(cur, read_state.channel_receipts(channel, request.user))
        if rows is None:
            raise InvalidValue(
                "read receipts are shown in direct channels and private channels of at most"
                f" {read_state.MAX_RECEIPT_MEMBERS} members"
            )
        return ReceiptList(items=[msgspec.convert(r, Receipt) for r in rows])

    @get("/users/me/read-receipts", operation_id="GetReadReceiptsSetting", responses=READ_ERRORS)
    async def receipts_setting(
        self, request: Req, min_position: FromQuery[int | None] = None
    ) -> ReceiptsSetting:
        """Whether I send read receipts (by default I do)."""
        async with read_cursor_async(request, min_position) as cur:
            send = await run_async(cur, read_state.sends_receipts(request.user))
        return ReceiptsSetting(send=send)

    @put(
        "/users/me/read-receipts",
        operation_id="SetReadReceipts",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def set_receipts(
        self, request: Req, data: JSONBody[ReceiptsSetting]
    ) -> Response[ReceiptsSettingWritten]:
        """Whether the members of my direct and small private channels see how far I have
        read (``position`` null when it already was so)."""
        cmd = SetReadReceipts(send=data.send)
        return reply(await execute(request, cmd, request.user), ReceiptsSettingWritten)

    @get("/dms", operation_id="ListDirectMessages", responses=READ_ERRORS)
    async def list_dms(
        self,
        request: Req,
        limit: FromQuery[int] = DEFAULT_LIMIT,
        before: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> DirectChannelPage:
        """My direct channels, the most recently active first (those without a message
        last), each with the other person, the newest message and my counts. Pass ``next``
        back as ``before`` for the next page."""
        check_limit(limit)
        cursor = _dm_cursor(before)
        async with read_cursor_async(request, min_position) as cur:
            items, next_cursor = await run_async(
                cur, read_state.list_direct_channels(request.user, limit=limit, before=cursor)
            )
        return DirectChannelPage(
            items=[msgspec.convert(i, DirectChannelView) for i in items],
            next=None if next_cursor is None else f"{next_cursor[0]}.{next_cursor[1]}",
        )

    @post("/group-dms", operation_id="OpenGroupDirectMessage", responses=WRITE_ERRORS)
    async def open_group(self, request: Req, data: JSONBody[GroupBody]) -> Response[GroupChannel]:
        """A new group direct message with 2 to 9 others, each sharing a workspace with me
        (one who does not, or does not exist, is a 404 "unknown user"; naming someone twice
        or myself, or too few or too many, a 422). Messages, read markers and notifications
        are as in a two-person one."""
        # The workspaces shared are looked up in the read models: they are awaited up to
        # the log's end, so that a workspace someone just joined counts.
        async with read_cursor_async(request, None) as cur:
            head = await run_async(cur, log_end())
        async with read_cursor_async(request, head):
            pass
        cmd = OpenGroupDirectMessage(user_ids=data.user_ids)
        return reply(await execute(request, cmd, request.user), GroupChannel)

    @post(
        "/group-dms/{channel_id:str}/leave",
        operation_id="LeaveGroupDirectMessage",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def leave_group(self, request: Req, channel_id: FromPath[str]) -> Response[Written]:
        """I leave a group direct message: it is gone from my list, I read and hear nothing
        more of it (404 for one I am not in, or a two-person one, as for an unknown id)."""
        cmd = LeaveGroupDirectMessage(channel_id=channel_id)
        return reply(await execute(request, cmd, request.user), Written)


def _target(channel_id: str, up_to: str | int) -> Query[tuple[str, int] | None]:
    if isinstance(up_to, int):
        return (yield from read_state.newest_at_or_before(channel_id, up_to))
    message_id = str(as_uuid(up_to))
    position = yield from read_state.message_position(channel_id, message_id)
    return None if position is None else (message_id, position)


def _dm_cursor(value: str | None) -> tuple[int, str] | None:
    if value is None or value == "":
        return None
    activity, _, channel = value.partition(".")
    try:
        return (parse_cursor(activity, "before") or 0, str(as_uuid(channel)))
    except NotFound:
        raise InvalidValue("before is not a valid cursor") from None
