"""Data keys for crypto-shredding (issue 20): kept beside the log, never in it.

Personal fields of events (infrastructure/serialisation.py: ``PERSONAL``) are stored sealed
with AES-GCM under a data key of their own event, and the key's row in
``chorus_subject_keys`` names the subject it belongs to (a message, a user) and the owner of
that subject (the author, the user). Erasing destroys the rows' key material (the row stays,
with ``erased_at``, so "erased" is told from "never existed"): the log keeps its ciphertext,
which nobody can open any more, and the hash chain over it still verifies.

Data keys are kept wrapped (AES-GCM) under the instance's master key (``CHORUS_MASTER_KEY``,
or one generated into the data directory); each row names the master key that wrapped it by
a fingerprint, so ``chorus rotate-master-key`` re-wraps every row under a new master key in
one transaction, and a row a wrong key wrapped is refused rather than misread.

A key per event (not per subject) costs a row per sealed event, and spares the write path a
lookup: a new event's key is made, not found, and its row is inserted by the recorder in the
event's own transaction (one statement for a batch's keys). Erasing a user's 10,000 messages
is one UPDATE through the owner index.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import msgspec
import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Cipher

KEYS_TABLE = "chorus_subject_keys"
KEY_BYTES = 32
_NONCE_BYTES = 12
# A sealed field's value in the stored JSON: {"$shred": key id, "c": nonce + ciphertext}.
# No event has a field whose value is an object with this key (values are typed).
SEALED = "$shred"

SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (
    key_id uuid PRIMARY KEY,
    subject_id uuid NOT NULL,
    owner_id uuid,
    master_id text,
    wrapped bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    erased_at timestamptz,
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS {KEYS_TABLE}_subject ON {KEYS_TABLE} (subject_id);
CREATE INDEX IF NOT EXISTS {KEYS_TABLE}_owner ON {KEYS_TABLE} (owner_id);
"""


class KeyRefused(Exception):
    """A master key that is malformed, or that did not wrap the keys it is asked to open."""


def parse_master_key(text: str) -> bytes:
    """A master key as configured: 32 bytes, base64 (URL-safe or not, padded or not)."""
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "==")
    except ValueError as exc:
        raise KeyRefused("CHORUS_MASTER_KEY is not base64") from exc
    if len(key) != KEY_BYTES:
        raise KeyRefused(f"CHORUS_MASTER_KEY must hold {KEY_BYTES} bytes, not {len(key)}")
    return key


def new_master_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def master_id(master: bytes) -> str:
    """A fingerprint naming a master key without revealing it."""
    return hashlib.sha256(b"chorus-master-key\0" + master).hexdigest()[:16]


def _wrap(master: bytes, key_id: UUID, key: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(master).encrypt(nonce, key, key_id.bytes)


def _unwrap(master: bytes, key_id: UUID, wrapped: bytes) -> bytes:
    try:
        return AESGCM(master).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], key_id.bytes)
    except InvalidTag as exc:
        raise KeyRefused(f"data key {key_id} does not open under this master key") from exc


def seal(key_id: UUID, key: bytes, field: str, value: Any) -> dict[str, str]:
    """``value`` of ``field`` sealed under a data key. The field's name is authenticated
    with it: a sealed value moved to another field does not open."""
    nonce = os.urandom(_NONCE_BYTES)
    plain = msgspec.json.encode(value)
    sealed = nonce + AESGCM(key).encrypt(nonce, plain, _aad(key_id, field))
    return {SEALED: str(key_id), "c": base64.b64encode(sealed).decode()}


def sealed_key(value: Any) -> UUID | None:
    """The data key a stored value is sealed under, or None for a plain value."""
    if isinstance(value, dict) and SEALED in value:
        return UUID(value[SEALED])
    return None


def unseal(key: bytes, field: str, value: Mapping[str, str]) -> Any:
    raw = base64.b64decode(value["c"])
    key_id = UUID(value[SEALED])
    plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(key_id, field))
    return msgspec.json.decode(plain)


def _aad(key_id: UUID, field: str) -> bytes:
    return key_id.bytes + field.encode()


@dataclass(frozen=True)
class NewKey:
    """A data key made for an event about to be stored, and its row as it will be stored."""

    key_id: UUID
    key: bytes
    subject_id: UUID
    owner_id: UUID | None
    master_id: str
    wrapped: bytes


# Every key row of a batch in one statement, columns as binary arrays.
INSERT_KEYS = (
    f"INSERT INTO {KEYS_TABLE} (key_id, subject_id, owner_id, master_id, wrapped)"
    " SELECT * FROM unnest(%b::uuid[], %b::uuid[], %b::uuid[], %b::text[], %b::bytea[])"
)


