"""The name rule (domain/rules.py, ``check_shown_name``): what a label that others read as
who or what something is may not hold, checked at every place a name is given.

The family of refused characters is generated from Unicode's own categories, so it stays
whole as Unicode grows; the places are every domain method that takes a name."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable
from uuid import uuid4

import pytest

from domain.base import Cause
from domain.channels import Channel
from domain.documents import Document
from domain.errors import InvalidValue
from domain.identity import display_name_rule
from domain.rules import MAX_MARKS_PER_CHARACTER, shown_name
from domain.workspaces import PUBLIC, Workspace

OWNER = Cause(actor_id="owner", command_id="cmd-1")


def _workspace(name: str = "w") -> Workspace:
    return Workspace.create(uuid4(), name, PUBLIC, False, OWNER)


def _channel(name: str = "c") -> Channel:
    return Channel.create(uuid4(), _workspace(), name, False, None, OWNER)


def _rename_channel(name: str) -> None:
    workspace = _workspace()
    channel = Channel.create(uuid4(), workspace, "c", False, None, OWNER)
    channel.change(name, None, workspace, OWNER)


def _rename_document(title: str) -> None:
    workspace = _workspace()
    Document.create(uuid4(), workspace, "d", OWNER).rename(title, workspace, OWNER)


# Every place a name enters the domain, with the field its errors name.
PLACES: dict[str, tuple[str, Callable[[str], object]]] = {
    "display name": ("display_name", display_name_rule),
    "workspace name": ("name", _workspace),
    "channel name": ("name", _channel),
    "channel rename": ("name", _rename_channel),
    "document title": ("title", lambda title: Document.create(uuid4(), _workspace(), title, OWNER)),
    "document rename": ("title", _rename_document),
    "the rule itself": ("label", lambda value: shown_name(value, field="label", max_length=64)),
}


def _every(*categories: str) -> list[str]:
    return [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in categories]


# Format characters (bidi embeddings, overrides, isolates and marks, zero-width spaces and
# joiners, the BOM, soft hyphens, tags), line and paragraph separators, and fillers that show
# nothing.
HIDING = [*_every("Cf", "Zl", "Zp"), "\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"]

# Names that must stay possible: other scripts, emoji sequences with their joiners and flags,
# accents written as combining marks.
FINE = [
    "שלום עולם",
    "مرحبا بالعالم",
    "日本語のチャンネル",
    "\U0001f469\u200d\U0001f4bb devs",  # woman technologist: a joiner between two emoji
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",
    "\U0001f44b\U0001f3fd hi",  # skin tone modifier
    "\u2764\ufe0f love",
    # the flag of Wales: black flag, tags "gbwls", cancel tag
    "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f cymru",
    "Cafe\u0301",
    "a" + "\u0301" * MAX_MARKS_PER_CHARACTER,
]


def test_the_family_is_whole() -> None:
    named = [*"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"]
    named += [*"\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\U000e0041\u2028\u2029"]
    assert set(named) <= set(HIDING)
    assert len(HIDING) > 160


@pytest.mark.parametrize("place", PLACES, ids=str)
def test_a_name_holding_a_hiding_or_reordering_character_is_refused(place: str) -> None:
    field, give = PLACES[place]
    accepted = []
    for character in HIDING:
        for name in (f"Ada{character}x", f"{character}Ada", f"A{character}da"):
            try:
                give(name)
            except InvalidValue as exc:
                # (a display name is NFKC-normalised first: U+3164 is refused as U+1160)
                assert f"{field} must not contain invisible" in str(exc), str(exc)
            else:
                accepted.append(f"U+{ord(character):04X}")
    assert not accepted, accepted


@pytest.mark.parametrize("place", PLACES, ids=str)
@pytest.mark.parametrize("name", FINE)
def test_names_in_any_script_and_emoji_sequences_are_accepted(place: str, name: str) -> None:
    PLACES[place][1](name)


@pytest.mark.parametrize(
    "name",
    [
        "a\u200d\U0001f4bb",  # a joiner between a letter and an emoji
        "\U0001f4bb\u200d",  # a joiner at the end
        "\u200d\U0001f4bb",
        "Ada\U000e0041\U000e0042\U000e007f",  # tags smuggled after a letter
        "\U0001f3f4\U000e0067\U000e0062",  # a flag never closed
        "Ada\U000e007f",  # a cancel tag alone
    ],
)
def test_joiners_and_tags_outside_emoji_sequences_are_refused(name: str) -> None:
    for place, (_, give) in PLACES.items():
        with pytest.raises(InvalidValue, match="invisible or reordering"):
            give(name)
        assert place


@pytest.mark.parametrize("place", PLACES, ids=str)
def test_combining_marks_stacked_past_the_limit_are_refused(place: str) -> None:
    field, give = PLACES[place]
    give("Z" + "\u0336" * MAX_MARKS_PER_CHARACTER + "algo")
    for mark in ("\u0336", "\u0489", "\u20dd"):  # Mn, and two enclosing marks (Me)
        with pytest.raises(InvalidValue, match=f"{field} must not stack"):
            give("Z" + mark * (MAX_MARKS_PER_CHARACTER + 1) + "algo")
