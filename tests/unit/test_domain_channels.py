"""The rules of channels: who sees them, who posts in them, who manages them, and direct
messages between two people."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.base import Cause, recording
from domain.channels import KIND_CHANNEL, KIND_DIRECT, Channel, legacy_direct_channel_id
from domain.errors import (
    AlreadyAMember,
    ChannelArchived,
    Conflict,
    InvalidValue,
    NotAMember,
    NotFound,
    PermissionDenied,
)
from domain.rules import MAX_CHANNEL_NAME, MAX_TOPIC
from domain.workspaces import Workspace
from tests.fixtures.domain import (
    ADAM,
    MAX,
    MIA,
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

NORA = "nora"  # a member whose only role sends messages but cannot view channels


def workspace() -> Workspace:
    """Olivia owns it; Adam is an admin, Mia and Max members, Vic a viewer, Nora blind."""
    return build_workspace(
        roles={"blind": ["send_messages"]},
        members={
            ADAM: {"admin"},
            MIA: {"member"},
            MAX: {"member"},
            VIC: {"viewer"},
            NORA: {"blind"},
        },
    )


def public_channel(ws: Workspace) -> Channel:
    channel = Channel.create(uuid4(), ws, "general", False, None, by(ADAM))
    channel.collect_events()
    return channel


def private_channel(ws: Workspace, *members: str) -> Channel:
    """A private channel Adam created, with the given extra members."""
    channel = Channel.create(uuid4(), ws, "secret", True, None, by(ADAM))
    for user_id in members:
        channel.add_member(user_id, ws, by(ADAM))
    channel.collect_events()
    return channel


def direct(a: str, b: str) -> Channel:
    channel = Channel.open_direct(uuid4(), b, by(a))
    channel.collect_events()
    return channel


# -- creating channels ----------------------------------------------------------------------


def test_a_channel_manager_creates_a_public_channel_open_to_all() -> None:
    ws = workspace()
    cause = by(ADAM, "chan-1")
    channel_id = uuid4()
    channel = Channel.create(channel_id, ws, "  general ", False, "  Say hi ", cause)
    recorded(
        channel,
        "ChannelCreated",
        cause,
        workspace_id=ws.id,
        name="general",
        private=False,
        topic="Say hi",
        kind=KIND_CHANNEL,
        member_ids=[],
    )
    assert channel.id == channel_id
    assert channel.member_ids == set()
    assert not channel.archived


def test_the_creator_of_a_private_channel_is_its_first_member() -> None:
    ws = workspace()
    cause = by(ADAM, "chan-2")
    channel = Channel.create(uuid4(), ws, "secret", True, None, cause)
    recorded(channel, "ChannelCreated", cause, private=True, member_ids=[ADAM], topic="")
    assert channel.member_ids == {ADAM}
    channel.check_can_view(ADAM, ws)


def test_creating_a_channel_needs_manage_channels() -> None:
    with refused(PermissionDenied, match="manage_channels"):
        Channel.create(uuid4(), workspace(), "general", False, None, by(MIA))


def test_outsiders_cannot_create_channels() -> None:
    with refused(NotAMember):
        Channel.create(uuid4(), workspace(), "general", False, None, by(OSCAR))


def test_anonymous_callers_cannot_create_channels() -> None:
    with refused(NotAMember):
        Channel.create(uuid4(), workspace(), "general", False, None, by(None))


@pytest.mark.parametrize("name", ["", "   ", "x" * (MAX_CHANNEL_NAME + 1), "gen\x00eral"])
def test_a_channel_name_is_not_empty_not_too_long_and_has_no_nul(name: str) -> None:
    with refused(InvalidValue, match="name"):
        Channel.create(uuid4(), workspace(), name, False, None, by(ADAM))


def test_a_topic_may_be_empty_but_not_too_long() -> None:
    ws = workspace()
    assert Channel.create(uuid4(), ws, "a", False, "   ", by(ADAM)).topic == ""
    assert Channel.create(uuid4(), ws, "a", False, "t" * MAX_TOPIC, by(ADAM)).topic == "t" * 1024
    with refused(InvalidValue, match="topic"):
        Channel.create(uuid4(), ws, "a", False, "t" * (MAX_TOPIC + 1), by(ADAM))


# -- who sees a channel ---------------------------------------------------------------------


@pytest.mark.parametrize("user_id", [OLIVIA, ADAM, MIA, VIC])
def test_a_public_channel_is_visible_to_members_who_may_view_channels(user_id: str) -> None:
    ws = workspace()
    channel = public_channel(ws)
    assert channel.can_view(user_id, ws)
    channel.check_can_view(user_id, ws)


def test_a_public_channel_is_invisible_to_outsiders() -> None:
    ws = workspace()
    channel = public_channel(ws)
    assert not channel.can_view(OSCAR, ws)
    with refused(NotAMember):
        channel.check_can_view(OSCAR, ws)


def test_a_public_channel_is_invisible_to_members_without_view_channels() -> None:
    ws = workspace()
    with refused(NotAMember):
        public_channel(ws).check_can_view(NORA, ws)


def test_a_workspace_channel_is_invisible_without_its_workspace() -> None:
    ws = workspace()
    assert not public_channel(ws).can_view(ADAM, None)


def test_a_private_channel_is_invisible_to_workspace_members_outside_it() -> None:
    ws = workspace()
    channel = private_channel(ws, MIA)
    channel.check_can_view(MIA, ws)
    for user_id in (MAX, OLIVIA, OSCAR):
        with refused(NotAMember):
            channel.check_can_view(user_id, ws)


def test_a_private_channel_member_needs_view_channels_too() -> None:
    ws = workspace()
    channel = private_channel(ws, NORA)
    with refused(NotAMember):
        channel.check_can_view(NORA, ws)


def test_a_private_channel_member_who_leaves_the_workspace_loses_access() -> None:
    ws = workspace()
    channel = private_channel(ws, MIA)
    ws.leave(by(MIA))
    with refused(NotAMember):
        channel.check_can_view(MIA, ws)


@pytest.mark.parametrize("departure", ["leave", "kick", "ban"])
def test_private_channel_membership_ends_with_the_workspace_membership(departure: str) -> None:
    """Issue 17, finding 3: coming back to the workspace (rejoin, invite, unban) does not
    restore a private channel; only being added again does."""
    ws = workspace()
    channel = private_channel(ws, MIA)
    match departure:
        case "leave":
            ws.leave(by(MIA))
        case "kick":
            ws.kick(MIA, by(ADAM))
        case "ban":
            ws.ban(MIA, by(ADAM))
            ws.unban(MIA, by(ADAM))
    ws.join(by(MIA), password_ok=False)
    assert ws.tenure_of(MIA) == 2
    with refused(NotAMember):
        channel.check_can_view(MIA, ws)
    with refused(NotFound, match="not a member"):
        channel.remove_member(MIA, ws, by(ADAM))
    cause = by(ADAM, "readd")
    channel.add_member(MIA, ws, cause)
    recorded(channel, "ChannelMemberAdded", cause, user_id=MIA, tenure=2)
    channel.check_can_view(MIA, ws)


def test_channel_tenures_survive_replay() -> None:
    ws = workspace()
    channel = Channel.create(uuid4(), ws, "secret", True, None, by(ADAM))
    channel.add_member(MIA, ws, by(ADAM))
    ws.leave(by(MIA))
    ws.join(by(MIA), password_ok=False)
    again = replayed(channel.collect_events())
    assert isinstance(again, Channel)
    assert not again.can_view(MIA, ws) and again.can_view(ADAM, ws)


def test_a_membership_recorded_before_tenures_counts_as_the_first() -> None:
    """Events stored before tenures were recorded carry none: such a member is taken to
    have been added in their first membership of the workspace."""
    ws = workspace()
    channel = private_channel(ws)
    with recording(by(ADAM)):
        channel._member_added(user_id=MIA)
    assert channel.can_view(MIA, ws)
    ws.leave(by(MIA))
    ws.join(by(MIA), password_ok=False)
    assert not channel.can_view(MIA, ws)


def test_a_direct_channel_is_visible_only_to_its_two_members() -> None:
    ws = workspace()
    channel = direct(MIA, MAX)
    channel.check_can_view(MIA, None)
    channel.check_can_view(MAX, None)
    for user_id in (OLIVIA, ADAM, OSCAR):
        with refused(NotAMember):
            channel.check_can_view(user_id, None)
        with refused(NotAMember):
            channel.check_can_view(user_id, ws)


# -- who posts ------------------------------------------------------------------------------


def test_members_who_may_send_messages_can_post() -> None:
    ws = workspace()
    channel = public_channel(ws)
    for user_id in (OLIVIA, ADAM, MIA):
        channel.check_can_post(user_id, ws)


def test_posting_needs_send_messages() -> None:
    ws = workspace()
    with refused(PermissionDenied, match="send_messages"):
        public_channel(ws).check_can_post(VIC, ws)


def test_posting_needs_to_see_the_channel() -> None:
    ws = workspace()
    with refused(NotAMember):
        public_channel(ws).check_can_post(NORA, ws)
    with refused(NotAMember):
        private_channel(ws).check_can_post(MIA, ws)


def test_an_archived_channel_refuses_posts() -> None:
    ws = workspace()
    channel = public_channel(ws)
    channel.archive(ws, by(ADAM))
    with refused(ChannelArchived):
        channel.check_can_post(MIA, ws)
    channel.check_can_view(MIA, ws)


def test_both_people_in_a_direct_channel_can_post() -> None:
    channel = direct(MIA, MAX)
    channel.check_can_post(MIA, None)
    channel.check_can_post(MAX, None)
    with refused(NotAMember):
        channel.check_can_post(OSCAR, None)


# -- who moderates --------------------------------------------------------------------------


def test_moderating_needs_manage_messages() -> None:
    ws = workspace()
    channel = public_channel(ws)
    channel.check_can_moderate(ADAM, ws)
    with refused(PermissionDenied, match="manage_messages"):
        channel.check_can_moderate(MIA, ws)


def test_moderating_needs_to_see_the_channel() -> None:
    ws = workspace()
    with refused(NotAMember):
        private_channel(ws, MIA).check_can_moderate(OLIVIA, ws)


def test_nobody_moderates_a_direct_channel() -> None:
    with refused(PermissionDenied, match="manage_messages"):
        direct(MIA, MAX).check_can_moderate(MIA, None)


# -- private channel members ----------------------------------------------------------------


def test_a_channel_manager_adds_a_workspace_member_to_a_private_channel() -> None:
    ws = workspace()
    channel = private_channel(ws)
    cause = by(ADAM, "add-1")
    channel.add_member(MIA, ws, cause)
    recorded(channel, "ChannelMemberAdded", cause, user_id=MIA)
    assert channel.member_ids == {ADAM, MIA}
    channel.check_can_view(MIA, ws)


def test_adding_members_needs_manage_channels() -> None:
    ws = workspace()
    channel = private_channel(ws, MIA)
    with refused(PermissionDenied, match="manage_channels"):
        channel.add_member(MAX, ws, by(MIA))
    nothing_recorded(channel)


def test_a_manager_outside_a_private_channel_cannot_add_to_it() -> None:
    ws = build_workspace(members={ADAM: {"admin"}, MIA: {"admin"}})
    channel = private_channel(ws)
    with refused(NotAMember):
        channel.add_member(MIA, ws, by(MIA))
    with refused(NotAMember):
        channel.remove_member(ADAM, ws, by(MIA))
    nothing_recorded(channel)


def test_an_owner_manages_the_members_of_a_private_channel_they_are_not_in() -> None:
    """Coming back does not restore a private channel: without this, a channel whose
    members all left would be out of everyone's reach."""
    ws = workspace()
    channel = private_channel(ws, MIA)
    with refused(NotAMember):
        channel.check_can_view(OLIVIA, ws)
    channel.remove_member(MIA, ws, by(OLIVIA))
    channel.add_member(OLIVIA, ws, by(OLIVIA))
    assert event_names(channel) == ["ChannelMemberRemoved", "ChannelMemberAdded"]
    channel.check_can_view(OLIVIA, ws)