def key_rows(made: Iterable[NewKey]) -> tuple[list[Any], ...]:
    """``INSERT_KEYS``'s parameters for ``made``."""
    rows = list(made)
    return (
        [k.key_id for k in rows],
        [k.subject_id for k in rows],
        [k.owner_id for k in rows],
        [k.master_id for k in rows],
        [k.wrapped for k in rows],
    )


@dataclass(frozen=True)
class Erased:
    """What an erasure destroyed: key rows, and the subjects and owners named."""

    keys: int


class KeyRing(Cipher):
    """An instance's data keys: made for new sealed events, opened for reads, destroyed by
    erasures. Built by eventsourcing's factory as the application's cipher
    (``CIPHER_TOPIC``) from the environment ``eventsourcing_env`` gives it, so each store
    has its own ring (tests run several stores in one process); every ring is also listed
    for the read paths, which find a key in whichever ring holds it."""

    def __init__(self, environment: Mapping[str, str]) -> None:
        self.database_url = environment["CHORUS_KEYS_DATABASE_URL"]
        self.master = parse_master_key(environment["CHORUS_MASTER_KEY"])
        self.master_id = master_id(self.master)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        _RINGS.add(self)

    @classmethod
    def connect(cls, database_url: str, master_key: str) -> KeyRing:
        return cls({"CHORUS_KEYS_DATABASE_URL": database_url, "CHORUS_MASTER_KEY": master_key})

    # eventsourcing's Cipher interface: whole-record encryption, which Chorus does not use
    # (fields are sealed one by one by the mapper).
    def encrypt(self, plaintext: bytes) -> bytes:
        raise NotImplementedError("Chorus seals fields, not records")

    def decrypt(self, ciphertext: bytes) -> bytes:
        raise NotImplementedError("Chorus seals fields, not records")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # Reads, erasures and keys stored outside an event's transaction (``new_keys``):
            # events' keys travel in the events' own transaction.
            self._conn = psycopg.connect(self.database_url, autocommit=True)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        _RINGS.discard(self)

    def make_keys(self, subjects: Iterable[tuple[UUID, UUID | None]]) -> list[NewKey]:
        """A new data key for each (subject, owner), wrapped, not stored: the recorder
        inserts their rows in the transaction of the events sealed under them
        (infrastructure/eventstore.py), so an event is never stored without its key, nor a
        key kept for an event that was not. No I/O."""
        made = []
        for subject, owner in subjects:
            key_id, key = uuid4(), os.urandom(KEY_BYTES)
            wrapped = _wrap(self.master, key_id, key)
            made.append(NewKey(key_id, key, subject, owner, self.master_id, wrapped))
        return made

    def new_keys(self, subjects: Iterable[tuple[UUID, UUID | None]]) -> list[tuple[UUID, bytes]]:
        """``make_keys`` stored at once, in a transaction of their own (tools and tests that
        seal outside an event's transaction)."""
        made = self.make_keys(subjects)
        if not made:
            return []
        with self._lock:
            self._connection().execute(INSERT_KEYS, key_rows(made))
        return [(k.key_id, k.key) for k in made]

    def keys(self, key_ids: Iterable[UUID]) -> dict[UUID, bytes | None]:
        """The data keys this ring holds among ``key_ids``: bytes, or None for an erased key.
        Keys it does not hold are left out."""
        wanted = sorted(set(key_ids))
        if not wanted:
            return {}
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    f"SELECT key_id, master_id, wrapped FROM {KEYS_TABLE}"
                    " WHERE key_id = ANY(%s::uuid[])",
                    (wanted,),
                )
                .fetchall()
            )
        found: dict[UUID, bytes | None] = {}
        for key_id, wrapped_by, wrapped in rows:
            if wrapped is None:
                found[key_id] = None
            elif wrapped_by != self.master_id:
                raise KeyRefused(f"data key {key_id} was wrapped by master key {wrapped_by}")
            else:
                found[key_id] = _unwrap(self.master, key_id, bytes(wrapped))
        return found

    def erase(self, *, subjects: Iterable[UUID] = (), owners: Iterable[UUID] = ()) -> Erased:
        """Destroys the data keys of ``subjects`` and of every subject ``owners`` own."""
        with self._lock:
            cur = self._connection().execute(*erase_statement(subjects, owners))
        return Erased(cur.rowcount)

    def rotate(self, new_master_key: str) -> int:
        """Re-wraps every live data key under ``new_master_key``, in one transaction (a
        failure leaves every row under the old key). The number of keys re-wrapped."""
        new = parse_master_key(new_master_key)
        new_id = master_id(new)
        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute(
                f"SELECT key_id, master_id, wrapped FROM {KEYS_TABLE}"
                " WHERE wrapped IS NOT NULL FOR UPDATE"
            ).fetchall()
            ids, wrapped = [], []
            for key_id, wrapped_by, old in rows:
                if wrapped_by == new_id:
                    continue
                if wrapped_by != self.master_id:
                    raise KeyRefused(f"data key {key_id} was wrapped by master key {wrapped_by}")
                ids.append(key_id)
                wrapped.append(_wrap(new, key_id, _unwrap(self.master, key_id, bytes(old))))
            conn.execute(
                f"UPDATE {KEYS_TABLE} k SET wrapped = x.w, master_id = %s"
                " FROM unnest(%s::uuid[], %s::bytea[]) AS x(id, w) WHERE k.key_id = x.id",
                (new_id, ids, wrapped),
            )
        self.master, self.master_id = new, new_id
        return len(ids)


