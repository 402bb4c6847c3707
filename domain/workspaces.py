"""Workspaces: membership, roles and their permissions, invites and bans."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import (
    AlreadyAMember,
    Banned,
    Conflict,
    Gone,
    InvalidValue,
    LastOwner,
    NotAMember,
    NotFound,
    PermissionDenied,
)
from domain.permissions import (
    ADMIN,
    ALL_PERMISSIONS,
    BUILTIN_ROLES,
    DEFAULT_ROLE,
    MEMBER,
    OWNER,
    VIEWER,
)
from domain.retention import check_days, run_is_due
from domain.rules import (
    DEFAULT_INVITE_TTL_S,
    MAX_CUSTOM_ROLES,
    MAX_INVITE_TTL_S,
    MAX_INVITE_USES,
    MAX_WORKSPACE_NAME,
    MIN_INVITE_TTL_S,
    ROLE_NAME_PATTERN,
    shown_name,
)
from domain.scopes import SELF, WORKSPACE_MEMBERS, StreamKind

PUBLIC = "public"
PRIVATE = "private"


def invite_code_hash(code: str) -> str:
    """Invites are stored by hash: whoever reads the log cannot join with what they read."""
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass
class Invite:
    created_by: str
    max_uses: int | None
    expires_at: datetime
    uses: int = 0

    def check_usable(self) -> None:
        # An expired invite answers as an unknown code (Workspace.accept_invite).
        if self.max_uses is not None and self.uses >= self.max_uses:
            raise Gone("this invite has been used up")


# Discord-style hierarchy: the owner is above all, then admin, then the custom roles, then
# member and viewer. Custom roles rank by creation, the newest lowest (as Discord places a new
# role at the bottom): a holder of a custom role with manage_roles can then create a role and
# still grant it, since it lands below their own.
_BUILTIN_RANKS = {VIEWER: 0, MEMBER: 1}
_ADMIN_RANK = 1_000_000
_OWNER_RANK = 2_000_000
_NO_ROLE = -1


@dataclass
class _Roles:
    # Insertion order is creation order (dicts keep it, and replay re-creates it).
    custom: dict[str, frozenset[str]] = field(default_factory=dict)

    def permissions_of(self, name: str) -> frozenset[str]:
        if name in BUILTIN_ROLES:
            return BUILTIN_ROLES[name]
        return self.custom.get(name, frozenset())

    def exists(self, name: str) -> bool:
        return name in BUILTIN_ROLES or name in self.custom

    def rank(self, name: str) -> int:
        """Where a role sits in the hierarchy: higher outranks lower."""
        if name == OWNER:
            return _OWNER_RANK
        if name == ADMIN:
            return _ADMIN_RANK
        if name in _BUILTIN_RANKS:
            return _BUILTIN_RANKS[name]
        names = list(self.custom)
        if name not in names:
            return _NO_ROLE
        return len(_BUILTIN_RANKS) + len(names) - 1 - names.index(name)

    def ordered(self) -> list[str]:
        """Every role, highest first (what a role list shows)."""
        return sorted([*BUILTIN_ROLES, *self.custom], key=self.rank, reverse=True)


class Workspace(ChorusAggregate):
    """A workspace and who may do what in it. Its creator is its first owner."""

    stream_kind = StreamKind(
        "workspace",
        WORKSPACE_MEMBERS,
        workspace=SELF,
        # They name the member whose access they change.
        access_events=(
            "MemberLeft",
            "MemberKicked",
            "MemberBanned",
            "RoleGranted",
            "RoleRevoked",
            # They name no member: each may change what every member reads (issue 20).
            "WorkspaceOwnershipTransferred",
            "WorkspaceDeleted",
            "RolePermissionsChanged",
            "RoleDeleted",
        ),
    )

    @classmethod
    @caused
    def create(
        cls,
        id: UUID,
        name: str,
        visibility: str,
        has_password: bool,
        cause: Cause,
    ) -> Workspace:
        if cause.actor_id is None:
            raise PermissionDenied("a workspace needs an owner")
        if visibility not in (PUBLIC, PRIVATE):
            raise InvalidValue("visibility must be 'public' or 'private'")
        if has_password and visibility != PUBLIC:
            raise InvalidValue("only a public workspace can have a join password")
        return cls(
            id=id,
            name=shown_name(name, field="name", max_length=MAX_WORKSPACE_NAME),
            visibility=visibility,
            has_password=has_password,
            owner_id=cause.actor_id,
        )

    @event("WorkspaceCreated")
    def __init__(
        self,
        id: UUID,
        name: str,
        visibility: str,
        has_password: bool,
        owner_id: str,
    ) -> None:
        self.name = name
        self.visibility = visibility
        self.has_password = has_password
        self.owner_id = owner_id
        # Each member's role names; when they joined is the read model's business.
        self.members: dict[str, set[str]] = {owner_id: {OWNER}}
        # How many times each user has joined: a private channel's membership is valid only
        # for the tenure it was granted in, so leaving (or a kick or ban) ends it for good.
        self.tenures: dict[str, int] = {owner_id: 1}
        self.roles = _Roles()
        self.banned: set[str] = set()
        self.invites: dict[str, Invite] = {}

    # -- queries on current state --------------------------------------------------------

    @property
    def deleted(self) -> bool:
        # Snapshots taken before deletion existed lack the attribute.
        return bool(self.__dict__.get("is_deleted", False))

    def is_member(self, user_id: str) -> bool:
        """A deleted workspace has no members: its content stays in the log, out of reach."""
        return user_id in self.members and not self.deleted

    def permissions_of(self, user_id: str) -> frozenset[str]:
        member = self.members.get(user_id)
        if member is None or self.deleted:
            return frozenset()
        perms: set[str] = set()
        for role in member:
            perms |= self.roles.permissions_of(role)
        return frozenset(perms)

    def tenure_of(self, user_id: str) -> int | None:
        """Which of the user's memberships is the current one (1 for the first), or None
        when not a member."""
        if not self.is_member(user_id):
            return None
        # Snapshots taken before tenures were kept know only first memberships.
        tenures: dict[str, int] = getattr(self, "tenures", {})
        return tenures.get(user_id, 1)

    def rank_of(self, user_id: str) -> int:
        """A member's place in the hierarchy: that of their highest role."""
        return max(
            (self.roles.rank(role) for role in self.members.get(user_id, ())), default=_NO_ROLE
        )

    def owners(self) -> list[str]:
        if self.deleted:
            return []
        return [uid for uid, m in self.members.items() if OWNER in m]

    def check_visible_to(self, user_id: str) -> None:
        """Private workspaces do not exist for those outside them, deleted ones for anyone."""
        if self.deleted or (self.visibility == PRIVATE and not self.is_member(user_id)):
            raise NotAMember("unknown workspace")

    def check_member(self, user_id: str) -> None:
        if not self.is_member(user_id):
            # A private (or deleted) workspace answers outsiders exactly as an unknown id does.
            if self.visibility == PRIVATE or self.deleted:
                raise NotAMember("unknown workspace")
            raise NotAMember("you are not a member of this workspace")

    def check_permission(self, user_id: str, permission: str) -> None:
        self.check_member(user_id)
        if permission not in self.permissions_of(user_id):
            raise PermissionDenied(f"missing permission {permission!r}")

    def _check_can_join(self, user_id: str) -> None:
        if user_id in self.banned:
            raise Banned("you are banned from this workspace")
        if self.is_member(user_id):
            raise AlreadyAMember("already a member of this workspace")

    # -- membership ------------------------------------------------------------------------

    @caused
    def join(self, cause: Cause, *, password_ok: bool) -> None:
        """Joins a public workspace; one with a password needs it checked by the caller."""
        user_id = _actor(cause)
        if self.visibility != PUBLIC or self.deleted:
            raise NotAMember("unknown workspace")
        self._check_can_join(user_id)
        if self.has_password and not password_ok:
            raise PermissionDenied("wrong or missing workspace password")
        self._member_joined(user_id=user_id, invite_hash=None)

    @caused
    def accept_invite(self, code: str, now: datetime, cause: Cause) -> None:
        user_id = _actor(cause)
        code_hash = invite_code_hash(code)
        invite = self.invites.get(code_hash)
        # Revoked (gone from ``invites``), expired, or of a deleted workspace: as unknown.
        if invite is None or self.deleted or now >= invite.expires_at:
            raise NotFound("unknown invite")
        self._check_can_join(user_id)
        invite.check_usable()
        self._member_joined(user_id=user_id, invite_hash=code_hash)

    @event("MemberJoined")
    def _member_joined(self, user_id: str, invite_hash: str | None) -> None:
        self.members[user_id] = {DEFAULT_ROLE}
        tenures = self.__dict__.setdefault("tenures", {})
        tenures[user_id] = tenures.get(user_id, 0) + 1
        if invite_hash is not None:
            self.invites[invite_hash].uses += 1

    @caused
    def leave(self, cause: Cause) -> None:
        user_id = _actor(cause)
        self.check_member(user_id)
        self._check_not_last_owner(user_id)
        self._member_left(user_id=user_id)

    @event("MemberLeft")
    def _member_left(self, user_id: str) -> None:
        del self.members[user_id]

    @caused
    def kick(self, user_id: str, cause: Cause) -> None:
        actor = _actor(cause)
        self.check_permission(actor, "kick_members")
        self._check_can_act_on(actor, user_id)
        if not self.is_member(user_id):
            raise NotFound("no such member")
        self._member_kicked(user_id=user_id)

    @event("MemberKicked")
    def _member_kicked(self, user_id: str) -> None:
        del self.members[user_id]

    @caused
    def ban(self, user_id: str, cause: Cause) -> None:
        actor = _actor(cause)
        self.check_permission(actor, "ban_members")
        self._check_can_act_on(actor, user_id)
        if user_id in self.banned:
            raise Conflict("already banned")
        self._member_banned(user_id=user_id)

    @event("MemberBanned")
    def _member_banned(self, user_id: str) -> None:
        self.members.pop(user_id, None)
        self.banned.add(user_id)

    @caused
    def unban(self, user_id: str, cause: Cause) -> None:
        actor = _actor(cause)
        self.check_permission(actor, "ban_members")
        if user_id not in self.banned:
            raise NotFound("that user is not banned")
        self._member_unbanned(user_id=user_id)

    @event("MemberUnbanned")
    def _member_unbanned(self, user_id: str) -> None:
        self.banned.discard(user_id)

    def _check_can_act_on(self, actor: str, target: str) -> None:
        """Moderators cannot act on themselves, on owners, on anyone whose highest role is at
        or above their own, or on anyone holding a permission they lack."""
        if actor == target:
            raise PermissionDenied("you cannot do this to yourself")
        if OWNER in self.members.get(target, set()):
            raise PermissionDenied("owners cannot be kicked or banned")
        self._check_outranks(actor, target)
        if not self.permissions_of(target) <= self.permissions_of(actor):
            raise PermissionDenied("that member holds permissions you do not")

    def _check_not_last_owner(self, user_id: str) -> None:
        if self.owners() == [user_id]:
            raise LastOwner("the last owner cannot leave or lose the owner role")

    # -- invites ---------------------------------------------------------------------------

    @caused
    def create_invite(
        self,
        code: str,
        max_uses: int | None,
        expires_in_s: int | None,
        now: datetime,
        cause: Cause,
    ) -> None:
        actor = _actor(cause)
        self.check_permission(actor, "invite")
        if max_uses is not None and not 1 <= max_uses <= MAX_INVITE_USES:
            raise InvalidValue(f"max_uses must be between 1 and {MAX_INVITE_USES}")
        ttl = DEFAULT_INVITE_TTL_S if expires_in_s is None else expires_in_s
        if not MIN_INVITE_TTL_S <= ttl <= MAX_INVITE_TTL_S:
            raise InvalidValue(
                f"expires_in_s must be between {MIN_INVITE_TTL_S} and {MAX_INVITE_TTL_S}"
            )
        self._invite_created(
            code_hash=invite_code_hash(code),
            max_uses=max_uses,
            expires_at=now + timedelta(seconds=ttl),
            actor_id=actor,
        )

    @event("InviteCreated")
    def _invite_created(
        self,
        code_hash: str,
        max_uses: int | None,
        expires_at: datetime,
        actor_id: str | None,
    ) -> None:
        self.invites[code_hash] = Invite(actor_id or "", max_uses, expires_at)

    # -- roles -----------------------------------------------------------------------------

    @caused
    def create_role(self, name: str, permissions: list[str], cause: Cause) -> None:
        actor = _actor(cause)
        self.check_permission(actor, "manage_roles")
        if not ROLE_NAME_PATTERN.fullmatch(name):
            raise InvalidValue("role name must be 1 to 32 characters of a-z, 0-9, '_' or '-'")
        if self.roles.exists(name):
            raise Conflict(f"role {name!r} already exists")
        if len(self.roles.custom) >= MAX_CUSTOM_ROLES:
            raise InvalidValue(f"a workspace has at most {MAX_CUSTOM_ROLES} custom roles")
        unknown = set(permissions) - ALL_PERMISSIONS
        if unknown:
            raise InvalidValue(f"unknown permissions: {', '.join(sorted(unknown))}")
        self._check_holds(actor, frozenset(permissions))
        self._role_created(
            name=name,
            permissions=sorted(set(permissions)),
        )

    @event("RoleCreated")
    def _role_created(self, name: str, permissions: list[str]) -> None:
        self.roles.custom[name] = frozenset(permissions)

    @caused
    def grant_role(self, user_id: str, role: str, cause: Cause) -> None:
        actor = _actor(cause)
        self._check_can_change_roles(actor, user_id, role)
        if role in self.members[user_id]:
            raise Conflict(f"already holds role {role!r}")
        self._role_granted(user_id=user_id, role=role)

    @event("RoleGranted")
    def _role_granted(self, user_id: str, role: str) -> None:
        self.members[user_id].add(role)

    @caused
    def revoke_role(self, user_id: str, role: str, cause: Cause) -> None:
        actor = _actor(cause)
        self._check_can_change_roles(actor, user_id, role)
        if role not in self.members[user_id]:
            raise NotFound(f"does not hold role {role!r}")
        if role == OWNER:
            self._check_not_last_owner(user_id)
        self._role_revoked(user_id=user_id, role=role)

    @event("RoleRevoked")
    def _role_revoked(self, user_id: str, role: str) -> None:
        self.members[user_id].discard(role)

    def _check_can_change_roles(self, actor: str, user_id: str, role: str) -> None:
        self.check_permission(actor, "manage_roles")
        if not self.roles.exists(role):
            raise NotFound(f"unknown role {role!r}")
        if not self.is_member(user_id):
            raise NotFound("no such member")
        if actor == user_id:
            raise PermissionDenied("nobody can change their own roles")
        if role == OWNER and OWNER not in self.members[actor]:
            raise PermissionDenied("only an owner can grant or revoke the owner role")
        if OWNER in self.members[user_id] and OWNER not in self.members[actor]:
            raise PermissionDenied("only an owner can change an owner's roles")
        # Owners among themselves are governed by the owner rules above.
        if OWNER not in self.members[actor]:
            self._check_outranks(actor, user_id)
            if self.roles.rank(role) >= self.rank_of(actor):
                raise PermissionDenied(
                    f"role {role!r} is at or above your highest role: you cannot grant or revoke it"
                )
        self._check_holds(actor, self.roles.permissions_of(role))

    # -- the workspace's own life (issue 20) ------------------------------------------------

    def _check_owner(self, actor: str, what: str) -> None:
        self.check_member(actor)
        if OWNER not in self.members[actor]:
            raise PermissionDenied(f"only an owner can {what}")

    @caused
    def rename(self, name: str, cause: Cause) -> None:
        actor = _actor(cause)
        self.check_permission(actor, "manage_workspace")
        new_name = shown_name(name, field="name", max_length=MAX_WORKSPACE_NAME)
        if new_name == self.name:
            raise Conflict("the workspace already has that name")
        self._renamed(name=new_name)

    @event("WorkspaceRenamed")
    def _renamed(self, name: str) -> None:
        self.name = name

    @caused
    def change_visibility(self, visibility: str, has_password: bool, cause: Cause) -> None:
        """Sets visibility and whether joining needs a password (the caller stores its hash:
        a new password, even with nothing else changed, is a change)."""
        actor = _actor(cause)
        self.check_permission(actor, "manage_workspace")
        if visibility not in (PUBLIC, PRIVATE):
            raise InvalidValue("visibility must be 'public' or 'private'")
        if has_password and visibility != PUBLIC:
            raise InvalidValue("only a public workspace can have a join password")
        self._visibility_changed(visibility=visibility, has_password=has_password)

    @event("WorkspaceVisibilityChanged")
    def _visibility_changed(self, visibility: str, has_password: bool) -> None:
        self.visibility = visibility
        self.has_password = has_password

    @caused
    def transfer_ownership(self, user_id: str, cause: Cause) -> None:
        """Hands the workspace to another member: they become its owner, the giver an admin."""
        actor = _actor(cause)
        self._check_owner(actor, "transfer the workspace")
        if user_id == actor:
            raise InvalidValue("you own the workspace already")
        if not self.is_member(user_id):
            raise NotFound("no such member")
        self._ownership_transferred(previous_owner_id=actor, owner_id=user_id)

    @event("WorkspaceOwnershipTransferred")
    def _ownership_transferred(self, previous_owner_id: str, owner_id: str) -> None:
        self.owner_id = owner_id
        self.members[owner_id].add(OWNER)
        giver = self.members[previous_owner_id]
        giver.discard(OWNER)
        giver.add(ADMIN)

    @caused
    def delete(self, confirm_name: str, cause: Cause) -> None:
        """Deletes the workspace: every member loses access at once; what it held stays in
        the log (for the auditors and the erasure rules)."""
        actor = _actor(cause)
        self._check_owner(actor, "delete the workspace")
        if confirm_name != self.name:
            raise InvalidValue("confirm with the workspace's exact name")
        self._deleted()

    @event("WorkspaceDeleted")
    def _deleted(self) -> None:
        self.is_deleted = True

    # -- "deleted means erased" (issue 20, crypto-shredding) --------------------------------

    @property
    def deleted_means_erased(self) -> bool:
        """Whether deleting a message in this workspace erases its text (destroys its data
        keys), rather than only hiding it. On unless an admin turned it off; workspaces (and
        snapshots) from before the setting existed have it on."""
        return bool(self.__dict__.get("deletion_erases", True))

    @caused
    def set_deleted_means_erased(self, enabled: bool, cause: Cause) -> None:
        actor = _actor(cause)
        self.check_permission(actor, "manage_workspace")
        if enabled == self.deleted_means_erased:
            raise Conflict(f"deleted means erased is already {'on' if enabled else 'off'}")
        self._deletion_erasure_changed(enabled=enabled)

    @event("DeletionErasureChanged")
    def _deletion_erasure_changed(self, enabled: bool) -> None:
        self.deletion_erases = enabled

    # -- retention (issue 20): messages older than N days are erased -----------------------

    @property
    def retention_days(self) -> int | None:
        # Workspaces (and snapshots) from before retention have none: off.
        days = self.__dict__.get("retention", None)
        return None if days is None else int(days)

    @property
    def retained_before(self) -> datetime | None:
        """The cut-off of the last retention run: every message sent before it is erased."""
        value = self.__dict__.get("retention_cutoff", None)
        return value if isinstance(value, datetime) else None

    @caused
    def set_retention(self, days: int | None, cause: Cause) -> None:
        """Sets how many days messages are kept (None: for ever); needs ``manage_workspace``."""
        actor = _actor(cause)
        self.check_permission(actor, "manage_workspace")
        days = check_days(days)
        if days == self.retention_days:
            raise Conflict("the workspace already has that retention")
        self._retention_set(days=days)

    @event("RetentionSet")
    def _retention_set(self, days: int | None) -> None:
        self.retention = days

    def retention_due(self, since: datetime | None, cutoff: datetime) -> bool:
        """Whether a run decided from ``since`` to ``cutoff`` is still the next one: retention
        on, ``since`` the last run's cut-off (not a stale read), and the cut-off moved on."""
        return (
            self.retention_days is not None
            and since == self.retained_before
            and run_is_due(since, cutoff)
        )

    @caused
    def apply_retention(self, cutoff: datetime, message_ids: list[str], cause: Cause) -> None:
        """Records a run (a server's, with no actor): the messages sent before ``cutoff``
        since the last run, whose keys the retention read model destroys from this event.
        Ids, a count and a time: nothing of what the messages said."""
        self._retention_applied(cutoff=cutoff, count=len(message_ids), message_ids=message_ids)

    @event("RetentionApplied")
    def _retention_applied(self, cutoff: datetime, count: int, message_ids: list[str]) -> None:
        self.retention_cutoff = cutoff

    # -- invites: listing is the read model's; revoking is here ------------------------------

    @caused
    def revoke_invite(self, code_hash: str, cause: Cause) -> None:
        """Revokes an invite (needs ``invite``); one made by a member at or above one's own
        rank stays theirs to revoke."""
        actor = _actor(cause)
        self.check_permission(actor, "invite")
        invite = self.invites.get(code_hash)
        if invite is None:
            raise NotFound("unknown invite")
        creator = invite.created_by
        # A creator who has left ranks nowhere: any holder of ``invite`` may revoke.
        if creator != actor and OWNER not in self.members[actor] and self.is_member(creator):
            self._check_outranks(actor, creator)
        self._invite_revoked(code_hash=code_hash)

    @event("InviteRevoked")
    def _invite_revoked(self, code_hash: str) -> None:
        del self.invites[code_hash]

    # -- roles' own life ---------------------------------------------------------------------

    def _check_can_edit_role(self, actor: str, name: str) -> None:
        """Custom roles below the actor's highest (the owner's: all of them)."""
        self.check_permission(actor, "manage_roles")
        if name in BUILTIN_ROLES:
            raise PermissionDenied("built-in roles cannot be changed")
        if name not in self.roles.custom:
            raise NotFound(f"unknown role {name!r}")
        if self.roles.rank(name) >= self.rank_of(actor):
            raise PermissionDenied(f"role {name!r} is at or above your highest role")

    @caused
    def rename_role(self, name: str, new_name: str, cause: Cause) -> None:
        actor = _actor(cause)
        # A name no role may have is refused as such, whichever role it was meant for.
        if not ROLE_NAME_PATTERN.fullmatch(new_name):
            raise InvalidValue("role name must be 1 to 32 characters of a-z, 0-9, '_' or '-'")
        self._check_can_edit_role(actor, name)
        if self.roles.exists(new_name):
            raise Conflict(f"role {new_name!r} already exists")
        self._role_renamed(name=name, new_name=new_name)

    @event("RoleRenamed")
    def _role_renamed(self, name: str, new_name: str) -> None:
        # The role keeps its place: the dict is rebuilt in the same order.
        self.roles.custom = {
            (new_name if n == name else n): p for n, p in self.roles.custom.items()
        }
        for roles in self.members.values():
            if name in roles:
                roles.discard(name)
                roles.add(new_name)

    @caused
    def change_role_permissions(self, name: str, permissions: list[str], cause: Cause) -> None:
        actor = _actor(cause)
        self._check_can_edit_role(actor, name)
        unknown = set(permissions) - ALL_PERMISSIONS
        if unknown:
            raise InvalidValue(f"unknown permissions: {', '.join(sorted(unknown))}")
        new = frozenset(permissions)
        old = self.roles.custom[name]
        if new == old:
            raise Conflict("the role has these permissions already")
        # Nobody gives or takes away a permission they do not hold themselves.
        self._check_holds(actor, new ^ old)
        self._role_permissions_changed(name=name, permissions=sorted(new))

    @event("RolePermissionsChanged")
    def _role_permissions_changed(self, name: str, permissions: list[str]) -> None:
        self.roles.custom[name] = frozenset(permissions)

    @caused
    def reorder_roles(self, names: list[str], cause: Cause) -> None:
        """Puts the custom roles in this order, highest first. The list names every custom
        role once; those at or above the actor's highest role keep their places."""
        actor = _actor(cause)
        self.check_permission(actor, "manage_roles")
        current = list(self.roles.custom)
        if sorted(names) != sorted(current) or len(set(names)) != len(names):
            raise InvalidValue("give every custom role of the workspace once, highest first")
        if names == current:
            raise Conflict("the roles are in this order already")
        own = self.rank_of(actor)
        for i, name in enumerate(current):
            if self.roles.rank(name) >= own and names[i] != name:
                raise PermissionDenied(f"role {name!r} is at or above your highest role")
        self._roles_reordered(names=list(names))

    @event("RolesReordered")
    def _roles_reordered(self, names: list[str]) -> None:
        self.roles.custom = {n: self.roles.custom[n] for n in names}

    @caused
    def delete_role(self, name: str, cause: Cause) -> None:
        """Deletes a custom role: its holders lose it at once."""
        actor = _actor(cause)
        self._check_can_edit_role(actor, name)
        self._check_holds(actor, self.roles.custom[name])
        self._role_deleted(name=name)

    @event("RoleDeleted")
    def _role_deleted(self, name: str) -> None:
        del self.roles.custom[name]
        for roles in self.members.values():
            roles.discard(name)

    def _check_outranks(self, actor: str, target: str) -> None:
        if self.rank_of(target) >= self.rank_of(actor):
            raise PermissionDenied("that member's highest role is at or above yours")

    def _check_holds(self, actor: str, permissions: frozenset[str]) -> None:
        missing = permissions - self.permissions_of(actor)
        if missing:
            raise PermissionDenied(
                f"you cannot hand out permissions you do not hold: {', '.join(sorted(missing))}"
            )


def _actor(cause: Cause) -> str:
    if cause.actor_id is None:
        raise PermissionDenied("this needs a signed-in user")
    return cause.actor_id