def test_public_channels_have_no_member_list() -> None:
    ws = workspace()
    channel = public_channel(ws)
    with refused(Conflict, match="public channels"):
        channel.add_member(MIA, ws, by(ADAM))
    nothing_recorded(channel)


def test_only_workspace_members_can_be_added_to_a_private_channel() -> None:
    ws = workspace()
    channel = private_channel(ws)
    with refused(NotFound, match="not a member of the workspace"):
        channel.add_member(OSCAR, ws, by(ADAM))
    nothing_recorded(channel)


def test_a_channel_member_cannot_be_added_twice() -> None:
    ws = workspace()
    channel = private_channel(ws, MIA)
    with refused(AlreadyAMember):
        channel.add_member(MIA, ws, by(ADAM))
    nothing_recorded(channel)


def test_a_channel_manager_removes_a_member_from_a_private_channel() -> None:
    ws = workspace()
    channel = private_channel(ws, MIA)
    cause = by(ADAM, "remove-1")
    channel.remove_member(MIA, ws, cause)
    recorded(channel, "ChannelMemberRemoved", cause, user_id=MIA)
    with refused(NotAMember):
        channel.check_can_view(MIA, ws)


def test_only_channel_members_can_be_removed() -> None:
    ws = workspace()
    channel = private_channel(ws)
    with refused(NotFound, match="not a member of this channel"):
        channel.remove_member(MIA, ws, by(ADAM))
    nothing_recorded(channel)


