"""Handlers of workspace commands: membership, invites, roles."""

from __future__ import annotations

import secrets
from uuid import UUID, uuid4

from application.commands import (
    AcceptInvite,
    BanMember,
    ChangeRolePermissions,
    ChangeWorkspaceVisibility,
    CreateInvite,
    CreateRole,
    CreateWorkspace,
    DeleteRole,
    DeleteWorkspace,
    GrantRole,
    JoinWorkspace,
    KickMember,
    LeaveWorkspace,
    RenameRole,
    RenameWorkspace,
    ReorderRoles,
    RevokeInvite,
    RevokeRole,
    SetDeletedMeansErased,
    TransferWorkspace,
    UnbanMember,
)
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause
from domain.errors import InvalidValue, NotFound
from domain.identity import User
from domain.rules import check_password_length
from domain.workspaces import Workspace

# This context's command handlers, joined with the others' in application/handlers.py.
HANDLERS = HandlerTable()

INVITE_CODE_MAX = 80
# Bounds on lists in commands, checked before the domain looks at them.
MAX_LISTED_PERMISSIONS = 64


def _visible_workspace(app: DecisionContext, workspace_id: str, user_id: str) -> Workspace:
    workspace = app.load(Workspace, workspace_id)
    workspace.check_visible_to(user_id)
    return workspace


def _member_workspace(app: DecisionContext, workspace_id: str, user_id: str) -> Workspace:
    workspace = app.load(Workspace, workspace_id)
    workspace.check_member(user_id)
    return workspace


def _user_id(app: DecisionContext, user_id: str) -> str:
    """A user id that names a registered user, in canonical form."""
    return str(app.load(User, user_id, "user").id)


@HANDLERS.on(CreateWorkspace)
def create_workspace(app: DecisionContext, cmd: CreateWorkspace, cause: Cause) -> Decision:
    credentials: dict[UUID, str] = {}
    workspace_id = uuid4()
    if cmd.password is not None:
        check_password_length(cmd.password)
    workspace = Workspace.create(
        workspace_id, cmd.name, cmd.visibility, cmd.password is not None, cause
    )
    if cmd.password is not None:
        credentials[workspace_id] = app.passwords.hash(cmd.password)
    return Decision([workspace], {"id": str(workspace.id)}, status=201, credentials=credentials)


@HANDLERS.on(JoinWorkspace)
def join_workspace(app: DecisionContext, cmd: JoinWorkspace, cause: Cause) -> Decision:
    workspace = _visible_workspace(app, cmd.workspace_id, cause.actor)
    password_ok = False
    if workspace.has_password:
        stored = app.store.find_password_hash(workspace.id)
        password_ok = app.passwords.verify(stored, cmd.password or "")
    workspace.join(cause, password_ok=password_ok)
    return Decision([workspace], {"workspace_id": str(workspace.id)})


