"""The documents this process has open, the editors connected to each, and their saving.

Access is decided against the log (issue 17). An editor's update is applied to the copy and
saved at once, with whatever its editors sent while the previous save was under way (one
event per run of one connection's updates); it reaches the other editors only once saved,
through the process's one store subscription (the hub), in log order, like the updates
other processes commit. So an access change at position P reaches every editor before any
update after P, and an update whose save is refused reaches nobody: the copy is dropped,
its editors reconnect and re-send what the server lacks, which is only their own. A sync
answer (the copy's state for one editor) waits until what the copy holds is saved and
delivered, for the same reason. Applying an update twice changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from application.chorus import Chorus
from application.commands import ApplyDocumentUpdate
from application.documents import document_with_workspace
from application.live_documents.awareness import (
    AWARENESS_CLIENTS_PER_CONNECTION,
    MAX_AWARENESS_BYTES_PER_DOCUMENT,
    REMOTE_AWARENESS_TTL_S,
    awareness_group,
    awareness_messages,
    stamp_awareness,
)
from application.live_documents.budget import EditBudget
from application.live_documents.editors import (
    CLOSE_DELETED,
    CLOSE_NO_ACCESS,
    CLOSE_RELOAD,
    CLOSE_TRY_LATER,
    Peer,
)
from application.live_documents.room import DocumentBroken, DocumentRoom, Run
from application.ports import Delivered, LogFollower, Signals, StoredDocument
from domain import yjs_protocol as protocol
from domain.base import Cause
from domain.documents import Document
from domain.errors import DomainError
from domain.rules import MAX_DOCUMENT_UPDATE_BYTES

log = logging.getLogger(__name__)

# The longest a document's build waits for its first editor to take the stored bytes.
BUILD_WAIT_S = 0.5

# A copy whose saves keep failing holds at most this much unsaved before it is dropped.
MAX_UNSAVED_BYTES = 8 * 1024 * 1024


_EMPTY_UPDATE = b"\x00\x00"  # no structs, no deletions: what a synced client's step 2 is


@dataclass(eq=False)
class RemoteEditors:
    """Stands for the editors of a document on other instances: awareness they send through
    the signal bus is kept and passed on to this instance's editors."""

    rooms: Rooms
    live: LiveDocument
    user_id: str = ""

    async def send(self, data: bytes) -> None:
        await self.rooms.remote_awareness(self.live, data)


@dataclass(frozen=True)
class Fetched:
    """A document as read from the store, before its copy is built."""

    document_id: str
    workspace_id: str
    stored: StoredDocument


@dataclass(eq=False)
class LiveDocument:
    document_id: str
    workspace_id: str
    room: DocumentRoom
    # The state vector of what the copy was built from (before updates that arrived while it
    # was built): what an editor sent the stored bytes has.
    loaded_state: bytes = b"\x00"
    peers: set[Peer] = field(default_factory=set)
    awareness: dict[int, protocol.AwarenessEntry] = field(default_factory=dict)
    flush_handle: asyncio.TimerHandle | None = None
    flushing: asyncio.Lock = field(default_factory=asyncio.Lock)
    idle_handle: asyncio.TimerHandle | None = None
    closed: bool = False
    remote: RemoteEditors | None = None
    # When each awareness client id from another instance was last heard of.
    remote_seen: dict[int, float] = field(default_factory=dict)
    # The bytes of the states in ``awareness``.
    awareness_bytes: int = 0
    # The log position of what the copy was built from.
    position: int = 0
    # The last position this copy's own saves reached.
    committed: int = 0
    # Runs saved (or being saved) by this copy, by the bytes of their event: the editor who
    # sent them and their updates, passed on one by one, as they came, when the hub
    # delivers the event (not back to that editor).
    outgoing: dict[bytes, tuple[Any, list[bytes]]] = field(default_factory=dict)
    # Set when nothing accepted is waiting to be saved or being saved.
    saved: asyncio.Event = field(default_factory=asyncio.Event)
    # Cleared while a sync answer waits for ``saved``: updates then wait too (no starving).
    staging: asyncio.Event = field(default_factory=asyncio.Event)
    answers_waiting: int = 0
    # When the last save started (time.monotonic()).
    last_save: float = 0.0
    # Saved updates to pass on, in log order, with the editor not to send each to; sent by
    # one task that lets the editors' writers run between updates (a delivered batch of
    # many events must not fill an outbox at once).
    passing_on: deque[tuple[bytes, Any]] = field(default_factory=deque)
    passer: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.saved.set()
        self.staging.set()

    def set_awareness(self, entry: protocol.AwarenessEntry, limit: int) -> bool:
        """Keeps a state unless the document's states would pass ``limit`` bytes."""
        known = self.awareness.get(entry.client_id)
        grows = len(entry.state) - (len(known.state) if known is not None else 0)
        if grows > 0 and self.awareness_bytes + grows > limit:
            return False
        self.awareness[entry.client_id] = entry
        self.awareness_bytes += grows
        return True

    def drop_awareness(self, client_id: int) -> None:
        known = self.awareness.pop(client_id, None)
        if known is not None:
            self.awareness_bytes -= len(known.state)