def test_removing_members_needs_manage_channels() -> None:
    ws = workspace()
    channel = private_channel(ws, MIA, MAX)
    with refused(PermissionDenied, match="manage_channels"):
        channel.remove_member(MAX, ws, by(MIA))
    nothing_recorded(channel)


# -- changing and archiving -----------------------------------------------------------------


def test_a_channel_manager_renames_a_channel_and_keeps_its_topic() -> None:
    ws = workspace()
    channel = Channel.create(uuid4(), ws, "general", False, "hello", by(ADAM))
    channel.collect_events()
    cause = by(ADAM, "rename-1")
    channel.change(" random ", None, ws, cause)
    recorded(channel, "ChannelChanged", cause, name="random", topic="hello")
    assert (channel.name, channel.topic) == ("random", "hello")


def test_a_channel_manager_changes_the_topic_and_keeps_the_name() -> None:
    ws = workspace()
    channel = public_channel(ws)
    cause = by(ADAM, "topic-1")
    channel.change(None, "  news  ", ws, cause)
    recorded(channel, "ChannelChanged", cause, name="general", topic="news")


def test_a_change_must_change_something() -> None:
    ws = workspace()
    channel = public_channel(ws)
    with refused(InvalidValue, match="nothing to change"):
        channel.change(None, None, ws, by(ADAM))
    nothing_recorded(channel)


