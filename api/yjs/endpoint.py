"""``/yjs/{document_id}``: the standard y-websocket protocol, so unmodified Yjs clients
(npm ``y-websocket``'s ``WebsocketProvider``, pycrdt) edit documents.

The socket is accepted before it is authenticated (``accept_authenticated``): a refusal then
reaches the client as a close code, instead of an HTTP 403 it would retry forever. The stock
y-websocket client (3.1) stops for good on every code in 4400-4499 and reconnects, with
backoff, on any other: final refusals (bad token, no access, malformed or oversized input)
are 44xx, and those that pass by themselves (busy, too fast, over budget, restarting, token
expired on an open socket) are not (docs/API.md has the table).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath

from api.bootstrap import Services
from api.realtime.socket import TokenBucket, accept_authenticated, counted_socket
from api.session_ends import SESSION_ENDED
from application.documents import document_with_workspace
from application.live_documents.awareness import AwarenessRate
from application.live_documents.budget import OverBudget
from application.live_documents.editors import CLOSE_NO_ACCESS, CLOSE_OVER_BUDGET
from application.live_documents.room import DocumentTooLarge
from application.live_documents.rooms import LiveDocument, Rooms
from application.ports import StoredDocument
from domain import yjs_protocol as protocol
from domain.errors import DomainError, NotFound
from domain.identity import User
from domain.rules import MAX_DOCUMENT_UPDATE_BYTES
from domain.yjs_update import (
    MalformedUpdate,
    MissingDependencies,
    UpdateTooLarge,
    inspect_update,
)
from infrastructure.tokens import AccessClaims

log = logging.getLogger(__name__)

CLOSE_MALFORMED = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_BIG = 4413
CLOSE_TOO_SLOW = 1013
# The user holds as many sockets as allowed: transient (one closes, then this one fits).
CLOSE_BUSY = 1013
# The socket's token reached its exp: the client reconnects once, with the token it holds
# then (a refreshed one goes on; the same one is refused with 4401, final).
CLOSE_TOKEN_EXPIRED = 1008
# A frame holds one message: an update plus a few bytes of framing.
MAX_FRAME_BYTES = MAX_DOCUMENT_UPDATE_BYTES + 64
# An editor this far behind is disconnected (it resyncs when it reconnects).
OUTBOX_FRAMES = 4096
OUTBOX_BYTES = 8 * 1024 * 1024
# How long an editor cut off for slowness gets to take its close frame.
SLOW_CLOSE_S = 2.0


class Editor:
    """One y-websocket connection: what it may do, the awareness client ids it speaks for,
    and an outbox so one slow editor never holds up the others."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        user_id: str,
        frames_per_s: float,
        document_id: str = "",
    ):
        self.socket = socket
        self.user_id = user_id
        self.document_id = document_id
        self.workspace_id: str | None = None
        self.checking = asyncio.Lock()
        # While its access is checked again (an access change of its user was delivered),
        # what is sent to the editor is held, and what it sends waits.
        self.suspended = 0
        self._held: list[bytes] = []
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.display_name = ""
        self.can_edit = False
        self.awareness_clients: set[int] = set()
        self.awareness_rate = AwarenessRate()
        self.bucket = TokenBucket(frames_per_s, frames_per_s * 2)
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.outbox_bytes = 0
        self._drained = asyncio.Event()  # nothing queued, nothing being sent
        self._drained.set()
        self.closed = False
        self.close_code = 1000
        self.close_reason = ""
        # The connection's handler, cancelled to cut off an editor that stopped reading.
        self.handler: asyncio.Task[Any] | None = None
        self.cut_off = False

    def suspend(self) -> None:
        self.suspended += 1
        self._resumed.clear()

    def resume(self) -> None:
        self.suspended = max(0, self.suspended - 1)
        if self.suspended:
            return
        held, self._held = self._held, []
        for data in held:
            self._queue(data)
        self._resumed.set()

    async def resumed(self) -> None:
        await self._resumed.wait()

    async def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.suspended:
            if len(self._held) >= OUTBOX_FRAMES:
                self._too_slow()
            else:
                self._held.append(data)
            return
        self._queue(data)

    def _queue(self, data: bytes) -> None:
        if self.closed:
            return
        if self.outbox.qsize() >= OUTBOX_FRAMES or self.outbox_bytes + len(data) > OUTBOX_BYTES:
            self._too_slow()
            return
        self.outbox_bytes += len(data)
        self._drained.clear()
        self.outbox.put_nowait(data)

    async def drained(self) -> None:
        """Returns once what was queued has been handed to the transport (or the
        connection ended)."""
        await self._drained.wait()

    def _too_slow(self) -> None:
        # What is queued is dropped (the client resyncs when it reconnects). The writer is
        # likely stuck in a send the transport paused: after a short while for the close
        # frame, the handler is ended, which drops the connection.
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox_bytes = 0
        self._closing(CLOSE_TOO_SLOW, "too slow: reconnect to resync")
        asyncio.get_running_loop().call_later(SLOW_CLOSE_S, self._cut_off)

    def _cut_off(self) -> None:
        if self.handler is not None and not self.handler.done():
            self.cut_off = True
            self.handler.cancel()

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self._closing(code, reason)

    def _closing(self, code: int, reason: str) -> None:
        self.closed, self.close_code, self.close_reason = True, code, reason
        self._held = []
        self._resumed.set()  # what waits on it sees the connection closed
        # Wakes the writer, which closes the socket after what is already queued.
        self.outbox.put_nowait(None)

    async def write(self) -> None:
        try:
            while True:
                data = await self.outbox.get()
                if data is None:
                    break
                self.outbox_bytes -= len(data)
                await self.socket.send_data(data, mode="binary")
                if self.outbox.empty():
                    self._drained.set()
        except Exception:  # the client went away: nothing more to send it
            self.closed = True
            return
        finally:
            self._drained.set()
        with contextlib.suppress(Exception):
            await self.socket.close(code=self.close_code, reason=self.close_reason[:120])


