"""kill -9 of the process running the reactions in the middle of a burst of mentions (issue
19): after a restart every notification is in the inbox exactly once, as
``GET /api/notifications`` shows it, no loss and no duplicate.

Real ``chorus serve`` processes, SIGKILL, PostgreSQL, HTTP. The burst is written while the
mention policy's tracking row is held (its runner waits for it before anything else), so
the reactions start only once every message is in the log; the process is killed once
some, not all, of the burst's notifications are stored.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from api.contexts import CONTEXTS
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api, User
from tests.fixtures.polling import wait_until
from tests.fixtures.processes import ChorusProcess, processes, start_all
from tests.fixtures.servers import new_database

MESSAGES = 120
HOLD_MENTIONS = "SELECT 1 FROM chorus_reactions WHERE policy = 'mentions' FOR UPDATE"


def mention_events(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chorus_events WHERE topic LIKE '%.MentionNotified'"
        ).fetchone()
    return int(row[0]) if row else 0


def reactions_past(url: str, position: int) -> bool:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT policy, position FROM chorus_reactions").fetchall()
    names = {p.name for p in CONTEXTS.policies}
    marks = {r[0]: r[1] for r in rows}
    return names <= set(marks) and all(marks[n] >= position for n in names)


def everything(api: Api, user: User, min_position: int) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    before = None
    while True:
        params: dict[str, object] = {"limit": 200, "min_position": min_position}
        if before is not None:
            params["before"] = before
        page = api.ok(api.get("/api/notifications", user, **params))
        items += page["items"]
        before = page["next"]
        if before is None:
            return items


@pytest.mark.slow
@pytest.mark.faults
def test_kill_9_mid_burst_loses_and_duplicates_no_notification(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with new_database(postgres_server) as url, processes() as started:
        a = ChorusProcess(tmp_path / "a", url)
        start_all(started, a)
        api = Api(a.url)
        author = api.signup("author")
        readers = [api.signup("reader") for _ in range(3)]
        ws = api.acquaint(author, *readers)
        ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", author, {"name": "c"}), 201)["id"]
        mention_all = " ".join(f"@{r.username}" for r in readers)
        wait_until("the reactions to start", lambda: reactions_past(url, 1))

        with psycopg.connect(url) as gate:
            gate.execute(HOLD_MENTIONS)

            def send(i: int) -> str:
                body = {"text": f"{mention_all} burst {i}"}
                sent: str = api.ok(api.post(f"/api/channels/{ch}/messages", author, body), 201)[
                    "id"
                ]
                return sent

            with ThreadPoolExecutor(8) as pool:
                burst = list(pool.map(send, range(MESSAGES)))
            before = mention_events(url)
            gate.commit()  # the reactions go
            total = MESSAGES * len(readers)
            wait_until("some of the burst's notifications", lambda: mention_events(url) > before)
            a.kill9()
        at_kill = mention_events(url)
        # Killed in the middle: some stored, not all.
        assert before < at_kill < before + total, (before, at_kill, total)

        b = ChorusProcess(tmp_path / "b", url)
        start_all(started, b)
        api_b = Api(b.url)
        end = api_b.ok(api_b.post(f"/api/channels/{ch}/messages", author, {"text": "-"}), 201)[
            "position"
        ]
        wait_until("the reactions to pass the burst", lambda: reactions_past(url, end), 60)
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT max(notification_id) FROM chorus_events").fetchone()
        head = int(row[0]) if row else 0
        for reader in readers:
            items = everything(api_b, reader, head)
            mentions = [str(i["message_id"]) for i in items if i["kind"] == "mention"]
            assert sorted(mentions) == sorted(burst), reader.username  # each exactly once
            assert len({i["id"] for i in items}) == len(items)
        api.close()
        api_b.close()
