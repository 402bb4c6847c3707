"""Structural check of a Yjs v1 update before any CRDT library sees it.

The server receives document updates from untrusted clients and hands them to pycrdt (yrs).
yrs reserves memory from the length prefixes it reads, so a five-byte update whose first
count claims 2**28 clients makes it reserve about half a gigabyte before it notices the bytes
run out. This module walks the whole update in pure Python first and refuses anything that is
not a well-formed v1 update (the layout of yjs ``UpdateDecoderV1`` and lib0 ``readAny``), so
every count that yrs later trusts has been backed by real bytes.

It also reports what kind of shared type each root named in the update is. An update says a
struct belongs to the root ``"content"`` but not whether that root is a Y.Text or a Y.Map; the
kind follows from what the structs under it carry (see ``inspect_update``).

Beyond the byte layout it refuses what yrs reads differently from yjs, what makes the yjs
clients that receive the update throw (the server relays accepted updates to them), and what
no yjs client writes but crashes yrs: legacy JSON content (yrs reads one string more than yjs
writes), XmlHook types (yjs reads a hook name after the type ref, yrs does not), type refs yjs
does not know, a subdocument whose options are not an object, JSON text that ``JSON.parse``
would refuse, structs of length zero (which break the clock arithmetic of both), and an item
that refers to itself or to a later struct of its own client (which segfaults yrs 0.28).

How an update fits the document it is applied to is the second check. yrs 0.28 also panics or
segfaults on sequences of well-formed updates that leave gaps in a client's clocks (structs kept
pending, waiting for what is missing) and later overlap them; the smallest found is a GC over
clocks 0..2 of a client, an item at its clock 5 (kept pending: 3 and 4 are missing), then an
item over its clocks 3..5, which segfaults. ``inspect_update`` therefore also reports which
clocks of each client the update carries and which IDs outside them it refers to, and
``check_applicable`` refuses an update that the document, as its state vector describes it,
could not integrate entirely: one whose structs of a client start (or resume after a Skip) past
the document's clock for that client, one that refers to an ID that neither the document nor the
update holds, and one whose structs wait for each other in a cycle. A document that only ever
receives updates passing it never holds pending structs.

Skip structs (a bare clock range the update does not carry) are accepted: a yjs client whose
document holds pending structs sends them in sync step 2 (``Y.encodeStateAsUpdate`` appends its
pending structs with ``mergeUpdates``, which fills the gap before them with a Skip), and pycrdt's
own ``merge_updates`` and ``Doc.get_update`` write them too. What a Skip leaves out is a gap like
any other, so ``check_applicable`` requires the document to hold it already.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import NoReturn

from domain.errors import InvalidValue

__all__ = [
    "MalformedUpdate",
    "MissingDependencies",
    "UpdateShape",
    "UpdateTooLarge",
    "check_applicable",
    "check_storable_name",
    "decode_state_vector",
    "inspect_update",
]

DEFAULT_MAX_SIZE = 1 << 20
# lib0 refuses integers JavaScript cannot hold exactly; a client id of 2**53 or more would be
# rounded by yjs and no longer name the same client.
_MAX_SAFE = 1 << 53
# yrs keeps clocks in a u32; an end clock past it would wrap around inside yrs.
_MAX_CLOCK = 1 << 32
_MAX_VARINT_BYTES = 10
MAX_ANY_DEPTH = 32

# Kinds in precedence order: when one update shows a root in more than one way the highest
# wins. Keyed entries only exist in maps, so "map" beats everything. A Y.Text carries embeds
# and formats besides strings, and may embed shared types, so "text" beats what a text can also
# hold. A root XmlFragment holds typed children that look like array content, so "xml" beats
# "array".
_NONE, _ARRAY, _XML, _TEXT, _MAP = 0, 1, 2, 3, 4
_KIND_NAMES = {_ARRAY: "array", _XML: "xml", _TEXT: "text", _MAP: "map"}

# Content tags (the low five bits of an item's info byte).
_GC = 0
_DELETED = 1
_JSON = 2
_BINARY = 3
_STRING = 4
_EMBED = 5
_FORMAT = 6
_TYPE = 7
_ANY = 8
_DOC = 9
_SKIP = 10

_RANGE_TAGS = frozenset((_GC, _SKIP))

# Type refs: 0 Array, 1 Map, 2 Text, 3 XmlElement, 4 XmlFragment, 5 XmlHook, 6 XmlText.
_TYPE_REF_COUNT = 7
_XML_ELEMENT = 3  # followed by its node name (readKey)
_XML_HOOK = 5
_XML_CHILD_TYPE_REFS = (_XML_ELEMENT, 6)

# The fewest bytes each repeated element can take, to refuse a count the bytes left cannot hold
# before looping over it.
_MIN_CLIENT_BLOCK = 3  # struct count, client, clock
_MIN_STRUCT = 2  # info byte and at least one more
_MIN_DS_CLIENT = 2  # client, range count
_MIN_DS_RANGE = 2  # clock, length
_MIN_ANY_ENTRY = 2  # key length, value tag
_MIN_SV_ENTRY = 2  # client, clock


class MalformedUpdate(InvalidValue):
    """The bytes are not a well-formed Yjs v1 update (or state vector)."""


class UpdateTooLarge(MalformedUpdate):
    """The update is larger than the caller allows (close 4413 on ``/yjs``, not 4400)."""


# What no name in a stored event may hold. NUL: PostgreSQL ``text`` and ``jsonb`` refuse it,
# so a root name holding it, once in the log, stops the documents read model (and with it
# every read model of its batch) for good. Surrogates: not characters (UTF-8 decoding already
# refuses them; a ``str`` built another way may not). Non-characters (U+FDD0..U+FDEF and the
# last two code points of every plane): meant never to be interchanged.
# Domain rules for all text (domain/rules.py) may take this over; it is kept here so that the
# update walk, which is hot, checks names with one precompiled search.
_UNSTORABLE = re.compile(
    "[\x00\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(p << 16 | 0xFFFE)}{chr(p << 16 | 0xFFFF)}" for p in range(17))
    + "]"
)


def check_storable_name(name: str, what: str = "a name") -> None:
    """Raises ``MalformedUpdate`` when ``name`` (a root type's name, a map key) holds a
    character the read side cannot store or that is no character at all."""
    found = _UNSTORABLE.search(name)
    if found is not None:
        raise MalformedUpdate(_unstorable_message(what, found.group()))


def _unstorable_message(what: str, char: str) -> str:
    return f"{what} holds U+{ord(char):04X}, which names may not hold"


def _check_name(name: str, what: str, pos: int) -> None:
    # Callers in the hot walk skip it for ASCII names without NUL (a regex search over this
    # class costs microseconds; most names are short ASCII).
    found = _UNSTORABLE.search(name)
    if found is not None:
        _fail(_unstorable_message(what, found.group()), pos)


class MissingDependencies(InvalidValue):
    """The update is well-formed but the document could not integrate all of it: it needs
    clocks the document does not have yet. Applying it would leave structs pending, which
    later updates can turn into a crash of yrs."""


@dataclass(frozen=True)
class UpdateShape:
    """What a well-formed update contains, counted while checking it.

    Clocks are per client: the structs of client ``c`` in the update cover the clocks from
    ``starts[c]`` up to (not including) ``ends[c]``, except what Skip structs leave out. GC
    structs count as carried (they are content that was deleted and collected); Skips do not.
    """

    structs: int
    """Number of structs (items, GC and skip ranges) in the update."""
    deleted_ranges: int
    """Number of ranges in the delete set."""
    roots: dict[str, str]
    """Root name -> ``"text"``, ``"map"``, ``"array"`` or ``"xml"``, for the roots this update
    names as a parent (roots that only appear under deleted content are left out)."""
    starts: dict[int, int] = field(default_factory=dict)
    """Client -> clock of its first struct that is not a Skip. Clients whose structs are all
    Skips are left out."""
    ends: dict[int, int] = field(default_factory=dict)
    """Client -> clock just past its last struct that is not a Skip."""
    resumes: dict[int, int] = field(default_factory=dict)
    """Client -> clock at which its structs start again after the last Skip between them, for
    the clients whose structs a Skip interrupts. Everything below it that the update does
    not carry must already be in the document."""
    references: dict[int, int] = field(default_factory=dict)
    """Client -> the highest of its clocks that an origin, right origin or parent ID in the
    update refers to, among those at or past ``ends`` of that client (any clock, for a client
    with no structs in the update): IDs that only the document can hold. Other IDs are
    below the end of what the update carries for that client, so they are in the update, or
    below where it starts or resumes, which ``check_applicable`` requires the document to
    hold anyway."""
    dependencies: tuple[tuple[int, int, int, int], ...] = ()
    """``(client, clock, other, other_clock)``: the struct of ``client`` that starts at
    ``clock`` refers to ``other#other_clock``, which the update's own structs of ``other``
    carry, so it can only be integrated after them. Listed in the update's order; of the
    references from one client into another, only those that reach higher than every earlier
    one are kept (one that reaches no higher needs nothing more: its struct comes after the
    earlier one anyway)."""

    @property
    def empty(self) -> bool:
        """True when the update changes nothing: no structs and no deleted ranges."""
        return self.structs == 0 and self.deleted_ranges == 0


def inspect_update(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> UpdateShape:
    """Walks the whole update and returns its shape.

    Raises ``MalformedUpdate`` with a short message if the update is larger than ``max_size``,
    truncated, followed by trailing bytes, has a varint longer than 10 bytes or not below 2**53,
    a count the bytes left cannot hold, a clock that does not fit 32 bits, an unknown content,
    type or Any tag, Any nested deeper than 32, a string that is not UTF-8, JSON that is not
    JSON, a struct of length zero, legacy JSON content, an XmlHook type, an item whose
    origin, right origin or parent is itself or a later struct of its own client, or a client
    with two blocks of structs (yjs keeps the last block, yrs appends one to the other).

    The clock ranges of each client and the IDs outside them that the update refers to are
    reported in ``starts``, ``ends``, ``resumes``, ``references`` and ``dependencies``, for
    ``check_applicable``.

    A root's kind comes from the items whose parent it is: an item with a key makes it a
    "map"; string, embed or format content a "text"; XmlElement or XmlText children an "xml"
    fragment; any other content an "array". Deleted content says nothing, and neither do items
    with an origin (they take their parent from it, so the update does not name it). When an
    update shows one root in several ways, map > text > xml > array decides.
    """
    size = len(data)
    if size > max_size:
        raise UpdateTooLarge(f"update is {size} bytes, over the limit of {max_size}")
    buf = bytes(data)
    try:
        return _walk(buf)
    except IndexError:
        # Reading a byte past the end is how most truncations surface; checking the position
        # before every byte would cost more than catching the one miss.
        raise MalformedUpdate("update is truncated") from None


def _fail(message: str, pos: int) -> NoReturn:
    raise MalformedUpdate(f"{message} (at byte {pos})")


def _uint(buf: bytes, pos: int) -> tuple[int, int]:
    """Reads a lib0 varUint at ``pos``; returns it and the position after it."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    start = pos
    value = b & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos - start >= _MAX_VARINT_BYTES:
            _fail("varint longer than 10 bytes", start)
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
    if value >= _MAX_SAFE:
        _fail("integer not below 2**53", start)
    return value, pos


def _int(buf: bytes, pos: int) -> int:
    """Skips a lib0 signed varInt (6 data bits and a sign bit first); returns the position after."""
    b = buf[pos]
    if b < 0x80:
        return pos + 1
    start = pos
    value = b & 0x3F
    shift = 6
    pos += 1
    while True:
        if pos - start >= _MAX_VARINT_BYTES:
            _fail("varint longer than 10 bytes", start)
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
    if value >= _MAX_SAFE:
        _fail("integer not below 2**53", start)
    return pos


def _count(buf: bytes, pos: int, min_bytes: int, what: str) -> tuple[int, int]:
    """Reads a count of elements that each take at least ``min_bytes``."""
    n, after = _uint(buf, pos)
    if n * min_bytes > len(buf) - after:
        _fail(f"{what} count {n} exceeds the bytes left", pos)
    return n, after


def _str(buf: bytes, pos: int) -> tuple[str, int]:
    """Reads a varString; returns the text and the position after it."""
    n, start = _uint(buf, pos)
    stop = start + n
    if stop > len(buf):
        _fail(f"string length {n} exceeds the bytes left", pos)
    try:
        return buf[start:stop].decode("utf-8"), stop
    except UnicodeDecodeError:
        _fail("string is not UTF-8", pos)


def _reject_constant(name: str) -> NoReturn:
    # JSON.parse has no NaN or Infinity; Python's decoder would accept them.
    raise ValueError(name)


_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json(buf: bytes, pos: int) -> int:
    """Skips a varString that yjs hands to JSON.parse (and yrs to serde_json)."""
    text, after = _str(buf, pos)
    try:
        _JSON_DECODER.decode(text)
    except (ValueError, RecursionError):
        _fail("string is not JSON", pos)
    return after


def _any(buf: bytes, pos: int, depth: int) -> int:
    """Skips one lib0 Any value; returns the position after it."""
    tag = buf[pos]
    pos += 1
    if tag in (127, 126, 121, 120):  # undefined, null, false, true
        return pos
    if tag == 119:  # string
        return _str(buf, pos)[1]
    if tag == 125:  # varInt
        return _int(buf, pos)
    if tag == 123 or tag == 122:  # float64, bigint64
        return _skip(buf, pos, 8, "8-byte number")
    if tag == 124:  # float32
        return _skip(buf, pos, 4, "4-byte number")
    # lib0 and yrs read nested values by recursion; without a bound a megabyte of opening tags
    # would exhaust the stack.
    if (tag == 118 or tag == 117) and depth > MAX_ANY_DEPTH:
        _fail(f"Any nested deeper than {MAX_ANY_DEPTH}", pos - 1)
    if tag == 118:  # object: n (key, value) pairs
        n, pos = _count(buf, pos, _MIN_ANY_ENTRY, "object entry")
        for _ in range(n):
            pos = _str(buf, pos)[1]
            pos = _any(buf, pos, depth + 1)
        return pos
    if tag == 117:  # array
        n, pos = _count(buf, pos, 1, "array element")
        for _ in range(n):
            pos = _any(buf, pos, depth + 1)
        return pos
    if tag == 116:  # Uint8Array
        n, start = _uint(buf, pos)
        return _skip(buf, start, n, f"byte array length {n}")
    _fail(f"unknown Any tag {tag}", pos - 1)


def _skip(buf: bytes, pos: int, n: int, what: str) -> int:
    """Skips ``n`` raw bytes (of a number or a byte array); returns the position after them."""
    stop = pos + n
    if stop > len(buf):
        _fail(f"{what} exceeds the bytes left", pos)
    return stop


def _encode_uint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Most of an update is IDs and delete ranges, and reading their varints a byte at a time in
# Python is where the check would spend its time. These patterns match, in C, the common
# encodings that are certainly in range: a client id written in its shortest form (so that equal
# ids have equal bytes) of at most 8 bytes whose last byte keeps it under 2**53, and clocks of at
# most 4 bytes (< 2**28, so a clock plus a length still fits 32 bits) or of 5 bytes under 2**32.
# Anything else goes the slow way, which decodes, decides and explains.
_CLIENT = rb"(?:[\x00-\x7f]|[\x80-\xff]{1,6}[\x01-\x7f]|[\x80-\xff]{7}[\x01-\x0f])"
_SMALL = rb"[\x80-\xff]{0,3}[\x00-\x7f]"
_ID_MATCH = re.compile(_CLIENT + rb"(?:" + _SMALL + rb"|[\x80-\xff]{4}[\x00-\x0f])").match
_RANGE_MATCH = re.compile(_SMALL + _SMALL).match


_SELF_REFERENCE = "an item refers to itself or to a later struct of its client"


def _ref(
    buf: bytes, pos: int, own: bytes, own_client: int, own_clock: int, foreign: list[int]
) -> int:
    """Skips the ID of an item's origin, right origin or parent; returns the position after.

    Whatever an item refers to existed before it, so a struct of the item's own client has a
    lower clock. yrs does not check this: an origin inside the item itself, followed by any
    later struct of that client, crashes the process (a segfault, not an exception).
    ``own`` is the shortest encoding of ``own_client``. An ID of another client is noted in
    ``foreign`` (its position, then the clock of the referring item) for ``_links``.
    """
    m = _ID_MATCH(buf, pos)
    if m is not None:
        # A shortest-form client id ends with its last byte, so equal prefixes are equal ids.
        if buf.startswith(own, pos):
            if _uint(buf, pos + len(own))[0] >= own_clock:
                _fail(_SELF_REFERENCE, pos)
        else:
            foreign.append(pos)
            foreign.append(own_clock)
        return m.end()
    client, at = _uint(buf, pos)
    clock, after = _uint(buf, at)
    if clock >= _MAX_CLOCK:
        _fail("clock does not fit 32 bits", at)
    if client == own_client:
        if clock >= own_clock:
            _fail(_SELF_REFERENCE, pos)
    else:
        foreign.append(pos)
        foreign.append(own_clock)
    return after


def _walk(buf: bytes) -> UpdateShape:
    end = len(buf)
    uint = _uint
    id_match = _ID_MATCH
    starts = buf.startswith
    kinds: dict[str, int] = {}
    structs = 0
    first_clocks: dict[int, int] = {}
    end_clocks: dict[int, int] = {}
    resumes: dict[int, int] = {}
    seen: set[int] = set()
    # IDs of other clients that items refer to: for each, its position and the clock of the
    # item referring to it; blocks: (client, index of its first entry, index past its last).
    foreign: list[int] = []
    note = foreign.append
    blocks: list[tuple[int, int, int]] = []

    n_clients, pos = _count(buf, 0, _MIN_CLIENT_BLOCK, "client")
    for _ in range(n_clients):
        block_at = pos
        n_structs, pos = _count(buf, pos, _MIN_STRUCT, "struct")
        client, pos = uint(buf, pos)
        if client in seen:
            _fail(f"client {client} has a second block of structs", block_at)
        seen.add(client)
        own = _encode_uint(client)
        own_len = len(own)
        clock_at = pos
        clock, pos = uint(buf, pos)
        first = clock
        skips: list[int] = []  # start and end clock of each Skip
        noted = len(foreign)
        structs += n_structs
        for _ in range(n_structs):
            struct_at = pos
            info = buf[pos]
            pos += 1
            tag = info & 0x1F
            if tag in _RANGE_TAGS:  # GC or Skip: a bare clock range
                length, pos = uint(buf, pos)
                if tag == _SKIP:
                    skips.append(clock)
                    skips.append(clock + length)
            else:
                if info & 0xC0:
                    # The item has an origin, so its parent is the origin's: no parent info follows.
                    # Typing makes most origins IDs of the same client, so _ref's fast path is
                    # inlined here, clock decoding included.
                    refs = 2 if info >= 0xC0 else 1
                    while refs:
                        refs -= 1
                        m = id_match(buf, pos)
                        if m is None:
                            pos = _ref(buf, pos, own, client, clock, foreign)
                            continue
                        if starts(own, pos):
                            at = pos + own_len
                            ref_clock = buf[at]
                            if ref_clock >= 0x80:
                                ref_clock = uint(buf, at)[0]
                            if ref_clock >= clock:
                                _fail(_SELF_REFERENCE, pos)
                        else:
                            note(pos)
                            note(clock)
                        pos = m.end()
                    root = None
                else:
                    parent_info, pos = uint(buf, pos)
                    if parent_info == 1:
                        root_at = pos
                        root, pos = _str(buf, pos)
                        if not root.isascii() or "\x00" in root:
                            _check_name(root, "a root type's name", root_at)
                    elif parent_info == 0:
                        pos = _ref(buf, pos, own, client, clock, foreign)
                        root = None
                    else:
                        _fail(f"parent info {parent_info} is neither 0 nor 1", pos - 1)
                    if info & 0x20:
                        key_at = pos
                        key, pos = _str(buf, pos)  # parentSub, the key of a map entry
                        if not key.isascii() or "\x00" in key:
                            _check_name(key, "a map key", key_at)
                        if root is not None:
                            kinds[root] = _MAP
                            root = None  # nothing beats "map"
                if tag == _STRING:
                    size = buf[pos]
                    if size < 0x80:
                        start = pos + 1
                    else:
                        size, start = uint(buf, pos)
                    stop = start + size
                    if stop > end:
                        _fail(f"string length {size} exceeds the bytes left", pos)
                    try:
                        text = buf[start:stop].decode("utf-8")
                    except UnicodeDecodeError:
                        _fail("string is not UTF-8", pos)
                    # The clock length is in UTF-16 units: one per character of an ASCII
                    # string, two for each character outside the BMP.
                    length = len(text)
                    if length != size:
                        length = len(text.encode("utf-16-le")) >> 1
                    pos = stop
                    kind = _TEXT
                elif tag == _DELETED:
                    length, pos = uint(buf, pos)
                    kind = _NONE
                elif tag == _ANY:
                    length, pos = _count(buf, pos, 1, "Any")
                    for _ in range(length):
                        pos = _any(buf, pos, 1)
                    kind = _ARRAY
                elif tag == _FORMAT:
                    key_at = pos
                    key, pos = _str(buf, pos)
                    _check_name(key, "a format's key", key_at)
                    pos = _json(buf, pos)
                    length = 1
                    kind = _TEXT
                elif tag == _TYPE:
                    type_ref, pos = uint(buf, pos)
                    if type_ref >= _TYPE_REF_COUNT:
                        _fail(f"unknown type ref {type_ref}", pos - 1)
                    if type_ref == _XML_ELEMENT:
                        name_at = pos
                        name, pos = _str(buf, pos)
                        _check_name(name, "an XML element's name", name_at)
                    elif type_ref == _XML_HOOK:
                        # yjs reads a hook name here and yrs 0.28 does not, so the two would
                        # part ways on every byte after it.
                        _fail("XmlHook types are not accepted", pos - 1)
                    length = 1
                    kind = _XML if type_ref in _XML_CHILD_TYPE_REFS else _ARRAY
                elif tag == _EMBED:
                    pos = _json(buf, pos)
                    length = 1
                    kind = _TEXT
                elif tag == _BINARY:
                    n, pos = uint(buf, pos)
                    pos = _skip(buf, pos, n, f"binary length {n}")
                    length = 1
                    kind = _ARRAY
                elif tag == _DOC:
                    pos = _str(buf, pos)[1]  # guid
                    if buf[pos] != 118:
                        # yjs reads opts.shouldLoad, which throws on null or undefined.
                        _fail("subdocument options are not an object", pos)
                    pos = _any(buf, pos, 1)
                    length = 1
                    kind = _ARRAY
                elif tag == _JSON:
                    _fail("legacy JSON content is not accepted", struct_at)
                else:
                    _fail(f"unknown content tag {tag}", struct_at)
                if root is not None and kind > kinds.get(root, _NONE):
                    kinds[root] = kind
            if length == 0:
                _fail("struct of length 0", struct_at)
            clock += length
            if clock >= _MAX_CLOCK:
                _fail("clock does not fit 32 bits", clock_at)
        if len(foreign) > noted:
            blocks.append((client, noted, len(foreign)))
        if not skips:
            if n_structs:
                first_clocks[client] = first
                end_clocks[client] = clock
            continue
        # The runs of carried clocks between the Skips.
        runs: list[int] = []
        at_clock = first
        for i in range(0, len(skips), 2):
            if skips[i] > at_clock:
                runs.append(at_clock)
                runs.append(skips[i])
            at_clock = skips[i + 1]
        if clock > at_clock:
            runs.append(at_clock)
            runs.append(clock)
        if runs:
            first_clocks[client] = runs[0]
            end_clocks[client] = runs[-1]
            if len(runs) > 2:
                resumes[client] = runs[-2]

    ranges = 0
    range_match = _RANGE_MATCH
    n_ds, pos = _count(buf, pos, _MIN_DS_CLIENT, "delete set client")
    for _ in range(n_ds):
        pos = uint(buf, pos)[1]  # client
        n_ranges, pos = _count(buf, pos, _MIN_DS_RANGE, "delete range")
        ranges += n_ranges
        for _ in range(n_ranges):
            m = range_match(buf, pos)
            if m is not None:
                pos = m.end()
                continue
            range_at = pos
            clock, pos = uint(buf, pos)
            length, pos = uint(buf, pos)
            if clock + length >= _MAX_CLOCK:
                _fail("deleted range does not fit 32-bit clocks", range_at)
    if pos != end:
        _fail(f"{end - pos} trailing bytes after the update", pos)
    references, dependencies = _links(buf, foreign, blocks, first_clocks, end_clocks)
    return UpdateShape(
        structs=structs,
        deleted_ranges=ranges,
        roots={name: _KIND_NAMES[kind] for name, kind in kinds.items()},
        starts=first_clocks,
        ends=end_clocks,
        resumes=resumes,
        references=references,
        dependencies=dependencies,
    )


def _links(
    buf: bytes,
    foreign: list[int],
    blocks: list[tuple[int, int, int]],
    first_clocks: dict[int, int],
    end_clocks: dict[int, int],
) -> tuple[dict[int, int], tuple[tuple[int, int, int, int], ...]]:
    """Sorts the IDs of other clients that items refer to into ``references`` (past what the
    update carries of that client) and ``dependencies`` (inside it); see ``UpdateShape``."""
    uint = _uint
    # Most IDs name a client of the update: look their shortest encodings up rather than
    # decoding them (no shortest encoding is the start of another).
    known = {_encode_uint(client): client for client in end_clocks}
    lengths = sorted({len(encoded) for encoded in known})
    references: dict[int, int] = {}
    dependencies: list[tuple[int, int, int, int]] = []
    for client, lo, hi in blocks:
        reached: dict[int, int] = {}  # other client -> highest clock depended on so far
        for pos, clock in zip(foreign[lo:hi:2], foreign[lo + 1 : hi : 2], strict=True):
            for n in lengths:
                other = known.get(buf[pos : pos + n])
                if other is not None:
                    at = pos + n
                    break
            else:
                other, at = uint(buf, pos)
            other_clock = buf[at]
            if other_clock >= 0x80:
                other_clock = uint(buf, at)[0]
            other_end = end_clocks.get(other)
            if other_end is None or other_clock >= other_end:
                if other_clock > references.get(other, -1):
                    references[other] = other_clock
            elif other_clock > reached.get(other, -1) and other_clock >= first_clocks[other]:
                reached[other] = other_clock
                dependencies.append((client, clock, other, other_clock))
    return references, tuple(dependencies)


def decode_state_vector(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> dict[int, int]:
    """Reads a Yjs state vector (pycrdt ``Doc.get_state()``, ``Y.encodeStateVector``, the body
    of y-protocols sync step 1): a count, then that many (client, clock) pairs, all varUints.

    Returns client -> clock (the number of clocks of that client the sender has; a client
    named twice keeps its last clock, as in yjs and yrs). Raises ``MalformedUpdate`` if the
    bytes are over ``max_size``, truncated, followed by trailing bytes, hold a count the
    bytes left cannot hold, a varint longer than 10 bytes or not below 2**53, or a clock that
    does not fit 32 bits.
    """
    size = len(data)
    if size > max_size:
        raise MalformedUpdate(f"state vector is {size} bytes, over the limit of {max_size}")
    buf = bytes(data)
    state: dict[int, int] = {}
    try:
        n, pos = _count(buf, 0, _MIN_SV_ENTRY, "state vector entry")
        for _ in range(n):
            client, pos = _uint(buf, pos)
            at = pos
            clock, pos = _uint(buf, pos)
            if clock >= _MAX_CLOCK:
                _fail("clock does not fit 32 bits", at)
            state[client] = clock
    except IndexError:
        raise MalformedUpdate("state vector is truncated") from None
    if pos != size:
        _fail(f"{size - pos} trailing bytes after the state vector", pos)
    return state


def check_applicable(shape: UpdateShape, state_vector: Mapping[int, int]) -> None:
    """Refuses an update that a document with this state vector could not integrate entirely.

    ``state_vector`` is the document's (``decode_state_vector(doc.get_state())``): client ->
    the number of clocks of that client it holds. Raises ``MissingDependencies`` when, for
    some client, the update's structs start, or resume after a Skip, past the document's
    clock (the clocks between are missing, so yrs would keep what follows pending); when it
    refers to an ID that neither the document nor the update holds; or when its structs wait
    for each other in a cycle (each waits for a struct of another client that the update
    only carries after one that waits for it), which also leaves them pending.

    Passing it, an update integrates entirely: the document never holds pending structs,
    which is what made sequences of well-formed updates crash yrs 0.28. An update of structs
    the document already has (in part or entirely) passes. The delete set is not checked:
    yrs keeps deletions of clocks it does not have aside until they arrive, as yjs does, and
    fuzzing found no crash from that.
    """
    for client, start in shape.starts.items():
        have = state_vector.get(client, 0)
        if start > have:
            raise MissingDependencies(
                f"the update's structs of client {client} start at clock {start}, but "
                f"{_held(client, have)}"
            )
    for client, start in shape.resumes.items():
        have = state_vector.get(client, 0)
        if start > have:
            raise MissingDependencies(
                f"the update's structs of client {client} resume at clock {start} after a "
                f"Skip, but {_held(client, have)}"
            )
    for client, clock in shape.references.items():
        have = state_vector.get(client, 0)
        if clock >= have:
            raise MissingDependencies(
                f"the update refers to {client}#{clock}, which it does not carry, and "
                f"{_held(client, have)}"
            )
    if shape.dependencies:
        _check_order(shape, state_vector)


def _held(client: int, have: int) -> str:
    if have == 0:
        return f"the document has no clock of client {client}"
    return f"the document has clocks 0 to {have - 1} of client {client} only"


def _check_order(shape: UpdateShape, state_vector: Mapping[int, int]) -> None:
    """Refuses an update whose structs wait for each other in a cycle.

    Follows yrs's integration: each client's structs go in clock order, and a struct that
    refers to a clock of another client the document lacks waits until that client's
    structs have reached past it. ``frontier[c]`` is how far the document would have client
    ``c``; a client stuck at a struct waits in ``waiting`` on the clock it needs.
    """
    waits: dict[int, list[tuple[int, int, int]]] = {}
    for client, clock, other, other_clock in shape.dependencies:
        if other_clock >= state_vector.get(other, 0):
            waits.setdefault(client, []).append((clock, other, other_clock))
    if not waits:
        return
    frontier = {client: state_vector.get(client, 0) for client in shape.starts}
    index = dict.fromkeys(waits, 0)
    waiting: dict[int, list[tuple[int, int]]] = {}
    todo = list(shape.starts)
    while todo:
        client = todo.pop()
        have = state_vector.get(client, 0)
        reached = max(have, shape.ends[client])
        own = waits.get(client)
        if own is not None:
            i = index[client]
            while i < len(own):
                clock, other, other_clock = own[i]
                if other_clock < frontier[other]:
                    i += 1
                    continue
                reached = max(have, clock)
                heappush(waiting.setdefault(other, []), (other_clock, client))
                break
            index[client] = i
        if reached > frontier[client]:
            frontier[client] = reached
            queue = waiting.get(client)
            while queue and queue[0][0] < reached:
                todo.append(heappop(queue)[1])
    for client, own in waits.items():
        i = index[client]
        if i < len(own):
            clock, other, other_clock = own[i]
            raise MissingDependencies(
                f"the update's struct {client}#{clock} waits for {other}#{other_clock}, which "
                "the update only carries after structs that wait for it in turn (a cycle)"
            )
