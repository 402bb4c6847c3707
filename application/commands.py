"""Every command a client can send, named in the imperative.

The same Structs serve REST (built from path and body) and the WebSocket
(``{"op": "command", "type": "SendMessage", "data": {...}}``). Schemas change only by adding
fields with defaults.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class Command(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag=True):
    """Base of all commands; the tag is the class name."""


# -- identity ----------------------------------------------------------------------------
class RegisterUser(Command, frozen=True):
    username: str
    password: str
    display_name: str | None = None
    # Set by the server, which hashes on its hashing pool before the command runs (no
    # request thread waits for argon2); server-only, like the command: never from a client.
    password_hash: str | None = None


# -- workspaces --------------------------------------------------------------------------
class CreateWorkspace(Command, frozen=True):
    name: str
    visibility: str = "private"
    password: str | None = None


class JoinWorkspace(Command, frozen=True):
    workspace_id: str
    password: str | None = None


class LeaveWorkspace(Command, frozen=True):
    workspace_id: str


class CreateInvite(Command, frozen=True):
    workspace_id: str
    max_uses: int | None = None
    expires_in_s: int | None = None


class AcceptInvite(Command, frozen=True):
    code: str


class KickMember(Command, frozen=True):
    workspace_id: str
    user_id: str


class BanMember(Command, frozen=True):
    workspace_id: str
    user_id: str


class UnbanMember(Command, frozen=True):
    workspace_id: str
    user_id: str


class CreateRole(Command, frozen=True):
    workspace_id: str
    name: str
    permissions: list[str]


class GrantRole(Command, frozen=True):
    workspace_id: str
    user_id: str
    role: str


class RevokeRole(Command, frozen=True):
    workspace_id: str
    user_id: str
    role: str


# Issue 20: the whole life of a workspace, its roles and invites.
class RenameWorkspace(Command, frozen=True):
    workspace_id: str
    name: str


class SetDeletedMeansErased(Command, frozen=True):
    """Issue 20: whether deleting a message in the workspace erases its text."""

    workspace_id: str
    enabled: bool


class ChangeWorkspaceVisibility(Command, frozen=True):
    workspace_id: str
    visibility: str
    # A public workspace's join password (hashed by the handler); None: none.
    password: str | None = None


class TransferWorkspace(Command, frozen=True):
    workspace_id: str
    user_id: str


class DeleteWorkspace(Command, frozen=True):
    workspace_id: str
    # The workspace's exact name, so a slip of the id deletes nothing.
    confirm_name: str


class RevokeInvite(Command, frozen=True):
    workspace_id: str
    invite_id: str


class RenameRole(Command, frozen=True):
    workspace_id: str
    role: str
    name: str


class ChangeRolePermissions(Command, frozen=True):
    workspace_id: str
    role: str
    permissions: list[str]


class ReorderRoles(Command, frozen=True):
    workspace_id: str
    # Every custom role, highest first.
    roles: list[str]


class DeleteRole(Command, frozen=True):
    workspace_id: str
    role: str


# -- channels ----------------------------------------------------------------------------
class CreateChannel(Command, frozen=True):
    workspace_id: str
    name: str
    private: bool = False
    topic: str | None = None


class ChangeChannel(Command, frozen=True):
    channel_id: str
    name: str | None = None
    topic: str | None = None


class ArchiveChannel(Command, frozen=True):
    channel_id: str


class UnarchiveChannel(Command, frozen=True):
    channel_id: str


class DeleteChannel(Command, frozen=True):
    channel_id: str


class AddChannelMember(Command, frozen=True):
    channel_id: str
    user_id: str


class RemoveChannelMember(Command, frozen=True):
    channel_id: str
    user_id: str


class OpenDirectMessage(Command, frozen=True):
    """Direct messages are between people who share a workspace: ``workspace_id`` names the
    one through which the caller knows the other (found for them when left out)."""

    user_id: str
    workspace_id: str | None = None


class OpenGroupDirectMessage(Command, frozen=True):
    """A group direct message with 2 to 9 others who each share a workspace with the caller
    (a new one each time)."""

    user_ids: list[str]


class LeaveGroupDirectMessage(Command, frozen=True):
    channel_id: str


# -- identity: whom a user hears from ------------------------------------------------------
class BlockUser(Command, frozen=True):
    user_id: str


class UnblockUser(Command, frozen=True):
    user_id: str


# -- identity: a user's whole life (issue 20) ----------------------------------------------
class ChangeProfile(Command, frozen=True):
    """A field left out keeps its value; ``avatar_url: ""`` removes the avatar."""

    display_name: str | None = None
    avatar_url: str | None = None
    username: str | None = None


class DeactivateAccount(Command, frozen=True):
    """Issued by ``POST /api/users/me/deactivate`` once it has checked the password."""

    ended_session_ids: list[str] = []


class ReactivateUser(Command, frozen=True):
    """Issued at the console (``chorus reactivate-user``)."""

    user_id: str
    reactivated_by: str


class IssuePasswordReset(Command, frozen=True):
    """Issued at the console (``chorus issue-password-reset``): the token's hash only."""

    user_id: str
    token_hash: str
    issued_by: str
    expires_in_s: int | None = None


