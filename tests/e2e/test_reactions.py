"""Reactions (issue 18): policies that turn events into commands, run with the read models'
guarantees, proven with the mention policy (a notification in the mentioned user's inbox).

Everything is real: PostgreSQL, `chorus serve` processes killed with SIGKILL, HTTP clients.
Where a reaction must be caught mid-run, the test holds the policy's tracking row (a lock
the runner's next transaction waits for, before it takes any other) and lets it through one
transaction at a time, as the projection fault tests do with the read models' rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from eventsourcing.utils import get_topic
from psycopg.rows import dict_row

from api.bootstrap import build_services
from api.cli import main as chorus_main
from api.contexts import CONTEXTS
from application.commands import Command
from application.notifications import MENTIONS
from application.reaction_runner import ReactionRunner
from application.reactions import Occurred, Policy
from application.webhooks import WEBHOOKS
from domain.messages import Message
from domain.notifications import inbox_id
from domain.operations import ReactionSkip
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.reaction_log import ReactionLog
from infrastructure.reaction_tracking import LOCK_CLASS
from tests.fixtures.chorus import (
    Api,
    Running,
    ServerThread,
    User,
    chorus_settings,
    running_chorus,
)
from tests.fixtures.polling import wait_until
from tests.fixtures.processes import CHORUS, ChorusProcess, processes, start_all
from tests.fixtures.servers import new_database

OPS_TOKEN = "ops-" + "r" * 40


# -- the world and what the log says ------------------------------------------------------------


@dataclass
class Chat:
    api: Api
    author: User
    readers: list[User]  # members of the workspace and its channel
    channel: str
    ws: str

    def say(self, text: str, user: User | None = None) -> dict[str, Any]:
        r = self.api.post(
            f"/api/channels/{self.channel}/messages", user or self.author, {"text": text}
        )
        body: dict[str, Any] = self.api.ok(r, 201)
        return body

    def mentioning(self, *users: User, text: str = "") -> str:
        return " ".join(f"@{u.username}" for u in users) + " " + text


def chat(api: Api, readers: int = 3) -> Chat:
    author = api.signup("author")
    others = [api.signup("reader") for _ in range(readers)]
    ws = api.acquaint(author, *others)
    channel = api.ok(api.post(f"/api/workspaces/{ws}/channels", author, {"name": "general"}), 201)
    return Chat(api, author, others, channel["id"], ws)


def sent(url: str) -> list[tuple[int, str, str, list[str]]]:
    """(position, message id, author, mentions) of every MessageSent, in log order."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT notification_id AS p, originator_id AS id,"
            " convert_from(state, 'UTF8')::jsonb AS s FROM chorus_events"
            " WHERE topic LIKE '%.MessageSent' ORDER BY notification_id"
        ).fetchall()
    # (An event stored without its fields, as one test writes, is none.)
    return [
        (r["p"], str(r["id"]), r["s"]["author_id"], r["s"]["mentions"])
        for r in rows
        if "mentions" in r["s"]
    ]


def notified(url: str) -> list[tuple[str, str, int]]:
    """(message id, inbox id, causing position) of every MentionNotified, sorted (so a
    duplicate shows as two equal entries)."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT originator_id AS inbox, convert_from(state, 'UTF8')::jsonb AS s"
            " FROM chorus_events WHERE topic LIKE '%.MentionNotified'"
        ).fetchall()
    return sorted((r["s"]["message_id"], str(r["inbox"]), r["s"]["position"]) for r in rows)


def expected(url: str, until: int | None = None) -> list[tuple[str, str, int]]:
    """One notification per sent message and user it mentions (its author aside)."""
    return sorted(
        (message, str(inbox_id(user)), position)
        for position, message, author, mentions in sent(url)
        if until is None or position <= until
        for user in mentions
        if user != author
    )


def mark(url: str, policy: str = "mentions") -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT position, done FROM chorus_reactions WHERE policy = %s", (policy,)
        ).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def reacted_past(url: str, position: int, policy: str = "mentions") -> None:
    """Waits until ``policy`` has handled every event up to ``position`` (a mark at
    ``position`` with ``done`` commands has done only those of that event: not passed)."""

    def passed() -> bool:
        at, done = mark(url, policy)
        return at > position or (at == position and done == 0)

    wait_until(f"{policy} to pass {position}", passed)


def stuck_at(url: str, policy: str = "mentions") -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT stuck_position FROM chorus_reactions WHERE policy = %s", (policy,)
        ).fetchone()
    return None if row is None else row[0]


def blocked_by(url: str, blocker_pid: int) -> int | None:
    """The backend waiting for a lock that ``blocker_pid`` holds, if any."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (blocker_pid,),
        ).fetchone()
    return None if row is None else int(row[0])


