"""The read-state tables (issue 19: channel numbering, heads, mentions, last replies, markers)
are set-based: cut into spans anywhere, the log leaves the same rows, and they mean what
the counts take them to mean."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from api.contexts import all_projections
from projections.runner import ProjectionRunner
from tests.fixtures.chorus import Running, User

TABLES = (
    "rm_messages",
    "rm_channel_heads",
    "rm_mentions",
    "rm_mention_heads",
    "rm_author_counts",
    "rm_read_markers",
    "rm_read_moves",
)


def _history(chorus: Running) -> dict[str, Any]:
    api = chorus.api
    ann, ben = api.signup("ann"), api.signup("ben")
    ws = api.acquaint(ann, ben)
    one = api.ok(api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "one"}), 201)["id"]
    two = api.ok(api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "two"}), 201)["id"]

    def send(user: User, ch: str, text: str, reply_to: str | None = None) -> str:
        body = {"text": text} | ({"reply_to": reply_to} if reply_to else {})
        return str(api.ok(api.post(f"/api/channels/{ch}/messages", user, body), 201)["id"])

    def read(user: User, ch: str, message: str) -> None:
        api.ok(api.put(f"/api/channels/{ch}/read", user, json={"up_to": message}))

    parent = send(ann, one, f"@{ben.username} look")
    first = send(ben, one, "a reply", parent)
    send(ann, two, "elsewhere")
    read(ben, one, parent)
    second = send(ann, one, f"again @{ben.username} @{ann.username}", parent)
    api.ok(api.patch(f"/api/messages/{parent}", ann, {"text": "no one"}))
    api.ok(api.delete(f"/api/messages/{second}", ann))
    last = send(ben, one, "later", first)
    read(ben, one, last)
    read(ann, one, first)
    mention = send(ben, two, f"@{ann.username} here")
    return {"ann": ann, "ben": ben, "one": one, "two": two, "parent": parent,
            "first": first, "second": second, "last": last, "mention": mention}  # fmt: skip


def _rebuild(chorus: Running, batch_size: int) -> None:
    """Every read model again from position 0, in spans of ``batch_size`` events."""
    rebuilder = ProjectionRunner(
        chorus.server.services.read_pool,
        chorus.database_url,
        all_projections(),
        batch_size=batch_size,
    )
    with psycopg.connect(chorus.database_url, autocommit=True) as conn, conn.cursor() as cur:
        rebuilder.drop_tables(cur)
        rebuilder.create_tables(cur)
    rebuilder.catch_up()


def _tables(url: str) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}


@pytest.fixture(scope="module")
def history(chorus: Running) -> dict[str, Any]:
    made = _history(chorus)
    assert chorus.server.services.runner.wait_for(chorus.api.position, timeout=10)
    return made


def test_any_cut_leaves_the_same_read_state(chorus: Running, history: dict[str, Any]) -> None:
    live = _tables(chorus.database_url)
    runner: ProjectionRunner = chorus.server.services.runner
    runner.stop()
    try:
        _rebuild(chorus, 1)
        one_at_a_time = _tables(chorus.database_url)
        for batch_size in (2, 3, 5, 1000):
            _rebuild(chorus, batch_size)
            assert _tables(chorus.database_url) == one_at_a_time, batch_size
    finally:
        runner.start()
    assert live == one_at_a_time


def test_the_tables_mean_what_the_counts_take_them_to(
    chorus: Running, history: dict[str, Any]
) -> None:
    h = history
    with psycopg.connect(chorus.database_url, row_factory=dict_row) as conn:
        messages = {
            str(r["message_id"]): r for r in conn.execute("SELECT * FROM rm_messages").fetchall()
        }
        heads = {
            str(r["channel_id"]): r
            for r in conn.execute("SELECT * FROM rm_channel_heads").fetchall()
        }
        mentions = sorted(
            (str(r["user_id"]), str(r["message_id"]))
            for r in conn.execute("SELECT * FROM rm_mentions").fetchall()
        )
        markers = {
            (str(r["user_id"]), str(r["channel_id"])): (
                str(r["message_id"]),
                r["channel_seq"],
                r["own_messages"],
            )
            for r in conn.execute("SELECT * FROM rm_read_markers").fetchall()
        }
        authors = {
            (str(r["author_id"]), str(r["channel_id"])): r["messages"]
            for r in conn.execute("SELECT * FROM rm_author_counts").fetchall()
        }
        mention_heads = {
            (str(r["user_id"]), str(r["channel_id"])): r["last_seq"]
            for r in conn.execute("SELECT * FROM rm_mention_heads").fetchall()
        }
    one = sorted((m for m in messages.values() if str(m["channel_id"]) == h["one"]),
                 key=lambda m: m["seq"])  # fmt: skip
    # Numbered 1, 2, 3... in timeline order, the deleted one kept in the count.
    assert [m["channel_seq"] for m in one] == [1, 2, 3, 4]
    assert heads[h["one"]]["messages"] == 4
    assert str(heads[h["one"]]["last_message_id"]) == h["last"]
    assert heads[h["two"]]["messages"] == 2
    # The edit took ben's mention away, the deletion the other; ann's own is never kept.
    assert mentions == [(h["ann"].user_id, h["mention"])]
    # The thread's last reply is the newest one left.
    assert messages[h["parent"]]["reply_count"] == 1
    assert messages[h["parent"]]["last_reply_at"] == messages[h["first"]]["created_at"]
    assert messages[h["first"]]["last_reply_at"] == messages[h["last"]]["created_at"]
    # Each marker with the number of its message and the reader's own messages up to it.
    assert markers == {
        (h["ben"].user_id, h["one"]): (h["last"], 4, 2),
        (h["ann"].user_id, h["one"]): (h["first"], 2, 1),
    }
    assert authors == {
        (h["ann"].user_id, h["one"]): 2,
        (h["ben"].user_id, h["one"]): 2,
        (h["ann"].user_id, h["two"]): 1,
        (h["ben"].user_id, h["two"]): 1,
    }
    # Deleted messages: the newest one's position; none in channel two.
    assert heads[h["one"]]["last_deleted_seq"] == messages[h["second"]]["seq"]
    assert heads[h["two"]]["last_deleted_seq"] == 0
    # A bound on where mentions may be: the newest message that ever mentioned the user
    # (ben's were taken away since; the counts look, and find none).
    assert mention_heads == {
        (h["ben"].user_id, h["one"]): messages[h["second"]]["seq"],
        (h["ann"].user_id, h["two"]): messages[h["mention"]]["seq"],
    }
