"""The auditor's commands, run for real: ``chorus events`` and ``chorus verify`` as
subprocesses against a database populated through the HTTP API."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Running, all_events, reactions_quiet, running_chorus
from tests.fixtures.cli import MESSAGES, TIMEOUT, cli_env, populate_audit, run
from tests.fixtures.processes import CHORUS
from tests.fixtures.sealed import opened


def events(database_url: str, *args: str) -> list[dict[str, Any]]:
    done = run(database_url, "events", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def populated(
    postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Running, dict[str, str]]]:
    with running_chorus(postgres_server, tmp_path_factory.mktemp("cli")) as chorus:
        yield chorus, populate_audit(chorus)


def _sql(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def test_events_prints_every_stored_event_in_order_as_envelopes(
    populated: tuple[Running, dict[str, str]],
) -> None:
    chorus, _ = populated
    reactions_quiet(chorus.database_url)  # nothing more is written while it reads
    stored = [
        r[0]
        for r in _sql(chorus.database_url, "SELECT notification_id FROM chorus_events ORDER BY 1")
    ]
    # A small page size makes the command read the store in many pages.
    for page in ("1000", "7"):
        printed = events(chorus.database_url, "--page", page)
        assert [e["position"] for e in printed] == stored
    assert len(stored) == all_events(chorus.database_url) > 150
    first = printed[0]
    assert set(first) == {
        "position",
        "stream",
        "version",
        "type",
        "at",
        "actor",
        "command_id",
        "data",
    }
    assert first["type"] == "UserRegistered" and first["at"].endswith("Z")


def test_events_filters(populated: tuple[Running, dict[str, str]]) -> None:
    chorus, ids = populated
    url = chorus.database_url
    sent = events(url, "--type", "MessageSent")
    assert len(sent) == MESSAGES and {e["type"] for e in sent} == {"MessageSent"}
    assert [e["data"]["text"] for e in sent] == [f"m{i}" for i in range(MESSAGES)]

    by_bob = events(url, "--actor", ids["bob"])
    assert by_bob and all(e["actor"] == ids["bob"] for e in by_bob)
    assert sum(e["type"] == "MessageSent" for e in by_bob) == MESSAGES // 3

    channel = events(url, "--stream", ids["ch"])
    assert channel and {e["stream"] for e in channel} == {ids["ch"]}
    assert [e["version"] for e in channel] == list(range(1, len(channel) + 1))

    positions = [e["position"] for e in events(url)]
    lo, hi = positions[10], positions[40]
    window = events(url, "--after", str(lo), "--until", str(hi))
    assert [e["position"] for e in window] == positions[11:41]
    both = events(url, "--type", "MessageEdited", "--actor", ids["bob"], "--page", "2")
    assert [e["data"]["text"] for e in both] == [f"m{i} (edited)" for i in range(0, MESSAGES, 15)]


def test_events_needs_database_url() -> None:
    done = run(None, "events")
    assert done.returncode == 2 and "DATABASE_URL" in done.stderr


def test_follow_prints_new_events_and_stops_on_sigterm(
    populated: tuple[Running, dict[str, str]],
) -> None:
    chorus, ids = populated
    api = chorus.api
    head = [e["position"] for e in events(chorus.database_url)][-1]
    proc = subprocess.Popen(
        [CHORUS, "events", "--follow", "--after", str(head - 1)],
        env=cli_env(chorus.database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        # The last stored event first: the command is running and caught up (it LISTENs
        # before its first read, so nothing appended from now on can be missed).
        assert json.loads(lines.get(timeout=TIMEOUT))["position"] == head
        ada = api.signup("late")
        written = api.ok(api.post(f"/api/workspaces/{ids['ws']}/join", ada))
        seen = []
        while True:
            event = json.loads(lines.get(timeout=TIMEOUT))
            seen.append(event["type"])
            if event["type"] == "MemberJoined":
                break
        # The sign-up, its username claim (only the raw log carries it) and the session it
        # starts (issue 17), then the join.
        assert seen == ["UserRegistered", "UsernameClaimed", "SignedIn", "MemberJoined"]
        assert event["actor"] == ada.user_id and event["position"] == written["position"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_verify_passes_then_names_the_tampered_position(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path) as chorus:
        populate_audit(chorus)
        url = chorus.database_url
        reactions_quiet(url)  # their notifications are events to verify too
        count = all_events(url)
        ok = run(url, "verify")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert f"ok: {count} events verified" in ok.stdout
        # The first line (the next counts shredded events, issue 20).
        first = ok.stdout.splitlines()[0]
        head_position, head_hash = first.split("head position ")[1].split(" hash ")
        published = f"{head_position}:{head_hash.strip()}"
        assert run(url, "verify", "--expect", published).returncode == 0

        # One stored event's bytes altered in SQL.
        sent = _sql(
            url,
            "SELECT notification_id, convert_from(state, 'UTF8')::jsonb -> 'text'"
            " FROM chorus_events WHERE topic LIKE '%%MessageSent' ORDER BY notification_id",
        )
        texts = opened(url, "text", [text for _, text in sent])
        (target,) = [
            position for (position, _), text in zip(sent, texts, strict=True) if text == "m7"
        ]
        with psycopg.connect(url, autocommit=True) as conn:
            # The text is stored sealed (issue 20): the field's name is what is rewritten.
            conn.execute(
                "UPDATE chorus_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
                " '\"text\":', '\"text\" :'), 'UTF8') WHERE notification_id = %s",
                (target,),
            )
        bad = run(url, "verify")
        assert bad.returncode == 1
        assert f"FAILED at position {target}" in bad.stdout and "altered" in bad.stdout
        assert run(url, "verify", "--expect", published).returncode == 1

        # Restored, it verifies again; then one row is deleted.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE chorus_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
                " '\"text\" :', '\"text\":'), 'UTF8') WHERE notification_id = %s",
                (target,),
            )
        assert run(url, "verify").returncode == 0
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM chorus_events WHERE notification_id = %s", (target,))
        gone = run(url, "verify")
        assert gone.returncode == 1 and f"position {target}" in gone.stdout
        assert "missing" in gone.stdout
