"""The key store of crypto-shredding (issue 20, infrastructure/keys.py): sealing, wrapping,
erasing and rotating, against a real PostgreSQL for the store's rows."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from cryptography.exceptions import InvalidTag

from infrastructure import keys
from infrastructure.keys import (
    KEYS_TABLE,
    SCHEMA_SQL,
    KeyRefused,
    KeyRing,
    new_master_key,
    open_states,
    parse_master_key,
    seal,
    unseal,
)


def test_a_sealed_value_opens_with_its_key_and_field_only() -> None:
    key_id, key = uuid4(), b"k" * 32
    sealed = seal(key_id, key, "text", "hello @ana")
    assert "hello" not in str(sealed)
    assert unseal(key, "text", sealed) == "hello @ana"
    with pytest.raises(InvalidTag):
        unseal(key, "display_name", sealed)  # moved to another field
    with pytest.raises(InvalidTag):
        unseal(b"x" * 32, "text", sealed)
    # Lists and other JSON values seal too.
    assert unseal(key, "tags", seal(key_id, key, "tags", ["a", "b"])) == ["a", "b"]


def test_master_keys_are_32_bytes_of_base64() -> None:
    assert len(parse_master_key(new_master_key())) == 32
    for bad in ("", "short", "@" * 44, new_master_key()[:-8]):
        with pytest.raises(KeyRefused):
            parse_master_key(bad)


@pytest.fixture
def ring(database_url: str) -> Iterator[KeyRing]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
    made = KeyRing.connect(database_url, new_master_key())
    yield made
    made.close()


def _wrapped(database_url: str) -> list[bytes]:
    with psycopg.connect(database_url) as conn:
        return [
            bytes(r[0])
            for r in conn.execute(f"SELECT wrapped FROM {KEYS_TABLE} ORDER BY key_id").fetchall()
        ]


def test_keys_are_stored_wrapped_and_open_again(ring: KeyRing, database_url: str) -> None:
    user, message = uuid4(), uuid4()
    ((key_id, key),) = ring.new_keys([(message, user)])
    assert key not in b"".join(_wrapped(database_url))
    assert ring.keys([key_id, uuid4()]) == {key_id: key}
    state = {"text": seal(key_id, key, "text", "secret"), "other": 1}
    assert open_states([state]) == [[]] and state == {"text": "secret", "other": 1}


def test_erasing_an_owner_destroys_the_keys_of_what_they_own(ring: KeyRing) -> None:
    ana, bob, message = uuid4(), uuid4(), uuid4()
    (ana_profile,), (ana_message,) = ring.new_keys([(ana, ana)]), ring.new_keys([(message, ana)])
    (bob_profile,) = ring.new_keys([(bob, bob)])
    assert ring.erase(owners=[ana]).keys == 2
    got = ring.keys([ana_profile[0], ana_message[0], bob_profile[0]])
    assert got == {ana_profile[0]: None, ana_message[0]: None, bob_profile[0]: bob_profile[1]}
    # Erased fields read null and are named; the rest opens.
    state: dict[str, Any] = {
        "text": seal(ana_message[0], ana_message[1], "text", "gone"),
        "name": seal(bob_profile[0], bob_profile[1], "name", "bob"),
    }
    assert open_states([state]) == [["text"]] and state == {"text": None, "name": "bob"}
    assert ring.erase(owners=[ana]).keys == 0  # once


def test_erasing_one_subject_leaves_its_owners_other_keys(ring: KeyRing) -> None:
    ana, one, two = uuid4(), uuid4(), uuid4()
    (first,), (second,) = ring.new_keys([(one, ana)]), ring.new_keys([(two, ana)])
    ring.erase(subjects=[one])
    assert ring.keys([first[0], second[0]]) == {first[0]: None, second[0]: second[1]}


def test_a_key_no_ring_holds_is_refused_not_read_as_erased(
    ring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader without the store's master key must fail, not rebuild read models as if
    everyone had been erased."""
    # This store's ring alone: a ring another test left open on a dropped database would
    # answer with its connection error instead.
    monkeypatch.setattr(keys, "_RINGS", weakref.WeakSet([ring]))
    state = {"text": seal(uuid4(), b"k" * 32, "text", "from elsewhere")}
    with pytest.raises(KeyRefused):
        open_states([state])


def test_rotation_rewraps_every_key_under_the_new_master(ring: KeyRing, database_url: str) -> None:
    made = ring.new_keys([(uuid4(), None) for _ in range(5)])
    ring.erase(subjects=[])  # nothing
    old_master = keys.new_master_key()  # a stranger's key: refused, not misread
    stranger = KeyRing.connect(database_url, old_master)
    try:
        with pytest.raises(KeyRefused):
            stranger.keys([made[0][0]])
    finally:
        stranger.close()
    before = _wrapped(database_url)
    new = new_master_key()
    assert ring.rotate(new) == 5
    assert not set(before) & set(_wrapped(database_url))
    assert ring.keys(k for k, _ in made) == dict(made)
    after = KeyRing.connect(database_url, new)
    try:
        assert after.keys(k for k, _ in made) == dict(made)
    finally:
        after.close()
    assert ring.rotate(new) == 0  # already under it