class Rooms:
    """Every live document of this process; one listener of the hub for all of them."""

    def __init__(
        self,
        app: Chorus,
        log_follower: LogFollower,
        signals: Signals,
        read_stored: Callable[[str], StoredDocument],
        budget: EditBudget,
        access_events: Collection[str],
        *,
        flush_s: float,
        idle_s: float,
    ) -> None:
        """``log_follower``: the process's one subscription to the log; ``signals``: to the
        other instances' editors (awareness); ``read_stored``: a document as stored;
        ``budget``: the users' edit budget; ``access_events``: the event types that may
        change a user's access to documents."""
        self.app = app
        self.log_follower = log_follower
        self.signals = signals
        self._read_stored = read_stored
        self.budget = budget
        self.access_events = access_events
        # A copy saves at most once per ``flush_s``: an update that comes to an idle copy is
        # saved (and passed on) at once; one that comes during a burst waits for the next
        # save, with the rest of the burst (one event per run, not one per keystroke).
        self.flush_s = flush_s
        self.idle_s = idle_s
        self.live: dict[str, LiveDocument] = {}
        self._opening: dict[str, asyncio.Future[LiveDocument]] = {}
        self._fetched: dict[str, asyncio.Future[Fetched]] = {}
        # What each document being opened waits for before it is built (see ``open``), and
        # for how long at most.
        self._build_after: dict[str, asyncio.Future[None]] = {}
        self.build_wait_s = BUILD_WAIT_S
        # Deliveries that arrive while a document loads, applied once it has.
        self._early: dict[str, list[Delivered]] = {}
        # Every editor of this process, by user, from before its first access check until
        # it ends: an access change the check did not see is delivered after it (see
        # ``watch``).
        self.editors: dict[str, set[Peer]] = {}
        self._reached: list[tuple[int, asyncio.Future[None]]] = []
        self.saved_events = 0
        self.received_updates = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Notified whenever a document is opened or dropped (tests and metrics wait on it).
        self.changed = threading.Condition()
        self.max_awareness_bytes = MAX_AWARENESS_BYTES_PER_DOCUMENT

    def _changed(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Blocks (another thread) until ``predicate()`` holds after a change; False on
        timeout."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- opening and closing ----------------------------------------------------------------

    def start(self) -> None:
        self.log_follower.add(self)

    async def stop(self) -> None:
        """Saves what is waiting and closes every document (the server is stopping)."""
        self.log_follower.remove(self)
        for live in list(self.live.values()):
            await self.flush(live)
            await self._drop(live, CLOSE_RELOAD, "server restarting")

    async def open(
        self,
        document_id: str,
        workspace_id: str | None = None,
        *,
        build_after: asyncio.Future[None] | None = None,
        reading: asyncio.Future[StoredDocument] | None = None,
    ) -> LiveDocument:
        """The document's live copy, read and built if it is not in memory.
        ``workspace_id``: the document's, when the caller has just loaded it. ``reading``:
        the caller's read of the stored document (``read_stored``), started early.
        ``build_after``: the build waits (up to ``build_wait_s``) until the caller's editor has
        taken what was read: pycrdt holds the GIL while it builds (~6 ms for the editing
        trace), which would hold up the send, and it competes for the CPUs with the editor
        applying the same bytes. Another editor opening the document ends that wait."""
        live = self.live.get(document_id)
        if live is not None:
            return live
        opening = self._opening.get(document_id)
        if opening is not None:
            waiting = self._build_after.get(document_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return await asyncio.shield(opening)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[LiveDocument] = loop.create_future()
        fetched: asyncio.Future[Fetched] = loop.create_future()
        self._opening[document_id] = future
        self._fetched[document_id] = fetched
        self._early[document_id] = []
        if build_after is not None:
            self._build_after[document_id] = build_after
        try:
            if reading is not None and workspace_id is not None:
                stored = Fetched(document_id, workspace_id, await reading)
            else:
                stored = await anyio.to_thread.run_sync(self._fetch, document_id, workspace_id)
            fetched.set_result(stored)
            if build_after is not None:
                await asyncio.wait({build_after}, timeout=self.build_wait_s)
            live = await anyio.to_thread.run_sync(self._build, stored)
        except BaseException as exc:
            for failed in (future, fetched):
                if not failed.done():
                    failed.set_exception(exc)
                failed.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._opening[document_id]
            del self._fetched[document_id]
            self._build_after.pop(document_id, None)
            early = self._early.pop(document_id, [])
        for d in early:
            self._apply_delivery(live, d)
        self.live[document_id] = live
        live.remote = RemoteEditors(self, live)
        self.signals.join(awareness_group(document_id), live.remote)
        self._touch(live)  # unloaded in time if its editor left while it was built
        self._changed()
        future.set_result(live)
        return live

    def fetching(self, document_id: str) -> asyncio.Future[Fetched] | None:
        """While a document is being opened: what its copy is being built from, as soon as it
        is read (a fresh editor can be sent it before the copy is built)."""
        return self._fetched.get(document_id)

    def _fetch(self, document_id: str, workspace_id: str | None) -> Fetched:
        if workspace_id is None:
            workspace_id = str(self.app.load(Document, document_id).workspace_id)
        return Fetched(document_id, workspace_id, self.read_stored(document_id))

    def read_stored(self, document_id: str) -> StoredDocument:
        """The document as stored (a snapshot and the log after it); blocking. Reads it
        whoever asks: what it returns must only reach an editor whose access was checked."""
        return self._read_stored(document_id)

    def _build(self, fetched: Fetched) -> LiveDocument:
        loaded = fetched.stored.build()
        room = DocumentRoom(
            fetched.document_id, loaded.doc, loaded.version, MAX_DOCUMENT_UPDATE_BYTES, loaded.size
        )
        if len(fetched.stored.updates) == 1:  # a snapshot and no tail: the copy's very state
            room.keep_encoded(fetched.stored.updates[0])
        return LiveDocument(
            fetched.document_id,
            fetched.workspace_id,
            room,
            loaded_state=room.state_vector(),
            position=fetched.stored.position,
        )

    def _touch(self, live: LiveDocument) -> None:
        """An idle document (no editors, nothing unsaved) leaves memory after ``idle_s``."""
        if live.idle_handle is not None:
            live.idle_handle.cancel()
            live.idle_handle = None
        if not live.peers and not live.room.runs and not live.closed:
            loop = asyncio.get_running_loop()
            live.idle_handle = loop.call_later(
                self.idle_s, lambda: self._spawn(self._unload_if_idle(live))
            )

    async def _unload_if_idle(self, live: LiveDocument) -> None:
        if not live.peers and not live.room.runs and self.live.get(live.document_id) is live:
            await self._drop(live, CLOSE_RELOAD, "idle")

    async def _drop(self, live: LiveDocument, code: int, reason: str) -> None:
        """Forgets a copy; its editors are disconnected (they reconnect to a fresh one)."""
        if live.closed:
            return
        live.closed = True
        if self.live.get(live.document_id) is live:
            del self.live[live.document_id]
            self._changed()
        if live.remote is not None:
            self.signals.leave(awareness_group(live.document_id), live.remote)
        for handle in (live.flush_handle, live.idle_handle):
            if handle is not None:
                handle.cancel()
        # Sync answers and updates waiting for the saving give up.
        live.saved.set()
        live.staging.set()
        peers, live.peers = list(live.peers), set()
        for peer in peers:
            await peer.close(code, reason)
        live.room.close()

    # -- editors ------------------------------------------------------------------------------

    async def join(self, live: LiveDocument, peer: Peer, *, ask: bool = True) -> None:
        """Sync step 1 (unless the editor was already ``ask``ed) and the current awareness
        states, as the reference server does."""
        live.peers.add(peer)
        self._touch(live)
        if ask:
            await peer.send(protocol.sync_step1(live.room.state_vector()))
        await self.send_awareness(live, peer)

    async def send_awareness(self, live: LiveDocument, peer: Peer) -> None:
        """Every current awareness state, in messages of bounded size (a joiner's outbox
        takes them whatever the others hold)."""
        for message in awareness_messages(self.current_awareness(live)):
            await peer.send(message)

    def current_awareness(self, live: LiveDocument) -> list[protocol.AwarenessEntry]:
        """Every known awareness state, but those of other instances' editors gone quiet."""
        now = time.monotonic()
        for client_id, seen in list(live.remote_seen.items()):
            if now - seen > REMOTE_AWARENESS_TTL_S:
                del live.remote_seen[client_id]
                live.drop_awareness(client_id)
        return list(live.awareness.values())

    async def leave(self, live: LiveDocument, peer: Peer) -> None:
        live.peers.discard(peer)
        gone = [
            protocol.AwarenessEntry(client_id, live.awareness[client_id].clock + 1, b"null")
            for client_id in sorted(peer.awareness_clients)
            if client_id in live.awareness
        ]
        for entry in gone:
            live.drop_awareness(entry.client_id)
        if gone:
            message = protocol.awareness_message(protocol.encode_awareness(gone))
            await self._broadcast(live, message, None)
            await self._publish_awareness(live, message)
        self._touch(live)

    async def update(self, live: LiveDocument, peer: Peer, data: bytes) -> None:
        """An editor's update (sync step 2 or update): applied and saved at once; the other
        editors get it once it is saved (``_apply_delivery``). Raises MalformedUpdate
        (nothing applied) for bad bytes, OverBudget (nothing applied) when the editor's
        user has used up their edit budget."""
        while not live.staging.is_set():
            await live.staging.wait()
        if live.closed:
            return
        if data != _EMPTY_UPDATE:
            self.budget.charge(peer.user_id, len(data))
        try:
            changed = live.room.receive(peer.user_id, data, origin=peer)
        except DocumentBroken:
            log.exception("document %s broke; reloading it", live.document_id)
            await self._drop(live, CLOSE_RELOAD, "reloading the document")
            return
        if changed is None:
            return
        self.received_updates += 1
        live.saved.clear()
        if live.flush_handle is None and not live.flushing.locked():
            self._schedule_flush(live, self._next_save_in(live))

    def _next_save_in(self, live: LiveDocument) -> float:
        return max(0.0, live.last_save + self.flush_s - time.monotonic())

    async def answer(self, live: LiveDocument, state_vector: bytes) -> bytes | None:
        """What an editor with ``state_vector`` lacks (a sync step 2), once everything the
        copy holds is saved and delivered: no editor is shown an update that may yet be
        refused, nor one past an access change the hub has not delivered. None when the
        copy was dropped meanwhile."""
        live.answers_waiting += 1
        live.staging.clear()
        try:
            await live.saved.wait()
            await self.reached(live.committed)
        finally:
            live.answers_waiting -= 1
            if not live.answers_waiting:
                live.staging.set()
        if live.closed:
            return None
        return live.room.diff(state_vector)

    async def reached(self, position: int) -> None:
        """Returns once the hub has delivered the log up to ``position`` (so every access
        change up to it has reached the editors it concerns)."""
        if self.log_follower.delivered >= position:
            return
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reached.append((position, waiting))
        await waiting

    # -- access -------------------------------------------------------------------------------

    def watch(self, peer: Peer) -> None:
        """From now until ``unwatch``, every access change of the editor's user suspends it
        and checks its access again. Called before its first access check: a change that
        check does not see commits after it, so the hub delivers it after this call."""
        self.editors.setdefault(peer.user_id, set()).add(peer)

    def unwatch(self, peer: Peer) -> None:
        peers = self.editors.get(peer.user_id)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self.editors[peer.user_id]

    async def _recheck(self, peer: Peer) -> None:
        """Membership or roles of the editor's user changed: it keeps only the access it still
        has (it was suspended when the change was delivered)."""
        async with peer.checking:
            try:
                document, workspace = await anyio.to_thread.run_sync(
                    document_with_workspace, self.app, peer.document_id, peer.user_id
                )
            except DomainError:
                await peer.close(CLOSE_NO_ACCESS, "access revoked")
                return
            except Exception:
                log.exception("checking an editor's access to %s failed", peer.document_id)
                await peer.close(CLOSE_TRY_LATER, "could not check access: reconnect")
                return
            if document.deleted:
                await peer.close(CLOSE_DELETED, "the document was deleted")
                return
            peer.can_edit = document.can_edit(peer.user_id, workspace)
        peer.resume()

    async def awareness(self, live: LiveDocument, peer: Peer, payload: bytes) -> None:
        if not peer.awareness_rate.take(len(payload)):
            # Dropped unread (parsing is most of its cost): states are renewed every 15 s,
            # a later one goes through.
            return
        entries = protocol.parse_awareness(payload)
        accepted = []
        for entry in entries:
            owned = entry.client_id in peer.awareness_clients
            known = live.awareness.get(entry.client_id)
            if known is not None and not owned:
                continue  # one editor may not speak for another's client ids
            if known is not None and entry.clock < known.clock:
                continue
            if entry.state == b"null":
                if not owned:
                    continue  # nothing of this connection's to remove
                live.drop_awareness(entry.client_id)
                peer.awareness_clients.discard(entry.client_id)
            else:
                stamped = stamp_awareness(entry, peer)
                if stamped is None:
                    continue
                entry = stamped
                full = len(peer.awareness_clients) >= AWARENESS_CLIENTS_PER_CONNECTION
                if (full and not owned) or not live.set_awareness(entry, self.max_awareness_bytes):
                    continue
                peer.awareness_clients.add(entry.client_id)
            accepted.append(entry)
        if accepted:
            message = protocol.awareness_message(protocol.encode_awareness(accepted))
            await self._broadcast(live, message, None)
            await self._publish_awareness(live, message)

    async def _publish_awareness(self, live: LiveDocument, message: bytes) -> None:
        """To the document's editors on other instances (through Redis, when configured)."""
        if live.remote is not None:
            await self.signals.publish(awareness_group(live.document_id), message, live.remote)

    async def remote_awareness(self, live: LiveDocument, message: bytes) -> None:
        """Awareness from another instance: kept for editors who join later, passed on."""
        if live.closed:
            return
        try:
            parsed = protocol.parse(message)
            entries = protocol.parse_awareness(parsed.payload)
        except protocol.MalformedMessage:
            return
        now = time.monotonic()
        for entry in entries:
            known = live.awareness.get(entry.client_id)
            if known is not None and entry.clock < known.clock:
                continue
            if entry.state == b"null":
                live.drop_awareness(entry.client_id)
                live.remote_seen.pop(entry.client_id, None)
            elif live.set_awareness(entry, self.max_awareness_bytes):
                live.remote_seen[entry.client_id] = now
        await self._broadcast(live, message, None)

    def _pass_on(self, live: LiveDocument, message: bytes, origin: Peer | None) -> None:
        live.passing_on.append((message, origin))
        if live.passer is None or live.passer.done():
            live.passer = asyncio.get_running_loop().create_task(self._passing_on(live))

    async def _passing_on(self, live: LiveDocument) -> None:
        while live.passing_on and not live.closed:
            message, origin = live.passing_on.popleft()
            await self._broadcast(live, message, origin)
            await asyncio.sleep(0)

    async def _broadcast(self, live: LiveDocument, message: bytes, origin: Peer | None) -> None:
        for other in list(live.peers):
            if other is not origin:
                await other.send(message)

    # -- saving -------------------------------------------------------------------------------

    def _schedule_flush(self, live: LiveDocument, delay: float) -> None:
        if live.flush_handle is not None:
            live.flush_handle.cancel()
        loop = asyncio.get_running_loop()
        live.flush_handle = loop.call_later(delay, lambda: self._spawn(self.flush(live)))

    async def flush(self, live: LiveDocument) -> None:
        """Saves what is waiting, and what comes meanwhile: one event per run of one
        editor's updates, in order."""
        live.flush_handle = None
        async with live.flushing:
            live.last_save = time.monotonic()
            runs = live.room.take_runs()
            for i, run in enumerate(runs):
                try:
                    await anyio.to_thread.run_sync(self._save, live, run)
                except DomainError as exc:
                    # Refused (access lost, document deleted): this copy holds what the log
                    # will not (and no editor was shown it); start again from the log.
                    log.info("update to %s refused: %s", live.document_id, exc)
                    await self._drop(live, CLOSE_RELOAD, "an update was refused")
                    return
                except Exception:
                    log.exception("saving an update to %s failed; retrying", live.document_id)
                    live.room.put_back(runs[i:])
                    if live.room.pending_bytes > MAX_UNSAVED_BYTES:
                        await self._drop(live, CLOSE_TRY_LATER, "cannot save right now")
                    else:
                        self._schedule_flush(live, max(self.flush_s, 1.0))
                    return
            if live.room.runs and not live.closed:
                # What came during this save: saved next, with what comes until then.
                self._schedule_flush(live, self._next_save_in(live))
            else:
                live.saved.set()
            self._touch(live)

    def _save(self, live: LiveDocument, run: Run) -> None:
        update = run.merged()
        command = ApplyDocumentUpdate(document_id=live.document_id, update=update, roots=run.roots)
        # Known before the append: the hub may deliver it before this thread returns.
        live.outgoing[update] = (run.origin, run.updates)
        try:
            result = self.app.execute(command, Cause(actor_id=run.actor))
        except BaseException:
            live.outgoing.pop(update, None)
            raise
        position = result.body.get("position")
        if isinstance(position, int):
            live.committed = max(live.committed, position)
        self.saved_events += 1

    # -- what other processes (and this one) committed --------------------------------------

    def deliver(self, batch: Sequence[Delivered]) -> None:
        for d in batch:
            stream = str(d.event.stream)
            early = self._early.get(stream)
            if early is not None:
                early.append(d)
            live = self.live.get(stream)
            if live is not None:
                self._apply_delivery(live, d)
            if d.event.type in self.access_events:
                # At this position, before anything later is sent to the editors concerned:
                # the user it names, or (naming nobody: a workspace deleted, a role changed)
                # every editor in its workspace.
                user_id = d.event.data.get("user_id")
                if user_id:
                    concerned = list(self.editors.get(user_id, ()))
                else:
                    concerned = [p for peers in self.editors.values() for p in peers]
                for peer in concerned:
                    if peer.workspace_id in (None, d.scope.workspace):
                        peer.suspend()
                        self._spawn(self._recheck(peer))
            elif d.event.type == "DocumentDeleted":
                for peers in list(self.editors.values()):
                    for peer in [p for p in peers if p.document_id == stream]:
                        peer.suspend()
                        self._spawn(peer.close(CLOSE_DELETED, "the document was deleted"))
        if self._reached:
            delivered = self.log_follower.delivered
            waiting, self._reached = self._reached, []
            for position, future in waiting:
                if position <= delivered:
                    if not future.done():
                        future.set_result(None)
                else:
                    self._reached.append((position, future))

    def _apply_delivery(self, live: LiveDocument, d: Delivered) -> None:
        event = d.event
        if event.type == "DocumentUpdateApplied":
            update = base64.b64decode(event.data["update"])
            if update in live.outgoing:
                # Saved by this copy, which holds it already: now it goes to the others.
                origin, updates = live.outgoing.pop(update)
                live.room.version = max(live.room.version, event.version)
                for one in updates:
                    self._pass_on(live, protocol.sync_update(one), origin)
                return
            if event.version <= live.room.version:
                return
            try:
                changed = live.room.apply_committed(update, event.version)
            except Exception:
                log.exception("a stored update of %s did not apply", live.document_id)
                self._spawn(self._drop(live, CLOSE_RELOAD, "reloading the document"))
                return
            if changed is not None:
                self._pass_on(live, protocol.sync_update(changed), None)
        elif event.type == "DocumentDeleted":
            self._spawn(self._drop(live, CLOSE_DELETED, "the document was deleted"))