def backend_alive(url: str, pid: int) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        found = row.fetchone()
    return bool(found and found[0])


def lock_holders(url: str, policy: str = "mentions") -> list[int]:
    """The backends holding ``policy``'s advisory lock (each policy has its own: the
    webhooks reaction, issue 19, runs beside the mentions)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND granted"
            " AND objid::bigint = (hashtext(%s)::bigint & 4294967295)",
            (LOCK_CLASS, policy),
        ).fetchall()
    return sorted(int(r[0]) for r in rows)


# -- 1. exactly once, in the running server -----------------------------------------------------


def test_each_mention_notifies_each_mentioned_reader_exactly_once(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path) as chorus:
        c = chat(chorus.api)
        ann = c.readers[0]
        for i in range(40):
            c.say(c.mentioning(*c.readers[: 1 + i % 3], text=f"m{i}"))
        # Replies mention back; a self-mention and a repeated name notify nobody twice.
        c.say(c.mentioning(c.author, ann, ann, text="me"), ann)
        c.say(c.mentioning(c.author, text="self"))
        end = c.say("no one")["position"]
        reacted_past(chorus.database_url, end)

        want = expected(chorus.database_url)
        # Every message's mentions but its author: ann's reply notifies the author alone.
        assert len(want) == sum(1 + i % 3 for i in range(40)) + 1
        assert notified(chorus.database_url) == want
        # Nothing more comes: the mark is past every notification too.
        end = c.say("later")["position"]
        reacted_past(chorus.database_url, end)
        assert notified(chorus.database_url) == want
        # An event whose last command is done is passed (done 0), though it caused some:
        # a mark at the log's end then says nothing is pending.
        last = c.say(c.mentioning(ann, text="last"))["position"]
        wait_until(
            "the mention's notification", lambda: len(notified(chorus.database_url)) > len(want)
        )
        assert mark(chorus.database_url)[1] == 0
        assert mark(chorus.database_url)[0] >= last


# -- servers whose reactions the test chooses ---------------------------------------------------


@contextmanager
def server_with(
    postgres_server: EmbeddedPostgres, tmp_path: Path, policies: list[Policy], **settings_: Any
) -> Iterator[Running]:
    """An in-process server running ``policies`` as its reactions (none: the test runs
    them itself, when it says)."""
    with new_database(postgres_server) as url:
        settings = chorus_settings(tmp_path, ops_token=OPS_TOKEN, **settings_)
        thread = ServerThread(settings, url)
        thread.app.state.services = build_services(
            settings, url, catalogue=CONTEXTS, policies=policies
        )
        thread.start()
        api = Api(thread.url)
        try:
            yield Running(url, thread, api)
        finally:
            api.close()
            thread.stop()


def runner_of(chorus: Running, policies: list[Policy]) -> ReactionRunner:
    """A runner of ``policies`` in this thread, on the server's application and pools."""
    services = chorus.server.services
    return ReactionRunner(
        services.app, ReactionLog(services.read_pool, chorus.database_url), policies
    )


# -- 5. access is decided when the reaction runs --------------------------------------------------


