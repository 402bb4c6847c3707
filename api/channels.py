"""Channels, direct messages and message timelines over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.response import Response

from api.commands import Created, Written, execute, reply
from api.errors import problems
from api.reads import DEFAULT_LIMIT, check_limit, parse_cursor, read_cursor_async
from application.commands import (
    AddChannelMember,
    AddReaction,
    ArchiveChannel,
    ChangeChannel,
    CreateChannel,
    DeleteChannel,
    DeleteMessage,
    EditMessage,
    OpenDirectMessage,
    RemoveChannelMember,
    RemoveReaction,
    SendMessage,
    UnarchiveChannel,
)
from domain.base import as_uuid
from domain.errors import InvalidValue, NotAMember, NotFound
from domain.rules import MAX_CHANNEL_NAME, MAX_MESSAGE_TEXT, MAX_TOPIC
from projections import channels as channel_views
from projections import read_state, timelines
from projections.log import log_end
from projections.queries import run_async
from projections.workspaces import get_workspace, shared_workspaces

Req = Request[str, Any, Any]
WRITE_ERRORS = problems(400, 401, 403, 404, 409, 410, 413, 422, 429)
READ_ERRORS = problems(401, 404, 422, 429)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# Limits on raw input are looser than the domain's (which strips white space first), so
# the domain gives the precise message; these only stop absurd sizes early.
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MESSAGE_TEXT * 2)]


class CreateChannelBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHANNEL_NAME * 2)]
    private: bool = False
    topic: Annotated[str, msgspec.Meta(max_length=MAX_TOPIC * 2)] | None = None


class ChangeChannelBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHANNEL_NAME * 2)] | None = None
    topic: Annotated[str, msgspec.Meta(max_length=MAX_TOPIC * 2)] | None = None


class UserRef(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Id


class DirectMessageBody(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Id
    # The workspace the two share (found when left out).
    workspace_id: Id | None = None


class SendBody(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    reply_to: Id | None = None


class EditBody(msgspec.Struct, forbid_unknown_fields=True):
    text: Text


class ChannelView(msgspec.Struct):
    id: str
    workspace_id: str | None
    kind: str
    name: str
    private: bool
    topic: str
    archived: bool
    created_at: datetime


class ListedChannel(ChannelView):
    # For the caller (issue 19): messages after their read marker (their own and deleted
    # ones aside), those that mention them, and the marker (a timeline position; None
    # before the first read).
    unread_count: int = 0
    mention_count: int = 0
    last_read: int | None = None


class ChannelList(msgspec.Struct):
    items: list[ListedChannel]
    next: str | None = None


class DirectChannel(msgspec.Struct):
    channel_id: str
    position: int | None


class MessageView(msgspec.Struct):
    id: str
    channel_id: str
    author_id: str
    text: str
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    reactions: dict[str, list[str]]
    reply_to: str | None
    reply_count: int
    mentions: list[str]
    version: int
    # Issue 19: the newest reply left (None: no reply), and the message's timeline position
    # (what ``PUT /api/channels/{id}/read`` and the cursors take).
    last_reply_at: datetime | None = None
    position: int = 0


class ChannelMember(msgspec.Struct):
    user_id: str
    username: str | None
    display_name: str | None


class ChannelMemberList(msgspec.Struct):
    items: list[ChannelMember]


class MessagePage(msgspec.Struct):
    items: list[MessageView]
    next: str | None


class ChannelController(Controller):
    path = "/api"
    tags = ["channels"]

    @post(
        "/workspaces/{ws:str}/channels",
        operation_id="CreateChannel",
        responses=WRITE_ERRORS,
    )
    async def create(
        self, request: Req, ws: FromPath[str], data: JSONBody[CreateChannelBody]
    ) -> Response[Created]:
        """Creates a channel (needs ``manage_channels``); a private one starts with its creator."""
        cmd = CreateChannel(workspace_id=ws, name=data.name, private=data.private, topic=data.topic)
        return reply(await execute(request, cmd, request.user), Created)

    @get("/workspaces/{ws:str}/channels", operation_id="ListChannels", responses=READ_ERRORS)
    async def list_channels(
        self, request: Req, ws: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> ChannelList:
        """The workspace's channels visible to me."""
        async with read_cursor_async(request, min_position) as cur:
            workspace = await run_async(cur, get_workspace(str(as_uuid(ws)), request.user))
            if workspace is None or not workspace["is_member"]:
                raise NotAMember("unknown workspace")
            rows = await run_async(
                cur, channel_views.list_visible_channels(str(as_uuid(ws)), request.user)
            )
            counts = await run_async(
                cur, read_state.channel_counts(request.user, [r["id"] for r in rows])
            )
        return ChannelList(
            items=[msgspec.convert({**r, **counts[r["id"]]}, ListedChannel) for r in rows]
        )

    @get("/channels/{ch:str}", operation_id="GetChannel", responses=READ_ERRORS)
    async def show(
        self, request: Req, ch: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> ChannelView:
        async with read_cursor_async(request, min_position) as cur:
            row = await run_async(
                cur, channel_views.visible_channel(str(as_uuid(ch)), request.user)
            )
        if row is None:
            raise NotAMember("unknown channel")
        return msgspec.convert(row, ChannelView)

    @patch(
        "/channels/{ch:str}",
        operation_id="ChangeChannel",
        responses=WRITE_ERRORS,
    )
    async def change(
        self, request: Req, ch: FromPath[str], data: JSONBody[ChangeChannelBody]
    ) -> Response[Written]:
        """Renames a channel or changes its topic (needs ``manage_channels``)."""
        cmd = ChangeChannel(channel_id=ch, name=data.name, topic=data.topic)
        return reply(await execute(request, cmd, request.user), Written)

    @post(
        "/channels/{ch:str}/archive",
        operation_id="ArchiveChannel",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def archive(self, request: Req, ch: FromPath[str]) -> Response[Written]:
        """Archives a channel: readable, but it takes no new messages."""
        return reply(await execute(request, ArchiveChannel(channel_id=ch), request.user), Written)

    @post(
        "/channels/{ch:str}/unarchive",
        operation_id="UnarchiveChannel",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def unarchive(self, request: Req, ch: FromPath[str]) -> Response[Written]:
        return reply(await execute(request, UnarchiveChannel(channel_id=ch), request.user), Written)

    @delete(
        "/channels/{ch:str}",
        operation_id="DeleteChannel",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def delete_channel(self, request: Req, ch: FromPath[str]) -> Response[Written]:
        """Deletes a channel (needs ``manage_channels``), not only archives it: nobody reads
        or posts in it any more, ``/ws`` subscriptions to it end; the log keeps its messages
        for the workspace's auditors."""
        return reply(await execute(request, DeleteChannel(channel_id=ch), request.user), Written)

    @post(
        "/channels/{ch:str}/members",
        operation_id="AddChannelMember",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def add_member(
        self, request: Req, ch: FromPath[str], data: JSONBody[UserRef]
    ) -> Response[Written]:
        """Adds a workspace member to a private channel."""
        return reply(
            await execute(
                request, AddChannelMember(channel_id=ch, user_id=data.user_id), request.user
            ),
            Written,
        )

    @get("/channels/{ch:str}/members", operation_id="ListChannelMembers", responses=READ_ERRORS)
    async def members(
        self, request: Req, ch: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> ChannelMemberList:
        """Who is in the channel: a private or direct channel's members, a public channel's
        readers. For those who can read the channel and the workspace's auditors."""
        async with read_cursor_async(request, min_position) as cur:
            rows = await run_async(
                cur, channel_views.channel_members(str(as_uuid(ch)), request.user)
            )
        if rows is None:
            raise NotAMember("unknown channel")
        return ChannelMemberList(items=[msgspec.convert(r, ChannelMember) for r in rows])

    @delete(
        "/channels/{ch:str}/members/{user:str}",
        operation_id="RemoveChannelMember",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def remove_member(
        self, request: Req, ch: FromPath[str], user: FromPath[str]
    ) -> Response[Written]:
        return reply(
            await execute(request, RemoveChannelMember(channel_id=ch, user_id=user), request.user),
            Written,
        )

    @post("/dms", operation_id="OpenDirectMessage", responses=WRITE_ERRORS)
    async def open_dm(
        self, request: Req, data: JSONBody[DirectMessageBody]
    ) -> Response[DirectChannel]:
        """The private two-person channel with someone who shares a workspace with me:
        created once, the same id after."""
        workspace_id = data.workspace_id
        if workspace_id is None:
            # Found here, where the read models can be awaited for my own last write (a
            # workspace I just joined): the command then names it, and the application
            # checks it against the workspace itself.
            other = str(as_uuid(data.user_id))
            async with read_cursor_async(request, None) as cur:
                shared = await run_async(cur, shared_workspaces(request.user, other))
                head = None if shared else await run_async(cur, log_end())
            if head is not None:
                # Or a workspace the other person just joined (their write, not mine):
                # looked for again once the read models reach the log as it is now.
                async with read_cursor_async(request, head) as cur:
                    shared = await run_async(cur, shared_workspaces(request.user, other))
            workspace_id = shared[0] if shared else None
        cmd = OpenDirectMessage(user_id=data.user_id, workspace_id=workspace_id)
        return reply(await execute(request, cmd, request.user), DirectChannel)

    # -- messages --------------------------------------------------------------------------

    @post(
        "/channels/{ch:str}/messages",
        operation_id="SendMessage",
        responses=WRITE_ERRORS,
    )
    async def send(
        self, request: Req, ch: FromPath[str], data: JSONBody[SendBody]
    ) -> Response[Created]:
        """Posts a message; ``@username`` mentions of people who can read the channel are kept."""
        cmd = SendMessage(channel_id=ch, text=data.text, reply_to=data.reply_to)
        return reply(await execute(request, cmd, request.user), Created)

    @get("/channels/{ch:str}/messages", operation_id="ListMessages", responses=READ_ERRORS)
    async def timeline(
        self,
        request: Req,
        ch: FromPath[str],
        limit: FromQuery[int] = DEFAULT_LIMIT,
        before: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> MessagePage:
        """Newest first. Pass ``next`` back as ``before`` for older messages (or, when paging
        with ``after``, as ``after`` for newer ones)."""
        check_limit(limit)
        before_seq, after_seq = parse_cursor(before, "before"), parse_cursor(after, "after")
        if before_seq is not None and after_seq is not None:
            raise InvalidValue("give before or after, not both")
        async with read_cursor_async(request, min_position) as cur:
            channel = await run_async(
                cur, channel_views.visible_channel(str(as_uuid(ch)), request.user)
            )
            if channel is None:
                raise NotAMember("unknown channel")
            items, next_seq = await run_async(
                cur,
                timelines.list_messages(
                    channel["id"], limit=limit, before=before_seq, after=after_seq
                ),
            )
        return MessagePage(
            items=[msgspec.convert(i, MessageView) for i in items],
            next=None if next_seq is None else str(next_seq),
        )

    @get("/messages/{msg:str}/replies", operation_id="ListReplies", responses=READ_ERRORS)
    async def replies(
        self,
        request: Req,
        msg: FromPath[str],
        limit: FromQuery[int] = DEFAULT_LIMIT,
        after: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> MessagePage:
        """A message's replies, oldest first, for those who can read its channel. Pass
        ``next`` back as ``after`` for the next page."""
        check_limit(limit)
        after_seq = parse_cursor(after, "after")
        async with read_cursor_async(request, min_position) as cur:
            channel_id = await run_async(cur, timelines.message_channel(str(as_uuid(msg))))
            visible = None
            if channel_id is not None:
                visible = await run_async(
                    cur, channel_views.visible_channel(channel_id, request.user)
                )
            if visible is None:
                # A message of a channel the caller cannot read answers as an unknown id.
                raise NotFound("unknown message")
            items, next_seq = await run_async(
                cur, timelines.list_replies(str(as_uuid(msg)), limit=limit, after=after_seq)
            )
        return MessagePage(
            items=[msgspec.convert(i, MessageView) for i in items],
            next=None if next_seq is None else str(next_seq),
        )

    @patch(
        "/messages/{msg:str}",
        operation_id="EditMessage",
        responses=WRITE_ERRORS,
    )
    async def edit(
        self,
        request: Req,
        msg: FromPath[str],
        data: JSONBody[EditBody],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[Written]:
        """Edits my message; earlier versions stay in the event log. With ``If-Match:
        <version>`` (the ``version`` the timeline showed), an edit of a message that changed
        since is refused with 409 instead of overwriting the newer text."""
        cmd = EditMessage(message_id=msg, text=data.text, expected_version=_version(if_match))
        return reply(await execute(request, cmd, request.user), Written)

    @delete(
        "/messages/{msg:str}",
        operation_id="DeleteMessage",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def delete_message(self, request: Req, msg: FromPath[str]) -> Response[Written]:
        """Deletes a message (its author, or anyone with ``manage_messages``): a tombstone."""
        return reply(await execute(request, DeleteMessage(message_id=msg), request.user), Written)

    @put(
        "/messages/{msg:str}/reactions/{emoji:str}",
        operation_id="AddReaction",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def react(
        self, request: Req, msg: FromPath[str], emoji: FromPath[str]
    ) -> Response[Written]:
        """Adds my reaction (idempotent: ``position`` is null when it was already there)."""
        return reply(
            await execute(request, AddReaction(message_id=msg, emoji=emoji), request.user), Written
        )

    @delete(
        "/messages/{msg:str}/reactions/{emoji:str}",
        operation_id="RemoveReaction",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def unreact(
        self, request: Req, msg: FromPath[str], emoji: FromPath[str]
    ) -> Response[Written]:
        """Removes my reaction (``position`` is null when there was none)."""
        return reply(
            await execute(request, RemoveReaction(message_id=msg, emoji=emoji), request.user),
            Written,
        )


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit()) or len(value) > 9:  # not "²", which int() refuses
        raise InvalidValue('If-Match must be a message version such as "3"')
    return int(value)
