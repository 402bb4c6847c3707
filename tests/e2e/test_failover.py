"""Real `chorus serve` processes on one database: one is killed with SIGKILL mid-burst.

Clients retry what got no answer on the survivor with the same Idempotency-Key; nothing that
was acknowledged may be lost, nothing may be stored twice, and the read models of a restarted
instance must end up exactly where the event log says they should.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.failover import (
    REQUEST_TIMEOUT,
    Setup,
    command_records,
    sent_messages,
    set_up_channel,
    wait_caught_up,
)
from tests.fixtures.processes import (
    START_TIMEOUT,
    ChorusProcess,
    processes,
    start_all,
)
from tests.fixtures.relays import TcpRelay
from tests.fixtures.servers import HOST, new_database

# -- processes --------------------------------------------------------------------------------


# -- HTTP set-up ------------------------------------------------------------------------------


def timeline_ids(base_url: str, setup: Setup, min_position: int) -> list[str]:
    """Every message id of the channel's timeline, page by page, newest first."""
    ids: list[str] = []
    before: str | None = None
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT) as http:
        for _ in range(1000):
            params: dict[str, Any] = {"limit": 200, "min_position": min_position}
            if before is not None:
                params["before"] = before
            r = http.get(
                f"/api/channels/{setup.channel}/messages", params=params, headers=setup.headers
            )
            assert r.status_code == 200, r.text
            page = r.json()
            ids.extend(item["id"] for item in page["items"])
            before = page["next"]
            if before is None:
                return ids
    raise AssertionError("the timeline did not end")


# -- the database, directly -------------------------------------------------------------------


# -- the burst client -------------------------------------------------------------------------


class LostResponseProxy(TcpRelay):
    """A TCP relay in front of an instance. Once ``swallow`` is set it drops whatever the
    instance answers, so a request it has committed gets no response: what a client sees
    when the instance dies between its commit and its reply. The client's connection is
    closed when the instance's is (here: when it is killed)."""

    def __init__(self, upstream_port: int) -> None:
        self.swallow = threading.Event()
        self.swallowed = 0
        self.swallowed_some = threading.Event()  # an answer was dropped
        super().__init__(upstream_port, "proxy")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def passes(self, data: bytes, answers: bool) -> bytes:
        if answers and self.swallow.is_set():
            self.swallowed += len(data)
            self.swallowed_some.set()
            return b""
        return data


@dataclass
class Outcome:
    key: str
    text: str
    server: str = ""  # "A" or "B": who answered; "" if never sent
    status: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    failed_on_a: str | None = None  # the transport error that made us retry on B


class Sender:
    """Posts messages, each with its own Idempotency-Key, to A; a key that gets a transport
    error (connection refused or reset, no response, timeout) is retried with the same key
    and body on B, and the rest of its messages go to B as well."""

    def __init__(
        self, name: str, setup: Setup, a_url: str, b_url: str, n: int, on_b: int | None = None
    ) -> None:
        self.setup = setup
        self.on_b = on_b  # stop after this many messages on B (None: send all n)
        self.a_url, self.b_url = a_url, b_url
        run = uuid.uuid4().hex[:8]
        self.outcomes = [
            Outcome(f"{name}-{run}-{i}", f"{name} {run} message {i}") for i in range(n)
        ]
        self.go = threading.Event()  # set it to let the sender begin
        self.answered_by_a = threading.Event()  # A acknowledged one of its messages
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def before(self, index: int) -> None:
        """Called before message ``index`` is sent."""

    def _post(self, http: httpx.Client, outcome: Outcome) -> httpx.Response:
        return http.post(
            f"/api/channels/{self.setup.channel}/messages",
            json={"text": outcome.text},
            headers={**self.setup.headers, "Idempotency-Key": outcome.key},
        )

    def _run(self) -> None:
        try:
            with (
                httpx.Client(base_url=self.a_url, timeout=REQUEST_TIMEOUT) as a,
                httpx.Client(base_url=self.b_url, timeout=REQUEST_TIMEOUT) as b,
            ):
                assert self.go.wait(START_TIMEOUT), f"{self.thread.name} was never let go"
                on_a, sent_to_b = True, 0
                for index, outcome in enumerate(self.outcomes):
                    if self.stop.is_set() or sent_to_b == self.on_b:
                        return
                    self.before(index)
                    response: httpx.Response | None = None
                    if on_a:
                        try:
                            response = self._post(a, outcome)
                            outcome.server = "A"
                        except httpx.TransportError as exc:
                            outcome.failed_on_a = type(exc).__name__
                            on_a = False
                    if response is None:
                        response = self._post(b, outcome)
                        outcome.server = "B"
                        sent_to_b += 1
                    outcome.status = response.status_code
                    outcome.body = response.json()
                    if outcome.server == "A" and outcome.status == 201:
                        self.answered_by_a.set()
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def halt(self, timeout: float = REQUEST_TIMEOUT * 2) -> None:
        """Stops it early (clean-up after a failure) and waits for its thread, bounded."""
        self.stop.set()
        self.go.set()
        self.thread.join(timeout)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.thread.name} did not finish"
        if self.error is not None:
            raise self.error

    @property
    def sent(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.server]