@websocket("/yjs/{document_id:str}", name="yjs")
async def yjs_endpoint(socket: WebSocket[Any, Any, Any], document_id: FromPath[str]) -> None:
    """A document's editing session (see docs/API.md, "Documents")."""
    services: Services = socket.app.state.services
    claims = await accept_authenticated(socket, services)
    if claims is None:
        return
    # One clock: the open socket is closed at exp, so a token at or past it is refused here
    # too (the token check allows a few seconds of skew; with it, a stock client reconnecting
    # with its expired token was let in and cut off again, in a loop, until the skew ran out).
    if claims.expires_at <= time.time():
        await socket.close(code=CLOSE_UNAUTHORIZED, reason="unauthorized: token expired")
        return
    async with _counted(socket, claims.user_id) as admitted:
        if admitted:
            await _edit(socket, services, claims, document_id)


def _counted(socket: WebSocket[Any, Any, Any], user_id: str) -> AbstractAsyncContextManager[bool]:
    """The user's open sockets cap (``/ws`` and ``/yjs`` together), refusing with 1013 (busy:
    try later), not the 4429 of ``/ws``: stock Yjs clients never retry a 44xx code."""
    return counted_socket(socket, user_id, CLOSE_BUSY)


async def _edit(
    socket: WebSocket[Any, Any, Any], services: Services, claims: AccessClaims, document_id: str
) -> None:
    editor = Editor(socket, claims.user_id, services.settings.yjs_frames_per_second, document_id)
    rooms: Rooms = services.rooms
    # Before the access check: an access change the check does not see is delivered after
    # this, suspends the editor and checks again (access is decided against the log).
    rooms.watch(editor)
    try:
        await _edit_watched(socket, services, claims, editor)
    finally:
        rooms.unwatch(editor)


