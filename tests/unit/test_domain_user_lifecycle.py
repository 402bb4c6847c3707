"""A user's whole life (issue 20), as the domain rules it: the profile (one event per field),
deactivation and reactivation, one-time password reset tokens, and a username's claim
released for another to take."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from domain.errors import Conflict, InvalidValue, PermissionDenied, UsernameTaken
from domain.identity import (
    MAX_AVATAR_URL,
    MAX_PENDING_RESETS,
    User,
    avatar_url_rule,
    reset_token_hash,
)
from domain.indexes import UsernameClaim, username_claim_id
from tests.fixtures.domain import (
    NOW,
    by,
    event_names,
    nothing_recorded,
    recorded,
    refused,
    replayed,
)


def a_user(name: str = "alice") -> User:
    user = User.register(uuid4(), name, None, by(None))
    user.collect_events()
    return user


# -- the profile -------------------------------------------------------------------------------


def test_a_display_name_change_is_one_event_with_the_stored_form() -> None:
    user = a_user()
    cause = by(str(user.id))
    assert user.change_display_name("  \uff21lice \uff2ciddell ", cause)
    recorded(user, "DisplayNameChanged", cause, display_name="Alice Liddell")
    # The same name again changes nothing, and records nothing.
    assert not user.change_display_name("Alice Liddell", cause)
    nothing_recorded(user)


@pytest.mark.parametrize("bad", ["", "   ", "x" * 65, "evil\u202ename", "a\x00b"])
def test_a_display_name_follows_the_sign_up_rule(bad: str) -> None:
    user = a_user()
    with refused(InvalidValue, match="display_name"):
        user.change_display_name(bad, by(str(user.id)))
    nothing_recorded(user)


def test_only_the_user_changes_their_profile() -> None:
    user, other = a_user(), a_user("bob")
    for change in (
        lambda c: user.change_display_name("Mallory", c),
        lambda c: user.change_avatar("https://example.org/a.png", c),
        lambda c: user.change_username("mallory", c),
    ):
        for cause in (by(str(other.id)), by(None)):
            with refused(PermissionDenied):
                change(cause)
    nothing_recorded(user)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/me.png",
        "https://cdn.example.org:8443/a/b.png?size=64&sig=abc#x",
        "HTTPS://EXAMPLE.ORG/ME.PNG",
        "https://xn--bcher-kva.example/a.png",
        "https://" + "a" * (MAX_AVATAR_URL - len("https://.org")) + ".org",
    ],
)
def test_an_avatar_url_as_users_paste_it(url: str) -> None:
    assert avatar_url_rule(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.org/me.png", "https"),
        ("javascript:alert(1)", "https"),
        ("data:image/png;base64,AAAA", "https"),
        ("//example.org/me.png", "https"),
        ("example.org/me.png", "https"),
        ("https://", "host"),
        ("https:///me.png", "host"),
        ("https://user:secret@example.org/me.png", "credentials"),
        ("https://user@example.org/me.png", "credentials"),
        ("https://example.org@evil.example/me.png", "credentials"),
        ("https://example.org/me .png", "whitespace"),
        (" https://example.org/me.png", "whitespace"),
        ("https://example.org/me.png\n", "whitespace"),
        ("https://example.org/\x00.png", "whitespace"),
        ("https://example.org/\u202e.png", "control|whitespace|ASCII"),
        ("https://bücher.example/a.png", "ASCII"),
        ("https://example.org:99999/a.png", "not a URL"),
        ("https://[::1/a.png", "not a URL"),
        ("https://example.org/" + "a" * MAX_AVATAR_URL, "at most"),
    ],
)
def test_an_avatar_url_that_is_no_safe_https_url_is_refused(url: str, why: str) -> None:
    with refused(InvalidValue, match=why):
        avatar_url_rule(url)


def test_an_avatar_is_set_changed_and_removed_one_event_each() -> None:
    user = a_user()
    cause = by(str(user.id))
    assert user.avatar_url is None
    assert user.change_avatar("https://example.org/a.png", cause)
    recorded(user, "AvatarChanged", cause, avatar_url="https://example.org/a.png")
    assert not user.change_avatar("https://example.org/a.png", cause)
    assert user.change_avatar(None, cause)
    recorded(user, "AvatarChanged", cause, avatar_url=None)
    with refused(InvalidValue):
        user.change_avatar("http://example.org/a.png", cause)
    nothing_recorded(user)


def test_a_username_change_records_the_old_and_the_new() -> None:
    user = a_user()
    cause = by(str(user.id))
    assert user.change_username("  Alice.L ", cause) == "alice"
    recorded(user, "UsernameChanged", cause, username="alice.l", previous="alice")
    assert user.change_username("ALICE.L", cause) is None
    nothing_recorded(user)
    with refused(InvalidValue, match="username"):
        user.change_username("no spaces allowed", cause)


# -- the username's claim ----------------------------------------------------------------------


def test_a_released_claim_can_be_taken_again_on_the_same_stream() -> None:
    alice, bob = uuid4(), uuid4()
    claim = UsernameClaim.claim("alice", alice, by(str(alice)))
    assert claim.id == username_claim_id("ALICE")
    claim.collect_events()
    with refused(UsernameTaken):
        claim.reclaim(bob, by(str(bob)))
    with refused(PermissionDenied):
        claim.release(str(bob), by(str(bob)))
    claim.release(str(alice), by(str(alice)))
    assert claim.holder is None
    claim.reclaim(bob, by(str(bob)))
    assert event_names(claim) == ["UsernameReleased", "UsernameReclaimed"]
    assert claim.holder == str(bob)


# -- deactivation --------------------------------------------------------------------------------


def test_deactivation_by_the_user_and_reactivation_by_an_operator() -> None:
    user = a_user()
    cause = by(str(user.id))
    with refused(PermissionDenied):
        user.deactivate(by(str(uuid4())))
    user.deactivate(cause)
    events = [*recorded_all(user)]
    assert [type(e).__name__ for e in events] == ["UserDeactivated"]
    assert not user.active
    with refused(Conflict):
        user.deactivate(cause)
    # A deactivated account changes nothing of its profile.
    with refused(PermissionDenied, match="deactivated"):
        user.change_display_name("Back", cause)
    # Only an operator (no actor: the console) reactivates, never the user.
    with refused(PermissionDenied):
        user.reactivate("someone", cause)
    operator = by(None, "console-1")
    user.reactivate("root@host", operator)
    recorded(user, "UserReactivated", operator, reactivated_by="root@host")
    assert user.active
    with refused(Conflict):
        user.reactivate("root@host", operator)


def recorded_all(user: User) -> list[object]:
    return list(user.collect_events())


# -- password reset tokens -------------------------------------------------------------------


def issued(user: User, secret: str = "s3cret", ttl: int | None = None) -> str:
    token_hash = reset_token_hash(secret)
    user.issue_password_reset(token_hash, ttl, "root@host", NOW, by(None, "console"))
    return token_hash


def test_a_reset_token_is_kept_as_a_hash_with_its_expiry() -> None:
    user = a_user()
    token_hash = issued(user, "s3cret")
    assert token_hash != "s3cret" and len(token_hash) == 64
    recorded(
        user,
        "PasswordResetIssued",
        by(None, "console"),
        token_hash=token_hash,
        expires_at=NOW + timedelta(hours=24),
        issued_by="root@host",
    )


def test_only_an_operator_issues_a_reset_token_within_bounds() -> None:
    user = a_user()
    with refused(PermissionDenied):
        user.issue_password_reset("h", None, "x", NOW, by(str(user.id)))
    for ttl in (0, 299, 7 * 24 * 3600 + 1):
        with refused(InvalidValue, match="expires_in_s"):
            user.issue_password_reset("h", ttl, "x", NOW, by(None))
    for n in range(MAX_PENDING_RESETS):
        issued(user, f"t{n}")
    with refused(Conflict):
        issued(user, "one-too-many")


def test_a_reset_token_is_used_once_and_spends_the_others() -> None:
    user = a_user()
    first, second = issued(user, "one"), issued(user, "two")
    user.collect_events()
    cause = by(str(user.id))
    user.reset_password(first, NOW + timedelta(minutes=1), cause)
    recorded(user, "PasswordReset", cause, token_hash=first)
    for spent in (first, second):
        with refused(PermissionDenied, match="invalid or expired"):
            user.reset_password(spent, NOW + timedelta(minutes=2), cause)


def test_a_reset_token_expires_and_an_unknown_one_is_refused_alike() -> None:
    user = a_user()
    token_hash = issued(user, ttl=600)
    user.collect_events()
    cause = by(str(user.id))
    for token, when in ((token_hash, NOW + timedelta(seconds=600)), ("nope", NOW)):
        with refused(PermissionDenied, match="invalid or expired"):
            user.reset_password(token, when, cause)
    nothing_recorded(user)


def test_a_password_change_or_a_deactivation_spends_pending_tokens() -> None:
    for end in ("change", "deactivate"):
        user = a_user()
        token_hash = issued(user)
        cause = by(str(user.id))
        if end == "change":
            user.change_password(None, cause)
        else:
            user.deactivate(cause)
            user.reactivate("root@host", by(None))
        with refused(PermissionDenied, match="invalid or expired"):
            user.check_reset_token(token_hash, NOW)


def test_a_deactivated_account_gets_no_reset_token() -> None:
    user = a_user()
    user.deactivate(by(str(user.id)))
    with refused(PermissionDenied, match="deactivated"):
        issued(user)


def test_the_whole_life_replays_to_the_same_state() -> None:
    user = User.register(uuid4(), "alice", None, by(None))
    cause = by(str(user.id))
    user.change_display_name("Alice L", cause)
    user.change_avatar("https://example.org/a.png", cause)
    user.change_username("alice.l", cause)
    token_hash = issued(user)
    user.deactivate(cause)
    user.reactivate("root@host", by(None))
    again = replayed(user.collect_events())
    assert (again.display_name, again.avatar_url, again.username, again.active) == (
        "Alice L",
        "https://example.org/a.png",
        "alice.l",
        True,
    )
    with refused(PermissionDenied):
        again.check_reset_token(token_hash, NOW)
