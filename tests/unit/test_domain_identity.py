"""The rules of users: who can register under which name, and how their ids come about."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from domain.base import as_uuid
from domain.errors import InvalidValue, NotFound
from domain.identity import User, user_id_for
from domain.rules import (
    MAX_DISPLAY_NAME,
    MAX_PASSWORD,
    MIN_PASSWORD,
    check_password_length,
    normalise_username,
)
from tests.unit.test_domain_workspaces import by, recorded, refused, replayed

# -- usernames ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        ("  ALICE  ", "alice"),
        ("a.b_c9", "a.b_c9"),
        ("abc", "abc"),
        ("x" * 32, "x" * 32),
    ],
)
def test_a_username_is_normalised_to_lower_case_without_surrounding_space(
    given: str, normal: str
) -> None:
    assert normalise_username(given) == normal


@pytest.mark.parametrize(
    "username",
    [
        "",
        "ab",
        "x" * 33,
        "al ice",
        "alice!",
        "alice-bob",
        "alice@example.com",
        "élodie",
        "ali\x00ce",
        "ali\nce",
    ],
)
def test_a_username_is_3_to_32_characters_of_letters_digits_underscores_or_dots(
    username: str,
) -> None:
    with refused(InvalidValue, match="username"):
        normalise_username(username)
    with refused(InvalidValue, match="username"):
        User.register(username, None, by(None))
    with refused(InvalidValue, match="username"):
        user_id_for(username)


# -- user ids -------------------------------------------------------------------------------


def test_a_user_id_is_derived_from_the_username_whatever_its_case() -> None:
    assert user_id_for("Alice") == user_id_for("alice") == user_id_for(" ALICE ")
    assert isinstance(user_id_for("alice"), UUID)


def test_different_usernames_get_different_ids() -> None:
    assert user_id_for("alice") != user_id_for("alicia")
    assert user_id_for("alice") != user_id_for("alice.")


def test_user_ids_are_stable_across_processes_and_releases() -> None:
    # Derived with uuid5 from a fixed namespace: every server, today and after an upgrade,
    # maps a name to the same id, or existing users would lose their streams.
    assert user_id_for("alice") == UUID("3c2f4d3d-8097-5703-ba84-e2908b56f103")


# -- registering ----------------------------------------------------------------------------


def test_a_user_registers_as_their_own_actor_under_the_normalised_name() -> None:
    cause = by(None, "signup-1")
    user = User.register("  Alice ", "Alice Liddell", cause)
    ev = recorded(
        user,
        "UserRegistered",
        by(str(user_id_for("alice")), "signup-1"),
        username="alice",
        display_name="Alice Liddell",
    )
    assert ev.originator_id == user.id == user_id_for("alice")
    assert user.username == "alice"
    assert user.display_name == "Alice Liddell"


def test_registering_twice_under_differently_cased_names_gives_the_same_id() -> None:
    # The event store refuses the second stream with the same id: names are case-insensitive.
    assert User.register("Bob", None, by(None)).id == User.register("bob", None, by(None)).id


def test_the_display_name_defaults_to_the_username() -> None:
    assert User.register("Alice", None, by(None)).display_name == "alice"


def test_the_display_name_is_stripped() -> None:
    assert User.register("alice", "  Alice  ", by(None)).display_name == "Alice"


@pytest.mark.parametrize("display_name", ["", "   ", "x" * (MAX_DISPLAY_NAME + 1), "Al\x00ice"])
def test_a_display_name_is_not_empty_not_too_long_and_has_no_nul(display_name: str) -> None:
    with refused(InvalidValue, match="display_name"):
        User.register("alice", display_name, by(None))


def test_a_display_name_may_be_exactly_the_maximum_length() -> None:
    name = "é" * MAX_DISPLAY_NAME
    assert User.register("alice", name, by(None)).display_name == name


def test_replaying_a_users_events_reproduces_the_user() -> None:
    user = User.register("alice", "Alice", by(None, "signup-1"))
    again = replayed(list(user.collect_events()))
    assert isinstance(again, User)
    assert again == user
    assert (again.username, again.display_name) == ("alice", "Alice")


# -- passwords and ids ------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, MIN_PASSWORD - 1, MAX_PASSWORD + 1])
def test_a_password_is_8_to_256_characters(length: int) -> None:
    with refused(InvalidValue, match="password"):
        check_password_length("p" * length)


@pytest.mark.parametrize("length", [MIN_PASSWORD, MAX_PASSWORD])
def test_passwords_at_the_bounds_are_accepted(length: int) -> None:
    check_password_length("p" * length)


@pytest.mark.parametrize("value", ["", "nope", "123", "not-a-uuid-at-all", None, 42])
def test_a_malformed_id_is_simply_not_found(value: object) -> None:
    with refused(NotFound):
        as_uuid(value)  # type: ignore[arg-type]


def test_a_well_formed_id_is_parsed() -> None:
    uid = uuid4()
    assert as_uuid(str(uid)) == uid
    assert as_uuid(uid) is uid