@HANDLERS.on(LeaveWorkspace)
def leave_workspace(app: DecisionContext, cmd: LeaveWorkspace, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.leave(cause)
    return Decision([workspace])


def new_invite_code(workspace_id: UUID) -> str:
    """The code names its workspace, so accepting needs no lookup table; the random part
    is what makes it a secret, and only its hash is stored."""
    return f"{workspace_id.hex}-{secrets.token_urlsafe(18)}"


def workspace_of_invite(code: str) -> UUID:
    head, _, secret = code.partition("-")
    if len(code) > INVITE_CODE_MAX or not secret:
        raise NotFound("unknown invite")
    try:
        return UUID(hex=head)
    except ValueError:
        raise NotFound("unknown invite") from None


@HANDLERS.on(CreateInvite)
def create_invite(app: DecisionContext, cmd: CreateInvite, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    code = new_invite_code(workspace.id)
    workspace.create_invite(code, cmd.max_uses, cmd.expires_in_s, app.clock(), cause)
    return Decision([workspace], {"code": code}, status=201)


@HANDLERS.on(AcceptInvite)
def accept_invite(app: DecisionContext, cmd: AcceptInvite, cause: Cause) -> Decision:
    workspace = app.load(Workspace, workspace_of_invite(cmd.code), "invite")
    workspace.accept_invite(cmd.code, app.clock(), cause)
    return Decision([workspace], {"workspace_id": str(workspace.id)})


@HANDLERS.on(KickMember)
def kick_member(app: DecisionContext, cmd: KickMember, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.kick(_user_id(app, cmd.user_id), cause)
    return Decision([workspace])


@HANDLERS.on(BanMember)
def ban_member(app: DecisionContext, cmd: BanMember, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.ban(_user_id(app, cmd.user_id), cause)
    return Decision([workspace])


@HANDLERS.on(UnbanMember)
def unban_member(app: DecisionContext, cmd: UnbanMember, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.unban(_user_id(app, cmd.user_id), cause)
    return Decision([workspace])


@HANDLERS.on(CreateRole)
def create_role(app: DecisionContext, cmd: CreateRole, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    if len(cmd.permissions) > MAX_LISTED_PERMISSIONS:
        raise InvalidValue("too many permissions")
    workspace.create_role(cmd.name, cmd.permissions, cause)
    return Decision([workspace], {"name": cmd.name}, status=201)


@HANDLERS.on(GrantRole)
def grant_role(app: DecisionContext, cmd: GrantRole, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.grant_role(_user_id(app, cmd.user_id), cmd.role, cause)
    return Decision([workspace])


@HANDLERS.on(RevokeRole)
def revoke_role(app: DecisionContext, cmd: RevokeRole, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.revoke_role(_user_id(app, cmd.user_id), cmd.role, cause)
    return Decision([workspace])


# -- the whole life of a workspace, its roles and invites (issue 20) ---------------------------


@HANDLERS.on(RenameWorkspace)
def rename_workspace(app: DecisionContext, cmd: RenameWorkspace, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.rename(cmd.name, cause)
    return Decision([workspace])


@HANDLERS.on(SetDeletedMeansErased)
def set_deleted_means_erased(
    app: DecisionContext, cmd: SetDeletedMeansErased, cause: Cause
) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.set_deleted_means_erased(cmd.enabled, cause)
    return Decision([workspace])


@HANDLERS.on(ChangeWorkspaceVisibility)
def change_workspace_visibility(
    app: DecisionContext, cmd: ChangeWorkspaceVisibility, cause: Cause
) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    if cmd.password is not None:
        check_password_length(cmd.password)
    workspace.change_visibility(cmd.visibility, cmd.password is not None, cause)
    # Hashed as at creation; a workspace without a password keeps no usable one (joining
    # asks for it only while ``has_password``).
    credentials = {} if cmd.password is None else {workspace.id: app.passwords.hash(cmd.password)}
    return Decision([workspace], credentials=credentials)


@HANDLERS.on(TransferWorkspace)
def transfer_workspace(app: DecisionContext, cmd: TransferWorkspace, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.transfer_ownership(_user_id(app, cmd.user_id), cause)
    return Decision([workspace])


@HANDLERS.on(DeleteWorkspace)
def delete_workspace(app: DecisionContext, cmd: DeleteWorkspace, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.delete(cmd.confirm_name, cause)
    return Decision([workspace])


@HANDLERS.on(RevokeInvite)
def revoke_invite(app: DecisionContext, cmd: RevokeInvite, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.revoke_invite(cmd.invite_id, cause)
    return Decision([workspace])


@HANDLERS.on(RenameRole)
def rename_role(app: DecisionContext, cmd: RenameRole, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.rename_role(cmd.role, cmd.name, cause)
    return Decision([workspace], {"name": cmd.name})


@HANDLERS.on(ChangeRolePermissions)
def change_role_permissions(
    app: DecisionContext, cmd: ChangeRolePermissions, cause: Cause
) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    if len(cmd.permissions) > MAX_LISTED_PERMISSIONS:
        raise InvalidValue("too many permissions")
    workspace.change_role_permissions(cmd.role, cmd.permissions, cause)
    return Decision([workspace])


@HANDLERS.on(ReorderRoles)
def reorder_roles(app: DecisionContext, cmd: ReorderRoles, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.reorder_roles(cmd.roles, cause)
    return Decision([workspace])


@HANDLERS.on(DeleteRole)
def delete_role(app: DecisionContext, cmd: DeleteRole, cause: Cause) -> Decision:
    workspace = _member_workspace(app, cmd.workspace_id, cause.actor)
    workspace.delete_role(cmd.role, cause)
    return Decision([workspace])
