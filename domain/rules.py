"""Limits on values that clients send, in one place so the API documents the same numbers."""

from __future__ import annotations

import re

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


def bounded_text(value: str, *, field: str, max_length: int, allow_empty: bool = False) -> str:
    """Strips surrounding white space and checks the length that is left."""
    text = value.strip()
    if not text and not allow_empty:
        raise InvalidValue(f"{field} must not be empty")
    if len(text) > max_length:
        raise InvalidValue(f"{field} is longer than {max_length} characters")
    if any(ch in text for ch in "\x00"):
        raise InvalidValue(f"{field} must not contain NUL characters")
    return text


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_PATTERN.fullmatch(name):
        raise InvalidValue("username must be 3 to 32 characters of a-z, 0-9, '_' or '.'")
    return name


def check_password_length(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidValue(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