def test_no_notification_for_a_mentioned_user_who_can_no_longer_read_the_channel(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with server_with(postgres_server, tmp_path, policies=[]) as chorus:
        api = chorus.api
        author, bob, cat, dan = (api.signup(n) for n in ("author", "bob", "cat", "dan"))
        ws = api.acquaint(author, bob, cat, dan)
        body = {"name": "secret", "private": True}
        ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", author, body), 201)["id"]
        for member in (bob, cat):
            api.ok(api.post(f"/api/channels/{ch}/members", author, {"user_id": member.user_id}))
        text = f"@{bob.username} @{cat.username} @{dan.username} look"
        msg = api.ok(api.post(f"/api/channels/{ch}/messages", author, {"text": text}), 201)
        # Bob could read the channel when the message was sent (his mention was kept): he
        # cannot any more when the reaction runs. Dan never could.
        assert sent(chorus.database_url)[-1][3] == [bob.user_id, cat.user_id]
        api.ok(api.delete(f"/api/channels/{ch}/members/{bob.user_id}", author))
        end = api.ok(api.post(f"/api/channels/{ch}/messages", author, {"text": "-"}), 201)

        runner_of(chorus, [MENTIONS]).catch_up()

        assert mark(chorus.database_url)[0] >= end["position"]
        assert notified(chorus.database_url) == [
            (msg["id"], str(inbox_id(cat.user_id)), msg["position"])
        ]


def test_a_rerun_of_events_already_reacted_to_appends_nothing(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The commands' keys come from the causing event: were the mark ever behind what was
    done (a mark lost, an instance racing), the commands replay their first answers."""
    with server_with(postgres_server, tmp_path, policies=[]) as chorus:
        c = chat(chorus.api)
        for i in range(5):
            c.say(c.mentioning(*c.readers, text=str(i)))
        end = c.say("-")["position"]
        runner_of(chorus, [MENTIONS]).catch_up()
        assert mark(chorus.database_url)[0] >= end
        want = expected(chorus.database_url)
        assert len(want) == 15
        assert notified(chorus.database_url) == want
        events = chorus.events()

        with psycopg.connect(chorus.database_url) as conn:
            conn.execute("UPDATE chorus_reactions SET position = 0, done = 0")
        rerun = runner_of(chorus, [MENTIONS])
        rerun.catch_up()

        assert rerun.commands_run == 15  # every command ran again ...
        assert chorus.events() == events  # ... and replayed
        assert notified(chorus.database_url) == want
        assert mark(chorus.database_url)[0] >= end


# -- a policy that starts with an event passes what comes before it --------------------------


def handled_after(url: str, policy: Policy, position: int) -> int:
    """How many events of the types ``policy`` handles the log holds after ``position``."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chorus_events WHERE notification_id > %s AND topic = ANY(%s)",
            (position, policy.topics),
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_webhooks_policy_runs_no_command_before_the_first_webhook_and_after_restarts(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """An instance without webhooks pays no command per event for the webhooks reaction;
    from the first registration on, every event it handles gets its command, also in a
    runner started after its mark passed that registration."""
    hooks_allowed = {"webhook_allow_private": True, "webhook_allow_http": True}
    with server_with(postgres_server, tmp_path, [], **hooks_allowed) as chorus:
        c = chat(chorus.api)
        for i in range(5):
            c.say(str(i))
        end = c.say("-")["position"]
        assert handled_after(chorus.database_url, WEBHOOKS, 0) > 6
        before = runner_of(chorus, [WEBHOOKS])
        before.catch_up()
        before.stop()  # lets the next runner take the policy's lock
        assert before.commands_run == 0
        assert mark(chorus.database_url, "webhooks")[0] >= end

        body = {"url": "http://127.0.0.1:9/hook", "event_types": ["MessageSent"]}
        hooks = chorus.api.post(f"/api/workspaces/{c.ws}/webhooks", c.author, body)
        registered = chorus.api.ok(hooks, 201)
        with psycopg.connect(chorus.database_url) as conn:
            found = conn.execute(
                "SELECT min(notification_id) FROM chorus_events WHERE topic = ANY(%s)",
                (WEBHOOKS.start_topics,),
            ).fetchone()
        assert found is not None and found[0] > end
        start = int(found[0])
        for i in range(3):
            c.say(f"after {i}")
        after = runner_of(chorus, [WEBHOOKS])
        after.catch_up()
        after.stop()
        assert after.commands_run == handled_after(chorus.database_url, WEBHOOKS, start) >= 3
        deliveries = chorus.api.get(
            f"/api/workspaces/{c.ws}/webhooks/{registered['id']}/deliveries", c.author
        )
        assert len(chorus.api.ok(deliveries)["items"]) == 3

        # A runner of a fresh process: its mark is past the registration, which it finds.
        passed = mark(chorus.database_url, "webhooks")[0]
        c.say("later")
        restarted = runner_of(chorus, [WEBHOOKS])
        restarted.catch_up()
        restarted.stop()
        assert restarted.commands_run == handled_after(chorus.database_url, WEBHOOKS, passed) >= 1


# -- 4. a failing policy is held alone ------------------------------------------------------------


def fragile(occurred: Occurred) -> list[Command]:
    """Fails on one message, as a policy with a bug would; passes the others over."""
    if occurred.event.text == "boom":
        raise ValueError("cannot take this one")
    return []


FRAGILE = Policy("fragile", (getattr(Message, "MessageSent"),), fragile)  # noqa: B009


def test_a_policy_that_fails_on_an_event_is_stuck_alone_and_ready_says_so(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    # The fragile policy runs first: its failure must not keep the mentions from running.
    with server_with(postgres_server, tmp_path, policies=[FRAGILE, MENTIONS]) as chorus:
        c = chat(chorus.api)
        boom = c.say("boom")
        for i in range(5):
            c.say(c.mentioning(*c.readers, text=str(i)))
        end = c.say("-")["position"]
        url = chorus.database_url
        reacted_past(url, end)  # the mentions went on

        assert notified(url) == expected(url)
        assert len(expected(url)) == 15
        assert mark(url, "fragile") == (boom["position"] - 1, 0)
        # The read models went on too: the last message is listed.
        listed = c.api.ok(c.api.get(f"/api/channels/{c.channel}/messages", c.author))
        assert "-" in [m["text"] for m in listed["items"]]

        with httpx.Client(base_url=chorus.server.url) as http:
            public = http.get("/ready")
            ops = http.get("/ready", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
        assert public.status_code == 503, public.text
        assert public.json()["status"] == "degraded"
        assert public.json()["stuck_reactions"] == ["fragile"]
        assert public.json()["stuck"] == []
        assert "reactions" not in public.json() or public.json()["reactions"] is None
        fragile_state = ops.json()["reactions"]["fragile"]
        assert fragile_state["stuck_position"] == boom["position"]
        assert "ValueError: cannot take this one" in fragile_state["error"]
        assert fragile_state["lag"] > 0
        mentions_state = ops.json()["reactions"]["mentions"]
        assert mentions_state["stuck_position"] is None
        assert mentions_state["position"] >= end

        # Tried again (by a runner of its own, at once), it stays where it is.
        events_before_skip = chorus.events()
        reactions = chorus.server.services.reactions
        reactions.stop()
        again = runner_of(chorus, [FRAGILE])
        again.catch_up()
        assert mark(url, "fragile") == (boom["position"] - 1, 0)
        held = again.status()["fragile"].stuck
        assert held is not None and held.position == boom["position"]
        # The operators' command line says so too (exit status 1 while one is stuck).
        out = subprocess.run(
            [CHORUS, "reactions", "status"],
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out.stderr
        held_line = rf"^fragile +position {boom['position'] - 1}  stuck at {boom['position']} "
        assert re.search(held_line, out.stdout, re.M), out.stdout
        assert "ValueError: cannot take this one" in out.stdout
        assert re.search(r"^mentions +position \d+  behind by \d+$", out.stdout, re.M), out.stdout

        # The operator skips it, for this policy only, at the one position it is stuck at
        # (any other is refused, and so is a policy that is not stuck); recorded in the log.
        def chorus_cli(*args: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "DATABASE_URL": url}
            return subprocess.run(
                [CHORUS, *args], env=env, capture_output=True, text=True, timeout=60
            )

        why = ["--reason", "a bug in the fragile policy", "--by", "ops"]
        elsewhere = chorus_cli("reactions", "skip", "fragile", "--position", str(end), *why)
        assert elsewhere.returncode == 2 and "only that event" in elsewhere.stderr
        unstuck = chorus_cli("reactions", "skip", "mentions", "--position", str(end), *why)
        assert unstuck.returncode == 2 and "not stuck" in unstuck.stderr
        assert chorus.events() == events_before_skip
        skipped = chorus_cli(
            "reactions", "skip", "fragile", "--position", str(boom["position"]), *why
        )
        assert skipped.returncode == 0, skipped.stderr
        again.catch_up()
        assert again.status()["fragile"].stuck is None
        assert mark(url, "fragile")[0] > boom["position"]
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT convert_from(state, 'UTF8')::jsonb FROM chorus_events WHERE topic = %s",
                (get_topic(getattr(ReactionSkip, "ReactionEventSkipped")),),  # noqa: B009
            ).fetchone()
        assert row is not None
        recorded = row[0]
        assert (recorded["policy"], recorded["position"]) == ("fragile", boom["position"])
        assert recorded["reason"] == "a bug in the fragile policy"
        assert "ValueError: cannot take this one" in recorded["error"]
        again.stop()


# -- 2. kill -9 in the middle of a run ------------------------------------------------------------

_HOLD_MARK = "SELECT 1 FROM chorus_reactions WHERE policy = 'mentions' FOR UPDATE"


@pytest.mark.slow
@pytest.mark.faults
def test_kill_9_between_two_commands_of_one_event_resumes_exactly_once(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Without group commit each command commits alone, with its mark move."""
    with new_database(postgres_server) as url, processes() as started:
        a = ChorusProcess(tmp_path / "a", url, env={"CHORUS_GROUP_COMMIT": "false"})
        start_all(started, a)
        c = chat(Api(a.url))
        for i in range(10):
            c.say(c.mentioning(*c.readers, text=f"a{i}"))
        reacted_past(url, c.say("-")["position"])
        assert len(notified(url)) == 30

        with psycopg.connect(url) as gate, psycopg.connect(url) as table:
            # The runner's next transaction waits for the mark's row, before it takes
            # anything else.
            gate.execute(_HOLD_MARK)
            first = c.say(c.mentioning(*c.readers, text="b0"))
            for i in range(1, 10):
                c.say(c.mentioning(*c.readers, text=f"b{i}"))
            end = c.say("-")["position"]
            runner = wait_until(
                "the runner to wait", lambda: blocked_by(url, gate.info.backend_pid)
            )
            # One transaction through, then hold the mark again: the table is held so that
            # the transaction, once it has the row, waits there until the gate queues again.
            table.execute("LOCK TABLE chorus_events IN SHARE MODE")
            gate.commit()
            wait_until(
                "the runner to hold the mark", lambda: blocked_by(url, table.info.backend_pid)
            )
            again = threading.Thread(target=gate.execute, args=(_HOLD_MARK,))
            again.start()
            wait_until("the gate to queue", lambda: blocked_by(url, runner) is not None)
            table.commit()
            again.join(timeout=30)
            runner = wait_until(
                "the runner's next command", lambda: blocked_by(url, gate.info.backend_pid)
            )
            # Mid-event: the first of its three commands is done, and the mark says so.
            assert mark(url) == (first["position"], 1)
            a.kill9()
            gate.rollback()
        # The dead process's last transaction gets the row, then its client is gone: undone.
        wait_until("the orphaned transaction to end", lambda: not backend_alive(url, runner))
        assert mark(url) == (first["position"], 1)
        done = notified(url)
        assert len(done) == 31 and len(set(done)) == 31
        assert set(done) <= set(expected(url))

        a2 = ChorusProcess(tmp_path / "a2", url, env={"CHORUS_GROUP_COMMIT": "false"})
        start_all(started, a2)
        reacted_past(url, end)
        assert notified(url) == expected(url)
        assert len(expected(url)) == 60


def replayed_keys(url: str, policy: str = "mentions") -> int:
    """How many reaction commands of ``policy`` have an idempotency record."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chorus_commands WHERE scope = 'reactions' AND key LIKE %s",
            (f"{policy}:%",),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
@pytest.mark.faults
def test_kill_9_after_a_batch_committed_and_before_its_mark_moved_resumes_exactly_once(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """With group commit (the default) a batch's commands commit together and the mark moves
    after them: killed in between, the next process runs them again and each replays its
    first answer (the key comes from the event), so nothing is told twice."""
    with new_database(postgres_server) as url, processes() as started:
        a = ChorusProcess(tmp_path / "a", url)
        start_all(started, a)
        c = chat(Api(a.url))
        reacted_past(url, c.say("-")["position"])
        with psycopg.connect(url) as gate:
            gate.execute(_HOLD_MARK)  # the runner's mark move waits for this row
            first = c.say(c.mentioning(*c.readers, text="b0"))
            runner = wait_until(
                "the runner to wait to move its mark",
                lambda: blocked_by(url, gate.info.backend_pid),
            )
            # The first event's three commands committed; the mark is still before it.
            assert len(notified(url)) == 3
            assert mark(url)[0] < first["position"]
            for i in range(1, 10):
                c.say(c.mentioning(*c.readers, text=f"b{i}"))
            end = c.say("-")["position"]
            a.kill9()
            gate.rollback()
        # The dead process's mark move (one statement) may have gone through once the row
        # was free: set back to where it stood, as if the process had died just before it.
        wait_until("the orphaned statement to end", lambda: not backend_alive(url, runner))
        with psycopg.connect(url) as conn:
            conn.execute(
                "UPDATE chorus_reactions SET position = %s, done = 0 WHERE policy = 'mentions'",
                (first["position"] - 1,),
            )
        assert replayed_keys(url) == 3

        a2 = ChorusProcess(tmp_path / "a2", url)
        start_all(started, a2)
        reacted_past(url, end)
        assert notified(url) == expected(url)
        assert len(expected(url)) == 30
        assert replayed_keys(url) == 30  # the first three replayed, not recorded again


# -- 3. several instances -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.faults
def test_instances_take_turns_on_a_policy_and_each_mention_notifies_once(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with new_database(postgres_server) as url, processes() as started:
        a = ChorusProcess(tmp_path / "a", url)
        start_all(started, a)
        (first_holder,) = wait_until("a to run the mentions", lambda: lock_holders(url))
        b = ChorusProcess(tmp_path / "b", url)
        start_all(started, b)
        via_a = chat(Api(a.url))
        via_b = Chat(Api(b.url), via_a.author, via_a.readers, via_a.channel, via_a.ws)
        for i in range(20):
            (via_a if i % 2 else via_b).say(via_a.mentioning(*via_a.readers, text=str(i)))
        reacted_past(url, via_b.say("-")["position"])
        assert notified(url) == expected(url)
        # Both run reactions; one holds the policy.
        assert lock_holders(url) == [first_holder]

        # The holder dies in the middle of a run; the other takes over.
        with psycopg.connect(url) as gate:
            gate.execute(_HOLD_MARK)
            for i in range(10):
                via_b.say(via_a.mentioning(*via_a.readers, text=f"b{i}"))
            end = via_b.say("-")["position"]
            wait_until("a's runner to wait", lambda: blocked_by(url, gate.info.backend_pid))
            a.kill9()
            gate.rollback()
        reacted_past(url, end)
        assert notified(url) == expected(url)
        assert len(expected(url)) == 90
        (holder,) = lock_holders(url)
        assert holder != first_holder


# -- an event nobody can read ---------------------------------------------------------------------


def store_unreadable(url: str, topic: str) -> int:
    """Appends an event of ``topic`` with none of its fields, as a bug at the boundary (or
    an older release) could have stored it, under the store's lock and with its NOTIFY."""
    state = {"timestamp": "2026-01-01T00:00:00+00:00", "originator_topic": topic}
    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE chorus_events IN EXCLUSIVE MODE")
        row = conn.execute(
            "INSERT INTO chorus_events (originator_id, originator_version, topic, state)"
            " VALUES (gen_random_uuid(), 1, %s, %s) RETURNING notification_id",
            (topic, json.dumps(state).encode()),
        ).fetchone()
        conn.execute("SELECT pg_notify('chorus_events', '')")
    assert row is not None
    return int(row[0])


def test_an_event_nobody_can_read_holds_the_policy_until_an_operator_skips_it(
    postgres_server: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with server_with(postgres_server, tmp_path, policies=[MENTIONS]) as chorus:
        url, c = chorus.database_url, chat(chorus.api)
        c.say(c.mentioning(*c.readers))
        bad = store_unreadable(url, get_topic(getattr(Message, "MessageSent")))  # noqa: B009
        after = c.say(c.mentioning(*c.readers))["position"]

        def stuck() -> list[str]:
            with psycopg.connect(url) as conn:
                return [
                    str(r[0])
                    for r in conn.execute(
                        "SELECT projection FROM rm_tracking WHERE stuck_position = %s", (bad,)
                    )
                ]

        held = wait_until("a read model to stop at the event", stuck)
        wait_until("the mentions to stop at it", lambda: stuck_at(url) == bad)
        assert mark(url)[0] == bad - 1
        ready = httpx.get(f"{chorus.server.url}/ready")
        assert ready.status_code == 503 and ready.json()["stuck_reactions"] == ["mentions"]
        assert len(notified(url)) == 3  # the later message waits behind it

        # The operator skips it for the read models (recorded in the log): the reactions
        # pass it too, and catch up.
        monkeypatch.setenv("DATABASE_URL", url)
        for name in held:
            args = ["projections", "skip", name, "--position", str(bad), "--reason", "test"]
            assert chorus_main(args) == 0
        reacted_past(url, after)
        assert notified(url) == expected(url)
        assert len(notified(url)) == 6
        ready = httpx.get(f"{chorus.server.url}/ready")
        assert ready.status_code == 200, ready.text
