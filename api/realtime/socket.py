"""The ``/ws`` endpoint: commands, subscriptions (catch-up then live) and signals on one socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from api.bootstrap import Services
from api.commands import run_command
from api.errors import ServiceUnavailable, status_of
from api.logs import note_user
from api.notifications import CLIENT_CHECKS
from api.realtime import frames, signals
from api.realtime.hub import Delivery, deliveries, scoped_deliveries
from api.session_ends import SESSION_ENDED
from application.channels import channel_with_workspace
from application.documents import document_with_workspace
from application.subscriptions import Access, Target
from domain.base import Cause
from domain.errors import DomainError, InvalidValue, NotAMember
from domain.scopes import StreamScope
from domain.workspaces import Workspace
from infrastructure import metrics, tracing
from infrastructure.tokens import AccessClaims, InvalidToken
from projections.log import (
    max_position,
    read_events,
    scoped_events,
    visibility_bound,
)
from projections.queries import run
from projections.redaction import redacted, redacted_scoped

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024
MESSAGES_PER_SECOND = 50
BURST = 100
MAX_SUBSCRIPTIONS = 32
SIGNALS_PER_SECOND = 20
INBOX_BATCHES = 1024  # a consumer this far behind is disconnected, not buffered without bound
MAX_CATCH_UP = 100_000  # events behind the head; further back, reload over REST
CATCH_UP_PAGE = 500
# Positions one scoped catch-up query looks through, at most: bounds each query's work in
# PostgreSQL when the subscriber sees few of them.
CATCH_UP_SPAN = 20_000
# A position looked through in PostgreSQL costs about this much less than an event decoded
# and filtered here (bench/catch_up.py measures both); the budget counts both.
SCAN_WEIGHT = 50
SLOW_CLOSE_S = 2.0  # how long a consumer cut off for slowness gets to take its end frame

# Close codes: 1008 policy (token expired), 1013 try again later (too slow), 4401/4403 refused
# (4401 also when the socket's session ends).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.capacity, self.tokens = rate, burst, burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class CatchUpBudget:
    """The catch-up work one connection may cause: at most ``per_minute`` events read per
    window of a minute (0: no cap), so neither many subscribe frames nor a subscriber who
    sees little of a long log can make the server read without bound. A page reserves its
    reads before it starts, so concurrent catch-ups cannot overdraw it together."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.spent = 0.0
        self.window_start = time.monotonic()

    def _roll(self) -> None:
        now = time.monotonic()
        if now - self.window_start >= self.WINDOW_S:
            self.window_start, self.spent = now, 0.0

    def exhausted(self) -> bool:
        self._roll()
        return bool(self.per_minute) and self.per_minute - self.spent < 1

    def reserve(self, wanted: int) -> int:
        """How many events the next page may read (at most ``wanted``; 0: none left in
        this window), taken from the budget until ``settle``."""
        if not self.per_minute:
            return wanted
        self._roll()
        granted = max(0, min(wanted, int(self.per_minute - self.spent)))
        self.spent += granted
        return granted

    def settle(self, reserved: int, cost: float) -> None:
        """Charges a page's real cost in place of what it reserved."""
        if self.per_minute:
            self.spent += cost - reserved

    def retry_after_s(self) -> int:
        """Whole seconds until the next window (at least 1)."""
        left = self.WINDOW_S - (time.monotonic() - self.window_start)
        return max(1, int(left) + 1)


@dataclass(frozen=True)
class CatchUpPage:
    batch: list[Delivery]
    # The position read up to (every event of the subscription's scope up to it is in
    # ``batch``), or None at the end of the log.
    reached: int | None
    decoded: int
    cost: float