def test_a_new_channel_name_is_validated() -> None:
    ws = workspace()
    channel = public_channel(ws)
    with refused(InvalidValue, match="name"):
        channel.change("  ", None, ws, by(ADAM))
    with refused(InvalidValue, match="topic"):
        channel.change(None, "t" * (MAX_TOPIC + 1), ws, by(ADAM))
    nothing_recorded(channel)


def test_changing_a_channel_needs_manage_channels() -> None:
    ws = workspace()
    channel = public_channel(ws)
    with refused(PermissionDenied, match="manage_channels"):
        channel.change("mine", None, ws, by(MIA))
    nothing_recorded(channel)


def test_a_channel_manager_archives_and_unarchives_a_channel() -> None:
    ws = workspace()
    channel = public_channel(ws)
    cause = by(ADAM, "archive-1")
    channel.archive(ws, cause)
    recorded(channel, "ChannelArchived", cause)
    assert channel.archived
    cause = by(OLIVIA, "unarchive-1")
    channel.unarchive(ws, cause)
    recorded(channel, "ChannelUnarchived", cause)
    assert not channel.archived
    channel.check_can_post(MIA, ws)


def test_a_channel_cannot_be_archived_twice() -> None:
    ws = workspace()
    channel = public_channel(ws)
    channel.archive(ws, by(ADAM))
    channel.collect_events()
    with refused(Conflict, match="already archived"):
        channel.archive(ws, by(ADAM))
    nothing_recorded(channel)


def test_only_an_archived_channel_can_be_unarchived() -> None:
    ws = workspace()
    channel = public_channel(ws)
    with refused(Conflict, match="not archived"):
        channel.unarchive(ws, by(ADAM))
    nothing_recorded(channel)


