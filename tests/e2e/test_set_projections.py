"""Set-based read models (timelines, streams) apply a whole span of the log at once: they must
leave what the span's events applied one at a time would, wherever the spans begin and end."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from api.contexts import all_projections
from projections.runner import ProjectionRunner
from tests.fixtures.chorus import Api, Running, User, reactions_quiet
from tests.fixtures.read_models import read_model_rows


def _history(api: Api) -> dict[str, Any]:
    """Every way a message changes, several of them to one message, so a span can hold a
    message with its replies, its edits, a reaction taken back and given again, and its
    deletion."""
    ann, ben = api.signup("ann"), api.signup("ben")
    ws = api.ok(api.post("/api/workspaces", ann, {"name": "Spans", "visibility": "public"}), 201)
    api.ok(api.post(f"/api/workspaces/{ws['id']}/join", ben))
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", ann, {"name": "s"}), 201)

    def send(user: User, text: str, reply_to: str | None = None) -> str:
        body = {"text": text} | ({"reply_to": reply_to} if reply_to else {})
        sent = api.ok(api.post(f"/api/channels/{ch['id']}/messages", user, body), 201)
        return str(sent["id"])

    parent = send(ann, "parent")
    replies = [send(ben, f"reply {i}", parent) for i in range(3)]
    api.ok(api.delete(f"/api/messages/{replies[1]}", ben))
    api.ok(api.patch(f"/api/messages/{parent}", ann, {"text": "parent, edited"}))
    api.ok(api.patch(f"/api/messages/{parent}", ann, {"text": f"parent, @{ben.username}"}))
    for user, verb in [(ben, "put"), (ann, "put"), (ben, "delete"), (ben, "put")]:
        api.ok(getattr(api, verb)(f"/api/messages/{parent}/reactions/🎉", user))
    gone = send(ann, "gone")
    orphan = send(ben, "reply to gone", gone)
    api.ok(api.put(f"/api/messages/{gone}/reactions/👍", ben))
    api.ok(api.patch(f"/api/messages/{gone}", ann, {"text": "gone, edited"}))
    api.ok(api.delete(f"/api/messages/{gone}", ann))
    return {"ann": ann, "ben": ben, "parent": parent, "replies": replies, "gone": gone,
            "orphan": orphan}  # fmt: skip


def _rebuild(chorus: Running, batch_size: int) -> dict[str, list[dict[str, Any]]]:
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
    return read_model_rows(chorus.database_url)


@pytest.fixture(scope="module")
def history(chorus: Running) -> dict[str, Any]:
    made = _history(chorus.api)
    # The reactions' notifications too: nothing may change the log while it is cut up.
    quiet = reactions_quiet(chorus.database_url)
    assert chorus.server.services.runner.wait_for(quiet, timeout=10)
    return made


def test_any_cut_of_the_log_into_spans_leaves_the_same_read_models(
    chorus: Running, history: dict[str, Any]
) -> None:
    live = read_model_rows(chorus.database_url)
    runner: ProjectionRunner = chorus.server.services.runner
    runner.stop()
    try:
        one_at_a_time = _rebuild(chorus, 1)
        for batch_size in (2, 3, 5, 1000):
            assert _rebuild(chorus, batch_size) == one_at_a_time, batch_size
    finally:
        runner.start()
    assert live == one_at_a_time


def test_a_span_leaves_what_each_change_means(chorus: Running, history: dict[str, Any]) -> None:
    runner: ProjectionRunner = chorus.server.services.runner
    runner.stop()
    try:
        _rebuild(chorus, 1000)  # the whole history in one span
    finally:
        runner.start()
    ann, ben, parent, gone = history["ann"], history["ben"], history["parent"], history["gone"]
    with psycopg.connect(chorus.database_url, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM rm_messages").fetchall()
        messages = {str(r["message_id"]): r for r in rows}
        reactions = conn.execute(
            "SELECT message_id::text, emoji, user_id::text FROM rm_reactions"
            " ORDER BY reacted_at, user_id"
        ).fetchall()
        versions = {
            r["id"]: r["version"]
            for r in conn.execute(
                "SELECT originator_id::text AS id, max(originator_version) AS version"
                " FROM chorus_events GROUP BY originator_id"
            )
        }
        kinds = {
            r["id"]: r["kind"]
            for r in conn.execute("SELECT stream_id::text AS id, kind FROM rm_streams")
        }
    # Two of three replies are left; the deleted reply's parent counted it out once.
    assert messages[parent]["reply_count"] == 2
    assert messages[parent]["text"] == f"parent, @{ben.username}"
    assert [str(m) for m in messages[parent]["mentions"]] == [ben.user_id]
    assert messages[parent]["edited_at"] is not None
    # The reaction given again counts from its second time: it comes after ann's.
    assert [(r["message_id"], r["emoji"], r["user_id"]) for r in reactions] == [
        (parent, "🎉", ann.user_id),
        (parent, "🎉", ben.user_id),
    ]
    # A deleted message keeps its replies' count and loses its text and its reactions.
    assert messages[gone]["deleted"] and messages[gone]["text"] == ""
    assert messages[gone]["reply_count"] == 1
    assert messages[history["replies"][1]]["deleted"]
    # Every message shows its stream's last version (If-Match on edits).
    assert {m: r["version"] for m, r in messages.items()} == {m: versions[m] for m in messages}
    assert versions[parent] == 7
    assert {kinds[m] for m in messages} == {"message"}
    assert kinds[ann.user_id] == "user"