class UserConnections:
    """Open ``/ws`` connections per user in this process, at most ``limit`` each (0: no
    cap), so one account cannot hold an unbounded share of the server's sockets."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def acquire(self, user_id: str) -> bool:
        count = self.open.get(user_id, 0)
        if self.limit and count >= self.limit:
            return False
        self.open[user_id] = count + 1
        return True

    def release(self, user_id: str) -> None:
        count = self.open.get(user_id, 0) - 1
        if count > 0:
            self.open[user_id] = count
        else:
            self.open.pop(user_id, None)


@dataclass(frozen=True)
class _SignalRoute:
    kind: str  # "channel" or "document"
    target_id: str
    workspace_id: str | None
    groups: list[str]


@dataclass(eq=False)
class Subscription:
    """One ``subscribe``: a listener of the process's hub with a bounded inbox. A subscribe
    naming several streams is one subscription: an event in two of them arrives once."""

    connection: Connection
    name: str
    accesses: list[Access]
    inbox: asyncio.Queue[list[Delivery]] = field(
        default_factory=lambda: asyncio.Queue(INBOX_BATCHES)
    )
    last: int = 0
    task: asyncio.Task[None] | None = None
    overflowed: bool = False

    def deliver(self, batch: list[Delivery]) -> None:
        relevant = [d for d in batch if self.concerns(d)]
        if not relevant or self.overflowed:
            return
        try:
            self.inbox.put_nowait(relevant)
        except asyncio.QueueFull:
            self.overflowed = True
            self.connection.services.hub.remove(self)
            asyncio.get_running_loop().create_task(self.connection.too_slow(self))

    def concerns(self, d: Delivery) -> bool:
        return any(a.concerns(d) for a in self.accesses)

    def check(self) -> None:
        for access in self.accesses:
            access.check()

    def stream_scope(self) -> StreamScope:
        scope = StreamScope()
        for access in self.accesses:
            scope |= access.stream_scope()
        return scope

    def changes_access(self, d: Delivery) -> bool:
        return any(a.changes_access(d) for a in self.accesses)

    def admits_cached(self, d: Delivery) -> bool | None:
        answers = [a.admits_cached(d) for a in self.accesses]
        if any(answers):
            return True
        return None if None in answers else False

    def admits(self, d: Delivery) -> bool:
        return any(a.admits(d) for a in self.accesses)

    def signal_groups(self) -> list[str]:
        """The signal-bus groups this subscription listens on (one per stream)."""
        return [a.signal_group() for a in self.accesses]


class Connection:
    def __init__(
        self, socket: WebSocket[Any, Any, Any], services: Services, claims: AccessClaims
    ) -> None:
        self.socket = socket
        self.services = services
        self.user_id = claims.user_id
        self.claims = claims
        self.subscriptions: dict[str, Subscription] = {}
        self.bucket = TokenBucket(MESSAGES_PER_SECOND, BURST)
        self.signal_bucket = TokenBucket(SIGNALS_PER_SECOND, SIGNALS_PER_SECOND * 2)
        self.catch_up_budget = CatchUpBudget(services.settings.ws_catch_up_events_per_minute)
        self._send_lock = asyncio.Lock()
        # Signals waiting for an access decision (deliver_signal): kept until done.
        self._deciding: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[Any] | None = None
        self.closed = False
        self.cut_off = False

    # -- sending ---------------------------------------------------------------------------

    async def send(self, data: bytes | str) -> None:
        if self.closed:
            return
        text = data if isinstance(data, str) else data.decode()
        async with self._send_lock:
            with contextlib.suppress(Exception):
                await self.socket.send_data(text, mode="text")

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        metrics.SOCKET_CLOSES.labels("/ws", str(code)).inc()
        log.info("closing /ws with %s: %s", code, reason, extra={"code": code, "reason": reason})
        for sub in list(self.subscriptions.values()):
            self._drop(sub)
        with contextlib.suppress(Exception):
            await self.socket.close(code=code, reason=reason)

    async def too_slow(self, sub: Subscription) -> None:
        """Ends a subscription whose consumer stopped reading, and drops the connection.

        Its pump is likely stuck in a send that the transport paused (holding the send lock):
        cancel it first, then give the end frame and close a short deadline; a peer that
        still reads nothing is cut off by ending the handler."""
        metrics.SLOW_CONSUMERS.inc()
        if sub.task is not None:
            sub.task.cancel()
        try:
            await asyncio.wait_for(
                self.send(frames.end(sub.name, "too slow: resume with after", sub.last)),
                SLOW_CLOSE_S,
            )
            await asyncio.wait_for(self.close(1013, "consumer too slow"), SLOW_CLOSE_S)
        except TimeoutError:
            self.closed = True
        # Only while the handler still runs ``run``: once it has left it (the peer went away
        # meanwhile), a cancel would land in what follows, and lose the session's end.
        if self._task is not None:
            self.cut_off = True
            self._task.cancel()

    # -- the connection's life --------------------------------------------------------------

    async def run(self) -> None:
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(
            max(0.0, self.claims.expires_at - time.time()),
            lambda: loop.create_task(self.close(1008, "token expired")),
        )
        try:
            while not self.closed:
                message = await self.socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if not isinstance(text, str):
                    await self.send(frames.error(400, "frames are JSON text"))
                    continue
                await self.handle(text.encode())
        except WebSocketDisconnect:
            pass
        except asyncio.CancelledError:
            if not self.cut_off:
                raise  # the server is stopping
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            self._task = None
            expiry.cancel()
            self.closed = True
            for sub in list(self.subscriptions.values()):
                self._drop(sub)

    async def handle(self, raw: bytes) -> None:
        if len(raw) > MAX_FRAME_BYTES:
            await self.send(frames.error(413, f"frames are limited to {MAX_FRAME_BYTES} bytes"))
            return
        if not self.bucket.take():
            metrics.REFUSED.labels("ws_frames").inc()
            await self.send(frames.error(429, f"at most {MESSAGES_PER_SECOND} frames per second"))
            return
        try:
            frame = frames.decoder.decode(raw)
        except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
            await self.send(frames.error(422, f"invalid frame: {exc}"))
            return
        except msgspec.DecodeError as exc:
            await self.send(frames.error(400, f"malformed frame: {exc}"))
            return
        match frame:
            case frames.Ping():
                await self.send(frames.PONG)
            case frames.CommandFrame():
                await self.command(frame)
            case frames.Subscribe():
                await self.subscribe(frame)
            case frames.Unsubscribe():
                sub = self.subscriptions.get(frame.sub)
                if sub is None:
                    await self.send(frames.error(404, "no such subscription", sub=frame.sub))
                else:
                    self._drop(sub)
                    await self.send(frames.end(sub.name, "unsubscribed", sub.last))
            case frames.SignalFrame():
                await self.signal(frame)

    # -- commands --------------------------------------------------------------------------

    async def command(self, frame: frames.CommandFrame) -> None:
        kind = self.services.catalogue.client_commands.get(frame.type)
        if kind is None:
            await self.send(frames.error(422, f"unknown command type {frame.type!r}", id=frame.id))
            return
        try:
            command = msgspec.convert(frame.data, kind)
        except msgspec.ValidationError as exc:
            await self.send(frames.error(422, f"invalid command: {exc}", id=frame.id))
            return
        try:
            check = CLIENT_CHECKS.get(kind)
            checked = command if check is None else await check(self.socket, self.user_id, command)
            if checked is None:  # nothing left to do: as the route answers
                await self.send(frames.ack(frame.id, None, {}))
                return
            result = await run_command(self.services, checked, Cause(self.user_id, frame.id))
        except DomainError as exc:
            await self.send(frames.error(status_of(exc), str(exc), id=frame.id))
            return
        except ServiceUnavailable as exc:  # a check's read models did not answer in time
            await self.send(frames.error(503, str(exc), id=frame.id))
            return
        if result.position is not None:
            self.services.last_writes.record(self.user_id, result.position)
        body = {k: v for k, v in result.body.items() if k != "position"}
        await self.send(frames.ack(frame.id, result.position, body))

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, frame: frames.Subscribe) -> None:
        if frame.sub in self.subscriptions:
            await self.send(frames.error(409, "subscription name in use", sub=frame.sub))
            return
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            limit = f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
            await self.send(frames.error(429, limit, sub=frame.sub))
            return
        try:
            kinds = self.services.catalogue.kinds
            targets = [Target.parse(spec, self.user_id, kinds) for spec in frame.streams]
        except DomainError as exc:
            await self.send(frames.error(status_of(exc), str(exc), sub=frame.sub))
            return
        accesses = [Access(self.services.app, self.user_id, t, kinds) for t in targets]
        sub = Subscription(self, frame.sub, accesses)
        self.subscriptions[frame.sub] = sub
        sub.task = asyncio.get_running_loop().create_task(self._pump(sub, frame.after))

    def _drop(self, sub: Subscription) -> None:
        self.services.hub.remove(sub)
        for group in sub.signal_groups():
            if not any(
                group in other.signal_groups()
                for other in self.subscriptions.values()
                if other is not sub
            ):
                self.services.signals.leave(group, self)
        if self.subscriptions.get(sub.name) is sub:
            del self.subscriptions[sub.name]
        if sub.task is not None and sub.task is not asyncio.current_task():
            sub.task.cancel()

    async def _pump(self, sub: Subscription, after: int | None) -> None:
        hub = self.services.hub
        hub.add(sub)  # buffer live events before catching up: nothing falls in the seam
        try:
            # The head first, then the check (against state at least that new): an access
            # change before the head is seen by the check; one after it is delivered live
            # (the hub buffers from above) and ends the subscription at its position.
            head = await anyio.to_thread.run_sync(self._head)
            await anyio.to_thread.run_sync(sub.check)
            if after is not None and not 0 <= after <= head:
                raise InvalidValue(f"after must be between 0 and the last position ({head})")
            if after is not None and head - after > MAX_CATCH_UP:
                raise InvalidValue(
                    f"after is more than {MAX_CATCH_UP} events behind: reload over REST,"
                    " then subscribe from its position"
                )
            if after is not None and self.catch_up_budget.exhausted():
                metrics.REFUSED.labels("ws_catch_up").inc()
                wait = self.catch_up_budget.retry_after_s()
                detail = f"catch-up budget spent: retry in {wait} s"
                await self.send(frames.error(429, detail, sub=sub.name))
                self._drop(sub)
                return
            sub.last = head if after is None else after
            for group in sub.signal_groups():
                self.services.signals.join(group, self)
            await self.send(frames.subscribed(sub.name, sub.last, head))
            if after is not None and not await self._catch_up(sub):
                # Ended during its catch-up (budget, access): what the live path queued
                # meanwhile is not this subscription's any more.
                return
            while not self.closed:
                batch = await sub.inbox.get()
                if not await self._send_batch(sub, batch):
                    return
        except DomainError as exc:
            await self.send(frames.error(status_of(exc), str(exc), sub=sub.name))
            self._drop(sub)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("subscription %s failed", sub.name)
            await self.send(frames.end(sub.name, "internal error", sub.last))
            self._drop(sub)

    def _head(self) -> int:
        with self.services.read_pool.connection() as conn, conn.cursor() as cur:
            return max_position(cur)

    async def _catch_up(self, sub: Subscription) -> bool:
        """Sends the subscription's events from ``sub.last`` to the end of the log, reading
        only its scope where the streams read model covers the log, and charging the work to
        the connection's budget; ends the subscription (resumable) when that runs out.
        False when the subscription ended (or the socket closed) rather than caught up."""
        scope = sub.stream_scope()
        budget = self.catch_up_budget
        while not self.closed:
            limit = budget.reserve(CATCH_UP_PAGE)
            if not limit:
                wait = budget.retry_after_s()
                reason = f"catch-up budget spent: resume with after in {wait} s"
                await self.send(frames.end(sub.name, reason, sub.last))
                self._drop(sub)
                return False
            try:
                page = await anyio.to_thread.run_sync(
                    self._catch_up_page, sub, scope, sub.last, limit
                )
            except BaseException:
                budget.settle(limit, 0.0)
                raise
            self.services.hub.catch_up_decoded += page.decoded
            budget.settle(limit, page.cost)
            if not await self._send_batch(sub, page.batch):
                return False
            if page.reached is None:
                return True
            sub.last = max(sub.last, page.reached)
        return False

    def _catch_up_page(
        self, sub: Subscription, scope: StreamScope, after: int, limit: int
    ) -> CatchUpPage:
        """The next page after ``after``, at most ``limit`` events read (in a worker
        thread). Up to where the visibility read models have reached, PostgreSQL picks the
        scope's events; past it (the last few events, unless projections lag), the log is
        read whole and filtered here."""
        with self.services.read_pool.connection() as conn, conn.cursor() as cur:
            bound = visibility_bound(cur)
            if after < bound:
                upto = min(bound, after + CATCH_UP_SPAN)
                found = scoped_events(cur, scope, after=after, upto=upto, limit=limit)
                found = run(cur, redacted_scoped(self.user_id, found))
                full = len(found) == limit
                reached = found[-1].event.position if full else upto
                cost = len(found) + (reached - after) / SCAN_WEIGHT
                return CatchUpPage(scoped_deliveries(found), reached, len(found), cost)
            events = run(cur, redacted(self.user_id, read_events(cur, after=after, limit=limit)))
        if not events:
            return CatchUpPage([], None, 0, 0.0)
        batch = [d for d in deliveries(events, self.services.hub.scopes) if sub.concerns(d)]
        return CatchUpPage(batch, events[-1].position, len(events), float(len(events)))

    async def _send_batch(self, sub: Subscription, batch: list[Delivery]) -> bool:
        """Sends what the user may see, in order, once; False when the subscription ended."""
        for d in batch:
            position = d.event.position
            if position <= sub.last:
                continue  # already sent (the catch-up/live seam)
            if sub.changes_access(d):
                try:
                    await anyio.to_thread.run_sync(sub.check)
                except DomainError:
                    sub.last = position - 1
                    await self.send(frames.end(sub.name, "access revoked", sub.last))
                    self._drop(sub)
                    return False
            admitted = sub.admits_cached(d)
            if admitted is None:
                admitted = await anyio.to_thread.run_sync(sub.admits, d)
            if admitted:
                metrics.DELIVERED.inc()
                if d.trace is None:
                    await self.send(frames.event(sub.name, d.envelope))
                else:
                    with tracing.span(
                        "chorus.ws.deliver",
                        parent=d.trace,
                        attributes={"chorus.position": position, "chorus.user_id": self.user_id},
                    ):
                        await self.send(frames.event(sub.name, d.envelope))
            sub.last = position
        return True

    # -- signals ---------------------------------------------------------------------------

    async def signal(self, frame: frames.SignalFrame) -> None:
        """Relays a typing/cursor/awareness signal about a channel or a document to the other
        connections that may read it."""
        if frame.kind not in signals.KINDS:
            await self.send(frames.error(422, f"kind must be one of {sorted(signals.KINDS)}"))
            return
        if (frame.channel is None) == (frame.document is None):
            await self.send(
                frames.error(422, "a signal names the channel or the document it is about")
            )
            return
        if not self.signal_bucket.take():
            metrics.REFUSED.labels("ws_signals").inc()
            await self.send(frames.error(429, f"at most {SIGNALS_PER_SECOND} signals per second"))
            return
        try:
            route = await anyio.to_thread.run_sync(self._signal_route, frame)
        except DomainError as exc:
            await self.send(frames.error(status_of(exc), str(exc)))
            return
        out: dict[str, Any] = {"op": "signal", "workspace": route.workspace_id}
        out[route.kind] = route.target_id
        out |= {"kind": frame.kind, "from": self.user_id, "data": frame.data}
        await self.services.signals.publish(
            route.groups, frames.encoder.encode(out), self, f"{route.kind}:{route.target_id}"
        )

    def _signal_route(self, frame: frames.SignalFrame) -> _SignalRoute:
        """Checks that the sender may read what the signal is about (the same 404 as for an
        unknown id otherwise) and names the groups whose readers may hear it."""
        app = self.services.app
        workspace: Workspace | None
        if frame.channel is not None:
            channel, workspace = channel_with_workspace(app, frame.channel, self.user_id)
            kind, target_id = "channel", str(channel.id)
            # A direct channel belongs to no workspace: its two members hear it on their
            # user streams.
            extra = [] if workspace is not None else [f"user:{m}" for m in channel.member_ids]
            unknown = "unknown channel"
        else:
            document, workspace = document_with_workspace(app, frame.document or "", self.user_id)
            kind, target_id, extra, unknown = "document", str(document.id), [], "unknown document"
        workspace_id = None if workspace is None else str(workspace.id)
        if frame.workspace is not None and frame.workspace != workspace_id:
            raise NotAMember(unknown)
        groups = [f"{kind}:{target_id}", *extra]
        if workspace_id is not None:
            groups.append(workspace_id)
        return _SignalRoute(kind, target_id, workspace_id, groups)

    async def deliver_signal(self, scope: str, frame: bytes) -> None:
        """Sends a signal about ``scope`` if a subscription of this connection may read it
        (signals.ScopedRecipient). A channel none of them has decided yet is looked at in a
        thread, and the signal sent after: a delivery never waits for another's decision."""
        undecided: Access | None = None
        for sub in self.subscriptions.values():
            for access in sub.accesses:
                answer = access.accepts_signal(scope)
                if answer:
                    await self.send(frame)
                    return
                if answer is None:
                    undecided = access
        if undecided is not None:
            task = asyncio.get_running_loop().create_task(self._decide(undecided, scope, frame))
            self._deciding.add(task)
            task.add_done_callback(self._deciding.discard)

    async def _decide(self, access: Access, scope: str, frame: bytes) -> None:
        if await anyio.to_thread.run_sync(access.sees_channel, scope.partition(":")[2]):
            await self.send(frame)