class ResetPassword(Command, frozen=True):
    """Issued by ``POST /api/auth/password-reset``; the actor is the token's user."""

    token_hash: str
    password: str
    password_hash: str | None = None
    ended_session_ids: list[str] = []


# -- messages ----------------------------------------------------------------------------
class SendMessage(Command, frozen=True):
    channel_id: str
    text: str
    reply_to: str | None = None


class EditMessage(Command, frozen=True):
    message_id: str
    text: str
    expected_version: int | None = None


class DeleteMessage(Command, frozen=True):
    message_id: str


class AddReaction(Command, frozen=True):
    message_id: str
    emoji: str


class RemoveReaction(Command, frozen=True):
    message_id: str
    emoji: str


# -- presence: issued by the server for its WebSocket sessions, never by clients ----------
class StartSession(Command, frozen=True):
    session_id: str
    instance_id: str


class EndSession(Command, frozen=True):
    session_id: str
    reason: str


# -- sign-ins (issue 17): issued by the server's auth routes, never by clients ------------
class StartSignIn(Command, frozen=True):
    session_id: str
    user_id: str


class EndSignIns(Command, frozen=True):
    """Ends the caller's sessions; an id of a session older than the log's sign-ins (a
    refresh-token family issued before them) is recorded as started and ended."""

    session_ids: list[str]
    reason: str


class ChangePassword(Command, frozen=True):
    password: str
    # Hashed by the server on its hashing pool, like RegisterUser's.
    password_hash: str | None = None
    kept_session_id: str | None = None
    ended_session_ids: list[str] = []


# -- documents ---------------------------------------------------------------------------
class CreateDocument(Command, frozen=True):
    workspace_id: str
    title: str


class RenameDocument(Command, frozen=True):
    document_id: str
    title: str


class DeleteDocument(Command, frozen=True):
    document_id: str


class ApplyDocumentUpdate(Command, frozen=True):
    """Sent by the live copy of a document (application/live_documents/rooms.py) once it has
    checked and applied the bytes; clients send updates over ``/yjs``, never as this."""

    document_id: str
    update: bytes
    roots: dict[str, str] = {}
    restored_from: int | None = None


# -- the instance: roles granted at the command line (``chorus grant``), never by clients ---
class GrantInstanceRole(Command, frozen=True):
    user_id: str
    role: str
    granted_by: str


class RevokeInstanceRole(Command, frozen=True):
    user_id: str
    role: str
    granted_by: str


# -- notifications: issued by reactions (application/reactions.py), never by clients -------
class NotifyMention(Command, frozen=True):
    """Tells ``user_id`` they were mentioned in ``message_id``, by the event at ``position``."""

    user_id: str
    message_id: str
    position: int


# -- notifications (issue 19) --------------------------------------------------------------
class NotifyBroadcast(Command, frozen=True):
    """Tells every reader of the channel of ``message_id`` that it says ``@channel`` or
    ``@everyone`` (if its author holds ``mention_everyone``)."""

    message_id: str
    position: int


