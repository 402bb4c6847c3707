"""State lives in the event store: restarts show the same state, read models rebuild the same."""

from __future__ import annotations

from pathlib import Path

import psycopg

from api.contexts import all_projections
from infrastructure.embedded_postgres import EmbeddedPostgres
from projections.runner import ProjectionRunner
from tests.fixtures.chorus import Api, Running, ServerThread, chorus_settings, reactions_quiet
from tests.fixtures.read_models import populate_chat, read_model_rows
from tests.fixtures.servers import new_database


def test_a_restarted_server_shows_the_same_state(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with new_database(postgres_server) as url:
        first = ServerThread(chorus_settings(tmp_path), url).start()
        api = Api(first.url)
        ws, ch = populate_chat(api)
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
    populate_chat(chorus.api)
    runner: ProjectionRunner = chorus.server.services.runner
    assert runner.wait_for(reactions_quiet(chorus.database_url), timeout=10)
    live = read_model_rows(chorus.database_url)
    assert sum(len(rows) for rows in live.values()) > 30

    rebuilder = ProjectionRunner(
        chorus.server.services.read_pool, chorus.database_url, all_projections(), batch_size=7
    )
    runner.stop()
    try:
        with psycopg.connect(chorus.database_url, autocommit=True) as conn, conn.cursor() as cur:
            rebuilder.drop_tables(cur)
            rebuilder.create_tables(cur)
        assert all(rows == [] for rows in read_model_rows(chorus.database_url).values())
        rebuilder.catch_up()
        assert read_model_rows(chorus.database_url) == live
    finally:
        runner.start()


def test_projection_resumes_from_its_tracking_position_exactly_once(chorus: Running) -> None:
    """A runner that stops after a few batches (as if the process died) and a new one that
    takes over produce the same read models as one uninterrupted run."""
    populate_chat(chorus.api)
    runner: ProjectionRunner = chorus.server.services.runner
    assert runner.wait_for(reactions_quiet(chorus.database_url), timeout=10)
    live = read_model_rows(chorus.database_url)
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
        assert read_model_rows(chorus.database_url) == live
    finally:
        runner.start()
