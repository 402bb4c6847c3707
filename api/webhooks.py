"""A workspace's outgoing webhooks over HTTP: registered, listed, changed, disabled and
enabled, deleted, their secret rotated, their delivery log read. Everything needs
``manage_webhooks`` in the workspace; another workspace's webhook is an unknown one (404).

Where a URL points is checked here, before the command runs: a look-up needs I/O, which
the handlers do not do. That is why registering and changing a URL are HTTP-only commands
(not on ``/ws``), and why each delivery checks again, on the address it connects to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response
from psycopg import AsyncCursor

from api.commands import Written, execute, reply, services_of
from api.errors import problems
from api.reads import DEFAULT_LIMIT, check_limit, check_position, read_cursor_async
from application.commands import (
    ChangeWebhook,
    DeleteWebhook,
    DisableWebhook,
    EnableWebhook,
    RegisterWebhook,
    RotateWebhookSecret,
)
from domain.base import as_uuid
from domain.errors import InvalidValue, NotAMember, NotFound, PermissionDenied
from domain.permissions import Permission
from domain.webhooks import MAX_EVENT_TYPES, MAX_URL, check_url_shape, message_id
from infrastructure.ssrf import AddressRefused, HostUnresolved, OutboundPolicy, checked_addresses
from projections import webhooks as views
from projections.queries import run_async
from projections.workspaces import permissions_of

Req = Request[str, Any, Any]
WRITE_ERRORS = problems(400, 401, 403, 404, 409, 413, 422, 429)
READ_ERRORS = problems(401, 403, 404, 422, 429)

EventTypes = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=64)]],
    msgspec.Meta(min_length=1, max_length=MAX_EVENT_TYPES),
]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL)]


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    event_types: EventTypes


class ChangeBody(msgspec.Struct, forbid_unknown_fields=True):
    url: Url | None = None
    event_types: EventTypes | None = None


class Registered(msgspec.Struct):
    """``secret`` is shown here once (and by a rotation): keep it."""

    id: str
    secret: str
    position: int | None


class Rotated(msgspec.Struct):
    secret: str
    position: int | None


class WebhookView(msgspec.Struct):
    id: str
    url: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    registered_by: str
    secret_hint: str
    created_at: datetime
    updated_at: datetime


class WebhookList(msgspec.Struct):
    items: list[WebhookView]
    next: str | None = None


class AttemptView(msgspec.Struct):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    succeeded: bool
    retry_at: datetime | None


class DeliveryView(msgspec.Struct):
    id: str
    webhook_message_id: str
    position: int
    event_type: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    tries: list[AttemptView]


class DeliveryPage(msgspec.Struct):
    items: list[DeliveryView]
    next: str | None


async def _require_admin(cur: AsyncCursor[Any], ws: str, user: str) -> None:
    """As the handlers decide it, from the read models: a non-member is told the workspace
    does not exist, a member without ``manage_webhooks`` that they may not."""
    held = await run_async(cur, permissions_of(ws, user))
    if held is None:
        raise NotAMember("unknown workspace")
    if Permission.MANAGE_WEBHOOKS.value not in held:
        raise PermissionDenied(f"missing permission {Permission.MANAGE_WEBHOOKS.value!r}")


async def _url_refused(request: Req, url: str) -> str | None:
    """Why the operator's policy refuses ``url`` (a scheme, a literal address in any
    spelling, or a name resolving to a refused address), or None. The handler tells it
    (422) only to an admin of the workspace, after its own checks: nobody else learns how a
    URL fares. A name that does not resolve now is taken: each delivery checks again."""
    settings = services_of(request).settings
    policy = OutboundPolicy(settings.webhook_allow_private, settings.webhook_allow_http)
    try:
        check_url_shape(url, allow_http=policy.allow_http)
    except InvalidValue as exc:
        return str(exc)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        await anyio.to_thread.run_sync(checked_addresses, host, port, policy)
    except AddressRefused as exc:
        return f"url refused: {exc}"
    except HostUnresolved:
        pass
    return None


def _webhook_id(value: str) -> str:
    try:
        return str(as_uuid(value))
    except NotFound:
        raise NotFound("unknown webhook") from None


class WebhookController(Controller):
    path = "/api/workspaces/{ws:str}/webhooks"
    tags = ["webhooks"]

    @post("/", operation_id="RegisterWebhook", responses=WRITE_ERRORS)
    async def register(
        self, request: Req, ws: FromPath[str], data: JSONBody[RegisterBody]
    ) -> Response[Registered]:
        """Registers a URL for the event types named (needs ``manage_webhooks``). The answer
        carries the signing secret, shown only here."""
        cmd = RegisterWebhook(
            workspace_id=ws,
            url=data.url,
            event_types=data.event_types,
            url_refused=await _url_refused(request, data.url),
        )
        return reply(await execute(request, cmd, request.user), Registered)

    @get("/", operation_id="ListWebhooks", responses=READ_ERRORS)
    async def list_all(
        self, request: Req, ws: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> WebhookList:
        """The workspace's webhooks (at most 20), oldest first; no secrets."""
        workspace = str(as_uuid(ws))
        async with read_cursor_async(request, min_position) as cur:
            await _require_admin(cur, workspace, request.user)
            rows = await run_async(cur, views.list_webhooks(workspace))
        return WebhookList([msgspec.convert(r, WebhookView) for r in rows])

    @get("/{webhook:str}", operation_id="GetWebhook", responses=READ_ERRORS)
    async def show(
        self,
        request: Req,
        ws: FromPath[str],
        webhook: FromPath[str],
        min_position: FromQuery[int | None] = None,
    ) -> WebhookView:
        workspace = str(as_uuid(ws))
        async with read_cursor_async(request, min_position) as cur:
            await _require_admin(cur, workspace, request.user)
            row = await run_async(cur, views.get_webhook(workspace, _webhook_id(webhook)))
        if row is None:
            raise NotFound("unknown webhook")
        return msgspec.convert(row, WebhookView)

    @patch("/{webhook:str}", operation_id="ChangeWebhook", responses=WRITE_ERRORS)
    async def change(
        self, request: Req, ws: FromPath[str], webhook: FromPath[str], data: JSONBody[ChangeBody]
    ) -> Response[Written]:
        """Changes the URL or the event types (a field left out keeps its value)."""
        cmd = ChangeWebhook(
            workspace_id=ws,
            webhook_id=_webhook_id(webhook),
            url=data.url,
            event_types=data.event_types,
            url_refused=None if data.url is None else await _url_refused(request, data.url),
        )
        return reply(await execute(request, cmd, request.user), Written)

    @post(
        "/{webhook:str}/disable",
        operation_id="DisableWebhook",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def disable(
        self, request: Req, ws: FromPath[str], webhook: FromPath[str]
    ) -> Response[Written]:
        """Stops deliveries: events meanwhile are not queued, queued ones wait."""
        cmd = DisableWebhook(workspace_id=ws, webhook_id=_webhook_id(webhook))
        return reply(await execute(request, cmd, request.user), Written)

    @post(
        "/{webhook:str}/enable",
        operation_id="EnableWebhook",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def enable(
        self, request: Req, ws: FromPath[str], webhook: FromPath[str]
    ) -> Response[Written]:
        """Resumes deliveries (also after an automatic disable), with the waiting ones."""
        cmd = EnableWebhook(workspace_id=ws, webhook_id=_webhook_id(webhook))
        return reply(await execute(request, cmd, request.user), Written)

    @post(
        "/{webhook:str}/rotate-secret",
        operation_id="RotateWebhookSecret",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def rotate(
        self, request: Req, ws: FromPath[str], webhook: FromPath[str]
    ) -> Response[Rotated]:
        """A new signing secret, shown only here; the old one stops signing at once."""
        cmd = RotateWebhookSecret(workspace_id=ws, webhook_id=_webhook_id(webhook))
        return reply(await execute(request, cmd, request.user), Rotated)

    @delete(
        "/{webhook:str}",
        operation_id="DeleteWebhook",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def remove(
        self, request: Req, ws: FromPath[str], webhook: FromPath[str]
    ) -> Response[Written]:
        cmd = DeleteWebhook(workspace_id=ws, webhook_id=_webhook_id(webhook))
        return reply(await execute(request, cmd, request.user), Written)

    @get("/{webhook:str}/deliveries", operation_id="ListWebhookDeliveries", responses=READ_ERRORS)
    async def deliveries(
        self,
        request: Req,
        ws: FromPath[str],
        webhook: FromPath[str],
        limit: FromQuery[int] = DEFAULT_LIMIT,
        before: FromQuery[int | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> DeliveryPage:
        """The delivery log, newest event first, each delivery with its attempts; pass
        ``next`` back as ``before``."""
        check_limit(limit)
        check_position("before", before)
        workspace = str(as_uuid(ws))
        webhook_id = _webhook_id(webhook)
        async with read_cursor_async(request, min_position) as cur:
            await _require_admin(cur, workspace, request.user)
            if await run_async(cur, views.get_webhook(workspace, webhook_id)) is None:
                raise NotFound("unknown webhook")
            rows = await run_async(
                cur, views.list_deliveries(webhook_id, limit=limit + 1, before=before)
            )
        items = [
            DeliveryView(
                webhook_message_id=message_id(UUID(r["id"])),
                **{k: v for k, v in r.items() if k != "tries"},
                tries=[msgspec.convert(t, AttemptView, strict=False) for t in r["tries"]],
            )
            for r in rows[:limit]
        ]
        more = len(rows) > limit
        return DeliveryPage(items, str(items[-1].position) if more else None)
