"""The rules of messages: what may be sent, who edits and deletes, reactions, and mentions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast
from uuid import uuid4

import pytest

from domain.base import ChorusAggregate
from domain.channels import Channel
from domain.errors import (
    ChannelArchived,
    Conflict,
    InvalidValue,
    MessageDeleted,
    NotAMember,
    NotFound,
    PermissionDenied,
)
from domain.messages import Message, check_emoji, parse_mentions
from domain.rules import (
    MAX_DISTINCT_REACTIONS,
    MAX_EMOJI,
    MAX_MENTIONS,
    MAX_MESSAGE_TEXT,
    normalise_username,
)
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

MOD = "moe"  # a member who also holds the custom "mod" role (manage_messages)


@dataclass
class Room:
    """A workspace, a public channel in it, and a message Mia sent there."""

    ws: Workspace
    channel: Channel
    message: Message

    def send(self, author: str, text: str, reply_to: Message | None = None) -> Message:
        message = Message.send(uuid4(), self.channel, self.ws, text, [], reply_to, by(author))
        message.collect_events()
        return message


def room() -> Room:
    """Olivia owns the workspace, Adam admins it, Mia, Max and Moe are members (Moe also a
    mod), Vic only views. Mia said hello in #general."""
    ws = build_workspace(
        roles={"mod": ["manage_messages"]},
        members={
            ADAM: {"admin"},
            MIA: {"member"},
            MAX: {"member"},
            VIC: {"viewer"},
            MOD: {"member", "mod"},
        },
    )
    channel = Channel.create(uuid4(), ws, "general", False, None, by(ADAM))
    channel.collect_events()
    message = Message.send(uuid4(), channel, ws, "hello", [], None, by(MIA))
    message.collect_events()
    return Room(ws, channel, message)


def dm() -> tuple[Channel, Message]:
    """A direct channel between Mia and Max, and a message Mia sent there."""
    channel = Channel.open_direct(uuid4(), MAX, by(MIA))
    message = Message.send(uuid4(), channel, None, "psst", [], None, by(MIA))
    message.collect_events()
    return channel, message


# -- sending --------------------------------------------------------------------------------


def test_a_member_sends_a_message_to_a_channel() -> None:
    r = room()
    cause = by(MAX, "send-1")
    message_id = uuid4()
    message = Message.send(message_id, r.channel, r.ws, "  hi all  ", ["u1"], None, cause)
    recorded(
        message,
        "MessageSent",
        cause,
        channel_id=r.channel.id,
        workspace_id=r.ws.id,
        author_id=MAX,
        text="hi all",
        mentions=["u1"],
        reply_to=None,
    )
    assert message.id == message_id
    assert (message.text, message.author_id, message.deleted) == ("hi all", MAX, False)
    assert message.reactions == {}


def test_a_message_may_be_exactly_the_maximum_length() -> None:
    r = room()
    text = "x" * MAX_MESSAGE_TEXT
    assert r.send(MAX, text).text == text
    assert MAX_MESSAGE_TEXT == 4000


def test_a_message_longer_than_the_maximum_is_refused() -> None:
    r = room()
    with refused(InvalidValue, match="longer than 4000"):
        r.send(MAX, "x" * (MAX_MESSAGE_TEXT + 1))


def test_the_limit_applies_after_stripping_surrounding_space() -> None:
    r = room()
    assert len(r.send(MAX, "   " + "x" * MAX_MESSAGE_TEXT + "\n\n").text) == MAX_MESSAGE_TEXT


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_an_empty_message_is_refused(text: str) -> None:
    with refused(InvalidValue, match="empty"):
        room().send(MAX, text)


def test_a_message_with_a_nul_character_is_refused() -> None:
    with refused(InvalidValue, match="NUL"):
        room().send(MAX, "a\x00b")


def test_a_message_keeps_at_most_the_mention_limit() -> None:
    r = room()
    mentioned = [f"user-{i}" for i in range(MAX_MENTIONS + 5)]
    message = Message.send(uuid4(), r.channel, r.ws, "hi", mentioned, None, by(MAX))
    assert message.mentions == mentioned[:MAX_MENTIONS]