class NotifyConversation(Command, frozen=True):
    """Tells the people ``message_id`` is for: the author of the message it replies to and
    the others who took part in that thread, or the other members of a direct channel."""

    message_id: str
    position: int


class NotifyMemberJoined(Command, frozen=True):
    """Tells the owners of ``workspace_id`` that ``user_id`` joined it."""

    workspace_id: str
    user_id: str
    position: int


class NotifyRoleGranted(Command, frozen=True):
    """Tells ``user_id`` they were granted ``role`` in ``workspace_id``."""

    workspace_id: str
    user_id: str
    role: str
    granted_by: str
    position: int


class WithdrawNotifications(Command, frozen=True):
    """Takes back the notifications about ``message_id`` that no longer hold (deleted, or a
    mention edited away), because of the event at ``position``."""

    message_id: str
    position: int


class MarkNotificationsRead(Command, frozen=True):
    ids: list[str] | None = None
    up_to: int | None = None


class SetNotificationPreference(Command, frozen=True):
    """``target`` is "workspace" or "channel"; ``level`` all / mentions / nothing / default;
    ``muted_until`` an ISO time with its zone, or ``unmute``."""

    target: str
    target_id: str
    level: str | None = None
    muted_until: str | None = None
    unmute: bool = False


# -- webhooks (issue 19) --------------------------------------------------------------------
class RegisterWebhook(Command, frozen=True):
    """Over HTTP only: where the URL points is checked there, with a look-up, before it runs
    (``url_refused``: why it may not be used; the handler says so only to an admin)."""

    workspace_id: str
    url: str
    event_types: list[str]
    url_refused: str | None = None


class ChangeWebhook(Command, frozen=True):
    """Over HTTP only, as RegisterWebhook. A field left out keeps its value."""

    workspace_id: str
    webhook_id: str
    url: str | None = None
    event_types: list[str] | None = None
    url_refused: str | None = None


class RotateWebhookSecret(Command, frozen=True):
    workspace_id: str
    webhook_id: str


class DisableWebhook(Command, frozen=True):
    workspace_id: str
    webhook_id: str


class EnableWebhook(Command, frozen=True):
    workspace_id: str
    webhook_id: str


class DeleteWebhook(Command, frozen=True):
    workspace_id: str
    webhook_id: str


class QueueWebhookDeliveries(Command, frozen=True):
    """Issued by the webhooks reaction: the event at ``position`` (of ``stream_id``, the
    aggregate ``source``) goes to each webhook of its workspace that wants it."""

    source: str
    stream_id: str
    event_type: str
    position: int
    # When it happened (microseconds since 1970, UTC): a webhook registered later skips it.
    occurred_at_us: int


class RecordWebhookAttempt(Command, frozen=True):
    """Issued by the delivery worker after each attempt (application/webhook_delivery.py)."""

    delivery_id: str
    attempt: int
    status_code: int | None
    error: str | None
    succeeded: bool
    # The next attempt is due this many milliseconds after this one is recorded; None: that was
    # the last (or it succeeded).
    retry_after_ms: int | None
    # Failed attempts in a row after which the webhook is disabled.
    disable_after: int


# Commands no client sends over /ws.
WEBHOOK_SERVER_ONLY: tuple[type[Command], ...] = (
    RegisterWebhook,
    ChangeWebhook,
    QueueWebhookDeliveries,
    RecordWebhookAttempt,
)


# -- erasure (issue 20) ---------------------------------------------------------------------
class EraseUser(Command, frozen=True):
    """Erases a user's personal data (``DELETE /api/users/me`` after its password check, or
    ``chorus erase-user``): records it, and leaves them no usable password."""

    user_id: str


class SetRetention(Command, frozen=True):
    """Sets how many days a workspace keeps its messages (``null``: for ever); older ones
    are erased by the retention worker (application/retention.py)."""

    workspace_id: str
    days: int | None


class ApplyRetention(Command, frozen=True):
    """A retention run (the server's worker, never a client): erases the messages sent in
    ``[since, cutoff)`` in a workspace, ``since`` being the previous run's cut-off."""

    workspace_id: str
    since: datetime | None
    cutoff: datetime
    message_ids: list[str]


