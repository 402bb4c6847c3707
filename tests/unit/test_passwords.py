from __future__ import annotations

import time
from collections.abc import Callable

import argon2
import pytest
from argon2 import Type, extract_parameters

from infrastructure.passwords import PasswordHasher

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher()


@pytest.fixture(scope="module")
def stored(hasher: PasswordHasher) -> str:
    return hasher.hash(PASSWORD)


def test_hash_is_argon2id_with_rfc9106_low_memory_parameters(stored: str) -> None:
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    params = extract_parameters(stored)
    assert params.type is Type.ID
    assert params.memory_cost == 64 * 1024  # KiB
    assert params.time_cost == 3
    assert params.parallelism == 4
    assert params.salt_len == 16
    assert params.hash_len == 32


def test_parameters_meet_owasp_minimum(stored: str) -> None:
    # OWASP's weakest argon2id row is m=19 MiB, t=2, p=1 (memory and time trade off
    # against each other, so compare the product as well).
    params = extract_parameters(stored)
    assert params.memory_cost >= 19 * 1024
    assert params.memory_cost * params.time_cost >= 19 * 1024 * 2


def test_parameters_property_matches_hashes(hasher: PasswordHasher, stored: str) -> None:
    assert f"${hasher.parameters}$" in stored


def test_same_password_gets_a_fresh_salt(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.hash(PASSWORD) != stored


def test_verify_correct_password(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.verify(stored, PASSWORD) is True


@pytest.mark.parametrize("attempt", ["", "correct horse battery stapl", PASSWORD + " ", "\ud800"])
def test_verify_wrong_password(hasher: PasswordHasher, stored: str, attempt: str) -> None:
    assert hasher.verify(stored, attempt) is False


def test_verify_unicode_password(hasher: PasswordHasher) -> None:
    h = hasher.hash("pässwörd \U0001f512")
    assert hasher.verify(h, "pässwörd \U0001f512") is True
    assert hasher.verify(h, "passwörd \U0001f512") is False


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=65536,t=3,p=4$",
        "$argon2id$v=19$m=65536,t=3,p=4$!!!!$????",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
    ],
)
def test_verify_malformed_hash_returns_false(hasher: PasswordHasher, malformed: str) -> None:
    assert hasher.verify(malformed, PASSWORD) is False


def test_verify_truncated_hash_returns_false(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.verify(stored[:-4], PASSWORD) is False


def test_verify_none_returns_false_even_for_the_dummy_secret(hasher: PasswordHasher) -> None:
    assert hasher.verify(None, PASSWORD) is False
    assert hasher.verify(None, "") is False


def _fastest(fn: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_verify_none_costs_a_real_verification(hasher: PasswordHasher, stored: str) -> None:
    real = _fastest(lambda: hasher.verify(stored, "wrong"))
    unknown_user = _fastest(lambda: hasher.verify(None, "wrong"))
    # Same argon2 work; the wide margin only absorbs scheduler noise.
    assert unknown_user > real * 0.5


def test_needs_rehash(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.needs_rehash(stored) is False
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("x")
    assert hasher.needs_rehash(weak) is True
    argon2i = argon2.PasswordHasher(type=Type.I).hash("x")
    assert hasher.needs_rehash(argon2i) is True


@pytest.mark.parametrize("malformed", ["", "garbage", "$2b$12$abc"])
def test_needs_rehash_on_malformed_hash_is_true(hasher: PasswordHasher, malformed: str) -> None:
    assert hasher.needs_rehash(malformed) is True


def test_old_parameters_still_verify(hasher: PasswordHasher) -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("x")
    assert hasher.verify(weak, "x") is True
