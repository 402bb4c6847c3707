"""Webhooks across a kill -9 (issue 19): `chorus serve` killed while a delivery is on the
wire and the reaction is in the middle of a burst; a new process finishes the work. Exactly
one delivery per (event, webhook) is queued, every event arrives, and every request of one
delivery, before and after the kill, carries the same ``webhook-id``."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api
from tests.fixtures.polling import wait_until
from tests.fixtures.processes import ChorusProcess, processes, start_all
from tests.fixtures.servers import new_database
from tests.fixtures.webhook_receiver import STALL, receiver

ENV = {
    "CHORUS_WEBHOOK_ALLOW_PRIVATE": "1",
    "CHORUS_WEBHOOK_ALLOW_HTTP": "1",
    # The stalled request is still waiting for its answer when the process is killed.
    "CHORUS_WEBHOOK_TIMEOUT_S": "60",
    "CHORUS_WEBHOOK_RETRY_BASE_S": "0.05",
}
BURST = 20


def queued(url: str) -> list[int]:
    """The causing position of every DeliveryQueued in the log (a duplicate shows twice)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb ->> 'position' FROM chorus_events"
            " WHERE topic LIKE '%.DeliveryQueued'"
        ).fetchall()
    return sorted(int(r[0]) for r in rows)


def delivered(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM rm_webhook_deliveries WHERE state = 'delivered'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
@pytest.mark.faults
def test_kill_9_mid_delivery_and_mid_burst_queues_once_and_resends_with_the_same_id(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with new_database(postgres_server) as url, processes() as started, receiver() as hooks:
        hooks.stall_s = 60.0
        a = ChorusProcess(tmp_path / "a", url, env=ENV)
        start_all(started, a)
        api = Api(a.url)
        owner = api.signup("owner")
        ws = api.ok(api.post("/api/workspaces", owner, {"name": "K"}), 201)["id"]
        channel = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)
        body = {"url": hooks.url("/k"), "event_types": ["MessageSent"]}
        made = api.ok(api.post(f"/api/workspaces/{ws}/webhooks", owner, body), 201)
        hooks.answer("/k", STALL)
        sent = [
            api.ok(
                api.post(f"/api/channels/{channel['id']}/messages", owner, {"text": f"m{i}"}), 201
            )
            for i in range(BURST)
        ]
        first = hooks.wait_for(1, path="/k")[0]
        # The first delivery is on the wire, unrecorded: the process dies now.
        a.kill9()
        api.close()
        hooks.release_stalls()  # the stalled request is answered (to nobody)

        a2 = ChorusProcess(tmp_path / "a2", url, env=ENV)
        start_all(started, a2)
        wait_until(f"{BURST} deliveries to succeed", lambda: delivered(url) == BURST, timeout=60)

        positions = sorted(m["position"] for m in sent)
        assert queued(url) == positions  # one delivery per event, none twice
        got = hooks.of("/k")
        by_id: dict[str, set[int]] = defaultdict(set)
        for request in got:
            payload = Webhook(made["secret"]).verify(request.body, request.headers)
            by_id[request.headers["webhook-id"]].add(payload["position"])
        # One webhook-id per event, the same on every request of it.
        assert all(len(p) == 1 for p in by_id.values())
        assert sorted(p for ps in by_id.values() for p in ps) == positions
        # The request the kill interrupted was sent again, with its id.
        resent = [r for r in got if r.headers["webhook-id"] == first.headers["webhook-id"]]
        assert len(resent) >= 2
        assert json.loads(resent[0].body) == json.loads(resent[-1].body)