class Burst(Sender):
    """Through the proxy: after ``kill_after`` acknowledged messages, the next one's answer
    is swallowed and ``mid_burst`` tells the test to kill A. Shortly before, it lets the
    ``bystander`` begin, and it waits for A to have answered the bystander once."""

    def __init__(
        self,
        setup: Setup,
        proxy: LostResponseProxy,
        b_url: str,
        n: int,
        kill_after: int,
        bystander: Sender,
    ) -> None:
        super().__init__("burst", setup, proxy.url, b_url, n)
        self.proxy, self.kill_after, self.bystander = proxy, kill_after, bystander
        self.mid_burst = threading.Event()
        self.go.set()

    def before(self, index: int) -> None:
        if index == self.kill_after - 10:
            self.bystander.go.set()
        if index == self.kill_after:
            assert self.bystander.answered_by_a.wait(START_TIMEOUT), "A never answered"
            acked = sum(o.status == 201 for o in self.outcomes[:index])
            assert acked == self.kill_after, self.outcomes[:index]
            self.proxy.swallow.set()
            self.mid_burst.set()

    def _run(self) -> None:
        try:
            super()._run()
        finally:
            self.mid_burst.set()  # never leave the test waiting


def wait_for_command(database_url: str, scope: str, key: str) -> None:
    """Bounded polling of the idempotency table until ``key`` was committed."""
    deadline = time.monotonic() + START_TIMEOUT
    while key not in command_records(database_url, scope):
        assert time.monotonic() < deadline, f"{key} was never committed"
        time.sleep(0.005)


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("group_commit", [False, True], ids=["one-commit-each", "group-commit"])
def test_kill_9_mid_burst_loses_no_acknowledged_write(
    postgres_server: EmbeddedPostgres, tmp_path: Path, group_commit: bool
) -> None:
    n, kill_after = 300, 100
    env = {"CHORUS_GROUP_COMMIT": "true" if group_commit else "false"}
    with new_database(postgres_server) as url, processes() as started, ExitStack() as stack:
        a = ChorusProcess(tmp_path / "a", url, env=env)
        b = ChorusProcess(tmp_path / "b", url, env=env)
        start_all(started, a, b)
        setup = set_up_channel(a.url)

        # The burst reaches A through a proxy, so one committed write's answer is lost for
        # certain; a bystander talks to A directly and is cut off wherever the kill lands.
        proxy = LostResponseProxy(a.port)
        stack.callback(proxy.close)
        bystander = Sender("bystander", setup, a.url, b.url, 2000, on_b=20)
        burst = Burst(setup, proxy, b.url, n, kill_after, bystander)
        for sender in (bystander, burst):
            stack.callback(sender.halt)
            sender.start()
        # The client's progress, not a timer, decides when A dies: once the message after
        # the 100th acknowledged one is committed by A, and its answer withheld.
        assert burst.mid_burst.wait(START_TIMEOUT), "the burst made no progress"
        assert burst.error is None, burst.error
        held = burst.outcomes[kill_after]
        wait_for_command(url, setup.user_id, held.key)
        # Committed is not yet answered: A dies once its answer was sent, and dropped.
        assert proxy.swallowed_some.wait(START_TIMEOUT), "A never answered the held message"
        killed_at = datetime.now(UTC)
        a.kill9()
        burst.join(timeout=60)
        bystander.join(timeout=60)

        outcomes = burst.sent + bystander.sent
        logs = f"A:\n{a.log_tail()}\nB:\n{b.log_tail()}"
        assert a.proc is not None and a.proc.returncode == -signal.SIGKILL
        # Every request was answered in the end, by A before the kill or by B after it.
        unexpected = [(o.key, o.server, o.status, o.body) for o in outcomes if o.status != 201]
        assert unexpected == [], logs
        assert len(burst.sent) == n
        for sender in (burst, bystander):
            # Each client moved to B exactly once, with the key that got no answer.
            on_a = [o for o in sender.sent if o.server == "A"]
            retried = [o for o in sender.sent if o.failed_on_a is not None]
            assert len(retried) == 1, [(o.key, o.failed_on_a) for o in retried]
            assert on_a and sender.sent[len(on_a)] is retried[0]
            assert all(o.server == "B" for o in sender.sent[len(on_a) :])
        assert held.failed_on_a is not None and held.server == "B"

        stored = sent_messages(url, setup.channel)
        by_key = {o.key: o for o in outcomes}
        per_key = Counter(row["command_id"] for row in stored)
        per_text = Counter(row["text"] for row in stored)
        # Exactly what was sent, each acknowledged key's message once, no text twice.
        assert set(per_key) == set(by_key)
        assert [k for k, c in per_key.items() if c != 1] == []
        assert [t for t, c in per_text.items() if c != 1] == []
        assert len(stored) == len(outcomes)
        for row in stored:
            outcome = by_key[row["command_id"]]
            assert row["text"] == outcome.text
            assert (row["id"], row["position"]) == (outcome.body["id"], outcome.body["position"])

        # The idempotency records agree with the events and with what each client was told.
        records = command_records(url, setup.user_id)
        for row in stored:
            record = records[row["command_id"]]
            assert record["status"] == 201
            assert record["result"]["id"] == row["id"]
            assert record["position"] == record["result"]["position"] == row["position"]
        # The held message was committed by A (its transaction began before the kill), and
        # B's answer to the retry is A's message, not a second one.
        assert records[held.key]["recorded_at"] < killed_at
        assert held.body == records[held.key]["result"]
        assert proxy.swallowed > 0
        for o in (o for o in bystander.sent if o.failed_on_a is not None):
            assert o.body == records[o.key]["result"]
            # Shown with -s (and on failure): which case the kill produced this time.
            by_a = records[o.key]["recorded_at"] < killed_at
            print(f"bystander retried {o.key} after {o.failed_on_a}; committed by A: {by_a}")

        # B's timeline lists each message once.
        last = max(o.body["position"] for o in outcomes)
        ids = timeline_ids(b.url, setup, last)
        assert len(ids) == len(set(ids)) == len(stored)
        assert set(ids) == {row["id"] for row in stored}


