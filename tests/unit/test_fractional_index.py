"""Order keys (domain/fractional_index.py): a key between any two sorts between them, so a
card moved anywhere never needs another card rewritten."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import Conflict, InvalidValue
from domain.fractional_index import MAX_KEY_LENGTH, check_key, key_between


def test_an_empty_column_starts_with_a_key() -> None:
    assert key_between(None, None) == "a0"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.booleans()), min_size=1, max_size=60))
def test_inserting_anywhere_keeps_every_key_in_order_and_distinct(
    moves: list[tuple[int, bool]],
) -> None:
    """Cards inserted at arbitrary spots (start, end, between two): the keys, compared as
    PostgreSQL's "C" collation and Python compare them (byte-wise), stay strictly sorted in
    the order the inserts meant, and no existing key changes."""
    keys: list[str] = []
    for spot, _ in moves:
        i = spot % (len(keys) + 1)
        before = keys[i - 1] if i > 0 else None
        after = keys[i] if i < len(keys) else None
        new = key_between(before, after)
        assert (before is None or before < new) and (after is None or new < after)
        keys.insert(i, new)
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for key in keys:
        assert check_key(key) == key


def test_repeated_inserts_at_one_spot_stay_bounded_then_refuse() -> None:
    """Always inserting just after the same card grows keys by about a character per
    insert; past the bound it is a conflict (move a neighbour first), not an endless key."""
    low, high = "a0", "a1"
    for _ in range(40):
        high = key_between(low, high)
    assert len(high) <= MAX_KEY_LENGTH
    with pytest.raises(Conflict):
        for _ in range(MAX_KEY_LENGTH * 8):
            high = key_between(low, high)


@pytest.mark.parametrize("bad", ["", "0a", "a", "a0 ", "a0\u0000", "é0", "a" * 65, "b0"])
def test_malformed_keys_are_refused(bad: str) -> None:
    with pytest.raises(InvalidValue):
        check_key(bad)


def test_neighbours_out_of_order_are_a_conflict() -> None:
    with pytest.raises(Conflict):
        key_between("a1", "a0")
    with pytest.raises(Conflict):
        key_between("a0", "a0")
