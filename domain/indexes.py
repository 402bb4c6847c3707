"""Index streams: what keeps a username taken once, and two people's direct channel one.

Users and direct channels get random ids, which reveal nothing. What must stay unique is
indexed instead by a stream whose id is derived from the thing indexed (a normalised
username; a pair of user ids): its first event is saved in the same transaction as the
stream it points to, so the event store's version check refuses a second one even across
processes. Index streams belong to no workspace, channel or user: nobody's read path shows
them (they are absent from the streams read model, so they answer as unknown ids), since
whether one exists would tell whether a name is taken or two people talk.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, as_uuid, caused
from domain.errors import PermissionDenied, UsernameTaken
from domain.rules import normalise_username
from domain.scopes import OPERATORS, StreamKind

_USERNAME_CLAIMS = uuid5(NAMESPACE_URL, "chorus:username-claims")
_DIRECT_PAIRS = uuid5(NAMESPACE_URL, "chorus:direct-channel-pairs")


def username_claim_id(username: str) -> UUID:
    """The claim stream of a username, whatever its case."""
    return uuid5(_USERNAME_CLAIMS, normalise_username(username))


def direct_pair_id(user_a: str | UUID, user_b: str | UUID) -> UUID:
    """The index stream of two people's direct channel, whichever of them opens it."""
    first, second = sorted((str(as_uuid(user_a)), str(as_uuid(user_b))))
    return uuid5(_DIRECT_PAIRS, f"{first}:{second}")


class UsernameClaim(ChorusAggregate):
    """Which user holds a username. A claim is a stream of its own (not a field of the
    user), so that a later rename can release it (an event setting ``holder`` to None) and
    another user claim it again on the same stream, still under the version check."""

    stream_kind = StreamKind("username_claim", OPERATORS)

    @classmethod
    @caused
    def claim(cls, username: str, user_id: UUID, cause: Cause) -> UsernameClaim:
        name = normalise_username(username)
        return cls(
            id=username_claim_id(name),
            username=name,
            user_id=str(user_id),
        )

    @event("UsernameClaimed")
    def __init__(
        self,
        id: UUID,
        username: str,
        user_id: str,
    ) -> None:
        self.username = username
        self.holder: str | None = user_id

    @caused
    def release(self, user_id: str, cause: Cause) -> None:
        """The holder gave the name up (a rename, issue 20): anyone may claim it again, on
        this same stream, so two claims still conflict on its version."""
        if self.holder != user_id:
            raise PermissionDenied("only the holder releases a username")
        self._released(user_id=user_id)

    @event("UsernameReleased")
    def _released(self, user_id: str) -> None:
        self.holder = None

    @caused
    def reclaim(self, user_id: UUID, cause: Cause) -> None:
        """Claims a released name again."""
        if self.holder is not None:
            raise UsernameTaken("that username is taken")
        self._reclaimed(user_id=str(user_id))

    @event("UsernameReclaimed")
    def _reclaimed(self, user_id: str) -> None:
        self.holder = user_id


class DirectChannelPair(ChorusAggregate):
    """Which channel is two people's direct channel."""

    stream_kind = StreamKind("direct_pair", OPERATORS)

    @classmethod
    @caused
    def pair(cls, channel_id: UUID, user_ids: list[str], cause: Cause) -> DirectChannelPair:
        first, second = sorted(user_ids)
        return cls(
            id=direct_pair_id(first, second),
            channel_id=str(channel_id),
            user_ids=[first, second],
        )

    @event("DirectChannelPaired")
    def __init__(
        self,
        id: UUID,
        channel_id: str,
        user_ids: list[str],
    ) -> None:
        self.channel_id = channel_id
        self.user_ids = user_ids