# -- projections after a restart --------------------------------------------------------------


class SteadyWriter:
    """Posts messages to one instance until told to stop; every third replies to a root."""

    def __init__(self, setup: Setup, url: str, root: str, limit: int) -> None:
        self.setup, self.url, self.root, self.limit = setup, url, root, limit
        self.run = uuid.uuid4().hex[:8]
        self.acked: list[dict[str, Any]] = []
        self.replies = 0
        self.failures: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.progress = threading.Condition()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="steady-writer", daemon=True)

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT) as http:
                for i in range(self.limit):
                    if self.stop.is_set():
                        return
                    body: dict[str, Any] = {"text": f"steady {self.run} {i}"}
                    if i % 3 == 0:
                        body["reply_to"] = self.root
                    r = http.post(
                        f"/api/channels/{self.setup.channel}/messages",
                        json=body,
                        headers={**self.setup.headers, "Idempotency-Key": f"s-{self.run}-{i}"},
                    )
                    if r.status_code != 201:
                        self.failures.append((r.status_code, r.text))
                        continue
                    with self.progress:
                        self.acked.append(r.json())
                        self.replies += "reply_to" in body
                        self.progress.notify_all()
        except BaseException as exc:
            self.error = exc
        finally:
            with self.progress:
                self.stop.set()
                self.progress.notify_all()

    def wait_for(self, count: int, timeout: float = START_TIMEOUT) -> None:
        """Until ``count`` writes were acknowledged (bounded)."""
        deadline = time.monotonic() + timeout
        with self.progress:
            while len(self.acked) < count:
                assert not self.stop.is_set(), (self.error, self.failures[:3])
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"only {len(self.acked)} of {count} writes acknowledged"
                self.progress.wait(remaining)


