"""`chorus replay` rebuilds read models while the server serves, identically."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from projections.replay import rebuild
from tests.fixtures.chorus import Api, Running, reactions_quiet
from tests.fixtures.read_models import populate_chat, read_model_rows

CHORUS = str(Path(sys.executable).with_name("chorus"))


def test_replay_all_while_serving_leaves_identical_read_models(chorus: Running) -> None:
    ws, ch = populate_chat(chorus.api)
    watcher = chorus.api.signup("watch")
    chorus.api.ok(chorus.api.post(f"/api/workspaces/{ws}/join", watcher))
    # The reactions' notifications too: nothing may change the tables but the replay.
    quiet = reactions_quiet(chorus.database_url)
    assert chorus.server.services.runner.wait_for(quiet, timeout=10)
    live = read_model_rows(chorus.database_url)

    # Readers and a writer keep going during the replay; every answer must be a success.
    stop, statuses = threading.Event(), []

    def read_and_write() -> None:
        client = Api(chorus.server.url)
        try:
            while not stop.is_set():
                statuses.append(
                    client.get(f"/api/channels/{ch}/messages", watcher, min_position=0).status_code
                )
                statuses.append(
                    client.get(f"/api/workspaces/{ws}/members", watcher, min_position=0).status_code
                )
        finally:
            client.close()

    thread = threading.Thread(target=read_and_write)
    thread.start()
    try:
        env = {**os.environ, "DATABASE_URL": chorus.database_url}
        done = subprocess.run(
            [CHORUS, "replay", "--all"], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        stop.set()
        thread.join()
    assert done.returncode == 0, done.stderr
    assert "swapped them in" in done.stdout
    assert statuses and set(statuses) == {200}
    assert read_model_rows(chorus.database_url) == live
    # Live projection goes on into the swapped-in tables.
    extra = chorus.api.ok(
        chorus.api.post(f"/api/channels/{ch}/messages", watcher, {"text": "after"}), 201
    )
    timeline = chorus.api.ok(chorus.api.get(f"/api/channels/{ch}/messages", watcher))["items"]
    assert timeline[0]["id"] == extra["id"]


def test_replay_one_projection_and_refuse_unknown_ones(chorus: Running) -> None:
    populate_chat(chorus.api)
    quiet = reactions_quiet(chorus.database_url)
    assert chorus.server.services.runner.wait_for(quiet, timeout=10)
    live = read_model_rows(chorus.database_url)
    env = {**os.environ, "DATABASE_URL": chorus.database_url}
    one = subprocess.run(
        [CHORUS, "replay", "--projection", "timelines"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert one.returncode == 0, one.stderr
    assert read_model_rows(chorus.database_url) == live
    bad = subprocess.run(
        [CHORUS, "replay", "--projection", "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown projection" in bad.stderr


def test_rebuilding_no_read_model_is_refused_before_touching_the_database() -> None:
    """Without a projection no tracking position moves, so the bulk pass would never end."""
    with pytest.raises(ValueError, match="no read model"):
        rebuild("postgresql://nobody@127.0.0.1:1/none", [])
