"""Issue 20: a deactivated account is hidden from the lists other members read (a public
channel's readers, a private channel's members, the workspace's presence), as from the
workspace's member list, Slack's way; an operator's reactivation brings it back."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.fixtures.chorus import Running, User

LISTS = ("public channel", "private channel", "presence")


def _listed(
    chorus: Running, reader: User, ws: str, public: str, private: str
) -> dict[str, set[str]]:
    api = chorus.api
    ids = {
        "public channel": api.ok(api.get(f"/api/channels/{public}/members", reader))["items"],
        "private channel": api.ok(api.get(f"/api/channels/{private}/members", reader))["items"],
        "presence": api.ok(api.get(f"/api/workspaces/{ws}/presence", reader))["items"],
    }
    return {name: {m["user_id"] for m in items} for name, items in ids.items()}


def test_a_deactivated_member_leaves_every_list_until_reactivated(chorus: Running) -> None:
    api = chorus.api
    owner, dan, eve = api.signup("own"), api.signup("dan"), api.signup("eve")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "D", "visibility": "public"}), 201)
    ws_id = str(ws["id"])
    for user in (dan, eve):
        api.ok(api.post(f"/api/workspaces/{ws_id}/join", user))
    channels = f"/api/workspaces/{ws_id}/channels"
    public = api.ok(api.post(channels, owner, {"name": "pub"}), 201)["id"]
    private = api.ok(api.post(channels, owner, {"name": "priv", "private": True}), 201)["id"]
    for user in (dan, eve):
        api.ok(api.post(f"/api/channels/{private}/members", owner, {"user_id": user.user_id}))
    before = _listed(chorus, eve, ws_id, public, private)
    for name in LISTS:
        assert dan.user_id in before[name], name

    api.ok(api.post("/api/users/me/deactivate", dan, {"password": dan.password}))
    hidden = _listed(chorus, eve, ws_id, public, private)
    for name in LISTS:
        assert dan.user_id not in hidden[name], name
        assert hidden[name] == before[name] - {dan.user_id}, name

    env = {**os.environ, "DATABASE_URL": chorus.database_url}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "reactivate-user", dan.username],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with chorus.server.services.read_pool.connection() as conn:
        row = conn.execute("SELECT max(notification_id) AS head FROM chorus_events").fetchone()
    assert chorus.server.services.runner.wait_for(row["head"], 30)
    assert _listed(chorus, eve, ws_id, public, private) == before
