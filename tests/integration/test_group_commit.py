"""Group commit (application/group_commit.py, on by default): concurrent commands decided in
order by one writer and committed together, with the single-command path's semantics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any
from uuid import UUID

import psycopg
import pytest

from api.contexts import CONTEXTS
from application.chorus import Chorus, CommandResult, IdempotencyKeyReused
from application.commands import (
    CreateChannel,
    CreateWorkspace,
    JoinWorkspace,
    KickMember,
    LeaveWorkspace,
    RegisterUser,
    SendMessage,
)
from application.group_commit import GroupCommitter
from domain.base import Cause
from domain.errors import DomainError
from infrastructure.chain import verify
from infrastructure.eventstore import EVENTS_TABLE, eventsourcing_env
from infrastructure.settings import Settings
from tests.fixtures.chorus import CheapPasswords


@pytest.fixture
def committer(app: Chorus) -> Iterator[GroupCommitter]:
    yield app.enable_group_commit()


def _user(app: Chorus, name: str) -> str:
    result = app.execute_now(
        RegisterUser(username=f"user_{name}", password="plum-Orbit-kettle-42"), Cause(None)
    )
    return str(result.body["user_id"])


def _room(app: Chorus, owner: str, *members: str) -> tuple[str, str]:
    """A public workspace with ``members`` joined, and a public channel in it."""
    ws = str(
        app.execute_now(CreateWorkspace(name="W", visibility="public"), Cause(owner)).body["id"]
    )
    for member in members:
        app.execute_now(JoinWorkspace(workspace_id=ws), Cause(member))
    channel = str(
        app.execute_now(CreateChannel(workspace_id=ws, name="general"), Cause(owner)).body["id"]
    )
    return ws, channel


def _rows(url: str, after: int = 0) -> list[tuple[int, int, str, str]]:
    """(position, xmin, topic's class name, originator id) of events after ``after``."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT notification_id, xmin::text::bigint, topic, originator_id::text"
            f" FROM {EVENTS_TABLE} WHERE notification_id > %s ORDER BY notification_id",
            (after,),
        ).fetchall()
    return [(int(p), int(x), str(t).rsplit(".", 1)[-1], str(o)) for p, x, t, o in rows]


def _head(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}"
        ).fetchone()
    return int(row[0]) if row else 0


def _held(committer: GroupCommitter, calls: list[tuple[Any, Cause]]) -> list[Future[CommandResult]]:
    """Submits ``calls`` while the writer is held, so they are decided as one batch."""
    with committer.hold():
        return [committer.submit(command, cause) for command, cause in calls]


def _outcome(future: Future[CommandResult]) -> CommandResult | BaseException:
    error = future.exception(timeout=60)
    return error if error is not None else future.result()


def test_the_setting_is_on_by_default_and_read_from_the_environment() -> None:
    assert Settings().group_commit is True
    assert Settings.from_env({}).group_commit is True
    assert Settings.from_env({"CHORUS_GROUP_COMMIT": "false"}).group_commit is False


