"""The character rule (domain/rules.py): which code points no text may hold, and that every
text of every command meets it, whatever the command's fields are."""

from __future__ import annotations

import unicodedata
from datetime import UTC, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.contexts import CONTEXTS
from application import commands
from application.commands import Command
from domain.errors import InvalidValue
from domain.rules import (
    MULTILINE_FIELDS,
    bounded_text,
    check_every_text,
    check_text,
    forbidden_character,
)

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    suppress_health_check=[HealthCheck.too_slow],
)


def refused(code: int, *, multiline: bool) -> bool:
    """The rule, stated independently of its regular expressions: control characters (C0,
    DEL, C1: Unicode's ``Cc``) but line feed and tab in multi-line text, surrogates (``Cs``),
    and the 66 non-characters."""
    category = unicodedata.category(chr(code))
    if category == "Cc":
        return not (multiline and chr(code) in "\n\t")
    non_character = 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE
    return category == "Cs" or non_character


@pytest.mark.parametrize("multiline", [False, True])
def test_every_code_point_is_judged_as_the_rule_says(multiline: bool) -> None:
    wrong = [
        f"U+{code:04X}"
        for code in range(0x110000)
        if (forbidden_character(chr(code), multiline=multiline) is not None)
        != refused(code, multiline=multiline)
    ]
    assert not wrong, wrong[:20]
    assert (
        sum(refused(c, multiline=multiline) for c in range(0x110000))
        == 65 - 2 * multiline + (0xE000 - 0xD800) + 66
    )


@FUZZ
@given(st.text(), st.text(), st.sampled_from(["emoji", "name", "text", "topic", "id"]))
def test_a_text_is_refused_exactly_when_it_holds_a_refused_character(
    head: str, tail: str, field: str
) -> None:
    for text in (head, head + tail, f"{head}\x00{tail}", f"{head}\ud800{tail}"):
        multiline = field in MULTILINE_FIELDS
        expected = any(refused(ord(c), multiline=multiline) for c in text)
        try:
            check_text(text, field=field)
        except InvalidValue as exc:
            assert expected, text
            assert str(exc).startswith(f"{field} must not contain"), exc
        else:
            assert not expected, text


def test_text_people_write_is_accepted() -> None:
    """Emoji sequences (zero-width joiner, variation selector), right-to-left scripts and
    their marks, tabs and line breaks in a message: all are text, not attacks."""
    for text in ["👨‍👩‍👧", "❤️", "🏳️‍🌈", "שלום עולם", "مرحبا\u200f", "日本語", "a\tb\nc", "Ω≈ç√∫"]:
        check_text(text, field="text")
    for emoji in ["👍", "👨‍👩‍👧", "❤️", "+1", "custom_emoji"]:
        check_text(emoji, field="emoji")


def test_bounded_text_applies_the_rule() -> None:
    assert bounded_text(" a\nb ", field="text", max_length=10) == "a\nb"
    for field, text in [("name", "a\nb"), ("text", "a\x1b[31m"), ("title", "x\ufffe")]:
        with pytest.raises(InvalidValue, match=field):
            bounded_text(text, field=field, max_length=10)


# -- every command, whatever its fields ------------------------------------------------------


def every_command_type() -> list[type[Command]]:
    """Every command a client or the server can send: a command added to
    application/commands.py is in this list without a change here."""
    declared = {
        cls
        for cls in vars(commands).values()
        if isinstance(cls, type) and issubclass(cls, Command) and cls is not Command
    }
    handled = set(CONTEXTS.handlers)
    assert declared == handled, "a command is declared but no context handles it"
    return sorted(handled, key=lambda cls: cls.__name__)


def texts(value: Any, field: str) -> list[tuple[str, str]]:
    """Every string inside a command's field value, with the field it belongs to."""
    if isinstance(value, str):
        return [(field, value)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in texts(k, field) + texts(v, field)]
    if isinstance(value, list | tuple | set | frozenset):
        return [t for item in value for t in texts(item, field)]
    return []


HOSTILE = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["\x00", "\ud800", "\udfff", "\ufdd0", "\U0010fffe", "\x1b[2J", "\x85"]),
    st.text(st.characters(codec=None, categories=["Cc", "Cs", "Cn"]), min_size=1, max_size=3),
)


def hostile(kind: Any) -> st.SearchStrategy[Any]:
    """Values of the msgspec type ``kind`` whose strings are hostile."""
    if isinstance(kind, msgspec.inspect.StrType):
        return HOSTILE
    if isinstance(kind, msgspec.inspect.ListType):
        return st.lists(hostile(kind.item_type), max_size=3)
    if isinstance(kind, msgspec.inspect.DictType):
        return st.dictionaries(hostile(kind.key_type), hostile(kind.value_type), max_size=3)
    if isinstance(kind, msgspec.inspect.UnionType):
        return st.one_of([hostile(t) for t in kind.types])
    if isinstance(kind, msgspec.inspect.NoneType):
        return st.none()
    if isinstance(kind, msgspec.inspect.IntType):
        return st.integers()
    if isinstance(kind, msgspec.inspect.BoolType):
        return st.booleans()
    if isinstance(kind, msgspec.inspect.BytesType):
        return st.binary(max_size=8)
    if isinstance(kind, msgspec.inspect.DateTimeType):
        # No text in it: any instant, naive or not, passes the rule untouched.
        offsets = [None, UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]
        return st.datetimes(timezones=st.sampled_from(offsets))
    raise AssertionError(f"a command field of a type this test cannot build: {kind}")


def hostile_commands() -> st.SearchStrategy[Command]:
    return st.one_of([hostile_command(cls) for cls in every_command_type()])


def hostile_command(cls: type[Command]) -> st.SearchStrategy[Command]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: hostile(f.type) for f in info.fields}
    return st.builds(cls, **fields)


@FUZZ
@given(hostile_commands())
def test_every_text_of_every_command_meets_the_rule(command: Command) -> None:
    found = [
        (field, text)
        for field, value in msgspec.structs.asdict(command).items()
        for field, text in texts(value, field)
    ]
    bad = [
        field
        for field, text in found
        if any(refused(ord(c), multiline=field in MULTILINE_FIELDS) for c in text)
    ]
    try:
        check_every_text(command, field=type(command).__name__)
    except InvalidValue as exc:
        assert bad, command
        assert str(exc).split(" ")[0] in bad, (exc, bad)
    else:
        assert not bad, command
