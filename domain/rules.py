"""Limits on values that clients send, in one place so the API documents the same numbers."""

from __future__ import annotations

import re
import unicodedata

from zxcvbn import zxcvbn

from domain.errors import InvalidValue

USERNAME_PATTERN = re.compile(r"[a-z0-9_.]{3,32}")
MAX_DISPLAY_NAME = 64
MAX_WORKSPACE_NAME = 100
MAX_CHANNEL_NAME = 100
MAX_TOPIC = 1024
MAX_ROLE_NAME = 32
ROLE_NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
MAX_MESSAGE_TEXT = 4000
MAX_DOCUMENT_TITLE = 200
# One stored update (a client's burst merged); a client's single update is bounded by the
# WebSocket frame limit, which is smaller.
MAX_DOCUMENT_EVENT_BYTES = 4 * 1024 * 1024
MAX_DOCUMENT_UPDATE_BYTES = 1024 * 1024
# What one document may grow to while open (its encoded state plus what editors added).
MAX_LIVE_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_MENTIONS = 20
MAX_EMOJI = 64
MAX_DISTINCT_REACTIONS = 50
MAX_INVITE_USES = 10_000
MIN_INVITE_TTL_S = 60
MAX_INVITE_TTL_S = 30 * 24 * 3600
DEFAULT_INVITE_TTL_S = 7 * 24 * 3600
MAX_CUSTOM_ROLES = 100
MIN_PASSWORD = 8
MAX_PASSWORD = 256
# A user's password (issue 17): at least this many characters as a person sees them...
MIN_USER_PASSWORD = 10
# ...and at least this zxcvbn score (3: "safely unguessable", above 10^8 guesses), so the
# most common passwords, keyboard walks, repeats and dictionary words are refused whatever
# their length.
MIN_PASSWORD_SCORE = 3


# -- the character rule --------------------------------------------------------------------
# Every text a client sends may end up in the log, in a jsonb column of a read model and on
# every client's screen. PostgreSQL refuses NUL in text and jsonb, so one stored NUL wedges
# the read side for good (the log is immutable); a lone surrogate is not a character at all
# (it cannot be encoded as UTF-8); non-characters are reserved for a program's internal use
# and have no business crossing an API; control characters (C0, DEL, C1; ESC starts ANSI
# escapes) only make sense as line breaks and tabs, in text that spans lines.

# Fields whose text spans lines: there, and only there, \n and \t are allowed.
MULTILINE_FIELDS = frozenset({"text", "topic"})

_SURROGATES = "\ud800-\udfff"
# U+FDD0..U+FDEF and the last two code points of each of the 17 planes.
_NON_CHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17)
)
_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_SURROGATES}{_NON_CHARACTERS}]")
_MULTILINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_SURROGATES}{_NON_CHARACTERS}]")