SERVER_ONLY: tuple[type[Command], ...] = (
    EraseUser,
    ApplyRetention,
    RegisterUser,
    StartSession,
    EndSession,
    ApplyDocumentUpdate,
    GrantInstanceRole,
    RevokeInstanceRole,
    StartSignIn,
    EndSignIns,
    ChangePassword,
    NotifyMention,
    NotifyBroadcast,
    NotifyConversation,
    NotifyMemberJoined,
    NotifyRoleGranted,
    WithdrawNotifications,
    *WEBHOOK_SERVER_ONLY,
)


# -- read state (issue 19) -----------------------------------------------------------------
class MarkChannelRead(Command, frozen=True):
    """Moves the caller's read marker in ``channel_id`` to ``message_id``, whose timeline
    position is ``position``. Issued by ``PUT /api/channels/{id}/read``, which finds the
    message (or the newest one at or before a position) in the timelines read model; a
    client never sends it over ``/ws``, where nothing would tie the position to a message."""

    channel_id: str
    message_id: str
    position: int


class SetReadReceipts(Command, frozen=True):
    """Whether the members of my direct and small private channels see how far I have read."""

    send: bool


SERVER_ONLY = (*SERVER_ONLY, MarkChannelRead)

# Issue 20: the account's life beyond what a client may say over /ws.
SERVER_ONLY = (
    *SERVER_ONLY,
    DeactivateAccount,
    ReactivateUser,
    IssuePasswordReset,
    ResetPassword,
)


# -- projects and tasks (issue 21) -----------------------------------------------------------
class CreateProject(Command, frozen=True):
    workspace_id: str
    name: str
    description: str | None = None
    # "workspace" (every member) or "listed" (``member_ids`` and the creator).
    access: str = "workspace"
    member_ids: list[str] = []


class ChangeProject(Command, frozen=True):
    """Renames and/or describes a project."""

    project_id: str
    name: str | None = None
    description: str | None = None


class SetProjectAccess(Command, frozen=True):
    project_id: str
    access: str
    member_ids: list[str] = []


class ArchiveProject(Command, frozen=True):
    project_id: str
    archived: bool = True


class DeleteProject(Command, frozen=True):
    project_id: str


class AddProjectColumn(Command, frozen=True):
    project_id: str
    name: str


class RenameProjectColumn(Command, frozen=True):
    project_id: str
    column_id: str
    name: str


class ReorderProjectColumns(Command, frozen=True):
    project_id: str
    column_ids: list[str]


class CreateTask(Command, frozen=True):
    """A task in column ``status`` (a column id; the first column if left out), after the
    card ``after_id``."""

    project_id: str
    title: str
    status: str | None = None
    priority: str = "none"
    assignee_ids: list[str] = []
    due: str | None = None
    labels: list[str] = []
    parent_id: str | None = None
    estimate: int | None = None
    # The card it goes after (HTTP passes the column's last); None: the column's start.
    after_id: str | None = None


class ChangeTask(Command, frozen=True):
    """Changes the fields given (None: kept as they are); ``clear`` names the optional ones
    (``due``, ``parent_id``, ``estimate``) to empty. Refused with 409 when
    ``expected_version`` is stale."""

    task_id: str
    title: str | None = None
    priority: str | None = None
    assignee_ids: list[str] | None = None
    due: str | None = None
    labels: list[str] | None = None
    parent_id: str | None = None
    estimate: int | None = None
    clear: list[str] = []
    expected_version: int | None = None


class MoveTask(Command, frozen=True):
    """Moves a task into column ``status`` between two neighbours (task ids; None: the
    column's start or end), writing the moved task alone."""

    task_id: str
    status: str
    after_id: str | None = None
    before_id: str | None = None
    expected_version: int | None = None


class DeleteTask(Command, frozen=True):
    task_id: str
    expected_version: int | None = None


class WatchTask(Command, frozen=True):
    task_id: str


class UnwatchTask(Command, frozen=True):
    task_id: str
