"""``/ready`` (issue 16, finding 8): degraded (503) while a read model is stuck or too far
behind, and positions only for the instance's operators (``CHORUS_OPS_TOKEN``)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import psycopg

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import running_chorus
from tests.fixtures.polling import wait_until

OPS_TOKEN = "ops-" + "k" * 40
POSITIONS = ("last_position", "projected_position", "projection_lag", "read_models", "build")


def test_positions_are_shown_only_to_operators(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path, ops_token=OPS_TOKEN) as chorus:
        api = chorus.api
        user = api.signup("someone")
        for headers in (
            {},
            {"Authorization": f"Bearer {OPS_TOKEN[:-1]}x"},
            {"Authorization": f"Bearer {OPS_TOKEN}x"},
            {"Authorization": f"Basic {OPS_TOKEN}"},
            user.headers,  # a user is not an operator of the instance
        ):
            body = api.ok(api.http.get("/ready", headers=headers))
            assert body["status"] == "ok"
            assert all(body.get(k) is None for k in POSITIONS), (headers, body)
        body = api.ok(api.http.get("/ready", headers={"Authorization": f"Bearer {OPS_TOKEN}"}))
        assert body["last_position"] >= api.position and body["projection_lag"] >= 0
        assert set(body["read_models"]) >= {"users", "timelines"}
        build = body["build"]  # issue 22: what runs and since when, for operators
        assert build["version"] == version("chorus") and build["uptime_s"] >= 0
        assert build["python"] and build["pid"] > 0 and build["started_at"]


def test_no_operator_token_shows_positions_to_nobody(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path) as chorus:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer None"}):
            body = chorus.api.ok(chorus.api.http.get("/ready", headers=headers))
            assert all(body.get(k) is None for k in POSITIONS), body


def test_ready_is_degraded_while_the_read_models_are_too_far_behind(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path, ready_max_lag=2) as chorus:
        api = chorus.api
        assert api.http.get("/ready").status_code == 200
        with psycopg.connect(chorus.database_url) as held:
            # The runner waits on its tracking rows while the log grows.
            held.execute("SELECT * FROM rm_tracking FOR UPDATE")
            for _ in range(3):
                api.signup("held")
            ready = api.http.get("/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["status"] == "degraded"
            assert "behind" in ready.json()["detail"]
            assert ready.json()["last_position"] is None
        wait_until("ready again", lambda: api.http.get("/ready").status_code == 200)
