"""Analysts' read-state views (issue 19): when each message was read by whom, time to read
per channel and day, and each channel's backlog after its readers' markers; readable by the
analytics role like the other views, and by nothing that is not in the schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from tests.fixtures.analytics import chorus_cli
from tests.fixtures.chorus import Running


@pytest.fixture
def analyst(chorus: Running) -> Iterator[str]:
    name, password = f"analyst_{uuid.uuid4().hex[:8]}", "a long analyst password"
    made = chorus_cli(chorus.database_url, "analytics-role", name, password)
    assert made.returncode == 0, made.stderr
    url = urlparse(chorus.database_url)
    yield f"postgresql://{name}:{password.replace(' ', '%20')}@{url.hostname}:{url.port}{url.path}"
    with psycopg.connect(chorus.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_reads_time_to_read_and_backlog(chorus: Running, analyst: str) -> None:
    api = chorus.api
    ann, ben, cat = api.signup("ann"), api.signup("ben"), api.signup("cat")
    ws = api.acquaint(ann, ben, cat)
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "c"}), 201)["id"]
    sent = [
        api.ok(api.post(f"/api/channels/{ch}/messages", ann, {"text": f"m{i}"}), 201)["id"]
        for i in range(4)
    ]
    api.ok(api.delete(f"/api/messages/{sent[1]}", ann))
    # Ben reads in two moves; cat reads the first message only.
    api.ok(api.put(f"/api/channels/{ch}/read", ben, json={"up_to": sent[0]}))
    api.ok(api.put(f"/api/channels/{ch}/read", ben, json={"up_to": sent[3]}))
    api.ok(api.put(f"/api/channels/{ch}/read", cat, json={"up_to": sent[0]}))
    api.ok(api.get(f"/api/channels/{ch}/messages", ann))  # waits for the read models

    with psycopg.connect(analyst, row_factory=dict_row) as conn:
        reads = conn.execute(
            "SELECT message_id::text, user_id::text, seconds_to_read >= 0 AS after_sending"
            " FROM analytics.message_reads WHERE channel_id = %s ORDER BY sent_at, user_id",
            (ch,),
        ).fetchall()
        daily = conn.execute(
            "SELECT reads, readers FROM analytics.channel_time_to_read WHERE channel_id = %s",
            (ch,),
        ).fetchone()
        backlog = conn.execute(
            "SELECT messages, readers_with_marker, messages_after_markers, largest_backlog"
            " FROM analytics.channel_unread_backlog WHERE channel_id = %s",
            (ch,),
        ).fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM rm_read_markers")
    # Each message once per reader who passed it, the deleted one never.
    expected = sorted(
        [(sent[0], ben.user_id), (sent[0], cat.user_id), (sent[2], ben.user_id),
         (sent[3], ben.user_id)],
        key=lambda r: (sent.index(r[0]), r[1]),
    )  # fmt: skip
    assert [(r["message_id"], r["user_id"]) for r in reads] == expected
    assert all(r["after_sending"] for r in reads)
    assert daily == {"reads": 4, "readers": 2}
    # Cat's marker leaves three messages after it (the deleted one counted: see the doc).
    assert backlog == {
        "messages": 4, "readers_with_marker": 2, "messages_after_markers": 3, "largest_backlog": 3
    }  # fmt: skip