def erase_statement(subjects: Iterable[UUID], owners: Iterable[UUID]) -> tuple[str, Any]:
    """The statement destroying the keys of ``subjects`` and of what ``owners`` own, for a
    caller that runs it in its own transaction (the erasures read model)."""
    return (
        f"UPDATE {KEYS_TABLE} SET wrapped = NULL, master_id = NULL, erased_at = now()"
        " WHERE wrapped IS NOT NULL"
        " AND (subject_id = ANY(%s::uuid[]) OR owner_id = ANY(%s::uuid[]))",
        (sorted(set(subjects)), sorted(set(owners))),
    )


def count_shredded(conn: psycopg.Connection[Any], events_table: str) -> tuple[int, int]:
    """(events holding sealed fields, events holding fields whose key was erased). Only
    states holding the seal's marker are parsed, as ``json`` (a state ``jsonb`` refuses,
    such as one holding ``\\u0000``, is not in the way)."""
    row = conn.execute(
        "SELECT count(DISTINCT e.notification_id),"
        " count(DISTINCT e.notification_id) FILTER (WHERE k.erased_at IS NOT NULL)"
        f" FROM {events_table} e"
        " CROSS JOIN LATERAL json_each(convert_from(e.state, 'UTF8')::json) f"
        f" LEFT JOIN {KEYS_TABLE} k ON k.key_id = (f.value ->> %s)::uuid"
        " WHERE strpos(convert_from(e.state, 'UTF8'), %s) > 0"
        " AND json_typeof(f.value) = 'object' AND f.value ->> %s IS NOT NULL",
        (SEALED, f'"{SEALED}"', SEALED),
    ).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


_RINGS: weakref.WeakSet[KeyRing] = weakref.WeakSet()
# Rings opened only for reading (console commands), kept for the process's life.
_HELD: list[KeyRing] = []


def open_for_reading(database_url: str, master_key: str) -> KeyRing:
    """A ring for a process that reads the log (a console command): its reads open sealed
    fields for as long as it runs."""
    ring = KeyRing.connect(database_url, master_key)
    _HELD.append(ring)
    return ring


def open_keys(key_ids: Iterable[UUID]) -> dict[UUID, bytes | None]:
    """The data keys among ``key_ids`` that any ring of this process holds (None: erased).
    A key no ring holds is refused (KeyRefused): "erased" means a destroyed key, never a
    missing master key, or a console command run without it would rebuild every read
    model as if everyone had been erased."""
    wanted = set(key_ids)
    found: dict[UUID, bytes | None] = {}
    failures: list[psycopg.Error] = []
    for ring in list(_RINGS):
        if not wanted:
            break
        try:
            got = ring.keys(wanted)
        except psycopg.Error as exc:
            # Another store of this process (tests run several) may be gone: only when no
            # ring answered for every key does a failure stop the read.
            failures.append(exc)
            continue
        found.update(got)
        wanted -= set(got)
    if wanted and failures:
        raise failures[0]
    if wanted:
        raise KeyRefused(
            f"{len(wanted)} sealed fields have no key in this process's key stores"
            " (is CHORUS_MASTER_KEY, or the data directory's master-key, the server's?)"
        )
    return found


def open_states(states: list[dict[str, Any]]) -> list[list[str]]:
    """Opens the sealed fields of stored states, in place: each becomes its value, or None
    when its key was erased. For each state, the names of the fields read as erased.
    KeyRefused when a key is in no key store this process has."""
    wanted = {k for state in states for v in state.values() if (k := sealed_key(v)) is not None}
    if not wanted:
        return [[] for _ in states]
    keys = open_keys(wanted)
    erased: list[list[str]] = []
    for state in states:
        gone: list[str] = []
        for field, value in state.items():
            key_id = sealed_key(value)
            if key_id is None:
                continue
            key = keys[key_id]
            if key is None:
                state[field] = None
                gone.append(field)
            else:
                state[field] = unseal(key, field, value)
        erased.append(gone)
    return erased
