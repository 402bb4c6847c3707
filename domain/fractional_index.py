"""Order keys for cards in a column: a string between two neighbours, so a move writes the
moved task only and never renumbers the others.

The keys are those of the ``fractional-indexing`` package (the Python port of the algorithm
Figma and Rocicorp's Replicache use: base-62 digits, an integer part whose length its first
character says, then a fraction). This module is the one place that knows the package: it
checks the keys a client or an old event gives before they reach the package, whose errors
are not the domain's.
"""

from __future__ import annotations

import re

import fractional_indexing

from domain.errors import Conflict, InvalidValue

# Long enough for thousands of inserts at one spot (each adds about one character), short
# enough that a column of 5,000 cards stays a small read.
MAX_KEY_LENGTH = 64
_KEY = re.compile(r"[a-zA-Z][0-9A-Za-z]*")


def check_key(key: str) -> str:
    """A well-formed order key, or InvalidValue."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise InvalidValue("an order key is base-62 text of at most 64 characters")
    try:
        fractional_indexing.validate_order_key(key)
    except fractional_indexing.FIError:
        raise InvalidValue(f"invalid order key {key!r}") from None
    return key


def key_between(before: str | None, after: str | None) -> str:
    """A key that sorts after ``before`` and before ``after`` (None: the column's start or
    end). Conflict when the two are not in that order (a neighbour moved meanwhile)."""
    for given in (before, after):
        if given is not None:
            check_key(given)
    if before is not None and after is not None and not before < after:
        raise Conflict("the neighbours given are not in order: reload the board")
    key = str(fractional_indexing.generate_key_between(before, after))
    if len(key) > MAX_KEY_LENGTH:
        raise Conflict("too many moves between these two cards: move one of them first")
    return key
