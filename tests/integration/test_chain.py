"""Tamper evidence: the recorder chains every stored event by SHA-256 in the insert
transaction, and ``verify`` finds the first position where the stored log was rewritten."""

from __future__ import annotations

import itertools
import uuid

import psycopg
from eventsourcing.persistence import StoredEvent

from api.contexts import CONTEXTS
from application.chorus import Chorus
from application.commands import CreateChannel, CreateWorkspace, RegisterUser, SendMessage
from domain.base import Cause
from infrastructure.chain import GENESIS, ChainReport, link, record_bytes, verify
from infrastructure.eventstore import EVENTS_TABLE, eventsourcing_env
from tests.fixtures.chorus import CheapPasswords


def _populate(app: Chorus, messages: int = 12) -> None:
    owner = str(
        app.execute(
            RegisterUser(username="ann", password="plum-Orbit-kettle-42"), Cause(None)
        ).body["user_id"]
    )
    ws = str(
        app.execute(CreateWorkspace(name="Acme", visibility="public"), Cause(owner)).body["id"]
    )
    ch = str(app.execute(CreateChannel(workspace_id=ws, name="general"), Cause(owner)).body["id"])
    for i in range(messages):
        app.execute(SendMessage(channel_id=ch, text=f"message {i}"), Cause(owner, f"m{i}"))


def _verify(url: str, **kw: object) -> ChainReport:
    with psycopg.connect(url, autocommit=True) as conn:
        return verify(conn, EVENTS_TABLE, **kw)  # type: ignore[arg-type]


def _sql(url: str, statement: str, *params: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def _positions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT notification_id FROM {EVENTS_TABLE} ORDER BY notification_id"
        ).fetchall()
    return [r[0] for r in rows]


def test_a_fresh_store_verifies(store_url: str) -> None:
    report = _verify(store_url)
    assert report.ok and report.count == 0 and report.head_hash == GENESIS


def test_the_write_path_builds_a_chain_the_verifier_recomputes(app: Chorus, store_url: str) -> None:
    _populate(app)
    positions = _positions(store_url)
    report = _verify(store_url)
    assert report.ok, report
    assert report.count == len(positions) and report.head_position == positions[-1]
    # Recomputed by hand from the stored rows: the documented format, nothing hidden.
    with psycopg.connect(store_url) as conn:
        rows = conn.execute(
            "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic,"
            " e.state, c.hash FROM chorus_events e JOIN chorus_event_chain c"
            " USING (notification_id) ORDER BY notification_id"
        ).fetchall()
    previous = GENESIS
    for position, originator, version, topic, state, stored in rows:
        previous = link(previous, record_bytes(position, originator, version, topic, state))
        assert previous == bytes(stored), position
    assert previous == report.head_hash
    # A published head checks out, and a wrong one is refused.
    assert _verify(store_url, expect=(report.head_position, report.head_hash)).ok
    wrong = _verify(store_url, expect=(report.head_position, bytes(32)))
    assert not wrong.ok and wrong.bad_position == report.head_position


def test_a_natural_gap_in_positions_is_fine(app: Chorus, store_url: str) -> None:
    _populate(app, messages=2)
    # A failed insert consumes a sequence number: the next event lands after a gap.
    _sql(store_url, "SELECT nextval(pg_get_serial_sequence('chorus_events', 'notification_id'))")
    _populate_more(app)
    positions = _positions(store_url)
    assert any(b - a > 1 for a, b in itertools.pairwise(positions))
    assert _verify(store_url).ok


def _populate_more(app: Chorus) -> None:
    app.execute(RegisterUser(username="bob", password="plum-Orbit-kettle-42"), Cause(None))


def test_altering_one_stored_event_is_found_at_its_position(app: Chorus, store_url: str) -> None:
    _populate(app)
    target = _positions(store_url)[7]
    _sql(
        store_url,
        "UPDATE chorus_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
        " 'message', 'massage'), 'UTF8') WHERE notification_id = %s",
        target,
    )
    report = _verify(store_url)
    assert not report.ok and report.bad_position == target
    assert report.problem is not None and "altered" in report.problem
    assert report.count == 7


def test_deleting_one_event_is_found(app: Chorus, store_url: str) -> None:
    _populate(app)
    positions = _positions(store_url)
    target = positions[5]
    _sql(store_url, "DELETE FROM chorus_events WHERE notification_id = %s", target)
    report = _verify(store_url)
    assert not report.ok and report.bad_position == target
    assert report.problem is not None and "missing" in report.problem

    # Deleting its chain row too (a careful forger) breaks the link of the next event.
    _sql(store_url, "DELETE FROM chorus_event_chain WHERE notification_id = %s", target)
    report = _verify(store_url)
    assert not report.ok and report.bad_position == positions[6]


def test_swapping_two_events_states_is_found(app: Chorus, store_url: str) -> None:
    _populate(app)
    a, b = _positions(store_url)[4], _positions(store_url)[9]
    _sql(
        store_url,
        "UPDATE chorus_events e SET state = o.state FROM chorus_events o"
        " WHERE (e.notification_id, o.notification_id) IN ((%s, %s), (%s, %s))",
        a,
        b,
        b,
        a,
    )
    report = _verify(store_url)
    assert not report.ok and report.bad_position == a


def test_an_event_inserted_afterwards_is_found(app: Chorus, store_url: str) -> None:
    _populate(app, messages=2)
    _sql(
        store_url,
        "INSERT INTO chorus_events (originator_id, originator_version, topic, state)"
        " SELECT gen_random_uuid(), 1, topic, state FROM chorus_events"
        " ORDER BY notification_id DESC LIMIT 1",
    )
    last = _positions(store_url)[-1]
    report = _verify(store_url)
    assert not report.ok and report.bad_position == last
    assert report.problem is not None and "no chain row" in report.problem


def test_concurrent_writers_keep_one_chain(store_url: str) -> None:
    """Several processes' recorders append at once: the table lock serialises them, so
    the chain is still one line in position order."""
    import threading

    apps = [
        Chorus(
            eventsourcing_env(store_url),
            passwords=CheapPasswords(),
            handlers=CONTEXTS.handlers,
            snapshotting=CONTEXTS.snapshotting,
        )
        for _ in range(3)
    ]
    try:
        barrier = threading.Barrier(6)

        def register(i: int) -> None:
            barrier.wait()
            for j in range(10):
                apps[i % 3].execute(
                    RegisterUser(username=f"u{i}_{j}", password="plum-Orbit-kettle-42"), Cause(None)
                )

        threads = [threading.Thread(target=register, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for a in apps:
            a.close()
    report = _verify(store_url)
    # Each sign-up appends its user and its username claim.
    assert report.ok and report.count == len(_positions(store_url)) == 2 * 60


def test_several_events_in_one_transaction_are_chained_in_position_order(
    app: Chorus, store_url: str
) -> None:
    _populate(app, messages=1)
    stream = uuid.uuid4()
    batch = [
        StoredEvent(stream, version, "domain.test:Thing.Happened", b'{"n": %d}' % version)
        for version in range(1, 6)
    ]
    ids = app.recorder.insert_events(batch)
    assert ids is not None and len(ids) == 5
    with psycopg.connect(store_url) as conn:
        (xacts,) = conn.execute(
            "SELECT count(DISTINCT xmin::text) FROM chorus_event_chain"
            " WHERE notification_id = ANY(%s)",
            (list(ids),),
        ).fetchone() or (0,)
    assert xacts == 1
    report = _verify(store_url)
    assert report.ok and report.head_position == max(ids)
