"""The index streams that keep usernames and direct channels unique (domain/indexes.py)."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.errors import InvalidValue, NotFound
from domain.identity import legacy_user_id
from domain.indexes import DirectChannelPair, UsernameClaim, direct_pair_id, username_claim_id
from tests.fixtures.domain import by, recorded, refused, replayed

ANN, BEA, CID = (str(uuid4()) for _ in range(3))


def test_a_username_has_one_claim_stream_whatever_its_case() -> None:
    assert username_claim_id("Alice") == username_claim_id(" alice ") == username_claim_id("ALICE")
    assert username_claim_id("alice") != username_claim_id("alicia")
    # Never where a user registered before claims existed lives.
    assert username_claim_id("alice") != legacy_user_id("alice")


@pytest.mark.parametrize("name", ["", "ab", "a b", "x" * 33, "ali\nce"])
def test_what_can_be_no_username_has_no_claim(name: str) -> None:
    with refused(InvalidValue, match="username"):
        username_claim_id(name)


def test_a_claim_records_its_holder_and_the_normalised_name() -> None:
    user_id = uuid4()
    cause = by(str(user_id), "signup-1")
    claim = UsernameClaim.claim(" Alice ", user_id, cause)
    ev = recorded(claim, "UsernameClaimed", cause, username="alice", user_id=str(user_id))
    assert ev.originator_id == claim.id == username_claim_id("alice")
    assert claim.holder == str(user_id)
    assert replayed([ev]) == claim


def test_a_pair_has_one_index_stream_whoever_opens() -> None:
    assert direct_pair_id(ANN, BEA) == direct_pair_id(BEA, ANN)
    assert direct_pair_id(ANN, BEA.upper()) == direct_pair_id(ANN, BEA)
    assert direct_pair_id(ANN, BEA) != direct_pair_id(ANN, CID)
    with refused(NotFound):
        direct_pair_id(ANN, "not an id")


def test_a_pair_records_its_channel_and_both_members() -> None:
    channel_id = uuid4()
    cause = by(ANN, "dm-1")
    pair = DirectChannelPair.pair(channel_id, [BEA, ANN], cause)
    ev = recorded(
        pair,
        "DirectChannelPaired",
        cause,
        channel_id=str(channel_id),
        user_ids=sorted([ANN, BEA]),
    )
    assert ev.originator_id == direct_pair_id(ANN, BEA)
    assert replayed([ev]) == pair