def _origin_allowed(socket: WebSocket[Any, Any, Any], services: Services) -> bool:
    origin = socket.headers.get("origin")
    return origin is None or origin in services.settings.cors_origins


def _claims(socket: WebSocket[Any, Any, Any], services: Services) -> AccessClaims:
    header = socket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        token, scheme = socket.query_params.get("token", ""), "bearer"
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("missing token")
    claims = services.access_tokens.decode(token.strip())
    note_user(claims.user_id)
    return claims


async def accept_authenticated(
    socket: WebSocket[Any, Any, Any], services: Services
) -> AccessClaims | None:
    """Accepts the socket, then checks its Origin and token; a refusal closes it (4403,
    4401) and gives None. Accepting first makes the refusal reach the client as a close code
    and reason, which clients treat as final, instead of a bare HTTP 403 they may retry
    forever."""
    await socket.accept()
    if not _origin_allowed(socket, services):
        metrics.SOCKET_CLOSES.labels(socket.scope["path"], str(CLOSE_FORBIDDEN)).inc()
        log.info("refused a socket: origin not allowed", extra={"code": CLOSE_FORBIDDEN})
        await socket.close(code=CLOSE_FORBIDDEN, reason="origin not allowed")
        return None
    try:
        return _claims(socket, services)
    except InvalidToken as exc:
        metrics.SOCKET_CLOSES.labels(socket.scope["path"], str(CLOSE_UNAUTHORIZED)).inc()
        log.info("refused a socket: %s", exc, extra={"code": CLOSE_UNAUTHORIZED})
        await socket.close(code=CLOSE_UNAUTHORIZED, reason=f"unauthorized: {exc}"[:120])
        return None


