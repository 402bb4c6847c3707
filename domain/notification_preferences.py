"""What a user wants to be told: per workspace and per channel, all / mentions only / nothing,
and mute until a time. One stream per user, its owner's; every change is an event.

A channel's setting wins over its workspace's; with neither, everything notifies. A direct
channel has no level (a direct message always notifies), only a mute.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import InvalidValue
from domain.notifications import MENTION
from domain.scopes import OWNER, StreamKind

_PREFERENCES = uuid5(NAMESPACE_URL, "chorus:notification-preferences")

ALL = "all"
MENTIONS = "mentions"
NOTHING = "nothing"
DEFAULT = "default"  # no setting of its own: the workspace's (or everything)
LEVELS = (ALL, MENTIONS, NOTHING, DEFAULT)
TARGETS = ("workspace", "channel")


def preferences_id(user_id: str) -> UUID:
    return uuid5(_PREFERENCES, user_id)


class NotificationPreferences(ChorusAggregate):
    """A user's notification settings. Readable by its owner (their other devices see a
    change live on ``{"user": "me"}``)."""

    stream_kind = StreamKind("notification_preferences", OWNER, owner="user_id")

    @classmethod
    @caused
    def open(cls, user_id: str, cause: Cause) -> NotificationPreferences:
        return cls(
            id=preferences_id(user_id),
            user_id=user_id,
        )

    @event("NotificationPreferencesOpened")
    def __init__(self, id: UUID, user_id: str) -> None:
        self.user_id = user_id
        # Target id -> level; target id -> muted until (an aware datetime).
        self.levels: dict[str, str] = {}
        self.muted: dict[str, datetime] = {}

    @caused
    def change(
        self,
        target: str,
        target_id: UUID,
        level: str | None,
        muted_until: datetime | None,
        unmute: bool,
        cause: Cause,
    ) -> bool:
        """Sets the level and/or the mute of one workspace or channel. False when nothing
        changes (nothing recorded)."""
        if target not in TARGETS:
            raise InvalidValue(f"target must be one of {', '.join(TARGETS)}")
        if level is not None and level not in LEVELS:
            raise InvalidValue(f"level must be one of {', '.join(LEVELS)}")
        if muted_until is not None and muted_until.tzinfo is None:
            raise InvalidValue("muted_until needs a time zone")
        if muted_until is not None and unmute:
            raise InvalidValue("give muted_until or unmute, not both")
        key = str(target_id)
        changed = False
        if level is not None and self.levels.get(key, DEFAULT) != level:
            self._level_set(
                target=target,
                target_id=target_id,
                level=level,
            )
            changed = True
        wants_change = muted_until is not None or (unmute and key in self.muted)
        if wants_change and self.muted.get(key) != muted_until:
            self._muted(
                target=target,
                target_id=target_id,
                until=muted_until,
            )
            changed = True
        return changed

    @event("NotificationLevelSet")
    def _level_set(
        self,
        target: str,
        target_id: UUID,
        level: str,
    ) -> None:
        if level == DEFAULT:
            self.levels.pop(str(target_id), None)
        else:
            self.levels[str(target_id)] = level

    @event("NotificationsMuted")
    def _muted(
        self,
        target: str,
        target_id: UUID,
        until: datetime | None,
    ) -> None:
        if until is None:
            self.muted.pop(str(target_id), None)
        else:
            self.muted[str(target_id)] = until

    def allows(
        self,
        kind: str,
        workspace_id: UUID | None,
        channel_id: UUID | None,
        now: datetime,
        direct: bool = False,
    ) -> bool:
        """Whether a notification of ``kind`` from this workspace/channel reaches the user
        now."""
        targets = [str(t) for t in (channel_id, workspace_id) if t is not None]
        if any(now < self.muted[t] for t in targets if t in self.muted):
            return False
        if direct:
            return True  # a direct message always notifies, unless muted
        level = next((self.levels[t] for t in targets if t in self.levels), ALL)
        if level == NOTHING:
            return False
        return level == ALL or kind == MENTION