def test_concurrent_commands_share_transactions(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    """16 threads send 8 messages each through ``Chorus.execute``: every command is
    acknowledged with its own position, each event is stored once, several commands share
    a transaction, a transaction's positions are contiguous, and each thread's positions
    rise in the order its commands were acknowledged."""
    owner = _user(app, "owner")
    writers = [_user(app, f"writer{i}") for i in range(16)]
    _, channel = _room(app, owner, *writers)
    before = _head(store_url)
    barrier = threading.Barrier(len(writers) + 1)
    positions: dict[str, list[int]] = {w: [] for w in writers}
    errors: list[BaseException] = []

    def write(writer: str) -> None:
        try:
            # The first command of each thread is queued while the writer is held.
            first = committer.submit(SendMessage(channel_id=channel, text="m0"), Cause(writer))
            barrier.wait()
            positions[writer].append(first.result(timeout=60).position or 0)
            for n in range(1, 8):
                result = app.execute(SendMessage(channel_id=channel, text=f"m{n}"), Cause(writer))
                positions[writer].append(result.position or 0)
        except BaseException as error:
            errors.append(error)
            raise

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    with committer.hold():
        for t in threads:
            t.start()
        barrier.wait()
    for t in threads:
        t.join(60)
    assert not errors
    rows = _rows(store_url, before)
    assert [r[2] for r in rows] == ["MessageSent"] * 128
    every = sorted(p for ps in positions.values() for p in ps)
    assert every == [r[0] for r in rows]  # one event per acknowledged command, once each
    for ps in positions.values():
        assert ps == sorted(ps)  # acknowledged in position order
    by_transaction: dict[int, list[int]] = {}
    for position, xmin, _, _ in rows:
        by_transaction.setdefault(xmin, []).append(position)
    assert len(by_transaction) < 128  # commands shared transactions
    assert max(len(ps) for ps in by_transaction.values()) >= 16  # the held batch
    for ps in by_transaction.values():
        assert ps == list(range(ps[0], ps[0] + len(ps)))  # contiguous
    # Transactions committed in position order: no later transaction holds an earlier one.
    firsts = [ps[0] for ps in by_transaction.values()]
    assert firsts == sorted(firsts)
    assert committer.stats.largest_batch >= 16
    with psycopg.connect(store_url) as conn:
        assert verify(conn, EVENTS_TABLE).ok  # the hash chain covers every batched event


def test_a_refused_command_in_a_batch_leaves_no_trace(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    owner, member, outsider = _user(app, "o"), _user(app, "m"), _user(app, "x")
    _, channel = _room(app, owner, member)
    before = _head(store_url)
    futures = _held(
        committer,
        [
            (SendMessage(channel_id=channel, text="first"), Cause(member)),
            (SendMessage(channel_id=channel, text="intruder"), Cause(outsider)),
            (SendMessage(channel_id=channel, text=""), Cause(member)),  # invalid text
            (SendMessage(channel_id=channel, text="third"), Cause(owner)),
        ],
    )
    first, refused, invalid, third = (_outcome(f) for f in futures)
    assert isinstance(refused, DomainError) and isinstance(invalid, DomainError)
    assert isinstance(first, CommandResult) and isinstance(third, CommandResult)
    rows = _rows(store_url, before)
    assert [r[0] for r in rows] == [first.position, third.position]
    assert rows[0][1] == rows[1][1]  # one transaction
    assert committer.stats.largest_batch == 4


def test_a_later_command_sees_an_earlier_ones_effect(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    """Join then post in one batch: the post sees the join. Leave then post: refused, and
    the leave still commits."""
    owner, newcomer, leaver = _user(app, "o"), _user(app, "n"), _user(app, "l")
    ws, channel = _room(app, owner, leaver)
    before = _head(store_url)
    futures = _held(
        committer,
        [
            (JoinWorkspace(workspace_id=ws), Cause(newcomer)),
            (SendMessage(channel_id=channel, text="hello"), Cause(newcomer)),
            (LeaveWorkspace(workspace_id=ws), Cause(leaver)),
            (SendMessage(channel_id=channel, text="bye"), Cause(leaver)),
        ],
    )
    joined, posted, left, late = (_outcome(f) for f in futures)
    assert isinstance(joined, CommandResult) and isinstance(posted, CommandResult)
    assert isinstance(left, CommandResult) and isinstance(late, DomainError)
    rows = _rows(store_url, before)
    assert [r[2] for r in rows] == ["MemberJoined", "MessageSent", "MemberLeft"]
    assert len({r[1] for r in rows}) == 1
    assert [joined.position, posted.position, left.position] == [r[0] for r in rows]


def test_a_refused_command_does_not_undo_the_batchs_earlier_ones(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    """A refused command's aggregates are read again and the batch's earlier events applied
    to them: the join before it still counts for the post after it."""
    owner, newcomer = _user(app, "o"), _user(app, "n")
    ws, channel = _room(app, owner)
    before = _head(store_url)
    futures = _held(
        committer,
        [
            (JoinWorkspace(workspace_id=ws), Cause(newcomer)),
            (SendMessage(channel_id=channel, text="   "), Cause(newcomer)),  # blank: refused
            (SendMessage(channel_id=channel, text="hello"), Cause(newcomer)),
        ],
    )
    joined, refused, posted = (_outcome(f) for f in futures)
    assert isinstance(joined, CommandResult) and isinstance(refused, DomainError)
    assert isinstance(posted, CommandResult)
    rows = _rows(store_url, before)
    assert [r[2] for r in rows] == ["MemberJoined", "MessageSent"]
    assert [joined.position, posted.position] == [r[0] for r in rows]


def test_a_conflict_with_another_writer_concerns_only_its_commands(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    """Between the batch's decisions and its insert, a second Chorus on the same database
    kicks a member: the batch's insert fails on the workspace's version, and each command is
    run again alone. The kicked member's post is refused; the others land once each."""
    owner, poster, joiner, bystander = (_user(app, n) for n in ("o", "p", "j", "b"))
    ws, channel = _room(app, owner, poster, bystander)
    other = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    before = _head(store_url)
    kicked: list[CommandResult] = []

    def race() -> None:
        committer.before_commit = None
        kicked.append(other.execute(KickMember(workspace_id=ws, user_id=poster), Cause(owner)))

    committer.before_commit = race
    try:
        futures = _held(
            committer,
            [
                (SendMessage(channel_id=channel, text="from poster"), Cause(poster)),
                (JoinWorkspace(workspace_id=ws), Cause(joiner)),
                (SendMessage(channel_id=channel, text="from bystander"), Cause(bystander)),
            ],
        )
        post, join, bystanders = (_outcome(f) for f in futures)
    finally:
        other.close()
    assert committer.stats.fallbacks == 1
    assert isinstance(post, DomainError)  # decided again after the kick: no longer a member
    assert isinstance(join, CommandResult) and isinstance(bystanders, CommandResult)
    rows = _rows(store_url, before)
    assert [r[2] for r in rows] == ["MemberKicked", "MemberJoined", "MessageSent"]
    assert [r[0] for r in rows] == [kicked[0].position, join.position, bystanders.position]


def test_idempotent_retries_inside_and_across_batches(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    owner = _user(app, "o")
    ws, _ = _room(app, owner)
    before = _head(store_url)
    create = CreateChannel(workspace_id=ws, name="once")
    futures = _held(
        committer,
        [
            (create, Cause(owner, "key-1")),
            (create, Cause(owner, "key-1")),
            (CreateChannel(workspace_id=ws, name="other"), Cause(owner, "key-1")),
        ],
    )
    first, again, reused = (_outcome(f) for f in futures)
    assert isinstance(first, CommandResult) and isinstance(again, CommandResult)
    assert isinstance(reused, IdempotencyKeyReused)
    assert again.replayed and again.body == first.body and first.position is not None
    # A later batch, and the single-command path, replay the same answer.
    later = committer.submit(create, Cause(owner, "key-1")).result(timeout=60)
    alone = app.execute_now(create, Cause(owner, "key-1"))
    assert later.replayed and alone.replayed
    assert later.body == alone.body == first.body
    assert [r[2] for r in _rows(store_url, before)] == ["ChannelCreated"]
    with psycopg.connect(store_url) as conn:
        row = conn.execute("SELECT position FROM chorus_commands WHERE key = 'key-1'").fetchone()
    assert row is not None and row[0] == first.position


def test_replaying_the_log_equals_the_live_state(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    owner, a, b = _user(app, "o"), _user(app, "a"), _user(app, "b")
    ws, channel = _room(app, owner)
    futures = _held(
        committer,
        [
            (JoinWorkspace(workspace_id=ws), Cause(a)),
            (JoinWorkspace(workspace_id=ws), Cause(b)),
            (CreateChannel(workspace_id=ws, name="second"), Cause(owner)),
            (SendMessage(channel_id=channel, text="hi @a"), Cause(b)),
            (LeaveWorkspace(workspace_id=ws), Cause(a)),
            (JoinWorkspace(workspace_id=ws), Cause(a)),
        ],
    )
    results = [f.result(timeout=60) for f in futures]
    ids = {
        UUID(ws),
        UUID(channel),
        UUID(str(results[2].body["id"])),
        UUID(str(results[3].body["id"])),
    }
    fresh = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        for aggregate_id in ids:
            live: Any = app.repository.get(aggregate_id)
            replayed: Any = fresh.repository.get(aggregate_id)
            assert _state(live) == _state(replayed)
        workspace: Any = fresh.repository.get(UUID(ws))
        assert workspace.is_member(a) and workspace.is_member(b)
    finally:
        fresh.close()


def _state(aggregate: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def test_password_commands_bypass_the_batch(app: Chorus, committer: GroupCommitter) -> None:
    user = app.execute(
        RegisterUser(username="user_pw", password="plum-Orbit-kettle-42"), Cause(None)
    )
    assert user.status == 201 and committer.stats.bypassed == 1


def test_close_stops_the_writer(store_url: str) -> None:
    chorus = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    committer = chorus.enable_group_commit()
    owner = _user(chorus, "o")
    assert chorus.execute(CreateWorkspace(name="W"), Cause(owner)).status == 201
    chorus.close()
    with pytest.raises(RuntimeError):
        committer.submit(CreateWorkspace(name="late"), Cause(owner))


def _send(committer: GroupCommitter, channel: str, member: str, text: str) -> Any:
    return _outcome(committer.submit(SendMessage(channel_id=channel, text=text), Cause(member)))


def test_later_batches_decide_on_what_earlier_ones_committed(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    """The channel and workspace a batch committed are remembered: the next batches read
    neither from the store, and what they store is what one commit at a time would."""
    owner, poster = _user(app, "o"), _user(app, "p")
    _, channel = _room(app, owner, poster)
    first = _send(committer, channel, poster, "one")
    assert isinstance(first, CommandResult)
    reads = committer.stats.store_reads
    for i in range(5):
        assert isinstance(_send(committer, channel, poster, f"more {i}"), CommandResult)
    assert committer.stats.store_reads == reads
    assert committer.stats.remembered_reads >= 10  # a channel and a workspace each
    with psycopg.connect(store_url) as conn:
        assert verify(conn, EVENTS_TABLE).ok


def test_a_remembered_aggregate_another_writer_changed_is_not_trusted(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    """A second Chorus on the same database kicks a member whose workspace this writer
    remembers: the member's next post is refused, and nothing of it is stored."""
    owner, poster = _user(app, "o"), _user(app, "p")
    ws, channel = _room(app, owner, poster)
    assert isinstance(_send(committer, channel, poster, "before"), CommandResult)
    other = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        other.execute_now(KickMember(workspace_id=ws, user_id=poster), Cause(owner))
    finally:
        other.close()
    before = _head(store_url)
    fallbacks = committer.stats.fallbacks
    refused = _send(committer, channel, poster, "after the kick")
    assert isinstance(refused, DomainError)
    assert committer.stats.fallbacks == fallbacks + 1  # found in the batch's transaction
    assert _rows(store_url, before) == []
    # Forgotten, then read again: the owner still posts.
    assert isinstance(_send(committer, channel, owner, "still here"), CommandResult)


def test_a_refusal_on_stale_remembered_state_is_decided_again(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    """A user who left is remembered as not a member; another writer has them join again. A
    batch that writes nothing finds its remembered workspace out of date and decides again:
    the post is accepted."""
    owner, poster = _user(app, "o"), _user(app, "p")
    ws, channel = _room(app, owner, poster)
    left = _outcome(committer.submit(LeaveWorkspace(workspace_id=ws), Cause(poster)))
    assert isinstance(left, CommandResult)  # the workspace is remembered without the poster
    other = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        other.execute_now(JoinWorkspace(workspace_id=ws), Cause(poster))
    finally:
        other.close()
    stale = committer.stats.stale
    posted = _send(committer, channel, poster, "back again")
    assert isinstance(posted, CommandResult), posted
    assert committer.stats.stale == stale + 1
    assert posted.position is not None
    assert [r[2] for r in _rows(store_url, posted.position - 1)] == ["MessageSent"]


def test_a_command_run_outside_the_batches_makes_the_writer_forget(
    app: Chorus, committer: GroupCommitter
) -> None:
    """A command with a password runs in its caller's thread, outside the batches: what the
    writer remembers may be stale after it, so it is dropped before the next batch."""
    owner, poster = _user(app, "o"), _user(app, "p")
    _, channel = _room(app, owner, poster)
    assert isinstance(_send(committer, channel, poster, "one"), CommandResult)
    assert committer.known
    committer.execute(
        RegisterUser(username="user_late", password="plum-Orbit-kettle-42"), Cause(None)
    )
    reads = committer.stats.store_reads
    assert isinstance(_send(committer, channel, poster, "two"), CommandResult)
    assert committer.stats.store_reads == reads + 2  # the channel and workspace, read again


def test_a_batch_that_only_read_the_workspace_sees_a_kick_committed_before_it(
    app: Chorus, committer: GroupCommitter, store_url: str
) -> None:
    """Issue 17 (access is decided against the log): the batch reads the channel and the
    workspace fresh from the store and decides the post; before its insert, a second Chorus on
    the same database kicks the poster. The batch writes only a message, yet the kick is
    found in its transaction (every aggregate it read must still be at the version it read):
    the post is decided again and refused; only the kick is stored."""
    owner, poster = _user(app, "o"), _user(app, "p")
    ws, channel = _room(app, owner, poster)  # run outside the batches: nothing remembered
    other = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    before = _head(store_url)

    def race() -> None:
        committer.before_commit = None
        other.execute_now(KickMember(workspace_id=ws, user_id=poster), Cause(owner))

    committer.before_commit = race
    try:
        reads = committer.stats.store_reads
        post = _send(committer, channel, poster, "decided before the kick")
    finally:
        other.close()
    assert committer.stats.store_reads > reads  # read fresh, not remembered
    assert isinstance(post, DomainError), post
    assert [r[2] for r in _rows(store_url, before)] == ["MemberKicked"]


def test_a_command_run_alone_sees_a_kick_committed_between_its_decision_and_its_save(
    app: Chorus, store_url: str
) -> None:
    """The same race on the one-command path (``execute_now``: sign-ups, password commands,
    a batch's fall-back): the kick commits after the post is decided and before it is saved;
    the save fails on the workspace's version, the post is decided again and refused."""
    owner, poster = _user(app, "o"), _user(app, "p")
    ws, channel = _room(app, owner, poster)
    other = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    before = _head(store_url)

    def race() -> None:
        app.before_save = None
        other.execute_now(KickMember(workspace_id=ws, user_id=poster), Cause(owner))

    app.before_save = race
    try:
        with pytest.raises(DomainError):
            app.execute_now(SendMessage(channel_id=channel, text="too late"), Cause(poster))
    finally:
        app.before_save = None
        other.close()
    assert [r[2] for r in _rows(store_url, before)] == ["MemberKicked"]