def test_archiving_needs_manage_channels() -> None:
    ws = workspace()
    channel = public_channel(ws)
    with refused(PermissionDenied, match="manage_channels"):
        channel.archive(ws, by(MIA))
    channel.archive(ws, by(ADAM))
    channel.collect_events()
    with refused(PermissionDenied, match="manage_channels"):
        channel.unarchive(ws, by(MIA))
    nothing_recorded(channel)


def test_managing_a_channel_needs_to_see_it() -> None:
    ws = workspace()
    channel = private_channel(ws, MIA)
    with refused(NotAMember):
        channel.archive(ws, by(OLIVIA))
    with refused(NotAMember):
        channel.change("x", None, ws, by(OLIVIA))


# -- direct messages ------------------------------------------------------------------------


def test_a_direct_channel_is_a_private_two_person_channel_outside_any_workspace() -> None:
    cause = by(MIA, "dm-1")
    channel_id = uuid4()
    channel = Channel.open_direct(channel_id, MAX, cause)
    recorded(
        channel,
        "ChannelCreated",
        cause,
        workspace_id=None,
        private=True,
        kind=KIND_DIRECT,
        member_ids=sorted([MIA, MAX]),
    )
    assert channel.id == channel_id
    assert channel.member_ids == {MIA, MAX}


def test_legacy_direct_channel_ids_stay_where_they_were() -> None:
    # Direct channels opened before issue 17 live at these ids (found for their pair).
    assert legacy_direct_channel_id(MIA, MAX) == legacy_direct_channel_id(MAX, MIA)
    assert legacy_direct_channel_id(MIA, MAX) != legacy_direct_channel_id(MIA, ADAM)
    assert legacy_direct_channel_id(MIA, MAX) != legacy_direct_channel_id(MAX, ADAM)


def test_nobody_opens_a_direct_channel_with_themselves() -> None:
    with refused(InvalidValue, match="another person"):
        Channel.open_direct(uuid4(), MIA, by(MIA))


@pytest.mark.parametrize("operation", ["add", "remove", "change", "archive", "unarchive"])
def test_a_direct_channel_cannot_be_changed(operation: str) -> None:
    channel = direct(MIA, MAX)
    cause = by(MIA)
    with refused(PermissionDenied, match="direct-message"):
        if operation == "add":
            channel.add_member(ADAM, None, cause)
        elif operation == "remove":
            channel.remove_member(MAX, None, cause)
        elif operation == "change":
            channel.change("ours", None, None, cause)
        elif operation == "archive":
            channel.archive(None, cause)
        else:
            channel.unarchive(None, cause)
    nothing_recorded(channel)


# -- replay ---------------------------------------------------------------------------------


def test_replaying_a_channels_events_reproduces_its_state() -> None:
    ws = workspace()
    channel = Channel.create(uuid4(), ws, "secret", True, "shh", by(ADAM, "c0"))
    channel.add_member(MIA, ws, by(ADAM, "c1"))
    channel.add_member(MAX, ws, by(ADAM, "c2"))
    channel.remove_member(MAX, ws, by(ADAM, "c3"))
    channel.change("hush", "quiet please", ws, by(ADAM, "c4"))
    channel.archive(ws, by(ADAM, "c5"))
    channel.unarchive(ws, by(ADAM, "c6"))
    channel.archive(ws, by(ADAM, "c7"))
    events = list(channel.collect_events())
    assert [type(e).__name__ for e in events][:2] == ["ChannelCreated", "ChannelMemberAdded"]

    again = replayed(events)

    assert isinstance(again, Channel)
    assert again == channel
    assert again.member_ids == {ADAM, MIA}
    assert (again.name, again.topic, again.archived) == ("hush", "quiet please", True)


def test_replaying_a_direct_channel_reproduces_it() -> None:
    channel = Channel.open_direct(uuid4(), MAX, by(MIA))
    again = replayed(list(channel.collect_events()))
    assert again == channel
    assert again.kind == KIND_DIRECT
    assert event_names(again) == []


def test_a_direct_channel_needs_a_signed_in_user() -> None:
    with refused(PermissionDenied, match="signed-in"):
        Channel.open_direct(uuid4(), MAX, Cause(None))
