"""The rules of users: who can register under which name, and how their ids come about."""

from __future__ import annotations

import sys
import unicodedata
from uuid import UUID, uuid4

import pytest

from domain.base import as_uuid
from domain.errors import InvalidValue, NotFound, PermissionDenied
from domain.identity import (
    User,
    check_can_add,
    display_name_rule,
    legacy_user_id,
    username_read_in,
)
from domain.rules import (
    MAX_DISPLAY_NAME,
    MAX_PASSWORD,
    MIN_PASSWORD,
    check_password_length,
    normalise_username,
)
from tests.fixtures.domain import by, recorded, refused, replayed

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
        User.register(uuid4(), username, None, by(None))
    with refused(InvalidValue, match="username"):
        legacy_user_id(username)


# -- user ids -------------------------------------------------------------------------------


def test_a_legacy_user_id_is_derived_from_the_username_whatever_its_case() -> None:
    assert legacy_user_id("Alice") == legacy_user_id("alice") == legacy_user_id(" ALICE ")
    assert legacy_user_id("alice") != legacy_user_id("alicia")
    assert legacy_user_id("alice") != legacy_user_id("alice.")


def test_legacy_user_ids_are_stable_across_processes_and_releases() -> None:
    # Users registered before issue 17 live at these ids: every server, today and after an
    # upgrade, must find them there, or they would lose their streams.
    assert legacy_user_id("alice") == UUID("3c2f4d3d-8097-5703-ba84-e2908b56f103")


# -- registering ----------------------------------------------------------------------------


def test_a_user_registers_as_their_own_actor_under_the_normalised_name() -> None:
    cause = by(None, "signup-1")
    user_id = uuid4()
    user = User.register(user_id, "  Alice ", "Alice Liddell", cause)
    ev = recorded(
        user,
        "UserRegistered",
        by(str(user_id), "signup-1"),
        username="alice",
        display_name="Alice Liddell",
    )
    assert ev.originator_id == user.id == user_id
    assert user.username == "alice"
    assert user.display_name == "Alice Liddell"


def test_the_display_name_defaults_to_the_username() -> None:
    assert User.register(uuid4(), "Alice", None, by(None)).display_name == "alice"


def test_the_display_name_is_stripped() -> None:
    assert User.register(uuid4(), "alice", "  Alice  ", by(None)).display_name == "Alice"


@pytest.mark.parametrize("display_name", ["", "   ", "x" * (MAX_DISPLAY_NAME + 1), "Al\x00ice"])
def test_a_display_name_is_not_empty_not_too_long_and_has_no_nul(display_name: str) -> None:
    with refused(InvalidValue, match="display_name"):
        User.register(uuid4(), "alice", display_name, by(None))


def test_a_display_name_may_be_exactly_the_maximum_length() -> None:
    name = "é" * MAX_DISPLAY_NAME
    assert User.register(uuid4(), "alice", name, by(None)).display_name == name


# -- display names that impersonate or hide (issue 16, finding 7) ---------------------------


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("\uff21\uff44\uff41", "Ada"),  # full-width letters
        ("\U0001d400\U0001d41d\U0001d41a", "Ada"),  # mathematical bold
        ("\ufb01ona", "fiona"),  # a ligature
        ("\u2163 Henry", "IV Henry"),  # a Roman numeral
        ("Cafe\u0301", "Caf\u00e9"),  # decomposed to composed
        ("  Ada  ", "Ada"),
        (
            "\u05e9\u05dc\u05d5\u05dd",
            "\u05e9\u05dc\u05d5\u05dd",
        ),  # right-to-left letters are letters
    ],
)
def test_a_display_name_is_nfkc_normalised(given: str, shown: str) -> None:
    assert display_name_rule(given) == shown
    assert User.register(uuid4(), "alice", given, by(None)).display_name == shown


def _every(*categories: str) -> list[str]:
    return [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in categories]


# Every format character (the bidi embeddings, overrides, isolates and marks U+202A-U+202E,
# U+2066-U+2069, U+200E/F, U+061C; the zero-width U+200B-U+200D, U+2060, U+FEFF; soft hyphens,
# tags...), line and paragraph separators, invisible fillers, and the control characters
# (ANSI escapes start with ESC).
HIDING = [*_every("Cf", "Zl", "Zp", "Cc"), "\u115f", "\u1160", "\u3164", "\uffa0"]


def test_the_family_of_hiding_and_reordering_characters_is_whole() -> None:
    named = [*"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"]
    named += [*"\u200b\u200c\u200d\u2060\ufeff\x1b\x00\x07\x85"]
    assert set(named) <= set(HIDING)


def test_a_display_name_with_a_hiding_or_reordering_character_is_refused() -> None:
    accepted = []
    for character in HIDING:
        for name in (f"Ada{character}", f"{character}Ada", f"A{character}da"):
            try:
                display_name_rule(name)
            except InvalidValue as exc:
                assert "display_name" in str(exc)
            else:
                accepted.append(f"U+{ord(character):04X}")
    assert not accepted, accepted
    with refused(InvalidValue, match="display_name"):
        User.register(uuid4(), "alice", "\x1b[31mAdmin\x1b[0m", by(None))


@pytest.mark.parametrize(
    ("display_name", "username"),
    [
        ("ada", "ada"),
        ("ADA", "ada"),
        (" Ada ", "ada"),
        ("\uff21\uff24\uff21", "ada"),  # full-width
        ("\U0001d41a\U0001d41d\U0001d41a", "ada"),  # mathematical bold
        ("Stra\u00dfe", "strasse"),  # case folding, not lower-casing
        ("\u212aevin", "kevin"),  # the Kelvin sign
        ("a.b_c9", "a.b_c9"),
        ("Ada Lovelace", None),
        ("ad", None),
        ("\u00e9lodie", None),
    ],
)
def test_the_username_a_display_name_reads_as(display_name: str, username: str | None) -> None:
    assert username_read_in(display_name) == username


def test_replaying_a_users_events_reproduces_the_user() -> None:
    user = User.register(uuid4(), "alice", "Alice", by(None, "signup-1"))
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


# -- who may add whom (issue 17, finding 13) --------------------------------------------------


def test_nobody_adds_a_user_who_blocked_them() -> None:
    me, pest, friend = (User.register(uuid4(), n, None, by(None)) for n in ("me_", "pest", "frd"))
    me.block(str(pest.id), by(str(me.id)))
    with refused(PermissionDenied, match="cannot add"):
        check_can_add(str(pest.id), me)
    check_can_add(str(friend.id), me)
    # Blocking is one user's own choice: whom I block may still be added by me.
    check_can_add(str(me.id), pest)


# -- erasure (issue 20) ---------------------------------------------------------------------


def test_a_user_is_erased_by_themselves_or_an_operator_once() -> None:
    user_id = uuid4()
    for actor in (str(user_id), None):
        user = User.register(user_id, "erin", None, by(str(user_id)))
        user.collect_events()
        with refused(PermissionDenied):
            user.erase(["profile"], by(str(uuid4())))
        assert not user.erased
        user.erase(["profile", "messages"], by(actor))
        recorded(user, "UserErased", by(actor), kinds=["profile", "messages"])
        assert user.erased
        with refused(NotFound):
            user.erase(["profile"], by(actor))
