"""Analysts: a role that reads the analytics schema and nothing else; exports."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import psycopg
import pytest

from tests.fixtures.analytics import chorus_cli
from tests.fixtures.chorus import Running


def _populate(chorus: Running) -> int:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "An", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)["id"]
    for i in range(5):
        api.ok(
            api.post(f"/api/channels/{ch}/messages", member if i % 2 else owner, {"text": f"m{i}"}),
            201,
        )
    api.ok(api.get(f"/api/channels/{ch}/messages", owner))  # waits for the read models
    with psycopg.connect(chorus.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM rm_messages").fetchone()
    return int(row[0]) if row else 0


def test_an_analyst_reads_analytics_and_nothing_else(
    chorus: Running, analyst: tuple[str, str]
) -> None:
    messages = _populate(chorus)
    name, password = analyst
    made = chorus_cli(chorus.database_url, "analytics-role", name, password)
    assert made.returncode == 0, made.stderr
    url = urlparse(chorus.database_url)
    as_analyst = (
        f"postgresql://{name}:{password.replace(' ', '%20')}@{url.hostname}:{url.port}{url.path}"
    )
    with psycopg.connect(as_analyst, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), sum(text_length) FROM analytics.messages").fetchone()
        assert row is not None and row[0] == messages and row[1] > 0
        daily = conn.execute(
            "SELECT sum(messages) FROM analytics.channel_daily_activity"
        ).fetchone()
        assert daily == (messages,)
        users = conn.execute(
            "SELECT count(DISTINCT user_id) FROM analytics.user_daily_activity"
        ).fetchone()
        assert users == (2,)
        for forbidden in (
            "SELECT * FROM chorus_events",
            "SELECT * FROM chorus_credentials",
            "SELECT * FROM rm_messages",
            "SELECT * FROM chorus_refresh_tokens",
            "CREATE TABLE analytics.mine (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forbidden)
        for view in ("messages", "channel_daily_activity", "user_daily_activity"):
            writable = conn.execute(
                "SELECT has_table_privilege(%s, 'INSERT,UPDATE,DELETE,TRUNCATE')",
                (f"analytics.{view}",),
            ).fetchone()
            assert writable == (False,)
    # Running it again changes the password, not the grants.
    again = chorus_cli(chorus.database_url, "analytics-role", name, password + "!")
    assert again.returncode == 0, again.stderr
    assert chorus_cli(chorus.database_url, "analytics-role", "Bad-Name", password).returncode == 2


def test_exports_stream_a_table(chorus: Running) -> None:
    messages = _populate(chorus)
    csv_out = chorus_cli(chorus.database_url, "export", "--table", "messages", "--format", "csv")
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.strip().splitlines()
    assert lines[0].startswith("message_id,") and len(lines) == messages + 1
    nd = chorus_cli(
        chorus.database_url, "export", "--table", "analytics.messages", "--format", "ndjson"
    )
    rows = [json.loads(line) for line in nd.stdout.splitlines()]
    assert len(rows) == messages and {"message_id", "text_length"} <= set(rows[0])
    refused = chorus_cli(chorus.database_url, "export", "--table", "chorus_events")
    assert refused.returncode == 2 and "unknown table" in refused.stderr