def test_sending_needs_send_messages() -> None:
    r = room()
    with refused(PermissionDenied, match="send_messages"):
        r.send(VIC, "can I talk?")


def test_outsiders_cannot_send() -> None:
    with refused(NotAMember):
        room().send(OSCAR, "let me in")


def test_an_archived_channel_refuses_new_messages() -> None:
    r = room()
    r.channel.archive(r.ws, by(ADAM))
    with refused(ChannelArchived):
        r.send(MAX, "anyone?")


def test_a_private_channel_refuses_messages_from_non_members() -> None:
    r = room()
    secret = Channel.create(uuid4(), r.ws, "secret", True, None, by(ADAM))
    with refused(NotAMember):
        Message.send(uuid4(), secret, r.ws, "hi", [], None, by(MIA))
    Message.send(uuid4(), secret, r.ws, "hi", [], None, by(ADAM))


def test_both_people_in_a_direct_channel_can_send_and_nobody_else() -> None:
    channel, _ = dm()
    cause = by(MAX, "dm-send-1")
    message = Message.send(uuid4(), channel, None, "hey", [], None, cause)
    recorded(message, "MessageSent", cause, workspace_id=None, channel_id=channel.id)
    with refused(NotAMember):
        Message.send(uuid4(), channel, None, "hey", [], None, by(OLIVIA))


# -- replies --------------------------------------------------------------------------------


def test_a_reply_points_at_a_message_of_the_same_channel() -> None:
    r = room()
    cause = by(MAX, "reply-1")
    reply = Message.send(uuid4(), r.channel, r.ws, "hi Mia", [], r.message, cause)
    recorded(reply, "MessageSent", cause, reply_to=r.message.id)
    assert reply.reply_to == r.message.id


def test_a_reply_to_a_message_of_another_channel_is_refused() -> None:
    r = room()
    other = Channel.create(uuid4(), r.ws, "random", False, None, by(ADAM))
    with refused(NotFound, match="reply_to"):
        Message.send(uuid4(), other, r.ws, "hi", [], r.message, by(MAX))


def test_a_reply_to_a_deleted_message_is_refused() -> None:
    r = room()
    r.message.delete(r.channel, r.ws, by(MIA))
    with refused(MessageDeleted, match="reply"):
        r.send(MAX, "what did you say?", reply_to=r.message)


# -- editing --------------------------------------------------------------------------------


def test_the_author_edits_their_message() -> None:
    r = room()
    cause = by(MIA, "edit-1")
    r.message.edit("  hello, world ", ["u1"], r.channel, r.ws, cause)
    recorded(r.message, "MessageEdited", cause, text="hello, world", mentions=["u1"])
    assert r.message.text == "hello, world"
    assert r.message.mentions == ["u1"]


def test_an_edit_keeps_at_most_the_mention_limit() -> None:
    r = room()
    mentioned = [f"user-{i}" for i in range(MAX_MENTIONS + 1)]
    r.message.edit("hi all", mentioned, r.channel, r.ws, by(MIA))
    assert r.message.mentions == mentioned[:MAX_MENTIONS]


@pytest.mark.parametrize("editor", [MAX, ADAM, OLIVIA, MOD])
def test_only_the_author_edits_a_message(editor: str) -> None:
    r = room()
    with refused(PermissionDenied, match="only the author"):
        r.message.edit("not yours", [], r.channel, r.ws, by(editor))
    nothing_recorded(r.message)


@pytest.mark.parametrize("text", ["hello", "  hello\n"])
def test_an_edit_that_changes_nothing_is_refused(text: str) -> None:
    r = room()
    with refused(Conflict, match="unchanged"):
        r.message.edit(text, [], r.channel, r.ws, by(MIA))
    nothing_recorded(r.message)


@pytest.mark.parametrize("text", ["", "  ", "x" * (MAX_MESSAGE_TEXT + 1)])
def test_an_edit_follows_the_rules_of_a_new_message(text: str) -> None:
    r = room()
    with refused(InvalidValue):
        r.message.edit(text, [], r.channel, r.ws, by(MIA))
    nothing_recorded(r.message)