def forbidden_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character of ``value`` that the rule refuses, or None."""
    found = (_MULTILINE if multiline else _ONE_LINE).search(value)
    return None if found is None else found.group()


def check_text(value: str, *, field: str) -> None:
    """Refuses a text holding NUL, a control character (but \\n and \\t in a field of
    ``MULTILINE_FIELDS``), a lone surrogate or a non-character."""
    character = forbidden_character(value, multiline=field in MULTILINE_FIELDS)
    if character is not None:
        raise InvalidValue(f"{field} must not contain {_describe(character)}")


def check_every_text(value: object, *, field: str) -> None:
    """``check_text`` on every string inside ``value``: itself if it is one, the items of a
    list, tuple or set, the keys and values of a dict, the fields of a msgspec Struct (each
    under its own name), recursively. Other values (numbers, bytes, None) hold no text.

    This is how a command is checked whole, whatever fields it has: a command added later
    is covered as it is declared."""
    if isinstance(value, str):
        check_text(value, field=field)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_every_text(key, field=field)
            check_every_text(item, field=field)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            check_every_text(item, field=field)
    else:
        for name in getattr(type(value), "__struct_fields__", ()):
            check_every_text(getattr(value, name), field=name)


def _describe(character: str) -> str:
    code = ord(character)
    if code == 0:
        kind = "NUL"
    elif 0xD800 <= code <= 0xDFFF:
        kind = "an unpaired surrogate"
    elif code < 0x20 or 0x7F <= code <= 0x9F:
        kind = "a control character"
    else:
        kind = "a non-character"
    return f"{kind} (U+{code:04X})"


def bounded_text(value: str, *, field: str, max_length: int, allow_empty: bool = False) -> str:
    """Checks the characters (before stripping, as the API does: a trailing tab is refused in
    a name, not hidden), strips surrounding white space, checks the length that is left."""
    check_text(value, field=field)
    text = value.strip()
    if not text and not allow_empty:
        raise InvalidValue(f"{field} must not be empty")
    if len(text) > max_length:
        raise InvalidValue(f"{field} is longer than {max_length} characters")
    return text


# -- the name rule ---------------------------------------------------------------------------
# A name (display name, workspace and channel name, document title) is a label that other
# people read as who or what something is. There, unlike in free text, nothing may hide or
# reorder what is shown: format characters (Unicode ``Cf``: bidi embeddings, overrides,
# isolates and marks, zero-width spaces and joiners, the BOM, soft hyphens, tag characters that
# smuggle invisible ASCII), line and paragraph separators, fillers that show nothing, and
# combining marks stacked beyond what any script needs (they spill over the lines around).
# Emoji sequences keep their joiners and tags: a zero-width joiner between two emoji, and the
# tags of a subdivision flag after U+1F3F4.

MAX_MARKS_PER_CHARACTER = 4
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_ZWJ = "\u200d"
_BLACK_FLAG = "\U0001f3f4"
_TAGS = range(0xE0020, 0xE007F)
_CANCEL_TAG = "\U000e007f"


def _emoji_like(character: str) -> bool:
    # Emoji are symbols (So); skin tones are modifiers (Sk); U+FE0F asks for emoji display.
    return character == "\ufe0f" or unicodedata.category(character) in ("So", "Sk")


def _in_flag(value: str, index: int) -> bool:
    """Whether the tag character at ``index`` belongs to a subdivision flag: a run of tags
    after U+1F3F4, closed by the cancel tag."""
    start = index
    while start > 0 and ord(value[start - 1]) in _TAGS:
        start -= 1
    end = index
    while end < len(value) and ord(value[end]) in _TAGS:
        end += 1
    return (
        start > 0
        and value[start - 1] == _BLACK_FLAG
        and end < len(value)
        and value[end] == _CANCEL_TAG
    )


def _allowed_format(value: str, index: int) -> bool:
    character = value[index]
    if character == _ZWJ:
        return 0 < index < len(value) - 1 and all(
            _emoji_like(value[i]) for i in (index - 1, index + 1)
        )
    if ord(character) in _TAGS:
        return _in_flag(value, index)
    if character == _CANCEL_TAG:
        return index > 0 and (value[index - 1] == _BLACK_FLAG or ord(value[index - 1]) in _TAGS)
    return False


def check_shown_name(value: str, *, field: str) -> None:
    """Refuses a name holding what hides or reorders it (see above), or a character carrying
    more than ``MAX_MARKS_PER_CHARACTER`` combining marks."""
    check_text(value, field=field)
    marks = 0
    for index, character in enumerate(value):
        category = unicodedata.category(character)
        hides = category in ("Zl", "Zp") or character in _INVISIBLE_LETTERS
        if hides or (category == "Cf" and not _allowed_format(value, index)):
            raise InvalidValue(
                f"{field} must not contain invisible or reordering characters"
                f" (U+{ord(character):04X})"
            )
        marks = marks + 1 if category in ("Mn", "Me") and character != "\ufe0f" else 0
        if marks > MAX_MARKS_PER_CHARACTER:
            raise InvalidValue(
                f"{field} must not stack more than {MAX_MARKS_PER_CHARACTER} combining marks"
                " on one character"
            )


def shown_name(value: str, *, field: str, max_length: int) -> str:
    """``bounded_text`` for a name: also meets the name rule."""
    check_shown_name(value, field=field)
    return bounded_text(value, field=field, max_length=max_length)


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_PATTERN.fullmatch(name):
        raise InvalidValue("username must be 3 to 32 characters of a-z, 0-9, '_' or '.'")
    return name


def check_password_length(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidValue(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")


# -- the password policy (issue 17) ----------------------------------------------------------

# Look like nothing on screen, yet are neither format characters nor white space.
_BLANK_LETTERS = frozenset("\u115f\u1160\u2800\u3164\uffa0")
# zxcvbn's own bound: its matching grows quickly with length, and what follows 72
# characters no longer changes a score that could fail.
_ESTIMATED_CHARACTERS = 72


def _seen(password: str) -> str:
    """The password as a person sees it: NFKC, invisible characters (format characters such
    as zero-width spaces and joiners, combining and enclosing marks, blank fillers) left
    out, each run of white space one space, none at either end."""
    kept = [
        character
        for character in unicodedata.normalize("NFKC", password)
        if unicodedata.category(character) not in ("Cf", "Mn", "Me", "Cc", "Cs", "Co", "Cn")
        and character not in _BLANK_LETTERS
    ]
    return " ".join("".join(kept).split())


def _folded(value: str) -> str:
    return "".join(_seen(value).casefold().split())


def check_user_password(password: str, username: str, display_name: str | None = None) -> None:
    """Refuses a user's password that is easy to guess, saying why: fewer than
    ``MIN_USER_PASSWORD`` characters as seen (invisible characters and padding do not
    count), one that holds the username or display name, or one zxcvbn scores below
    ``MIN_PASSWORD_SCORE`` (the common passwords, words, names, dates, keyboard walks and
    repeats it knows, also when made from the username or display name)."""
    if len(password) > MAX_PASSWORD:
        raise InvalidValue(f"password is longer than {MAX_PASSWORD} characters")
    check_text(password, field="password")
    seen = _seen(password)
    if len(seen) < MIN_USER_PASSWORD:
        raise InvalidValue(
            f"password must be at least {MIN_USER_PASSWORD} characters, not counting"
            " invisible characters or repeated and surrounding white space"
        )
    folded = _folded(seen)
    names = [("username", _folded(username))]
    if display_name:
        names.append(("display name", _folded(display_name)))
    for what, name in names:
        # A display name of one or two letters is in many a good password: only equal.
        if name and (name == folded or (len(name) >= 3 and name in folded)):
            raise InvalidValue(f"password must not contain your {what}")
    estimate = zxcvbn(
        seen[:_ESTIMATED_CHARACTERS],
        user_inputs=[username, display_name or ""],
    )
    if estimate["score"] < MIN_PASSWORD_SCORE:
        warning = estimate["feedback"]["warning"] or "it is too predictable"
        raise InvalidValue(
            f"password is too easy to guess: {warning.rstrip('.')}."
            " Use a few unrelated words, or more characters."
        )