async def _edit_watched(
    socket: WebSocket[Any, Any, Any], services: Services, claims: AccessClaims, editor: Editor
) -> None:
    rooms: Rooms = services.rooms
    document_id = editor.document_id
    reading = _read_early(rooms, document_id)
    async with editor.checking:
        try:
            document, workspace = await anyio.to_thread.run_sync(
                document_with_workspace, services.app, document_id, claims.user_id
            )
            document.check_can_view(claims.user_id, workspace)
            user = await anyio.to_thread.run_sync(services.app.load, User, claims.user_id)
            editor.display_name = user.display_name
        except DomainError as exc:
            code = CLOSE_NO_ACCESS if isinstance(exc, NotFound) else CLOSE_FORBIDDEN
            await socket.close(code=code, reason=str(exc)[:120])
            return
        if document.deleted:
            await socket.close(code=4410, reason="the document was deleted")
            return
        editor.workspace_id = str(workspace.id)
        editor.can_edit = document.can_edit(claims.user_id, workspace)
    wait = rooms.budget.refusing(claims.user_id) if editor.can_edit else 0.0
    if wait > 0:
        # Refused before the sync: a stock client backs off further at each refusal (a
        # synced connection would reset its backoff and make it retry at once).
        reason = f"{rooms.budget.describe()}: retry in {wait:.0f} s"
        await socket.close(code=CLOSE_OVER_BUDGET, reason=reason[:120])
        return
    loop = asyncio.get_running_loop()
    writer = loop.create_task(editor.write())
    expiry = loop.call_later(
        max(0.0, claims.expires_at - time.time()),
        lambda: loop.create_task(editor.close(CLOSE_TOKEN_EXPIRED, "token expired")),
    )
    unwatch = services.session_ends.watch(
        claims, lambda: loop.create_task(editor.close(CLOSE_UNAUTHORIZED, SESSION_ENDED))
    )
    editor.handler = asyncio.current_task()
    live: LiveDocument | None = None
    opened: Opened | None = None
    try:
        opened = await _open(socket, editor, rooms, str(document.id), str(workspace.id), reading)
        live = opened.live
        if live is not None:
            # Nothing is sent past what the hub has delivered: an access change up to the
            # copy's position has reached the editor first (suspending what it is sent).
            await rooms.reached(live.position)
            await rooms.join(live, editor, ask=not opened.sent_stored)
            if opened.sent_stored:
                # What reached the copy while it was built (the editor has the rest).
                missed = await rooms.answer(live, live.loaded_state)
                if missed is not None and missed != _EMPTY:
                    await editor.send(protocol.sync_update(missed))
            first = opened.pending
            if opened.receiving is not None:
                first = await opened.receiving
                if first is None:
                    return  # the connection ended, or was closed for a bad frame
            if first is None or await _take(first, editor, live, rooms):
                await _receive(socket, editor, live, rooms)
    except asyncio.CancelledError:
        if not editor.cut_off:
            raise  # the server is stopping
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
    finally:
        editor.handler = None  # what follows is not to be cut short
        expiry.cancel()
        unwatch()
        if opened is not None and opened.receiving is not None:
            opened.receiving.cancel()  # not awaited if the join failed
        if live is not None:
            await rooms.leave(live, editor)
        await editor.close(1000, "")
        # A client that stopped reading holds the writer in a send: it gets a short while to
        # take what is queued, then the connection is dropped.
        await asyncio.wait({writer}, timeout=SLOW_CLOSE_S)
        if not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer


# What a y-websocket client sends first when it holds nothing yet.
_FRESH_STEP1 = protocol.sync_step1(b"\x00")


def _read_early(rooms: Rooms, document_id: str) -> asyncio.Future[StoredDocument] | None:
    """Starts reading a document that is not in memory while the editor's access is checked
    (the two reads overlap). What it reads is used only once the check has passed."""
    if document_id in rooms.live or rooms.fetching(document_id) is not None:
        return None
    try:
        UUID(document_id)
    except ValueError:
        return None  # the check refuses it
    reading = asyncio.ensure_future(anyio.to_thread.run_sync(rooms.read_stored, document_id))
    reading.add_done_callback(_retrieve)  # unused when the check refuses, or others opened it
    return reading


