"""Read markers: where each user stopped reading each channel, one stream per user.

A marker is the position of a message's ``MessageSent`` event (its timeline cursor, ``seq``
in the timelines read model): positions are one global order, so "read up to" needs no
per-channel counter in the domain. Markers only move forward: reading an older message on
another device must not bring back unread badges the user has already cleared.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Snapshot as AggregateSnapshot
from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import InvalidValue, PermissionDenied
from domain.scopes import OWNER, StreamKind

_READ_MARKERS = uuid5(NAMESPACE_URL, "chorus:read-markers")

# Marker streams grow by one event per move: a load reads at most this many after a snapshot.
READ_MARKERS_SNAPSHOT_INTERVAL = 50


def read_markers_id(user_id: str) -> UUID:
    """A user's markers have a fixed id: two devices opening them at once conflict on the
    first version (one is decided again) instead of opening two streams."""
    return uuid5(_READ_MARKERS, user_id)


class ReadMarkersState(TypedDict):
    """The attributes a snapshot holds (typed, so they read back as UUIDs and datetimes)."""

    _created_on: datetime
    _modified_on: datetime
    user_id: str
    markers: dict[str, int]
    sends_receipts: bool


class ReadMarkers(ChorusAggregate):
    """One user's read markers, by channel id."""

    snapshot_interval = READ_MARKERS_SNAPSHOT_INTERVAL

    # Its owner's alone: markers reach the owner's other devices on their ``user`` stream.
    stream_kind = StreamKind("read_markers", OWNER, owner="user_id")

    class Snapshot(AggregateSnapshot):
        state: ReadMarkersState  # type: ignore[assignment]

    @classmethod
    @caused
    def open(cls, user_id: str, cause: Cause) -> ReadMarkers:
        if cause.actor != user_id:
            raise PermissionDenied("only the user moves their read markers")
        return cls(
            id=read_markers_id(user_id),
            user_id=user_id,
        )

    @event("ReadMarkersOpened")
    def __init__(self, id: UUID, user_id: str) -> None:
        self.user_id = user_id
        self.markers: dict[str, int] = {}
        # Whether the members of the user's direct and small private channels see how far
        # they have read (visible read receipts).
        self.sends_receipts = True

    def marker(self, channel_id: UUID | str) -> int:
        """The position read up to in a channel (0: nothing read yet)."""
        return self.markers.get(str(channel_id), 0)

    @caused
    def mark_read(self, channel_id: UUID, position: int, message_id: UUID, cause: Cause) -> bool:
        """Moves the channel's marker to ``position`` (the message ``message_id``'s). False,
        and nothing recorded, for a marker that would stay or move back."""
        if cause.actor != self.user_id:
            raise PermissionDenied("only the user moves their read markers")
        if position <= 0:
            raise InvalidValue("a read marker is the position of a message")
        previous = self.marker(channel_id)
        if position <= previous:
            return False
        self._channel_read(
            channel_id=channel_id,
            up_to=position,
            message_id=message_id,
            previous=previous,
            user_id=self.user_id,
        )
        return True

    @event("ChannelRead")
    def _channel_read(
        self,
        channel_id: UUID,
        up_to: int,
        message_id: UUID,
        previous: int,
        user_id: str,
    ) -> None:
        # ``previous`` and ``user_id`` are for readers of the log (time-to-read, which
        # messages a move passed) who would otherwise replay the stream to learn them.
        self.markers[str(channel_id)] = up_to

    @caused
    def set_receipts(self, send: bool, cause: Cause) -> bool:
        """Whether others see this user's markers as read receipts. False, and nothing
        recorded, when it already is so."""
        if cause.actor != self.user_id:
            raise PermissionDenied("only the user chooses whether to send read receipts")
        if send == self.sends_receipts:
            return False
        self._receipts_changed(send=send, user_id=self.user_id)
        return True

    @event("ReadReceiptsChanged")
    def _receipts_changed(self, send: bool, user_id: str) -> None:
        self.sends_receipts = send
