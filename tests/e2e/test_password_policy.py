"""Weak passwords (issue 17, finding 7): sign-up and password change refuse what is easy to
guess with a 422 problem+json that says why, and append nothing. The bad passwords are
generated as families (common ones, sequences, repeats, keyboard walks, padded with white
space or invisible characters, made of the username or display name), not listed one by one.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.chorus import GOOD_PASSWORD, Running

pytestmark = pytest.mark.security

MIN_LENGTH = 10

# Characters that show nothing on screen: zero-width space, non-joiner, joiner, word joiner,
# BOM, soft hyphen, a combining mark, the Hangul and braille blanks.
INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\u0301",
    "\u3164",
    "\u2800",
]
# White space of several kinds: runs of it count as one character, at either end as none.
SPACES = [" ", "\u00a0", "\u3000", "\u2003"]

COMMON = [
    "password",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyuiop",
    "iloveyou",
    "password1",
    "password123",
    "passw0rd",
    "football",
    "baseball",
    "letmein",
    "sunshine",
    "princess",
    "trustno1",
    "superman",
    "starwars",
    "welcome1",
    "monkey123",
    "dragon",
]


def short_family() -> Iterator[str]:
    """Below ten characters as a person sees them, however they are padded."""
    for word in ["a", "abc", "Xy9!", "hunter2", "abcdefghi"]:
        yield word
        for invisible in INVISIBLE:
            yield word + invisible * 8
            yield invisible.join(word) + invisible * 4
        for space in SPACES:
            yield word + space * 8
            yield space * 8 + word
    yield " " * 8
    yield "\u200b" * 8
    yield " " * 30


def guessable_family() -> Iterator[str]:
    """Ten characters or more, and still among the first guesses of any cracker."""
    for word in COMMON:
        yield (word * 3)[: max(MIN_LENGTH, len(word))]
        yield word + "1234"
        if word.isalpha():
            yield word.capitalize() + "2024!"
        yield word + word
    for length in (10, 12, 16):
        yield "1234567890123456789012345"[:length]
        yield "a" * length
        yield "ab" * (length // 2)
        yield "qwertyuiopasdfghjklzxcvbnm"[:length]
        yield "abcdefghijklmnopqrstuvwxyz"[:length]
    for year in (1980, 1999, 2024):
        yield f"january{year}!"


def name_family(username: str, display_name: str) -> Iterator[str]:
    """The username or display name, alone or trivially decorated."""
    for name in (username, display_name):
        squeezed = name.replace(" ", "")
        for variant in (name, name.upper(), name.title(), squeezed):
            yield variant
            yield variant + "!"
            yield variant + "123456"
            yield "my" + variant + "2024"
            yield variant + "\u200b" * 4
    yield username[::-1] + username


def _signup(
    chorus: Running, username: str, password: str, display_name: str | None = None
) -> httpx.Response:
    body = {"username": username, "password": password}
    if display_name is not None:
        body["display_name"] = display_name
    return chorus.api.http.post("/api/auth/signup", json=body)


def _refused(response: httpx.Response, why: str) -> None:
    assert response.status_code == 422, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    assert "password" in detail and why in detail, detail


def test_signup_refuses_short_and_padded_passwords(chorus: Running) -> None:
    before = chorus.events()
    passwords = list(short_family())
    assert len(passwords) > 100
    for password in passwords:
        r = _signup(chorus, f"pad_{uuid.uuid4().hex[:10]}", password)
        _refused(r, f"at least {MIN_LENGTH} characters")
    assert chorus.events() == before


def test_signup_refuses_common_and_predictable_passwords(chorus: Running) -> None:
    before = chorus.events()
    passwords = list(guessable_family())
    assert all(len(p) >= MIN_LENGTH for p in passwords)
    for password in passwords:
        _refused(_signup(chorus, f"weak_{uuid.uuid4().hex[:10]}", password), "easy to guess")
    assert chorus.events() == before


def test_signup_refuses_passwords_made_of_the_username_or_display_name(chorus: Running) -> None:
    before = chorus.events()
    username = f"marguerite_{uuid.uuid4().hex[:6]}"
    display_name = "Madeleine Oyelaran"
    for password in name_family(username, display_name):
        r = _signup(chorus, username, password, display_name)
        assert r.status_code == 422, (password, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "password" in r.json()["detail"], r.text
    assert chorus.events() == before


def test_the_issue_s_five_are_refused(chorus: Running) -> None:
    username = f"victim_{uuid.uuid4().hex[:6]}"
    before = chorus.events()
    for password in ["12345678", "password", " " * 8, "\u200b" * 8, username]:
        r = _signup(chorus, username, password)
        assert r.status_code == 422, (password, r.text)
    assert chorus.events() == before


def test_strong_passwords_are_accepted(chorus: Running) -> None:
    """What users expect to work: passphrases, long random strings, any script."""
    strong = [
        GOOD_PASSWORD,
        "correct horse battery staple",
        "Tr0ub4dor&3-extra",
        "vélo rouge sous la pluie",
        "雨の日に赤い自転車で走る朝",
        "k9#Vq2!mZp7$Lx",
        uuid.uuid4().hex,
    ]
    for password, padded in itertools.product(strong, [False, True]):
        typed = f"  {password}  " if padded else password
        username = f"strong_{uuid.uuid4().hex[:10]}"
        r = _signup(chorus, username, typed)
        assert r.status_code == 201, (password, r.text)
        # The password is kept as typed: the same string signs in.
        login = chorus.api.http.post(
            "/api/auth/login", json={"username": username, "password": typed}
        )
        assert login.status_code == 200, login.text


def test_a_password_change_meets_the_same_policy(chorus: Running) -> None:
    user = chorus.api.signup("changer")
    before = chorus.events()
    weak = (
        list(itertools.islice(short_family(), 40))
        + list(itertools.islice(guessable_family(), 40))
        + [user.username, user.username.upper() + "!", user.username + "123456"]
    )
    for password in weak:
        r = chorus.api.post(
            "/api/auth/password",
            user,
            {"old_password": user.password, "new_password": password},
        )
        assert r.status_code == 422, (password, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "password" in r.json()["detail"]
    assert chorus.events() == before
    # Nothing changed: the old password still signs in.
    login = chorus.api.http.post(
        "/api/auth/login", json={"username": user.username, "password": user.password}
    )
    assert login.status_code == 200, login.text