@dataclass
class Opened:
    live: LiveDocument | None  # None: the connection ended first
    pending: bytes | None = None  # a first frame, still to handle
    sent_stored: bool = False  # the editor was sent the stored state
    # The editor's next frame after the stored state, being received (None: the connection
    # ended); it is handled once the editor has joined the copy.
    receiving: asyncio.Future[bytes | None] | None = None


async def _open(
    socket: WebSocket[Any, Any, Any],
    editor: Editor,
    rooms: Rooms,
    document_id: str,
    workspace_id: str,
    reading: asyncio.Future[StoredDocument] | None = None,
) -> Opened:
    """The document's live copy, once the editor may use it.

    A document not in memory is read from the store (a snapshot and the log after it), then
    built into a copy. A fresh editor need not wait for the build: if its first frame comes
    before the copy is built and is a sync step 1 of an empty document, it is answered with
    the stored bytes themselves, and the copy is built once the editor has applied them (its
    next frame says so).
    """
    if document_id in rooms.live:
        return Opened(await rooms.open(document_id))
    # The build holds the GIL and takes a CPU: it waits until this editor has taken the
    # stored bytes (or will not be sent them).
    sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        return await _open_fresh(socket, editor, rooms, document_id, workspace_id, sent, reading)
    finally:
        _release(sent)


async def _open_fresh(
    socket: WebSocket[Any, Any, Any],
    editor: Editor,
    rooms: Rooms,
    document_id: str,
    workspace_id: str,
    sent: asyncio.Future[None],
    reading: asyncio.Future[StoredDocument] | None,
) -> Opened:
    opening = asyncio.ensure_future(
        rooms.open(document_id, workspace_id, build_after=sent, reading=reading)
    )
    await asyncio.sleep(0)  # lets it start, so that what it reads can be awaited
    fetched = rooms.fetching(document_id)
    if fetched is None:
        _release(sent)
        return Opened(await opening)
    receiving = asyncio.ensure_future(_next_frame(socket, editor))
    racing: set[asyncio.Future[Any]] = {fetched, opening, receiving}
    await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    if not receiving.done():
        # Read before the editor said anything: the copy is built now, and the editor's
        # first frame, if it comes before the copy, may still be answered with the stored
        # bytes.
        _release(sent)
        done, _ = await asyncio.wait({opening, receiving}, return_when=asyncio.FIRST_COMPLETED)
        if receiving not in done:
            receiving.cancel()  # the editor said nothing yet: the usual way, then
            await asyncio.wait({receiving})
            if receiving.cancelled():
                return Opened(opening.result())
    frame = receiving.result()
    if frame is None:
        _release(sent)
        opening.add_done_callback(_retrieve)  # the copy stays for the other editors, if any
        return Opened(None)
    if frame != _FRESH_STEP1 or opening.done():
        _release(sent)
        return Opened(await opening, pending=frame)
    stored = (await asyncio.shield(fetched)).stored
    await rooms.reached(stored.position)
    await editor.send(protocol.sync_step2(stored.updates[0] if stored.updates else _EMPTY))
    for update in stored.updates[1:]:
        await editor.send(protocol.sync_update(update))
    # The server's own step 1, as on joining, but now: with the snapshot's state vector (a
    # lower bound of the copy's), the editor's answer may repeat some of the tail, which
    # changes nothing.
    await editor.send(protocol.sync_step1(stored.state_vector))
    await editor.drained()
    # The editor applies the stored bytes, then answers that step 1. Building the copy
    # meanwhile would slow its apply down (the build holds the GIL and takes a CPU): the
    # build starts once its next frame has come (or after ``rooms.build_wait_s``).
    receiving = asyncio.ensure_future(_next_frame(socket, editor))
    await asyncio.wait({receiving}, timeout=rooms.build_wait_s)
    _release(sent)
    try:
        live = await opening
    except BaseException:
        receiving.cancel()
        raise
    return Opened(live, sent_stored=True, receiving=receiving)