def test_a_deleted_message_cannot_be_edited() -> None:
    r = room()
    r.message.delete(r.channel, r.ws, by(MIA))
    r.message.collect_events()
    with refused(MessageDeleted):
        r.message.edit("back again", [], r.channel, r.ws, by(MIA))
    nothing_recorded(r.message)


def test_an_author_who_lost_sight_of_the_channel_cannot_edit() -> None:
    r = room()
    r.ws.kick(MIA, by(ADAM))
    with refused(NotAMember):
        r.message.edit("still here?", [], r.channel, r.ws, by(MIA))
    nothing_recorded(r.message)


def test_an_archived_channel_refuses_edits() -> None:
    r = room()
    r.channel.archive(r.ws, by(ADAM))
    with refused(ChannelArchived):
        r.message.edit("rewriting history", [], r.channel, r.ws, by(MIA))
    nothing_recorded(r.message)


def test_an_author_who_may_no_longer_post_cannot_edit() -> None:
    r = room()
    r.ws.grant_role(MIA, "viewer", by(ADAM))
    r.ws.revoke_role(MIA, "member", by(ADAM))
    with refused(PermissionDenied, match="send_messages"):
        r.message.edit("quietly changed", [], r.channel, r.ws, by(MIA))
    nothing_recorded(r.message)


# -- deleting -------------------------------------------------------------------------------


def test_the_author_deletes_their_message_which_becomes_a_tombstone() -> None:
    r = room()
    cause = by(MIA, "delete-1")
    r.message.delete(r.channel, r.ws, cause)
    recorded(r.message, "MessageDeleted", cause)
    assert r.message.deleted
    assert r.message.text == ""


@pytest.mark.parametrize("moderator", [MOD, ADAM, OLIVIA])
def test_a_holder_of_manage_messages_deletes_anyones_message(moderator: str) -> None:
    r = room()
    cause = by(moderator, "moderate-1")
    r.message.delete(r.channel, r.ws, cause)
    recorded(r.message, "MessageDeleted", cause)
    assert r.message.deleted


def test_the_mod_role_is_what_lets_moe_delete() -> None:
    r = room()
    r.ws.revoke_role(MOD, "mod", by(OLIVIA))
    with refused(PermissionDenied, match="manage_messages"):
        r.message.delete(r.channel, r.ws, by(MOD))


def test_others_cannot_delete_a_message() -> None:
    r = room()
    with refused(PermissionDenied, match="manage_messages"):
        r.message.delete(r.channel, r.ws, by(MAX))
    nothing_recorded(r.message)
    assert not r.message.deleted


def test_outsiders_cannot_delete_a_message() -> None:
    r = room()
    with refused(NotAMember):
        r.message.delete(r.channel, r.ws, by(OSCAR))


def test_a_message_cannot_be_deleted_twice() -> None:
    r = room()
    r.message.delete(r.channel, r.ws, by(MIA))
    r.message.collect_events()
    with refused(MessageDeleted):
        r.message.delete(r.channel, r.ws, by(MIA))
    with refused(MessageDeleted):
        r.message.delete(r.channel, r.ws, by(ADAM))
    nothing_recorded(r.message)


def test_in_a_direct_channel_only_the_author_deletes() -> None:
    channel, message = dm()
    with refused(PermissionDenied):
        message.delete(channel, None, by(MAX))
    message.delete(channel, None, by(MIA))
    assert event_names(message) == ["MessageDeleted"]


# -- reactions ------------------------------------------------------------------------------


def test_a_member_reacts_to_a_message() -> None:
    r = room()
    cause = by(MAX, "react-1")
    assert r.message.add_reaction("👍", r.channel, r.ws, cause) is True
    recorded(r.message, "ReactionAdded", cause, emoji="👍", user_id=MAX)
    assert r.message.reactions == {"👍": {MAX}}


def test_reacting_twice_with_the_same_emoji_records_nothing() -> None:
    r = room()
    r.message.add_reaction("👍", r.channel, r.ws, by(MAX))
    r.message.collect_events()
    assert r.message.add_reaction("👍", r.channel, r.ws, by(MAX)) is False
    nothing_recorded(r.message)
    assert r.message.reactions == {"👍": {MAX}}


