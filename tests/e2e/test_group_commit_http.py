"""Group commit over HTTP (``CHORUS_GROUP_COMMIT``): concurrent requests are acknowledged
once committed, each stored once, readable right after their acknowledgement."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import running_chorus

WRITERS, EACH = 8, 15


def test_concurrent_posts_are_committed_together_and_each_stored_once(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path, group_commit=True) as chorus:
        api = chorus.api
        assert chorus.server.services.app.group_committer is not None
        owner = api.signup("own")
        ws = api.ok(
            api.post("/api/workspaces", owner, {"name": "busy", "visibility": "public"}), 201
        )
        channel = api.ok(
            api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "x"}), 201
        )
        writers = [api.signup(f"w{i}") for i in range(WRITERS)]
        for writer in writers:
            api.ok(api.post(f"/api/workspaces/{ws['id']}/join", writer, {}))

        def post_all(index: int) -> list[int]:
            token = writers[index].access_token
            with httpx.Client(
                base_url=chorus.server.url, headers={"Authorization": f"Bearer {token}"}
            ) as http:
                positions = []
                for n in range(EACH):
                    reply = http.post(
                        f"/api/channels/{channel['id']}/messages", json={"text": f"{index}-{n}"}
                    )
                    assert reply.status_code == 201, reply.text
                    position = int(reply.json()["position"])
                    # Acknowledged means committed: the writer reads its own write at once.
                    seen = http.get(
                        f"/api/channels/{channel['id']}/messages",
                        params={"min_position": position, "limit": 200},
                    )
                    assert seen.status_code == 200, seen.text
                    positions.append(position)
                return positions

        with ThreadPoolExecutor(WRITERS) as pool:
            acknowledged = [p for ps in pool.map(post_all, range(WRITERS)) for p in ps]
        with psycopg.connect(chorus.database_url) as conn:
            rows = conn.execute(
                "SELECT notification_id, xmin::text FROM chorus_events"
                " WHERE topic LIKE '%%MessageSent' ORDER BY notification_id"
            ).fetchall()
    assert sorted(acknowledged) == [row[0] for row in rows]  # each once, nothing else
    # Some requests shared a transaction (on 2 cores, 8 writers always overlap).
    assert len({row[1] for row in rows}) < len(rows)
