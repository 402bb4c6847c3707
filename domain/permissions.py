"""Permissions and the built-in roles of a workspace."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    VIEW_CHANNELS = "view_channels"
    SEND_MESSAGES = "send_messages"
    MANAGE_MESSAGES = "manage_messages"
    MANAGE_CHANNELS = "manage_channels"
    MANAGE_ROLES = "manage_roles"
    INVITE = "invite"
    KICK_MEMBERS = "kick_members"
    BAN_MEMBERS = "ban_members"
    VIEW_DOCUMENTS = "view_documents"
    EDIT_DOCUMENTS = "edit_documents"
    MANAGE_DOCUMENTS = "manage_documents"
    VIEW_AUDIT = "view_audit"
    # ``@channel`` / ``@everyone`` in a message notify every reader of the channel (issue 19).
    MENTION_EVERYONE = "mention_everyone"

    # Register, change and delete a workspace's outgoing webhooks, and read their deliveries.
    MANAGE_WEBHOOKS = "manage_webhooks"

    # Rename the workspace, change its visibility and join password (issue 20). Transferring
    # and deleting it stay with its owners.
    MANAGE_WORKSPACE = "manage_workspace"

    # Projects and their tasks (issue 21): create, rename, describe, archive and delete
    # projects, their access and workflow columns; create, change, move and delete tasks.
    MANAGE_PROJECTS = "manage_projects"
    MANAGE_TASKS = "manage_tasks"


ALL_PERMISSIONS: frozenset[str] = frozenset(p.value for p in Permission)

OWNER = "owner"
ADMIN = "admin"
MEMBER = "member"
VIEWER = "viewer"

# Admins run the workspace day to day; reading the whole audit trail stays with owners
# unless an owner grants it through a custom role.
BUILTIN_ROLES: dict[str, frozenset[str]] = {
    OWNER: ALL_PERMISSIONS,
    ADMIN: ALL_PERMISSIONS - {Permission.VIEW_AUDIT.value},
    MEMBER: frozenset(
        {
            Permission.VIEW_CHANNELS,
            Permission.SEND_MESSAGES,
            Permission.INVITE,
            Permission.VIEW_DOCUMENTS,
            Permission.EDIT_DOCUMENTS,
            Permission.MANAGE_TASKS,
        }
    ),
    VIEWER: frozenset({Permission.VIEW_CHANNELS, Permission.VIEW_DOCUMENTS}),
}

# The role every new member starts with.
DEFAULT_ROLE = MEMBER
