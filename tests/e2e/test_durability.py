"""State lives in the event store: restarts show the same state, read models rebuild the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.contexts import all_projections
from infrastructure.embedded_postgres import EmbeddedPostgres
from projections.runner import ProjectionRunner
from tests.fixtures.chorus import Api, Running, ServerThread, chorus_settings, reactions_quiet
from tests.fixtures.servers import new_database


def _populate(api: Api) -> tuple[str, str]:
    ann, ben = api.signup("ann"), api.signup("ben")
    ws = api.ok(api.post("/api/workspaces", ann, {"name": "Keep", "visibility": "public"}), 201)
    api.ok(api.post(f"/api/workspaces/{ws['id']}/join", ben))
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", ann, {"name": "log"}), 201)
    priv = api.ok(
        api.post(f"/api/workspaces/{ws['id']}/channels", ann, {"name": "p", "private": True}), 201
    )
    api.ok(api.post(f"/api/channels/{priv['id']}/members", ann, {"user_id": ben.user_id}))
    api.ok(
        api.post(
            f"/api/workspaces/{ws['id']}/roles",
            ann,
            {"name": "mod", "permissions": ["manage_messages"]},
        ),
        201,
    )
    api.ok(api.put(f"/api/workspaces/{ws['id']}/members/{ben.user_id}/roles/mod", ann))
    first = api.ok(api.post(f"/api/channels/{ch['id']}/messages", ann, {"text": "one"}), 201)
    for i in range(12):
        api.ok(
            api.post(
                f"/api/channels/{ch['id']}/messages",
                ben,
                {"text": f"m{i}", "reply_to": first["id"]},
            ),
            201,
        )
    api.ok(api.patch(f"/api/messages/{first['id']}", ann, {"text": "one, edited"}))
    api.ok(api.put(f"/api/messages/{first['id']}/reactions/🎉", ben))
    api.ok(api.put(f"/api/messages/{first['id']}/reactions/🎉", ann))
    api.ok(api.delete(f"/api/messages/{first['id']}/reactions/🎉", ben))
    api.ok(api.delete(f"/api/messages/{first['id']}", ben))
    api.ok(api.post("/api/dms", ann, {"user_id": ben.user_id}), 201)
    api.ok(api.post(f"/api/workspaces/{ws['id']}/members/{ben.user_id}/ban", ann))
    return ws["id"], ch["id"]


def _read_models(database_url: str) -> dict[str, list[dict[str, Any]]]:
    tables = [t for p in all_projections() for t in p.tables]
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        # Ordered by every column, so the comparison ignores physical row order only.
        return {
            t: sorted(
                conn.execute(f"SELECT * FROM {t}").fetchall(),
                key=repr,
            )
            for t in tables
        }


def test_a_restarted_server_shows_the_same_state(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with new_database(postgres_server) as url:
        first = ServerThread(chorus_settings(tmp_path), url).start()
        api = Api(first.url)
        ws, ch = _populate(api)
        owner_token = api.signup("watcher")
        api.ok(api.post(f"/api/workspaces/{ws}/join", owner_token))
        # The reactions' notifications too, before the first server's view is taken.
        api.position = reactions_quiet(url)
        timeline = api.ok(api.get(f"/api/channels/{ch}/messages", owner_token))
        events = api.ok(api.get("/api/events", owner_token, limit=200))
        first.stop()
        api.close()

        second = ServerThread(chorus_settings(tmp_path), url).start()
        again = Api(second.url)
        again.position = api.position
        try:
            assert again.ok(again.get(f"/api/channels/{ch}/messages", owner_token)) == timeline
            assert again.ok(again.get("/api/events", owner_token, limit=200)) == events
            assert again.ok(again.get(f"/api/workspaces/{ws}", owner_token))["member_count"] == 2
        finally:
            again.close()
            second.stop()


def test_read_models_rebuild_from_position_zero_identically(chorus: Running) -> None:
    _populate(chorus.api)
    runner: ProjectionRunner = chorus.server.services.runner
    assert runner.wait_for(reactions_quiet(chorus.database_url), timeout=10)
    live = _read_models(chorus.database_url)
    assert sum(len(rows) for rows in live.values()) > 30

    rebuilder = ProjectionRunner(
        chorus.server.services.read_pool, chorus.database_url, all_projections(), batch_size=7
    )
    runner.stop()
    try:
        with psycopg.connect(chorus.database_url, autocommit=True) as conn, conn.cursor() as cur:
            rebuilder.drop_tables(cur)
            rebuilder.create_tables(cur)
        assert all(rows == [] for rows in _read_models(chorus.database_url).values())
        rebuilder.catch_up()
        assert _read_models(chorus.database_url) == live
    finally:
        runner.start()


def test_projection_resumes_from_its_tracking_position_exactly_once(chorus: Running) -> None:
    """A runner that stops after a few batches (as if the process died) and a new one that
    takes over produce the same read models as one uninterrupted run."""
    _populate(chorus.api)
    runner: ProjectionRunner = chorus.server.services.runner
    assert runner.wait_for(reactions_quiet(chorus.database_url), timeout=10)
    live = _read_models(chorus.database_url)
    runner.stop()
    try:
        pool = chorus.server.services.read_pool
        interrupted = ProjectionRunner(pool, chorus.database_url, all_projections(), batch_size=5)
        with psycopg.connect(chorus.database_url, autocommit=True) as conn, conn.cursor() as cur:
            interrupted.drop_tables(cur)
            interrupted.create_tables(cur)
        # Projections stop at different positions, as separate crashes would leave them.
        for i, projection in enumerate(interrupted.projections):
            for _ in range(i + 1):
                interrupted.step([projection])
        successor = ProjectionRunner(pool, chorus.database_url, all_projections(), batch_size=1000)
        successor.catch_up()
        assert _read_models(chorus.database_url) == live
    finally:
        runner.start()