def test_several_people_share_a_reaction() -> None:
    r = room()
    r.message.add_reaction("👍", r.channel, r.ws, by(MAX))
    assert r.message.add_reaction("👍", r.channel, r.ws, by(MIA)) is True
    assert r.message.reactions == {"👍": {MAX, MIA}}


def test_a_member_removes_their_reaction() -> None:
    r = room()
    r.message.add_reaction("👍", r.channel, r.ws, by(MAX))
    r.message.add_reaction("👍", r.channel, r.ws, by(MIA))
    r.message.collect_events()
    cause = by(MAX, "unreact-1")
    assert r.message.remove_reaction("👍", r.channel, r.ws, cause) is True
    recorded(r.message, "ReactionRemoved", cause, emoji="👍", user_id=MAX)
    assert r.message.reactions == {"👍": {MIA}}
    r.message.remove_reaction("👍", r.channel, r.ws, by(MIA))
    assert r.message.reactions == {}


def test_removing_a_reaction_that_is_not_there_records_nothing() -> None:
    r = room()
    r.message.add_reaction("👍", r.channel, r.ws, by(MIA))
    r.message.collect_events()
    assert r.message.remove_reaction("👍", r.channel, r.ws, by(MAX)) is False
    assert r.message.remove_reaction("🎉", r.channel, r.ws, by(MAX)) is False
    nothing_recorded(r.message)
    assert r.message.reactions == {"👍": {MIA}}


@pytest.mark.parametrize("emoji", ["", " ", "thumbs up", "👍\n", "\t", "x" * (MAX_EMOJI + 1)])
def test_an_emoji_is_1_to_64_characters_without_spaces(emoji: str) -> None:
    r = room()
    with refused(InvalidValue, match="emoji"):
        r.message.add_reaction(emoji, r.channel, r.ws, by(MAX))
    nothing_recorded(r.message)


@pytest.mark.parametrize("emoji", ["👍", ":thumbsup:", "x" * MAX_EMOJI, "👩‍👩‍👧"])
def test_emoji_within_the_rules_are_accepted(emoji: str) -> None:
    assert check_emoji(emoji) == emoji


def test_a_message_has_a_limited_number_of_distinct_reactions() -> None:
    r = room()
    for i in range(MAX_DISTINCT_REACTIONS):
        r.message.add_reaction(f"e{i}", r.channel, r.ws, by(MAX))
    r.message.collect_events()
    with refused(InvalidValue, match="distinct reactions"):
        r.message.add_reaction("one-more", r.channel, r.ws, by(MIA))
    nothing_recorded(r.message)
    # Joining a reaction that is already there is still fine.
    assert r.message.add_reaction("e0", r.channel, r.ws, by(MIA)) is True


def test_reacting_needs_send_messages() -> None:
    r = room()
    with refused(PermissionDenied, match="send_messages"):
        r.message.add_reaction("👍", r.channel, r.ws, by(VIC))


def test_outsiders_cannot_react() -> None:
    r = room()
    with refused(NotAMember):
        r.message.add_reaction("👍", r.channel, r.ws, by(OSCAR))
    with refused(NotAMember):
        r.message.remove_reaction("👍", r.channel, r.ws, by(OSCAR))


def test_an_archived_channel_takes_no_new_reactions_but_lets_them_be_removed() -> None:
    r = room()
    r.message.add_reaction("👍", r.channel, r.ws, by(MAX))
    r.message.collect_events()
    r.channel.archive(r.ws, by(ADAM))
    with refused(ChannelArchived):
        r.message.add_reaction("🎉", r.channel, r.ws, by(MAX))
    assert r.message.remove_reaction("👍", r.channel, r.ws, by(MAX)) is True


def test_a_deleted_message_takes_no_reactions() -> None:
    r = room()
    r.message.add_reaction("👍", r.channel, r.ws, by(MAX))
    r.message.delete(r.channel, r.ws, by(MIA))
    r.message.collect_events()
    with refused(MessageDeleted):
        r.message.add_reaction("🎉", r.channel, r.ws, by(MAX))
    with refused(MessageDeleted):
        r.message.remove_reaction("👍", r.channel, r.ws, by(MAX))
    nothing_recorded(r.message)


