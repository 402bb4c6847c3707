"""What a plain reader may read of content that was deleted or replaced: one rule, called by
every read path that hands out stored events (``/api/events``, the ``/ws`` catch-up).

An event keeps its envelope (type, ids, position, version, actor, time: the chain and the
timeline stay whole), but the content it carried is withheld once that content is gone for
everyone else: a message's text (and the mentions parsed from it) once the message is
deleted or a later edit replaced it, a document's updates once the document is deleted.
Withheld fields read ``null`` and the event's data names them under ``REDACTED`` (so a
client tells "withheld" from "empty"). Holders of ``view_audit`` in the stream's workspace
and the instance's auditors see everything (until erasure, a later issue).

Decided from the log itself, not from the messages or documents read models: a stream's
last event says whether it was deleted (the domain takes no change after a deletion), its
last content-carrying version says what is current, its first event which workspace it
belongs to (whose roles, from the workspaces read model, say who holds ``view_audit``). The
log is never behind the events a reader is shown (a read model may be) and is what
``chorus verify`` vouches for. One statement per page, only for pages
holding content, each stream looked up through the store's primary key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from domain.instance import AUDITOR
from domain.permissions import Permission
from infrastructure.eventstore import EVENTS_TABLE
from projections.base import LogEvent
from projections.log import ScopedEvent
from projections.queries import Query, Statement

# The key in a redacted event's ``data`` listing the fields withheld. No event has a field
# of that name (tests/e2e/test_redaction.py checks every event class).
REDACTED = "redacted"


@dataclass(frozen=True)
class Content:
    """Fields of an event type that carry what users wrote. ``replaced``: a later event of
    the stream carrying the same fields replaces them (an edit replaces a message's text; a
    document's updates add up, so none replaces another)."""

    fields: tuple[str, ...]
    replaced: bool


CONTENT: dict[str, Content] = {
    "MessageSent": Content(("text", "mentions"), replaced=True),
    "MessageEdited": Content(("text", "mentions"), replaced=True),
    "DocumentUpdateApplied": Content(("update",), replaced=False),
}

# Events that end a stream's content: after one, every content of the stream is withheld.
ENDINGS = frozenset({"MessageDeleted", "DocumentDeleted"})

# Text-like fields of events that are shown to every reader of the stream, whatever came
# later, and why. A new field of an event (a string, bytes or a collection of them, other
# than an id) must be named here or in CONTENT: tests/e2e/test_redaction.py checks it.
SAFE: dict[str, dict[str, str]] = {
    # Issue 21: a project's and its tasks' fields are board structure, shown to every reader
    # of the project (a task's deletion says it is gone, as a document's).
    "ProjectCreated": {
        "name": "as DocumentCreated's title",
        "description": "as name",
        "access": "one of a fixed set",
        "member_ids": "user ids",
        "columns": "column ids and names: workflow structure",
    },
    "ProjectRenamed": {"name": "as ProjectCreated"},
    "ProjectDescribed": {"description": "as ProjectCreated"},
    "ProjectAccessChanged": {"access": "one of a fixed set", "member_ids": "user ids"},
    "ProjectColumnAdded": {"column_id": "an id", "name": "as ProjectCreated's columns"},
    "ProjectColumnRenamed": {"column_id": "an id", "name": "as ProjectCreated's columns"},
    "ProjectColumnsReordered": {"column_ids": "ids"},
    "TaskCreated": {
        "title": "as DocumentCreated's title",
        "status": "a column id",
        "rank": "an order key",
        "priority": "one of a fixed set",
        "assignee_ids": "user ids",
        "due": "a date",
        "labels": "as title",
        "parent_id": "an id",
        "watcher_ids": "user ids",
    },
    "TaskChanged": {
        "title": "as TaskCreated",
        "priority": "one of a fixed set",
        "assignee_ids": "user ids",
        "due": "a date",
        "labels": "as TaskCreated",
        "parent_id": "an id",
        "watcher_ids": "user ids",
    },
    "TaskMoved": {"status": "a column id", "rank": "an order key"},
    "WorkspaceCreated": {
        "name": "a workspace's name is shown to every member and to whoever is invited",
        "visibility": "one of a fixed set",
    },
    "MemberJoined": {"invite_hash": "a hash of the invite used, not the code"},
    "InviteCreated": {"code_hash": "a hash, not the code"},
    "RoleCreated": {"name": "a role's name is workspace structure", "permissions": "fixed set"},
    "RoleGranted": {"role": "a role's name"},
    "RoleRevoked": {"role": "a role's name"},
    # Issue 20: the workspace's and its roles' own life; names and fixed sets, as above.
    "WorkspaceRenamed": {"name": "as WorkspaceCreated"},
    "WorkspaceVisibilityChanged": {"visibility": "one of a fixed set"},
    "InviteRevoked": {"code_hash": "as InviteCreated"},
    "RoleRenamed": {"name": "as RoleCreated", "new_name": "as RoleCreated"},
    "RolePermissionsChanged": {"name": "as RoleCreated", "permissions": "fixed set"},
    "RolesReordered": {"names": "role names, as RoleCreated"},
    "RoleDeleted": {"name": "as RoleCreated"},
    "ChannelCreated": {
        "name": "channel names and topics are structure, shown in every channel list",
        "topic": "as name",
        "kind": "one of a fixed set",
        "member_tenures": "user ids and positions",
    },
    "ChannelChanged": {"name": "as ChannelCreated", "topic": "as ChannelCreated"},
    "ReactionAdded": {"emoji": "a reaction, not text; removed reactions show as removed"},
    "ReactionRemoved": {"emoji": "as ReactionAdded"},
    "DocumentCreated": {"title": "titles are shown in lists; the deletion says it is gone"},
    "DocumentRenamed": {"title": "as DocumentCreated"},
    "DocumentUpdateApplied": {"roots": "the names and kinds of root types, no content"},
    "UserRegistered": {
        "username": "public identity",
        "display_name": "public identity (only its user reads the user stream)",
    },
    "UsernameClaimed": {"username": "an index stream: no read path hands its events out"},
    # Issue 20: the profile, read by its user alone (the user stream); the read models show
    # the current values. What erasure does to them is crypto-shredding's business.
    "DisplayNameChanged": {"display_name": "as UserRegistered"},
    "AvatarChanged": {"avatar_url": "a public profile's picture, as display_name"},
    "UsernameChanged": {"username": "as UserRegistered", "previous": "as UserRegistered"},
    "UserReactivated": {"reactivated_by": "an operator's name"},
    "PasswordResetIssued": {
        "token_hash": "a SHA-256 of a 256-bit token, not the token",
        "issued_by": "an operator's name",
    },
    "PasswordReset": {"token_hash": "as PasswordResetIssued"},
    "InstanceRoleGranted": {"role": "fixed set", "granted_by": "an operator's name"},
    "InstanceRoleRevoked": {"role": "fixed set", "granted_by": "an operator's name"},
    "SessionEnded": {"reason": "one of a fixed set"},
    "UserErased": {"kinds": "a fixed set: what kind of data was erased, never the data"},
    "SignedOut": {"reason": "one of a fixed set (api/auth.py)"},
    # Notifications (issue 19): ids and fixed sets, never text; the inbox is read by its owner
    # only, each notification checked against their access when delivered.
    "Notified": {"kind": "one of a fixed set", "detail": "a role's name, or channel/everyone"},
    "NotificationsWithdrawn": {"kinds": "fixed set"},
    "NotificationsRead": {"ids": "notification ids"},
    "NoticeGiven": {"kind": "fixed set"},
    "NoticeWithdrawn": {"kinds": "fixed set"},
    "NotificationLevelSet": {"target": "fixed set", "level": "fixed set"},
    "NotificationsMuted": {"target": "fixed set"},
    # Webhooks (issue 19): read by holders of manage_webhooks; the secret is never in them.
    "WebhookRegistered": {
        "url": "where the workspace's events go: its admins' configuration",
        "event_types": "names from a fixed set",
        "secret_hint": "a short digest of the secret, not the secret",
        "registered_by": "a user id",
    },
    "WebhookChanged": {"url": "as WebhookRegistered", "event_types": "as WebhookRegistered"},
    "WebhookSecretRotated": {"secret_hint": "as WebhookRegistered"},
    "WebhookDisabled": {"reason": "one of a fixed set"},
    "DeliveryQueued": {"event_type": "an event type's name"},
    "DeliveryAttempted": {"error": "what the receiver's side did, written by the server"},
    "ProjectionEventSkipped": {
        "projection": "operators' record (the instance's own stream)",
        "error": "as projection",
        "reason": "as projection",
        "operator": "as projection",
    },
    "ReactionEventSkipped": {
        "policy": "as ProjectionEventSkipped's projection",
        "error": "as projection",
        "reason": "as projection",
        "operator": "as projection",
    },
}


# Modules that read stored events and hand them on without this rule, and why. Any other
# module of api/ or application/ that reads them must apply it (tests/e2e/test_redaction.py
# checks the imports).
UNREDACTED_READERS: dict[str, str] = {
    "api.realtime.hub": "live delivery: an event is current when it is committed; what a"
    " subscriber already received stays with them, and catch-ups (socket.py) are redacted",
    "api.log_cli": "chorus events: the operator's raw log, read with the database's own"
    " credentials",
}


@dataclass(frozen=True)
class _Stream:
    last_type: str | None
    content_version: int | None
    sees_all: bool


def redacted(user_id: str, events: Sequence[LogEvent]) -> Query[list[LogEvent]]:
    """``events`` as ``user_id`` may read them: content deleted or replaced since is
    withheld, unless they hold ``view_audit`` in the stream's workspace or are an instance
    auditor. No statement for a page without content."""
    carrying = {str(e.stream) for e in events if e.type in CONTENT}
    if not carrying:
        return list(events)
    replaced = sorted(
        {str(e.stream) for e in events if e.type in CONTENT and CONTENT[e.type].replaced}
    )
    rows = yield Statement(
        "WITH s AS (SELECT unnest(%(streams)s::uuid[]) AS stream_id),"
        " auditor AS (SELECT EXISTS (SELECT 1 FROM rm_instance_roles"
        "   WHERE user_id = %(u)s::uuid AND role = %(auditor)s) AS held)"
        " SELECT s.stream_id::text AS stream,"
        "  (SELECT substring(e.topic from '[^.]+$') FROM"
        f"    {EVENTS_TABLE} e WHERE e.originator_id = s.stream_id"
        "    ORDER BY e.originator_version DESC LIMIT 1) AS last_type,"
        "  CASE WHEN s.stream_id = ANY(%(replaced)s::uuid[]) THEN (SELECT"
        f"    max(e.originator_version) FROM {EVENTS_TABLE} e"
        "    WHERE e.originator_id = s.stream_id"
        "    AND substring(e.topic from '[^.]+$') = ANY(%(replacing)s)) END AS content_version,"
        "  (SELECT held FROM auditor) OR EXISTS (SELECT 1 FROM rm_workspace_members m"
        "    JOIN rm_workspace_roles r ON r.workspace_id = m.workspace_id"
        "     AND r.name = ANY(m.roles)"
        "    WHERE m.user_id = %(u)s::uuid AND %(audit)s = ANY(r.permissions)"
        "    AND m.workspace_id = (SELECT (convert_from(e.state, 'UTF8')::json"
        "     ->> 'workspace_id')::uuid FROM"
        f"     {EVENTS_TABLE} e WHERE e.originator_id = s.stream_id"
        "     AND e.originator_version = 1)) AS sees_all"
        " FROM s",
        {
            "streams": sorted(carrying),
            "replaced": replaced,
            "replacing": sorted(t for t, c in CONTENT.items() if c.replaced),
            "u": user_id,
            "auditor": AUDITOR,
            "audit": Permission.VIEW_AUDIT.value,
        },
    )
    streams = {
        r["stream"]: _Stream(r["last_type"], r["content_version"], bool(r["sees_all"]))
        for r in rows
    }
    return [_apply(e, streams.get(str(e.stream))) for e in events]


def redacted_scoped(user_id: str, events: Sequence[ScopedEvent]) -> Query[list[ScopedEvent]]:
    """``redacted`` for events read with their stream's scope."""
    plain = yield from redacted(user_id, [s.event for s in events])
    return [s if s.event is e else replace(s, event=e) for s, e in zip(events, plain, strict=True)]


def _apply(event: LogEvent, stream: _Stream | None) -> LogEvent:
    content = CONTENT.get(event.type)
    if content is None:
        return event
    # A stream the statement did not answer for is withheld: the rule fails closed.
    if stream is not None:
        if stream.sees_all:
            return event
        ended = stream.last_type in ENDINGS
        superseded = (
            content.replaced
            and stream.content_version is not None
            and event.version < stream.content_version
        )
        if not (ended or superseded):
            return event
    return replace(event, data=withheld(event.data, content.fields))


def withheld(data: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """``data`` with ``fields`` nulled and named under ``REDACTED``."""
    gone = [f for f in fields if f in data]
    return {**data, **dict.fromkeys(gone, None), REDACTED: gone}
