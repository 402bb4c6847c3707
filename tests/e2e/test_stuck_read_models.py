"""Issue 16, finding 1 (defence in depth): a stored event that one read model cannot apply
stops that read model only, at the event before it; every other read model, the reads that
wait for a caller's writes and ``/ready`` keep working, and an operator resolves it with an
audited ``chorus projections skip``.

The poison is written straight into the events table, as an older release (or any bug at the
boundary) could have stored it: the class is generated from every event type of a real log,
each with NUL in every string, and each with its fields missing."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from api.catalogue import Catalogue
from api.cli import main as chorus_main
from api.contexts import CONTEXTS, all_projections
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Running, running_chorus
from tests.fixtures.polling import wait_until
from tests.fixtures.processes import CHORUS
from tests.fixtures.raw_events import (
    _ENVELOPE,
    nul_in_every_string,
    samples,
    store_raw,
    stuck_models,
    tracking,
)
from tests.fixtures.read_models import populate_chat

OPS_TOKEN = "ops-" + "o" * 40
READ_WAIT_S = 3.0
NAMES = sorted(p.name for p in all_projections())
# The reactions but the webhooks one (issue 19): it handles nearly every event type, so a
# poison event that every read model takes but that does not decode stops it, and no operator
# action passes a reaction over such an event yet (a skip needs a stuck read model). Its
# isolation is that of every policy (tests/e2e/test_reactions.py).
WITHOUT_WEBHOOKS = Catalogue(
    tuple(
        replace(c, policies=tuple(p for p in c.policies if p.name != "webhooks"))
        for c in CONTEXTS.contexts
    )
)


def fields_missing(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k in _ENVELOPE}


POISONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "nul": nul_in_every_string,
    "missing": fields_missing,
}


@pytest.fixture(scope="module")
def served(
    postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    with running_chorus(
        postgres_server,
        tmp_path_factory.mktemp("stuck"),
        catalogue=WITHOUT_WEBHOOKS,
        read_wait_timeout_s=READ_WAIT_S,
        ops_token=OPS_TOKEN,
    ) as running:
        populate_chat(running.api)
        yield running


def skip(database_url: str, name: str, position: int, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return chorus_main(
        ["projections", "skip", name, "--position", str(position), "--reason", "poison in test"]
    )


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_a_poison_event_stops_only_the_read_models_that_cannot_take_it(
    served: Running, poison: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, api = served.database_url, served.api
    stopped: set[str] = set()
    for topic, state in sorted(samples(url).items()):
        if topic.endswith("ProjectionEventSkipped"):
            continue
        bad = store_raw(url, topic, POISONS[poison](state))
        # A later, healthy write: every read model that can take the poison passes both.
        writer = api.signup("after")
        healthy = api.position

        def settled(healthy: int = healthy) -> tuple[dict[str, dict[str, Any]]] | None:
            rows = tracking(url)
            stuck = stuck_models(rows)
            done = all(row["position"] >= healthy for n, row in rows.items() if n not in stuck)
            return (stuck,) if done and set(rows) == set(NAMES) else None

        (stuck,) = wait_until(f"the read models past {topic} at {bad}", settled, timeout=20)
        for name, row in stuck.items():
            # Never silently past it: held at the event before, with the reason.
            assert row["stuck_position"] == bad, (topic, name, row)
            assert row["position"] == bad - 1, (topic, name, row)
            assert row["error"] and row["since"] is not None
        stopped |= set(stuck)
        # The caller's own write is readable at once, whatever model is stuck.
        mine = api.get("/api/workspaces", writer)
        assert mine.status_code == 200, (topic, mine.text)
        if stuck:
            ready = api.http.get("/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["status"] == "degraded"
            assert sorted(ready.json()["stuck"]) == sorted(stuck)
            # Resolved by an operator, each skip recorded in the log.
            for name in stuck:
                assert skip(url, name, bad, monkeypatch) == 0

            def resolved(bad: int = bad) -> bool:
                rows = tracking(url)
                return not stuck_models(rows) and min(r["position"] for r in rows.values()) > bad

            wait_until(f"the read models past the skips of {topic}", resolved)
    # The family is not empty: some poison did stop some read model.
    assert stopped, "no poison stopped any read model: the test proves nothing"
    with psycopg.connect(url) as conn:
        skips = conn.execute(
            "SELECT count(*) FROM chorus_events WHERE topic LIKE '%ProjectionEventSkipped'"
        ).fetchone()
    assert skips is not None and skips[0] >= len(stopped)
    # The reactions held at a poison event pass its skip when they next look (each looks
    # once a second while held): /ready is ok once they have.
    wait_until("/ready ok again", lambda: api.http.get("/ready").status_code == 200)


def test_skip_takes_only_the_stuck_event_and_status_shows_it(
    served: Running, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, api = served.database_url, served.api
    topic, state = next((t, s) for t, s in samples(url).items() if t.endswith(".MessageSent"))
    bad = store_raw(url, topic, nul_in_every_string(state))
    api.signup("after")
    healthy_position = api.position

    def settled() -> dict[str, dict[str, Any]] | None:
        # Every read model either past the healthy write or stuck: which ones stick on a
        # poisoned message depends on the models (timelines always does), and waiting for
        # one alone raced the others.
        rows = tracking(url)
        stuck = stuck_models(rows)
        done = all(row["position"] >= healthy_position for n, row in rows.items() if n not in stuck)
        return stuck if done and set(rows) == set(NAMES) and "timelines" in stuck else None

    all_stuck = wait_until("the read models past or stuck at the poison", settled)
    stuck = all_stuck["timelines"]
    assert stuck["stuck_position"] == bad
    # /ready names them to everyone; where and why only to an operator.
    public = api.http.get("/ready")
    assert public.status_code == 503 and public.json()["stuck"] == sorted(all_stuck)
    assert public.json()["read_models"] is None and str(bad) not in public.json()["detail"]
    ops = api.http.get("/ready", headers={"Authorization": f"Bearer {OPS_TOKEN}"}).json()
    assert ops["read_models"]["timelines"]["stuck_position"] == bad
    assert ops["read_models"]["timelines"]["position"] == bad - 1
    assert ops["read_models"]["timelines"]["error"] == stuck["error"]
    env = {**os.environ, "DATABASE_URL": url}
    status = subprocess.run(
        [CHORUS, "projections", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 1, status.stderr  # a model is stuck
    line = next(x for x in status.stdout.splitlines() if x.startswith("timelines"))
    assert f"stuck at {bad}" in line and "since" in line
    events = _count(url)
    # Any other position, an unknown model, or a model that is not stuck: refused, nothing
    # appended.
    for name, position in (("timelines", bad - 1), ("timelines", bad + 1), ("nope", bad)):
        assert skip(url, name, position, monkeypatch) == 2
    healthy = next(n for n in NAMES if n not in stuck_models(tracking(url)))
    assert skip(url, healthy, bad, monkeypatch) == 2
    assert _count(url) == events
    assert skip(url, "timelines", bad, monkeypatch) == 0
    assert _count(url) == events + 1
    wait_until("timelines moving again", lambda: "timelines" not in stuck_models(tracking(url)))
    # A skip takes its own model only: the others stay where they are until theirs.
    assert set(stuck_models(tracking(url))) == set(all_stuck) - {"timelines"}
    for name in sorted(set(all_stuck) - {"timelines"}):
        assert skip(url, name, bad, monkeypatch) == 0
    wait_until("every read model moving again", lambda: not stuck_models(tracking(url)))
    status = subprocess.run(
        [CHORUS, "projections", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stdout + status.stderr
    with psycopg.connect(url, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb AS s FROM chorus_events"
            " WHERE topic LIKE '%ProjectionEventSkipped'"
            " AND convert_from(state, 'UTF8')::jsonb->>'projection' = 'timelines'"
            " ORDER BY notification_id DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    recorded = row["s"]
    assert recorded["projection"] == "timelines" and recorded["position"] == bad
    assert recorded["reason"] == "poison in test" and recorded["operator"]
    assert recorded["error"]
    # Appended like every event: the tamper-evidence chain still holds.
    verified = subprocess.run(
        [CHORUS, "verify"], env=env, capture_output=True, text=True, timeout=120
    )
    assert verified.returncode == 0 and verified.stdout.startswith("ok:"), verified.stdout


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM chorus_events").fetchone()
    return int(row[0]) if row else 0
