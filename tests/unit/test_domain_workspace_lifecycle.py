"""Issue 20: the whole life of a workspace, its roles, invites and channels, as the domain rules
it (the HTTP side is tests/e2e/test_workspace_lifecycle.py and test_channel_lifecycle.py)."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from domain.channels import Channel
from domain.errors import (
    Conflict,
    InvalidValue,
    NotAMember,
    NotFound,
    PermissionDenied,
)
from domain.workspaces import PRIVATE, PUBLIC, Workspace, invite_code_hash
from tests.fixtures.domain import (
    ADAM,
    MAX,
    MIA,
    NOW,
    OLIVIA,
    OSCAR,
    VIC,
    build_workspace,
    by,
    event_names,
    nothing_recorded,
    recorded,
    refused,
    replayed,
)

# Custom roles, highest first as created: "lead" (moderation), "helper", "quiet".
ROLES = {
    "lead": ["manage_roles", "view_channels", "send_messages", "invite", "kick_members"],
    "helper": ["view_channels", "send_messages"],
    "quiet": ["view_channels"],
}


def workspace() -> Workspace:
    """Olivia owns it; Adam is an admin; Mia holds ``lead``; Max ``helper``; Vic a viewer."""
    return build_workspace(
        roles=ROLES,
        members={
            ADAM: {"admin"},
            MIA: {"member", "lead"},
            MAX: {"member", "helper"},
            VIC: {"viewer"},
        },
    )


def roles_order(ws: Workspace) -> list[str]:
    return ws.roles.ordered()


# -- the workspace itself -----------------------------------------------------------------------


def test_rename_needs_manage_workspace_and_a_valid_new_name() -> None:
    ws = workspace()
    ws.rename("  Acme Two ", by(ADAM))
    recorded(ws, "WorkspaceRenamed", by(ADAM), name="Acme Two")
    for actor, error in ((MIA, PermissionDenied), (VIC, PermissionDenied), (OSCAR, NotAMember)):
        with refused(error):
            ws.rename("Other", by(actor))
    with refused(InvalidValue):
        ws.rename("   ", by(OLIVIA))
    with refused(Conflict):
        ws.rename("Acme Two", by(OLIVIA))
    nothing_recorded(ws)


def test_visibility_and_password_change_together_and_a_private_one_has_no_password() -> None:
    ws = workspace()
    ws.change_visibility(PUBLIC, True, by(ADAM))
    recorded(ws, "WorkspaceVisibilityChanged", by(ADAM), visibility=PUBLIC, has_password=True)
    with refused(InvalidValue):
        ws.change_visibility(PRIVATE, True, by(OLIVIA))
    with refused(InvalidValue):
        ws.change_visibility("secret", False, by(OLIVIA))
    with refused(PermissionDenied):
        ws.change_visibility(PRIVATE, False, by(MIA))
    ws.change_visibility(PRIVATE, False, by(OLIVIA))
    assert (ws.visibility, ws.has_password) == (PRIVATE, False)


def test_transfer_makes_the_member_owner_and_the_giver_an_admin() -> None:
    ws = workspace()
    with refused(PermissionDenied):
        ws.transfer_ownership(MIA, by(ADAM))  # an admin is not an owner
    with refused(NotFound):
        ws.transfer_ownership(OSCAR, by(OLIVIA))
    with refused(InvalidValue):
        ws.transfer_ownership(OLIVIA, by(OLIVIA))
    ws.transfer_ownership(MIA, by(OLIVIA))
    recorded(
        ws, "WorkspaceOwnershipTransferred", by(OLIVIA), previous_owner_id=OLIVIA, owner_id=MIA
    )
    assert ws.owner_id == MIA and ws.owners() == [MIA]
    assert ws.members[OLIVIA] == {"admin"}
    assert "owner" in ws.members[MIA]
    # The new owner now outranks the old one, who can no longer do owner things.
    with refused(PermissionDenied):
        ws.delete("Acme", by(OLIVIA))


def test_delete_needs_an_owner_and_the_exact_name_and_ends_every_access() -> None:
    ws = workspace()
    channel = Channel.create(uuid4(), ws, "general", False, None, by(ADAM))
    channel.collect_events()
    ws.create_invite("code-1", None, None, NOW, by(OLIVIA))
    ws.collect_events()
    with refused(PermissionDenied):
        ws.delete("Acme", by(ADAM))
    with refused(InvalidValue):
        ws.delete("acme", by(OLIVIA))
    nothing_recorded(ws)
    ws.delete("Acme", by(OLIVIA))
    recorded(ws, "WorkspaceDeleted", by(OLIVIA))
    for user in (OLIVIA, ADAM, MIA):
        assert not ws.is_member(user) and ws.permissions_of(user) == frozenset()
        with refused(NotAMember, "unknown workspace"):
            ws.check_member(user)
        assert not channel.can_view(user, ws)
    assert ws.owners() == []
    with refused(NotFound, "unknown invite"):
        ws.accept_invite("code-1", NOW, by(OSCAR))
    with refused(NotAMember):
        ws.join(by(OSCAR), password_ok=True)
    with refused(NotAMember):
        ws.delete("Acme", by(OLIVIA))


def test_a_replayed_workspace_keeps_every_change() -> None:
    ws = Workspace.create(uuid4(), "Acme", PUBLIC, False, by(OLIVIA))
    ws.create_role("lead", ["view_channels", "invite"], by(OLIVIA))
    ws.create_role("quiet", [], by(OLIVIA))
    ws.create_invite("c", None, None, NOW, by(OLIVIA))
    ws.accept_invite("c", NOW, by(MIA))
    ws.grant_role(MIA, "lead", by(OLIVIA))
    ws.rename("Acme 2", by(OLIVIA))
    ws.change_visibility(PRIVATE, False, by(OLIVIA))
    ws.rename_role("lead", "leader", by(OLIVIA))
    ws.change_role_permissions("leader", ["view_channels"], by(OLIVIA))
    ws.reorder_roles(["quiet", "leader"], by(OLIVIA))
    ws.revoke_invite(invite_code_hash("c"), by(OLIVIA))
    ws.transfer_ownership(MIA, by(OLIVIA))
    events = ws.collect_events()
    copy = replayed(events)
    assert copy.name == "Acme 2" and copy.visibility == PRIVATE and copy.owner_id == MIA
    assert copy.roles.custom == {"quiet": frozenset(), "leader": frozenset({"view_channels"})}
    assert copy.members == {OLIVIA: {"admin"}, MIA: {"member", "leader", "owner"}}
    assert copy.invites == {}
    copy.delete("Acme 2", by(MIA))
    assert replayed([*events, *copy.collect_events()]).deleted


# -- invites --------------------------------------------------------------------------------------


def test_a_revoked_or_expired_invite_answers_as_an_unknown_code() -> None:
    ws = workspace()
    ws.create_invite("kept", None, None, NOW, by(MIA))
    ws.create_invite("short", None, 3600, NOW, by(OLIVIA))
    ws.collect_events()
    ws.revoke_invite(invite_code_hash("kept"), by(MIA))
    recorded(ws, "InviteRevoked", by(MIA), code_hash=invite_code_hash("kept"))
    with refused(NotFound, "unknown invite"):
        ws.accept_invite("kept", NOW, by(OSCAR))
    with refused(NotFound, "unknown invite"):
        ws.accept_invite("short", NOW + timedelta(hours=2), by(OSCAR))
    with refused(NotFound, "unknown invite"):
        ws.accept_invite("never-made", NOW, by(OSCAR))
    with refused(NotFound):
        ws.revoke_invite(invite_code_hash("kept"), by(MIA))


def test_revoking_another_members_invite_needs_to_outrank_them() -> None:
    ws = workspace()
    ws.create_invite("admins", None, None, NOW, by(ADAM))
    ws.create_invite("maxs", None, None, NOW, by(MAX))
    ws.collect_events()
    with refused(PermissionDenied):
        ws.revoke_invite(invite_code_hash("admins"), by(MIA))  # lead is below admin
    with refused(PermissionDenied):
        ws.revoke_invite(invite_code_hash("maxs"), by(VIC))  # a viewer cannot invite
    ws.revoke_invite(invite_code_hash("maxs"), by(MIA))  # lead outranks helper
    ws.revoke_invite(invite_code_hash("admins"), by(OLIVIA))  # owners revoke any
    assert event_names(ws) == ["InviteRevoked", "InviteRevoked"]


# -- roles ----------------------------------------------------------------------------------------


def test_only_roles_below_ones_own_are_renamed_changed_or_deleted() -> None:
    ws = workspace()
    # Mia holds lead (the highest custom role): helper and quiet are below her, lead is not.
    with refused(PermissionDenied):
        ws.rename_role("lead", "boss", by(MIA))
    with refused(PermissionDenied):
        ws.change_role_permissions("lead", ["view_channels"], by(MIA))
    with refused(PermissionDenied):
        ws.delete_role("lead", by(MIA))
    with refused(PermissionDenied):
        ws.delete_role("member", by(OLIVIA))  # built-in roles stay
    with refused(NotFound):
        ws.delete_role("nope", by(OLIVIA))
    with refused(PermissionDenied):
        ws.rename_role("quiet", "hush", by(MAX))  # no manage_roles
    ws.rename_role("helper", "aide", by(MIA))
    recorded(ws, "RoleRenamed", by(MIA), name="helper", new_name="aide")
    assert ws.members[MAX] == {"member", "aide"}
    assert roles_order(ws) == ["owner", "admin", "lead", "aide", "quiet", "member", "viewer"]
    with refused(Conflict):
        ws.rename_role("aide", "quiet", by(MIA))
    with refused(InvalidValue):
        ws.rename_role("aide", "Not Valid", by(MIA))


def test_nobody_gives_or_takes_a_permission_they_do_not_hold() -> None:
    ws = workspace()
    with refused(PermissionDenied):
        ws.change_role_permissions("quiet", ["view_channels", "ban_members"], by(MIA))
    ws.change_role_permissions("quiet", ["view_channels", "send_messages"], by(MIA))
    recorded(
        ws, "RolePermissionsChanged", by(MIA), name="quiet",
        permissions=["send_messages", "view_channels"],
    )  # fmt: skip
    ws.change_role_permissions("quiet", ["manage_documents"], by(OLIVIA))
    ws.collect_events()
    # Taking manage_documents away is giving it back, for Mia: she does not hold it.
    with refused(PermissionDenied):
        ws.change_role_permissions("quiet", [], by(MIA))
    with refused(InvalidValue):
        ws.change_role_permissions("quiet", ["fly"], by(OLIVIA))
    with refused(Conflict):
        ws.change_role_permissions("quiet", ["manage_documents"], by(OLIVIA))


def test_deleting_a_role_takes_it_from_its_holders_at_once() -> None:
    ws = workspace()
    assert "send_messages" in ws.permissions_of(MAX)
    ws.revoke_role(MAX, "member", by(OLIVIA))
    ws.collect_events()
    assert ws.permissions_of(MAX) == frozenset(ROLES["helper"])
    ws.delete_role("helper", by(MIA))
    recorded(ws, "RoleDeleted", by(MIA), name="helper")
    assert ws.members[MAX] == set() and ws.permissions_of(MAX) == frozenset()
    assert "helper" not in ws.roles.custom


def test_reordering_takes_every_custom_role_and_moves_only_those_below_ones_own() -> None:
    ws = workspace()
    assert roles_order(ws) == ["owner", "admin", "lead", "helper", "quiet", "member", "viewer"]
    with refused(InvalidValue):
        ws.reorder_roles(["quiet", "helper"], by(OLIVIA))  # not every role
    with refused(InvalidValue):
        ws.reorder_roles(["quiet", "helper", "lead", "lead"], by(OLIVIA))
    with refused(InvalidValue):
        ws.reorder_roles(["quiet", "helper", "member"], by(OLIVIA))
    with refused(Conflict):
        ws.reorder_roles(["lead", "helper", "quiet"], by(OLIVIA))
    # Mia (lead) may swap the two below her, not move lead.
    with refused(PermissionDenied):
        ws.reorder_roles(["helper", "lead", "quiet"], by(MIA))
    ws.reorder_roles(["lead", "quiet", "helper"], by(MIA))
    recorded(ws, "RolesReordered", by(MIA), names=["lead", "quiet", "helper"])
    assert roles_order(ws) == ["owner", "admin", "lead", "quiet", "helper", "member", "viewer"]
    # The new order is the hierarchy: quiet now outranks helper.
    assert ws.roles.rank("quiet") > ws.roles.rank("helper")
    with refused(PermissionDenied):
        ws.reorder_roles(["quiet", "lead", "helper"], by(MAX))  # no manage_roles
    ws.reorder_roles(["helper", "quiet", "lead"], by(ADAM))  # admin is above them all
    assert roles_order(ws)[2:5] == ["helper", "quiet", "lead"]


# -- channels -------------------------------------------------------------------------------------


def test_deleting_a_channel_needs_manage_channels_and_hides_it_from_everyone() -> None:
    ws = workspace()
    channel = Channel.create(uuid4(), ws, "general", True, None, by(ADAM))
    channel.add_member(MAX, ws, by(ADAM))
    channel.collect_events()
    with refused(PermissionDenied):
        channel.delete(ws, by(MAX))
    with refused(NotAMember):
        channel.delete(ws, by(MIA))  # cannot see the private channel
    channel.delete(ws, by(ADAM))
    recorded(channel, "ChannelDeleted", by(ADAM))
    assert not channel.can_view(ADAM, ws) and not channel.can_view(MAX, ws)
    with refused(NotAMember, "unknown channel"):
        channel.delete(ws, by(ADAM))
    with refused(NotAMember, "unknown channel"):
        channel.check_can_post(MAX, ws)
    # Not even an owner's reach over private channels' members brings it back.
    with refused(NotAMember):
        channel.add_member(MIA, ws, by(OLIVIA))