@pytest.mark.faults
@pytest.mark.slow
def test_a_restarted_instance_resumes_projections_exactly_once(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with new_database(postgres_server) as url, processes() as started:
        a = ChorusProcess(tmp_path / "a", url)
        b = ChorusProcess(tmp_path / "b", url)
        start_all(started, a, b)
        setup = set_up_channel(b.url)
        with httpx.Client(base_url=b.url, timeout=REQUEST_TIMEOUT) as http:
            r = http.post(
                f"/api/channels/{setup.channel}/messages",
                json={"text": "root"},
                headers=setup.headers,
            )
            assert r.status_code == 201, r.text
            root = r.json()["id"]

        writer = SteadyWriter(setup, b.url, root, limit=2000)
        writer.thread.start()
        try:
            writer.wait_for(60)
            a.kill9()  # both instances were projecting; A may die inside a batch
            acked_at_kill = len(writer.acked)
            a_again = ChorusProcess(tmp_path / "a-restarted", url)
            start_all(started, a_again)
            # Writes keep flowing through B while the restarted A projects again.
            writer.wait_for(acked_at_kill + 60)
        finally:
            writer.stop.set()
            writer.thread.join(REQUEST_TIMEOUT * 2)
        assert not writer.thread.is_alive()
        assert writer.error is None, writer.error
        assert writer.failures == [], f"{writer.failures[:3]}\nB:\n{b.log_tail()}"
        assert a.proc is not None and a.proc.returncode == -signal.SIGKILL

        last = wait_caught_up([a_again, b], url)
        stored = sent_messages(url, setup.channel)
        assert len(stored) == 1 + len(writer.acked)
        assert {row["id"] for row in stored} == {root} | {m["id"] for m in writer.acked}
        with psycopg.connect(url, row_factory=dict_row) as conn:
            models = conn.execute(
                "SELECT message_id::text AS id, seq, reply_count FROM rm_messages"
                " WHERE channel_id = %s",
                (setup.channel,),
            ).fetchall()
            count = conn.execute(
                "SELECT count(*) AS n FROM rm_messages WHERE channel_id = %s", (setup.channel,)
            ).fetchone()
            tracking = conn.execute("SELECT projection, position FROM rm_tracking").fetchall()
        # Each MessageSent applied exactly once: one row per event, at its position, and the
        # root's reply counter (not idempotent) counted each reply once.
        assert count is not None and count["n"] == len(stored)
        assert sorted((m["id"], m["seq"]) for m in models) == sorted(
            (row["id"], row["position"]) for row in stored
        )
        replies = sum(1 for row in stored if row["reply_to"] == root)
        assert replies == writer.replies
        assert next(m["reply_count"] for m in models if m["id"] == root) == replies
        assert tracking and all(t["position"] <= last for t in tracking), tracking
        assert min(t["position"] for t in tracking) == last, tracking

        # The restarted instance serves the same timeline, each message once.
        ids = timeline_ids(a_again.url, setup, last)
        assert sorted(ids) == sorted(row["id"] for row in stored)
