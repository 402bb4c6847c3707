"""Data keys are stored in their events' own transaction (issue 20): an appended event is
always readable, and a transaction that fails stores neither its events nor their keys."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from psycopg.rows import dict_row

from api.contexts import CONTEXTS
from application.chorus import Chorus
from application.commands import (
    CreateChannel,
    CreateWorkspace,
    DeleteMessage,
    EditMessage,
    RegisterUser,
    SendMessage,
)
from domain.base import Cause
from infrastructure.eventstore import EVENTS_TABLE, eventsourcing_env
from infrastructure.keys import KEYS_TABLE
from infrastructure.serialisation import SealedStoredEvent, close_key_ring
from projections.log import SELECT_EVENTS, to_log_events
from tests.fixtures.chorus import TEST_MASTER_KEY, CheapPasswords


@pytest.fixture
def sealed_app(store_url: str) -> Iterator[Chorus]:
    """The application service alone on a fresh store, sealing personal fields."""
    app = Chorus(
        eventsourcing_env(store_url, master_key=TEST_MASTER_KEY),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    yield app
    close_key_ring(app.mapper)
    app.close()


def _channel(app: Chorus) -> tuple[str, str]:
    owner = str(
        app.execute(
            RegisterUser(username="ann", password="plum-Orbit-kettle-42"), Cause(None)
        ).body["user_id"]
    )
    ws = str(
        app.execute(CreateWorkspace(name="Acme", visibility="public"), Cause(owner)).body["id"]
    )
    ch = str(app.execute(CreateChannel(workspace_id=ws, name="general"), Cause(owner)).body["id"])
    return owner, ch


def _keyless_seals(url: str) -> int:
    """Sealed fields of stored events whose key row does not exist."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM "
            f" {EVENTS_TABLE} e CROSS JOIN LATERAL json_each(convert_from(e.state, 'UTF8')::json) f"
            f" LEFT JOIN {KEYS_TABLE} k ON k.key_id = (f.value ->> '$shred')::uuid"
            " WHERE json_typeof(f.value) = 'object' AND f.value ->> '$shred' IS NOT NULL"
            " AND k.key_id IS NULL"
        ).fetchone()
    return int(row[0]) if row else -1


def _key_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {KEYS_TABLE}").fetchone()
    return int(row[0]) if row else -1


def test_every_appended_event_opens_alone_and_in_group_commits(
    sealed_app: Chorus, store_url: str
) -> None:
    owner, ch = _channel(sealed_app)
    sealed_app.execute(SendMessage(channel_id=ch, text="alone"), Cause(owner, "alone"))
    sealed_app.enable_group_commit()
    texts = [f"together {i}" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda t: sealed_app.execute(SendMessage(channel_id=ch, text=t), Cause(owner, t)),
                texts,
            )
        )
    assert sealed_app.group_committer is not None
    assert sealed_app.group_committer.stats.batches >= 1
    with psycopg.connect(store_url, row_factory=dict_row) as conn:
        rows = conn.execute(f"{SELECT_EVENTS} ORDER BY e.notification_id").fetchall()
    events = to_log_events(rows)
    sent = [e.data["text"] for e in events if e.type == "MessageSent"]
    assert sorted(sent) == sorted(["alone", *texts])
    assert not [e for e in events if e.data.get("erased")]
    # Every seal has its key row, and every key row its event (a key per sealed event).
    assert _keyless_seals(store_url) == 0
    sealed = sum(1 for r in rows if b'"$shred"' in bytes(r["state"]))
    assert sealed >= len(texts) + 2 and _key_count(store_url) == sealed


def _events(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
    return int(row[0]) if row else -1


def test_a_failed_transaction_stores_neither_events_nor_their_keys(
    sealed_app: Chorus, store_url: str
) -> None:
    owner, ch = _channel(sealed_app)
    sent = sealed_app.execute(SendMessage(channel_id=ch, text="first"), Cause(owner, "first"))
    with psycopg.connect(store_url, row_factory=dict_row) as conn:
        (row,) = conn.execute(
            "SELECT originator_id, originator_version, topic, state"
            f" FROM {EVENTS_TABLE} WHERE originator_id = %s AND originator_version = 1",
            (UUID(str(sent.body["id"])),),
        ).fetchall()
    mapper = sealed_app.mapper
    stored = StoredEvent(
        row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"])
    )
    event = mapper.to_domain_event(stored)
    keys_before, events_before = _key_count(store_url), _events(store_url)
    # The same first version of the stored message, sealed again under a new key: it
    # conflicts, so its batch's transaction fails as a whole, the fresh stream's event too.
    conflicting = mapper.to_stored_event(event)
    fresh = mapper.to_stored_event(copy(event, originator_id=uuid4()))
    assert isinstance(conflicting, SealedStoredEvent) and isinstance(fresh, SealedStoredEvent)
    with pytest.raises(IntegrityError):
        sealed_app.recorder.insert_events([fresh, conflicting])
    assert _key_count(store_url) == keys_before and _events(store_url) == events_before
    # Alone, the fresh one is stored with its key, and opens.
    sealed_app.recorder.insert_events([fresh])
    assert _key_count(store_url) == keys_before + 1 and _events(store_url) == events_before + 1
    assert _keyless_seals(store_url) == 0
    assert mapper.to_domain_event(fresh).text == "first"  # type: ignore[attr-defined]


def copy(event: Any, **changes: Any) -> Any:
    """A stored domain event with some of its fields changed."""
    made = object.__new__(type(event))
    object.__setattr__(made, "__dict__", {**vars(event), **changes})
    return made


def _live_keys(url: str, subject: str) -> list[bool]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT wrapped IS NOT NULL FROM {KEYS_TABLE}"
            " WHERE subject_id = %s ORDER BY created_at",
            (UUID(subject),),
        ).fetchall()
    return [bool(r[0]) for r in rows]


def test_a_deletion_that_erases_destroys_the_keys_as_it_is_stored(
    sealed_app: Chorus, store_url: str
) -> None:
    """No read model runs here: the keys are gone because the deletion's own transaction
    destroyed them, not because the erasures read model did later."""
    owner, ch = _channel(sealed_app)
    sent = sealed_app.execute(SendMessage(channel_id=ch, text="one"), Cause(owner, "one"))
    other = sealed_app.execute(SendMessage(channel_id=ch, text="two"), Cause(owner, "two"))
    message = str(sent.body["id"])
    sealed_app.execute(EditMessage(message_id=message, text="one, edited"), Cause(owner, "e"))
    assert _live_keys(store_url, message) == [True, True]
    sealed_app.execute(DeleteMessage(message_id=message), Cause(owner, "d"))
    assert _live_keys(store_url, message) == [False, False]
    assert _live_keys(store_url, str(other.body["id"])) == [True]
    edited: Any = sealed_app.repository.get(UUID(message), version=2)
    assert edited.text is None  # the edit's text, as a reader rebuilds it now