@websocket("/ws", name="ws")
async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
    """Commands, subscriptions and signals (see docs/API.md, "WebSocket /ws")."""
    services: Services = socket.app.state.services
    claims = await accept_authenticated(socket, services)
    if claims is None:
        return
    async with counted_socket(socket, claims.user_id) as admitted:
        if admitted:
            await _serve(socket, services, claims)


@contextlib.asynccontextmanager
async def counted_socket(
    socket: WebSocket[Any, Any, Any], user_id: str, refusal: int = CLOSE_TOO_MANY
) -> AsyncIterator[bool]:
    """Counts an accepted socket (``/ws`` or ``/yjs``: the cap is on a user's sockets,
    whatever they are for) while it is open; yields False, having closed it with ``refusal``
    (4429 on ``/ws``), when the user already holds as many as allowed."""
    # Counted on the event loop's thread only: acquiring and releasing need no lock.
    open_sockets: UserConnections | None = socket.app.state.get("ws_connections")
    endpoint = "/yjs" if str(socket.scope["path"]).startswith("/yjs") else "/ws"
    if open_sockets is not None and not open_sockets.acquire(user_id):
        reason = f"at most {open_sockets.limit} connections per user: try again later"
        metrics.REFUSED.labels("sockets_per_user").inc()
        metrics.SOCKET_CLOSES.labels(endpoint, str(refusal)).inc()
        await socket.close(code=refusal, reason=reason)
        yield False
        return
    open_now = metrics.SOCKETS.labels(endpoint)
    open_now.inc()
    try:
        yield True
    finally:
        open_now.dec()
        if open_sockets is not None:
            open_sockets.release(user_id)


async def _serve(
    socket: WebSocket[Any, Any, Any], services: Services, claims: AccessClaims
) -> None:
    connection = Connection(socket, services, claims)
    # Its session ending (logout, password change: api/session_ends.py) closes it.
    loop = asyncio.get_running_loop()
    unwatch = services.session_ends.watch(
        claims, lambda: loop.create_task(connection.close(CLOSE_UNAUTHORIZED, SESSION_ENDED))
    )
    presence = services.presence
    try:
        session = await anyio.to_thread.run_sync(presence.session_started, claims.user_id)
    except Exception:  # presence is a courtesy: the socket works without it
        log.exception("could not record the session's start")
        session = None
    try:
        await connection.run()
    finally:
        unwatch()
        if session is not None:
            try:
                await anyio.to_thread.run_sync(
                    presence.session_ended, claims.user_id, session, "disconnected"
                )
            except Exception:  # closed at shutdown or by the sweep of a lost instance
                log.exception("could not record the session's end")