def _release(sent: asyncio.Future[None]) -> None:
    if not sent.done():
        sent.set_result(None)


_EMPTY = b"\x00\x00"  # a Yjs update holding nothing: no structs, no deletions


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _next_frame(socket: WebSocket[Any, Any, Any], editor: Editor) -> bytes | None:
    """The next frame if it may be handled; None when the connection ends (or is closed
    here for a bad frame)."""
    try:
        message = await socket.receive()
    except WebSocketDisconnect:
        return None
    if message["type"] == "websocket.disconnect":
        return None
    frame = message.get("bytes")
    if not isinstance(frame, bytes):
        await editor.close(CLOSE_MALFORMED, "frames are binary y-websocket messages")
        return None
    if len(frame) > MAX_FRAME_BYTES:
        await editor.close(CLOSE_TOO_BIG, f"a frame is at most {MAX_FRAME_BYTES} bytes")
        return None
    if not editor.bucket.take():
        # Dropping an update would desynchronise the client; it reconnects and resyncs.
        await editor.close(CLOSE_TOO_SLOW, "too many messages: slow down")
        return None
    return frame


async def _receive(
    socket: WebSocket[Any, Any, Any], editor: Editor, live: LiveDocument, rooms: Rooms
) -> None:
    while not editor.closed and not live.closed:
        frame = await _next_frame(socket, editor)
        if frame is None or not await _take(frame, editor, live, rooms):
            return
        # Frames already buffered are received without suspending: without this turn, a fast
        # writer would starve the other editors' writers (their outboxes would fill and cut
        # them off) and the saving of its own updates.
        await asyncio.sleep(0)


async def _take(frame: bytes, editor: Editor, live: LiveDocument, rooms: Rooms) -> bool:
    """Handles one frame; False when it closed the connection."""
    try:
        await _handle(frame, editor, live, rooms)
    except (DocumentTooLarge, UpdateTooLarge) as exc:
        await editor.close(CLOSE_TOO_BIG, str(exc))
        return False
    except (protocol.MalformedMessage, MalformedUpdate) as exc:
        await editor.close(CLOSE_MALFORMED, str(exc))
        return False
    except OverBudget as exc:
        reason = f"{exc}: retry in {exc.retry_after:.0f} s"
        await editor.close(CLOSE_OVER_BUDGET, reason[:120])
        return False
    return True


async def _handle(frame: bytes, editor: Editor, live: LiveDocument, rooms: Rooms) -> None:
    message = protocol.parse(frame)
    if message.kind == protocol.MESSAGE_SYNC:
        if message.sync_type == protocol.SYNC_STEP1:
            # Answered to this client only: a step 2 carries the whole delete set.
            protocol.check_state_vector(message.payload)
            answer = await rooms.answer(live, message.payload)
            if answer is not None:
                await editor.send(protocol.sync_step2(answer))
            return
        if editor.suspended:
            await editor.resumed()  # its access is being checked again
            if editor.closed:
                return
        if editor.can_edit:
            try:
                await rooms.update(live, editor, message.payload)
            except MissingDependencies:
                # It builds on something this copy lacks (e.g. lost in a reload): a step 1
                # makes the client send everything missing, in one self-contained step 2.
                await editor.send(protocol.sync_step1(live.room.state_vector()))
        elif not _empty(message.payload):
            await editor.send(protocol.permission_denied("read-only: you may not edit"))
    elif message.kind == protocol.MESSAGE_AWARENESS:
        await rooms.awareness(live, editor, message.payload)
    elif message.kind == protocol.MESSAGE_QUERY_AWARENESS and live.awareness:
        await rooms.send_awareness(live, editor)


def _empty(update: bytes) -> bool:
    return inspect_update(update, max_size=MAX_DOCUMENT_UPDATE_BYTES).empty
