"""Issue 17, finding 14: the auditors' guarantee stopped at the log. `chorus verify` said ok
while the read-model tables (what users read: timelines, memberships, streams, document
snapshots for `?at=`) had been edited in the database. `chorus verify --read-models` and
`POST /api/audit/verify-read-models` rebuild the read models from the verified log into a
shadow schema and report every row of the live tables that differs."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pycrdt import Doc, Text, merge_updates

from api.cli import main as chorus_main
from api.contexts import all_projections
from application.commands import ApplyDocumentUpdate
from domain.base import Cause
from infrastructure.chain import verify
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.eventstore import EVENTS_TABLE
from projections.documents import SNAPSHOT_EVERY_UPDATES
from projections.replay import by_names, rebuild
from projections.shadow_verify import (
    APPLICATION_NAME,
    IGNORED,
    SHADOW,
    ReadModelReport,
    verify_read_models,
)
from tests.fixtures.chorus import Running, User, running_chorus
from tests.fixtures.cli import cli_env
from tests.fixtures.operators import instance_role
from tests.fixtures.polling import wait_until
from tests.fixtures.processes import CHORUS
from tests.fixtures.raw_events import (
    nul_in_every_string,
    samples,
    store_raw,
    stuck_models,
    tracking,
)

pytestmark = pytest.mark.security

TIMEOUT = 120


@dataclass
class Store:
    chorus: Running
    ids: dict[str, str]
    users: dict[str, User]
    # The document's updates, in order, and the snapshot's version.
    updates: list[bytes]

    @property
    def url(self) -> str:
        return self.chorus.database_url


@pytest.fixture(scope="module")
def store(
    postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    with running_chorus(postgres_server, tmp_path_factory.mktemp("verify-rm")) as chorus:
        api = chorus.api
        ada, bob, eve, aud = (api.signup(n) for n in ("ada", "bob", "eve", "aud"))
        ws = api.ok(api.post("/api/workspaces", ada, {"name": "W", "visibility": "public"}), 201)
        ws_id = ws["id"]
        api.ok(api.post(f"/api/workspaces/{ws_id}/join", bob))
        ch = api.ok(api.post(f"/api/workspaces/{ws_id}/channels", ada, {"name": "c"}), 201)["id"]
        priv = api.ok(
            api.post(f"/api/workspaces/{ws_id}/channels", ada, {"name": "p", "private": True}),
            201,
        )["id"]
        msg = api.ok(api.post(f"/api/channels/{ch}/messages", bob, {"text": "hello"}), 201)["id"]
        api.ok(api.patch(f"/api/messages/{msg}", bob, {"text": "hello, edited"}))
        gone = api.ok(api.post(f"/api/channels/{ch}/messages", bob, {"text": "oops"}), 201)["id"]
        api.ok(api.delete(f"/api/messages/{gone}", bob), 200)
        liked = api.ok(api.post(f"/api/channels/{ch}/messages", ada, {"text": "hi"}), 201)["id"]
        api.ok(api.put(f"/api/messages/{liked}/reactions/👍", bob))
        doc = api.ok(api.post(f"/api/workspaces/{ws_id}/documents", ada, {"title": "Notes"}), 201)[
            "id"
        ]
        writer: Doc[Any] = Doc()
        updates: list[bytes] = []
        writer.observe(lambda event: updates.append(event.update))
        text = writer.get("content", type=Text)
        for i in range(SNAPSHOT_EVERY_UPDATES + 3):  # one snapshot, then a tail
            text += f"{i % 10}"
        services = chorus.server.services
        position = 0
        for update in updates:
            position = services.app.execute(
                ApplyDocumentUpdate(document_id=doc, update=update, roots={"content": "text"}),
                Cause(actor_id=ada.user_id),
            ).position
        assert services.runner.wait_for(position, 30)
        ids = {"ws": ws_id, "ch": ch, "priv": priv, "msg": msg, "gone": gone, "liked": liked}
        ids |= {"doc": doc, "ada": ada.user_id, "bob": bob.user_id, "eve": eve.user_id}
        yield Store(chorus, ids, {"ada": ada, "bob": bob, "eve": eve, "aud": aud}, updates)


def check(store: Store, *names: str) -> ReadModelReport:
    with psycopg.connect(store.url, autocommit=True) as conn:
        chain = verify(conn, EVENTS_TABLE)
    assert chain.ok
    chosen = by_names(all_projections(), list(names) or None)
    return verify_read_models(store.url, chosen, verified=(chain.head_position, chain.head_hash))


def sql(store: Store, query: str, params: dict[str, Any] | None = None) -> list[Any]:
    with psycopg.connect(store.url) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def shadow_exists(store: Store) -> bool:
    return bool(sql(store, "SELECT 1 FROM pg_namespace WHERE nspname = %(s)s", {"s": SHADOW}))


def cli(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHORUS, "verify", *args],
        env=cli_env(store.url),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


# -- an untouched store -----------------------------------------------------------------------


def test_an_untouched_store_matches_its_rebuild(store: Store) -> None:
    report = check(store)
    assert report.ok, report
    assert not report.problems
    every = [t for p in all_projections() for t in p.tables]
    assert sorted(t.table for t in report.tables) == sorted(every)
    assert not any(t.diverged for t in report.tables)
    tracked = dict(sql(store, "SELECT projection, position FROM rm_tracking"))
    assert report.positions == {p.name: tracked[p.name] for p in all_projections()}
    counts = {t.table: t.live_rows for t in report.tables}
    assert counts["rm_messages"] == 3 and counts["rm_document_snapshots"] == 1
    assert not shadow_exists(store)
    # Every column is compared: none is left out as instance-dependent.
    assert not any(IGNORED.values())


# -- each kind of read-model row, tampered with SQL -------------------------------------------


@dataclass(frozen=True)
class Tamper:
    name: str
    sql: str
    projection: str
    table: str
    kind: str
    key: Callable[[dict[str, str]], dict[str, str]]
    columns: tuple[str, ...] = ()
    params: Callable[[Store], dict[str, Any]] = lambda store: {}

    def __str__(self) -> str:
        return self.name


def _other_state(store: Store) -> dict[str, Any]:
    forged: Doc[Any] = Doc()
    forged.get("content", type=Text).insert(0, "invented text")
    return {"state": forged.get_update(), "vector": forged.get_state()}


def _snapshot(ids: dict[str, str]) -> dict[str, str]:
    return {"document_id": ids["doc"], "version": str(SNAPSHOT_EVERY_UPDATES + 1)}


FORGED = "00000000-0000-4000-8000-0000000000f0"

TAMPERS = [
    Tamper("a message's text", "UPDATE rm_messages SET text = 'invented' WHERE message_id ="
           " %(msg)s", "timelines", "rm_messages", "changed",
           lambda ids: {"message_id": ids["msg"]}, ("text",)),
    Tamper("a deleted message given text", "UPDATE rm_messages SET text = 'invented',"
           " deleted = false WHERE message_id = %(gone)s", "timelines", "rm_messages", "changed",
           lambda ids: {"message_id": ids["gone"]}, ("text", "deleted")),
    Tamper("a deleted message given text, still marked deleted", "UPDATE rm_messages"
           " SET text = 'invented' WHERE message_id = %(gone)s", "timelines", "rm_messages",
           "changed", lambda ids: {"message_id": ids["gone"]}, ("text",)),
    Tamper("a reaction deleted", "DELETE FROM rm_reactions WHERE message_id = %(liked)s",
           "timelines", "rm_reactions", "missing",
           lambda ids: {"message_id": ids["liked"], "emoji": "👍", "user_id": ids["bob"]}),
    Tamper("a message inserted", "INSERT INTO rm_messages (message_id, channel_id,"
           f" workspace_id, author_id, text, mentions, created_at, seq, version) VALUES"
           f" ('{FORGED}', %(ch)s, %(ws)s, %(ada)s, 'never said', '{{}}', now(), 99, 1)",
           "timelines", "rm_messages", "extra", lambda ids: {"message_id": FORGED}),
    Tamper("a workspace member added", "INSERT INTO rm_workspace_members VALUES (%(ws)s,"
           " %(eve)s, '{member}', now())", "workspaces", "rm_workspace_members", "extra",
           lambda ids: {"workspace_id": ids["ws"], "user_id": ids["eve"]}),
    Tamper("a member made owner", "UPDATE rm_workspace_members SET roles = '{owner}'"
           " WHERE user_id = %(bob)s", "workspaces", "rm_workspace_members", "changed",
           lambda ids: {"workspace_id": ids["ws"], "user_id": ids["bob"]}, ("roles",)),
    Tamper("a private channel member added", "INSERT INTO rm_channel_members VALUES"
           " (%(priv)s, %(eve)s)", "channels", "rm_channel_members", "extra",
           lambda ids: {"channel_id": ids["priv"], "user_id": ids["eve"]}),
    Tamper("a private channel made public", "UPDATE rm_channels SET private = false"
           " WHERE channel_id = %(priv)s", "channels", "rm_channels", "changed",
           lambda ids: {"channel_id": ids["priv"]}, ("private",)),
    Tamper("a message's stream moved to another workspace", "UPDATE rm_streams"
           f" SET workspace_id = '{FORGED}' WHERE stream_id = %(msg)s", "streams", "rm_streams",
           "changed", lambda ids: {"stream_id": ids["msg"]}, ("workspace_id",)),
    Tamper("a user renamed", "UPDATE rm_users SET display_name = 'Admin' WHERE user_id ="
           " %(bob)s", "users", "rm_users", "changed", lambda ids: {"user_id": ids["bob"]},
           ("display_name",)),
    Tamper("an instance role inserted", "INSERT INTO rm_instance_roles VALUES (%(eve)s,"
           " 'auditor', now())", "users", "rm_instance_roles", "extra",
           lambda ids: {"user_id": ids["eve"], "role": "auditor"}),
    Tamper("a document renamed", "UPDATE rm_documents SET title = 'Forged' WHERE"
           " document_id = %(doc)s", "documents", "rm_documents", "changed",
           lambda ids: {"document_id": ids["doc"]}, ("title",)),
    Tamper("a document snapshot replaced by another document's state",
           "UPDATE rm_document_snapshots SET state = %(state)s WHERE document_id = %(doc)s",
           "documents", "rm_document_snapshots", "changed", _snapshot, ("state",),
           _other_state),
    Tamper("a document snapshot replaced by bytes that decode to nothing",
           "UPDATE rm_document_snapshots SET state = '\\x0001ff'::bytea"
           " WHERE document_id = %(doc)s", "documents", "rm_document_snapshots", "changed",
           _snapshot, ("state",)),
    Tamper("a document snapshot's state vector replaced",
           "UPDATE rm_document_snapshots SET state_vector = %(vector)s"
           " WHERE document_id = %(doc)s", "documents", "rm_document_snapshots", "changed",
           _snapshot, ("state_vector",), _other_state),
    Tamper("a document snapshot deleted", "DELETE FROM rm_document_snapshots", "documents",
           "rm_document_snapshots", "missing", _snapshot),
]  # fmt: skip


@pytest.mark.parametrize("tamper", TAMPERS, ids=str)
def test_each_tampered_row_is_reported_with_its_table_and_key(store: Store, tamper: Tamper) -> None:
    sql(store, tamper.sql, {**store.ids, **tamper.params(store)})
    try:
        report = check(store)
        assert not report.ok
        diverged = [t for t in report.tables if t.diverged]
        assert [t.table for t in diverged] == [tamper.table], diverged
        table = diverged[0]
        assert table.projection == tamper.projection
        counts = {"missing": table.missing, "extra": table.extra, "changed": table.changed}
        assert counts == {k: int(k == tamper.kind) for k in counts}
        [row] = table.rows
        assert (row.kind, row.key) == (tamper.kind, tamper.key(store.ids))
        assert tuple(row.columns) == tamper.columns
        if row.kind == "changed":
            assert set(row.live) == set(row.rebuilt) == set(tamper.columns)
            assert all(row.live[c] != row.rebuilt[c] for c in tamper.columns)
        # The read model named alone reports it too; another one alone is clean.
        assert not check(store, tamper.projection).ok
        other = "presence" if tamper.projection != "presence" else "users"
        assert check(store, other).ok
        assert not shadow_exists(store)
    finally:
        # The remedy: the read model rebuilt from the log and swapped in.
        rebuild(store.url, by_names(all_projections(), [tamper.projection]))
    assert check(store, tamper.projection).ok


def test_a_snapshot_encoded_differently_with_the_same_state_is_not_a_divergence(
    store: Store,
) -> None:
    """Snapshots are compared by the document state they encode: the same state in other
    bytes (Yjs' merged-updates encoding) reads the same through `?at=`."""
    version = SNAPSHOT_EVERY_UPDATES + 1
    merged = merge_updates(*store.updates[: version - 1])  # the doc's first event is its creation
    [(stored,)] = sql(store, "SELECT state FROM rm_document_snapshots")
    assert bytes(stored) != merged
    sql(store, "UPDATE rm_document_snapshots SET state = %(s)s", {"s": merged})
    try:
        assert check(store, "documents").ok
        # One update fewer is another state: reported.
        fewer = merge_updates(*store.updates[: version - 2])
        sql(store, "UPDATE rm_document_snapshots SET state = %(s)s", {"s": fewer})
        report = check(store, "documents")
        assert not report.ok
        [table] = [t for t in report.tables if t.diverged]
        assert (table.table, table.rows[0].columns) == ("rm_document_snapshots", ["state"])
    finally:
        rebuild(store.url, by_names(all_projections(), ["documents"]))


def test_read_models_behind_the_log_are_compared_at_their_own_position(store: Store) -> None:
    """The live models are compared as of the position they have reached, not the log's
    head: events they have not applied yet are no divergence, and a tampered row still is."""
    api, bob = store.chorus.api, store.users["bob"]
    with psycopg.connect(store.url) as hold:
        # A gate: the live runner waits for these rows (plain reads do not).
        hold.execute("SELECT 1 FROM rm_tracking FOR UPDATE")
        reached: dict[str, int] = dict(
            hold.execute("SELECT projection, position FROM rm_tracking").fetchall()
        )
        for i in range(3):
            api.ok(
                api.post(f"/api/channels/{store.ids['ch']}/messages", bob, {"text": f"{i}"}), 201
            )
        [(head,)] = sql(store, "SELECT max(notification_id) FROM chorus_events")
        assert max(reached.values()) < head
        report = check(store)
        assert report.ok, report
        assert report.positions == reached
        sql(store, "UPDATE rm_messages SET text = 'invented' WHERE message_id = %(msg)s", store.ids)
        try:
            tampered = check(store, "timelines")
            assert [t.table for t in tampered.tables if t.diverged] == ["rm_messages"]
            assert [t.changed for t in tampered.tables if t.diverged] == [1]
        finally:
            hold.rollback()
            rebuild(store.url, by_names(all_projections(), ["timelines"]))
    assert store.chorus.server.services.runner.wait_for(head, 30)
    assert check(store).ok


# -- the command ------------------------------------------------------------------------------


def test_chorus_verify_read_models_reports_what_plain_verify_does_not(store: Store) -> None:
    clean = cli(store, "--read-models")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "read models ok" in clean.stdout
    sql(store, "UPDATE rm_messages SET text = 'invented' WHERE message_id = %(gone)s", store.ids)
    try:
        # The log is intact: its chain alone says ok (the finding)...
        plain = cli(store)
        assert plain.returncode == 0 and plain.stdout.startswith("ok:")
        # ...the read models do not.
        tampered = cli(store, "--read-models")
        assert tampered.returncode == 1, tampered.stdout + tampered.stderr
        assert "rm_messages (timelines): 1 changed, 0 missing, 0 extra" in tampered.stdout
        assert f"changed message_id={store.ids['gone']}: text: live 'invented'" in tampered.stdout
        assert "read models FAILED: 1 rows in 1 tables" in tampered.stdout
        as_json = cli(store, "--read-models", "--json", "--projection", "timelines")
        assert as_json.returncode == 1
        out = json.loads(as_json.stdout)
        assert out["chain"]["ok"] is True and out["read_models"]["ok"] is False
        [table] = [t for t in out["read_models"]["tables"] if t["changed"]]
        assert table["rows"][0]["key"] == {"message_id": store.ids["gone"]}
        assert table["rows"][0]["live"] == {"text": "invented"}
        unknown = cli(store, "--read-models", "--projection", "nope")
        assert unknown.returncode == 2 and "unknown projection" in unknown.stderr
    finally:
        replay = subprocess.run(
            [CHORUS, "replay", "--projection", "timelines"],
            env=cli_env(store.url),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert replay.returncode == 0, replay.stderr
    assert cli(store, "--read-models").returncode == 0
    assert not shadow_exists(store)


@contextmanager
def holding(store: Store, table: str) -> Iterator[None]:
    """A gate: the table locked against every reader until the block ends."""
    with psycopg.connect(store.url) as conn:
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


def check_waits_on_a_lock(store: Store) -> bool:
    return bool(
        sql(
            store,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %(a)s"
            " AND wait_event_type = 'Lock'",
            {"a": APPLICATION_NAME},
        )
    )


def test_an_interrupted_check_drops_its_shadow_schema(store: Store) -> None:
    # The comparison waits on a live table: the shadow exists by then.
    with holding(store, "public.rm_users"):
        proc = subprocess.Popen(
            [CHORUS, "verify", "--read-models"],
            env=cli_env(store.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until("the check to wait on rm_users", lambda: check_waits_on_a_lock(store))
            assert shadow_exists(store)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, err
        assert "interrupted" in err
        assert not shadow_exists(store)
    assert check(store).ok


# -- the audit endpoint -----------------------------------------------------------------------

PATH = "/api/audit/verify-read-models"


def auditor(store: Store) -> None:
    """``aud`` holds the instance auditor role, and the read models know it."""
    held = "SELECT 1 FROM rm_instance_roles WHERE user_id = %(u)s AND role = 'auditor'"
    if not sql(store, held, {"u": store.users["aud"].user_id}):
        instance_role(store.chorus, "grant", store.users["aud"])
    assert store.chorus.server.services.runner.wait_for(store.chorus.events(), 30)


def test_the_instance_auditor_verifies_the_read_models_over_http(store: Store) -> None:
    api, aud, ada = store.chorus.api, store.users["aud"], store.users["ada"]
    assert api.post(PATH, None).status_code == 401
    # A workspace owner (view_audit there) is not an instance auditor.
    for user in (ada, aud):
        refused = api.post(PATH, user)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    auditor(store)
    clean = api.ok(api.post(PATH, aud))
    assert clean["ok"] is True and clean["chain"]["ok"] is True
    assert clean["tables"] == [] and clean["problems"] == []
    assert set(clean["positions"]) == {p.name for p in all_projections()}
    assert api.post(PATH, aud, params={"projection": "nope"}).status_code == 422

    sql(store, "UPDATE rm_messages SET text = 'invented' WHERE message_id = %(gone)s", store.ids)
    try:
        found = api.ok(api.post(PATH, aud, params={"projection": ["timelines", "users"]}))
        assert found["ok"] is False and set(found["positions"]) == {"timelines", "users"}
        [table] = found["tables"]
        assert (table["table"], table["changed"]) == ("rm_messages", 1)
        assert table["rows"][0]["key"] == {"message_id": store.ids["gone"]}
        assert table["rows"][0]["columns"] == ["text"]
    finally:
        rebuild(store.url, by_names(all_projections(), ["timelines"]))
    assert not shadow_exists(store)


def test_one_check_at_a_time_across_the_instance_and_the_console(store: Store) -> None:
    api, aud = store.chorus.api, store.users["aud"]
    auditor(store)
    with (
        httpx.Client(base_url=api.base_url, timeout=TIMEOUT) as other,
        ThreadPoolExecutor(1) as pool,
    ):
        with holding(store, "public.rm_tracking"):
            first = pool.submit(other.post, PATH, headers=aud.headers)
            wait_until("the first check to wait", lambda: check_waits_on_a_lock(store))
            busy = api.post(PATH, aud)
            assert busy.status_code == 429, busy.text
            assert busy.headers["retry-after"]
            console = cli(store, "--read-models")
            assert console.returncode == 2, console.stdout + console.stderr
            assert "running" in console.stderr
        done = first.result(timeout=TIMEOUT)
    assert done.status_code == 200, done.text
    assert done.json()["ok"] is True
    assert not shadow_exists(store)


def test_a_stuck_read_model_is_compared_where_it_stopped_and_a_skip_is_honoured(
    postgres_server: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live model held before an event it cannot apply is compared at that position (its
    rebuild stops there too); once an operator skips the event, the rebuild skips it as the
    runner does. The other read models go on past it in both."""
    with running_chorus(postgres_server, tmp_path) as chorus:
        api, url = chorus.api, chorus.database_url
        ada = api.signup("ada")
        ws = api.ok(api.post("/api/workspaces", ada, {"name": "S", "visibility": "public"}), 201)
        ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", ada, {"name": "c"}), 201)
        api.ok(api.post(f"/api/channels/{ch['id']}/messages", ada, {"text": "before"}), 201)
        [(topic, state)] = [(t, s) for t, s in samples(url).items() if t.endswith(".MessageSent")]
        bad = store_raw(url, topic, nul_in_every_string(state))
        api.ok(api.post(f"/api/channels/{ch['id']}/messages", ada, {"text": "after"}), 201)
        stuck = wait_until("timelines stuck", lambda: stuck_models(tracking(url)).get("timelines"))
        assert stuck["position"] == bad - 1
        store = Store(chorus, {}, {}, [])
        held = sorted(stuck_models(tracking(url)))
        assert "timelines" in held  # streams, too, cannot take it
        report = check(store)
        assert report.ok, report
        assert all(report.positions[name] == bad - 1 for name in held)
        assert report.positions["users"] > bad
        monkeypatch.setenv("DATABASE_URL", url)
        for name in held:
            skipped = ["projections", "skip", name, "--position", str(bad), "--reason", "t"]
            assert chorus_main(skipped) == 0
        wait_until("every read model past the poison", lambda: not stuck_models(tracking(url)))
        past = check(store)
        assert past.ok, past
        assert all(past.positions[name] > bad for name in held)
        [messages] = [t for t in past.tables if t.table == "rm_messages"]
        assert messages.live_rows == messages.rebuilt_rows == 2
