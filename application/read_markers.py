"""Read markers: the handler of the command that moves one."""

from __future__ import annotations

from application.channels import channel_with_workspace
from application.commands import MarkChannelRead, SetReadReceipts
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause, as_uuid
from domain.errors import NotFound
from domain.messages import Message
from domain.read_markers import ReadMarkers, read_markers_id

HANDLERS = HandlerTable()


@HANDLERS.on(MarkChannelRead)
def mark_channel_read(app: DecisionContext, cmd: MarkChannelRead, cause: Cause) -> Decision:
    """Only a reader of the channel moves a marker in it, to one of its messages; a marker
    that would stay or move back records nothing (``moved`` false, the marker as it is)."""
    channel, _ = channel_with_workspace(app, cmd.channel_id, cause.actor)
    message = app.load(Message, cmd.message_id, "message")
    if message.channel_id != channel.id:
        raise NotFound("unknown message")
    markers = _markers(app, cause)
    moved = markers.mark_read(channel.id, cmd.position, as_uuid(cmd.message_id), cause)
    body = {"moved": moved, "last_read": markers.marker(channel.id)}
    return Decision([markers] if moved else [], body)


@HANDLERS.on(SetReadReceipts)
def set_read_receipts(app: DecisionContext, cmd: SetReadReceipts, cause: Cause) -> Decision:
    markers = _markers(app, cause)
    changed = markers.set_receipts(cmd.send, cause)
    return Decision([markers] if changed else [], {"send": markers.sends_receipts})


def _markers(app: DecisionContext, cause: Cause) -> ReadMarkers:
    """The user's markers, opened with their first move."""
    uid = read_markers_id(cause.actor)
    if app.exists(uid):
        return app.load(ReadMarkers, uid)
    return ReadMarkers.open(cause.actor, cause)
