"""``/metrics`` (issue 22, point 1): who may scrape it, that every metric is named, and that
the numbers move with what happens, also summed across ``--workers``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api, running_chorus
from tests.fixtures.documents import client, new_document, type_text, workspace_with
from tests.fixtures.failover import set_up_channel
from tests.fixtures.processes import OPS_HEADERS, ChorusProcess, processes
from tests.fixtures.servers import new_database

pytestmark = pytest.mark.slow

NAMES = {
    "chorus_commands_total",
    "chorus_events_appended_total",
    "chorus_group_commit_batch_commands",
    "chorus_open_sockets",
    "chorus_ws_events_delivered_total",
    "chorus_rate_limited_total",
    "chorus_read_model_lag_events",
    "chorus_read_model_stuck",
    "chorus_reaction_lag_events",
    "chorus_db_pool_connections",
    "chorus_event_loop_lag_max_seconds",
    "chorus_log_position",
    "chorus_http_requests_total",
    "chorus_http_request_duration_seconds",
    "chorus_group_commit_wait_seconds",
    "chorus_read_model_lag_seconds",
    "chorus_reaction_lag_seconds",
    "chorus_live_documents",
    "chorus_live_document_bytes",
    "chorus_awareness_states",
    "chorus_redis_errors_total",
}


def scrape(
    url: str, headers: dict[str, str] | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{url}/metrics", headers=headers or {}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def names(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    out = set()
    for n, _ in samples:
        for suffix in ("_bucket", "_count", "_sum", "_created"):
            if n.endswith(suffix):
                n = n[: -len(suffix)]
        out.add(n)
    return out


@pytest.fixture(scope="module")
def server(
    postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChorusProcess]:
    with new_database(postgres_server) as url, processes() as started:
        process = ChorusProcess(tmp_path_factory.mktemp("metrics"), url)
        started.append(process.start())
        yield process.wait_ready()


def test_metrics_are_for_operators_only(server: ChorusProcess) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 404
    wrong = {"Authorization": "Bearer " + "x" * 50}
    assert httpx.get(f"{server.url}/metrics", headers=wrong).status_code == 404
    setup = set_up_channel(server.url)  # a user's token is not the operators'
    assert httpx.get(f"{server.url}/metrics", headers=setup.headers).status_code == 404


def test_every_metric_is_named_and_moves_with_what_happens(server: ChorusProcess) -> None:
    setup = set_up_channel(server.url)
    before = scrape(server.url, OPS_HEADERS)
    assert names(before) >= NAMES, NAMES - names(before)
    ws_url = server.url.replace("http", "ws") + f"/ws?token={setup.token}"
    with (
        connect(ws_url, open_timeout=10) as ws,
        httpx.Client(base_url=server.url, headers=setup.headers, timeout=10) as http,
    ):
        frame = {"op": "subscribe", "sub": "c", "streams": [{"channel": setup.channel}]}
        ws.send(json.dumps(frame))
        assert '"subscribed"' in str(ws.recv(timeout=10))
        for i in range(3):
            r = http.post(f"/api/channels/{setup.channel}/messages", json={"text": f"m{i}"})
            assert r.status_code == 201, r.text
        r = http.post(f"/api/channels/{setup.channel}/messages", json={"text": ""})
        assert r.status_code == 422
        got = 0
        while got < 3:  # the three events reach the subscription
            if '"op":"event"' in str(ws.recv(timeout=10)).replace(" ", ""):
                got += 1
        during = scrape(server.url, OPS_HEADERS)
    assert value(during, "chorus_open_sockets", endpoint="/ws") == 1

    def d(name: str, **labels: str) -> float:
        return value(during, name, **labels) - value(before, name, **labels)

    assert d("chorus_commands_total", type="SendMessage", outcome="accepted") == 3
    # Each command waited for its group-commit batch: three more waits observed.
    assert d("chorus_group_commit_wait_seconds_count") >= 3
    assert d("chorus_events_appended_total") >= 3
    assert d("chorus_ws_events_delivered_total") >= 3
    route = "/api/channels/{ch}/messages"
    assert d("chorus_http_requests_total", path=route, method="POST", status_code="201") == 3
    assert d("chorus_http_requests_total", path=route, method="POST", status_code="422") == 1
    assert value(during, "chorus_log_position") >= value(before, "chorus_log_position") + 3
    models = {dict(ls)["model"] for n, ls in during if n == "chorus_read_model_lag_events"}
    assert {"channels", "timelines", "streams"} <= models
    refused = server.url.replace("http", "ws") + "/ws?token=not-a-token"
    with connect(refused, open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    closes = scrape(server.url, OPS_HEADERS)
    assert value(closes, "chorus_socket_closes_total", endpoint="/ws", code="4401") >= 1
    deadline = time.monotonic() + 10
    while True:  # the close is counted once the server has seen the socket go
        after = scrape(server.url, OPS_HEADERS)
        if value(after, "chorus_open_sockets", endpoint="/ws") == 0:
            break
        assert time.monotonic() < deadline


def test_metrics_sum_every_worker_and_can_be_public(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with new_database(postgres_server) as url, processes() as started:
        process = ChorusProcess(
            tmp_path, url, env={"CHORUS_METRICS": "public"}, args=("--workers", "2")
        )
        started.append(process.start())
        process.wait_ready()
        setup = set_up_channel(process.url)
        sent = 20
        # Fresh connections: the kernel spreads them over both workers' shared socket.
        for i in range(sent):
            r = httpx.post(
                f"{process.url}/api/channels/{setup.channel}/messages",
                json={"text": f"w{i}"},
                headers=setup.headers,
                timeout=10,
            )
            assert r.status_code == 201, r.text
        seen = [scrape(process.url) for _ in range(4)]  # no token needed; any worker answers
    for samples in seen:
        assert (
            value(samples, "chorus_commands_total", type="SendMessage", outcome="accepted") == sent
        )


def test_metrics_off_has_no_route(postgres_server: EmbeddedPostgres, tmp_path: Path) -> None:
    with running_chorus(postgres_server, tmp_path, metrics="off", ops_token="o" * 40) as running:
        api: Api = running.api
        r = api.http.get("/metrics", headers={"Authorization": "Bearer " + "o" * 40})
        assert r.status_code == 404


def test_lag_in_seconds_grows_while_nothing_projects(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Projections and reactions in another process that is not running: the events wait,
    and the age of the oldest one each read model and policy has yet to take grows."""
    with running_chorus(
        postgres_server, tmp_path, metrics="public", projections="external"
    ) as running:
        caught_up = scrape(running.server.url)
        assert value(caught_up, "chorus_read_model_lag_seconds", model="users") == 0
        running.api.signup("lag")  # the sign-up answers without waiting for read models
        first = scrape(running.server.url)
        later = first
        deadline = time.monotonic() + 10
        while value(later, "chorus_read_model_lag_seconds", model="users") <= value(
            first, "chorus_read_model_lag_seconds", model="users"
        ):
            assert time.monotonic() < deadline, "the lag in seconds did not grow"
            later = scrape(running.server.url)
    assert value(first, "chorus_read_model_lag_seconds", model="users") > 0
    assert value(first, "chorus_read_model_lag_events", model="users") >= 1
    policies = {dict(ls)["policy"] for n, ls in first if n == "chorus_reaction_lag_seconds"}
    assert policies
    assert all(
        value(first, "chorus_reaction_lag_seconds", policy=p) > 0
        for p in policies
        if value(first, "chorus_reaction_lag_events", policy=p) > 0
    )


def test_open_documents_their_size_and_awareness_states_and_redis_up(
    postgres_server: EmbeddedPostgres, redis_url: str, tmp_path: Path
) -> None:
    with running_chorus(
        postgres_server, tmp_path, metrics="public", redis_url=redis_url
    ) as running:
        api = running.api
        owner = api.signup("docs")
        doc = new_document(api, owner, workspace_with(api, owner))
        before = scrape(running.server.url)
        assert value(before, "chorus_live_documents") == 0
        with client(running, doc, owner).wait_synced() as a:
            type_text(a, "x" * 500)
            a.set_awareness(99, 1, b'{"who":"a"}')
            b = client(running, doc, owner).wait_synced()
            b.wait(lambda: 99 in b.awareness and "x" * 500 in str(b.text()))
            during = scrape(running.server.url)
            b.close()
    assert value(during, "chorus_live_documents") == 1
    assert value(during, "chorus_live_document_bytes") >= 500
    assert value(during, "chorus_awareness_states") == 1
    assert value(during, "chorus_redis_up") == 1