# -- mentions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mentioned"),
    [
        ("hi @alice", ["alice"]),
        ("@Alice and @ALICE and @alice", ["alice"]),
        ("@bob, @alice and @bob again", ["bob", "alice"]),
        ("thanks @alice.", ["alice"]),
        ("(@carol) [@dave]", ["carol", "dave"]),
        ("@a.b_c9 there", ["a.b_c9"]),
        ("@alice's idea", ["alice"]),
        ("line one\n@alice", ["alice"]),
        ("no mentions here", []),
        ("@ab is too short", []),
        ("a lone @ sign", []),
    ],
)
def test_mentions_are_usernames_after_an_at_sign_lower_cased_in_order_without_repeats(
    text: str, mentioned: list[str]
) -> None:
    assert parse_mentions(text) == mentioned


@pytest.mark.parametrize(
    "text",
    ["mail a@b.com", "write to alice@example.com", "john.doe@example.org", "x@alice", "@@alice"],
)
def test_email_addresses_and_at_signs_inside_words_are_not_mentions(text: str) -> None:
    assert parse_mentions(text) == []


def test_at_most_the_mention_limit_is_parsed() -> None:
    text = " ".join(f"@user{i:03}" for i in range(MAX_MENTIONS + 5))
    assert parse_mentions(text) == [f"user{i:03}" for i in range(MAX_MENTIONS)]


def test_repeats_do_not_count_against_the_mention_limit() -> None:
    text = "@alice " * 30 + "@bob"
    assert parse_mentions(text) == ["alice", "bob"]


@pytest.mark.parametrize("text", ["thanks @jo.", "see @ab..", "@...", "hey @a.."])
def test_every_parsed_mention_is_a_valid_username(text: str) -> None:
    # The application turns each mention into a user id with ``user_id_of``; a parsed
    # "username" that is no username makes it refuse the whole message.
    for name in parse_mentions(text):
        assert normalise_username(name) == name


def test_a_name_longer_than_any_username_mentions_nobody() -> None:
    # Not a mention of the user whose name is its first 32 characters.
    assert parse_mentions("@" + "a" * 40) == []


# -- replay ---------------------------------------------------------------------------------


def test_replaying_a_messages_events_reproduces_its_state() -> None:
    r = room()
    message = Message.send(uuid4(), r.channel, r.ws, "first", ["u1"], None, by(MIA, "c0"))
    message.edit("second", ["u2"], r.channel, r.ws, by(MIA, "c1"))
    message.add_reaction("👍", r.channel, r.ws, by(MAX, "c2"))
    message.add_reaction("👍", r.channel, r.ws, by(MIA, "c3"))
    message.add_reaction("🎉", r.channel, r.ws, by(MAX, "c4"))
    message.remove_reaction("👍", r.channel, r.ws, by(MAX, "c5"))
    events = cast(list[ChorusAggregate.Event], list(message.collect_events()))
    assert [e.command_id for e in events] == [f"c{i}" for i in range(6)]

    again = replayed(events)

    assert isinstance(again, Message)
    assert again == message
    assert again.text == "second"
    assert again.mentions == ["u2"]
    assert again.reactions == {"👍": {MIA}, "🎉": {MAX}}


def test_replaying_a_deleted_message_reproduces_the_tombstone() -> None:
    r = room()
    message = Message.send(uuid4(), r.channel, r.ws, "oops", [], None, by(MIA))
    message.delete(r.channel, r.ws, by(MOD, "mod-1"))
    events = list(message.collect_events())
    again = replayed(events)
    assert again == message
    assert (again.deleted, again.text) == (True, "")


def test_an_edit_based_on_the_current_version_is_accepted() -> None:
    r = room()
    r.message.edit("hello again", [], r.channel, r.ws, by(MIA), expected_version=1)
    recorded(r.message, "MessageEdited", by(MIA), text="hello again")


def test_an_edit_based_on_a_stale_version_is_refused() -> None:
    r = room()
    r.message.edit("second thoughts", [], r.channel, r.ws, by(MIA))
    r.message.collect_events()
    with refused(Conflict, match="version 2, not 1"):
        r.message.edit("from an old tab", [], r.channel, r.ws, by(MIA), expected_version=1)
    nothing_recorded(r.message)
