"""Outgoing webhooks: an admin's commands, the reaction that queues one delivery per
(event, webhook), and the record of each attempt the delivery worker makes.

What a webhook may carry: only events of its own workspace (direct messages belong to none,
so never), of the types it asked for, and only those its registering admin may read when the
delivery is queued: holding ``manage_webhooks`` still, and able to read the event's channel
(a private channel they are not in: not delivered) or documents. The payload is built when
it is sent, redacted for that admin (application/webhook_delivery.py).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from application.channels import channel_with_workspace
from application.commands import (
    ChangeWebhook,
    Command,
    DeleteWebhook,
    DisableWebhook,
    EnableWebhook,
    QueueWebhookDeliveries,
    RecordWebhookAttempt,
    RegisterWebhook,
    RotateWebhookSecret,
)
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from application.projects import project_with_workspace, task_in_project
from application.reactions import Occurred, Policy
from domain.base import Cause, ChorusAggregate
from domain.channels import Channel
from domain.documents import Document
from domain.errors import InvalidValue, NotFound
from domain.messages import Message
from domain.permissions import Permission
from domain.projects import Project
from domain.scopes import event_classes
from domain.tasks import Task
from domain.webhooks import (
    MAX_EVENT_TYPES,
    Delivery,
    Webhooks,
    check_url_shape,
    delivery_id,
    webhooks_id,
)
from domain.workspaces import Workspace

HANDLERS = HandlerTable()

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_hint(secret: str) -> str:
    """What the log keeps of a secret: enough to tell two apart, nothing to sign with."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


# -- where webhook events come from -----------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """An aggregate whose events a webhook may ask for: how to find its workspace, and
    whether a user may read it (the workspace already checked to be theirs)."""

    aggregate: type[ChorusAggregate]
    workspace_of: Callable[[Any], UUID | None]
    readable: Callable[[DecisionContext, Any, str], bool]


def _channel_readable(app: DecisionContext, channel_id: str, user_id: str) -> bool:
    try:
        channel_with_workspace(app, channel_id, user_id)
    except NotFound:
        return False
    return True


def _document_readable(app: DecisionContext, document: Document, user_id: str) -> bool:
    workspace = app.load(Workspace, document.workspace_id)
    return Permission.VIEW_DOCUMENTS.value in workspace.permissions_of(user_id)


def _project_readable(app: DecisionContext, project: Project, user_id: str) -> bool:
    try:
        project_with_workspace(app, project.id, user_id)
    except NotFound:
        return False
    return True


def _task_readable(app: DecisionContext, task: Task, user_id: str) -> bool:
    try:
        task_in_project(app, task.id, user_id)
    except NotFound:
        return False
    return True


SOURCES: dict[str, Source] = {
    "Workspace": Source(Workspace, lambda w: w.id, lambda app, w, user: True),
    "Channel": Source(
        Channel,
        lambda c: c.workspace_id,
        lambda app, c, user: _channel_readable(app, str(c.id), user),
    ),
    "Message": Source(
        Message,
        lambda m: m.workspace_id,
        lambda app, m, user: _channel_readable(app, str(m.channel_id), user),
    ),
    "Document": Source(Document, lambda d: d.workspace_id, _document_readable),
    # Issue 21: a board's changes reach a workspace's integrations, a listed project's only
    # while the webhook's owner may read it.
    "Project": Source(Project, lambda p: p.workspace_id, _project_readable),
    "Task": Source(Task, lambda t: t.workspace_id, _task_readable),
}


def subscribable() -> list[type[Any]]:
    """Every event class a webhook may ask for (tests/unit/test_webhook_sources.py checks
    that every aggregate living in a workspace is a source, or is this context's own)."""
    return [e for source in SOURCES.values() for e in event_classes(source.aggregate)]


EVENT_TYPES: frozenset[str] = frozenset(e.__name__ for e in subscribable())


def check_event_types(event_types: list[str]) -> list[str]:
    """1 to 64 known event type names, sorted and without repeats."""
    if not 1 <= len(event_types) <= MAX_EVENT_TYPES:
        raise InvalidValue(f"event_types must name 1 to {MAX_EVENT_TYPES} event types")
    unknown = sorted(set(event_types) - EVENT_TYPES)
    if unknown:
        shown = ", ".join(repr(t[:64]) for t in unknown[:5])
        raise InvalidValue(
            f"unknown event types: {shown} (known: {', '.join(sorted(EVENT_TYPES))})"
        )
    return sorted(set(event_types))


# -- the reaction ----------------------------------------------------------------------------


def routed(occurred: Occurred) -> list[Command]:
    """One command per event of a source: its handler finds the webhooks that want it (none,
    mostly: that costs one existence check)."""
    event = occurred.event
    return [
        QueueWebhookDeliveries(
            source=type(event).__qualname__.split(".")[0],
            stream_id=str(event.originator_id),
            event_type=type(event).__name__,
            position=occurred.position,
            occurred_at_us=round(event.timestamp.timestamp() * 1_000_000),
        )
    ]


WEBHOOKS = Policy(
    name="webhooks",
    handles=tuple(subscribable()),
    react=routed,
    starts_with=(
        getattr(Webhooks, "WebhooksOpened"),  # noqa: B009 (made by eventsourcing)
        getattr(Webhooks, "WebhookRegistered"),  # noqa: B009
    ),
)


@HANDLERS.on(QueueWebhookDeliveries)
def queue_deliveries(app: DecisionContext, cmd: QueueWebhookDeliveries, cause: Cause) -> Decision:
    """Decided as the world is when it runs: a webhook disabled or deleted since, or whose
    registering admin can no longer read the event, gets nothing."""
    nothing = Decision([], {"queued": 0})
    source = SOURCES.get(cmd.source)
    if source is None:
        return nothing
    try:
        aggregate = app.load(source.aggregate, cmd.stream_id)
    except NotFound:
        return nothing
    workspace_id = source.workspace_of(aggregate)
    if workspace_id is None or not app.exists(webhooks_id(workspace_id)):
        return nothing
    hooks = app.load(Webhooks, webhooks_id(workspace_id))
    occurred_at = datetime.fromtimestamp(cmd.occurred_at_us / 1_000_000, UTC)
    wanting = hooks.wanting(cmd.event_type, occurred_at)
    if not wanting:
        return nothing
    workspace = app.load(Workspace, workspace_id)
    queued = app.existing([delivery_id(w, cmd.position) for w, _ in wanting])
    deliveries: list[ChorusAggregate] = []
    for webhook_id, hook in wanting:
        if delivery_id(webhook_id, cmd.position) in queued:
            continue
        admin = hook.registered_by
        if Permission.MANAGE_WEBHOOKS.value not in workspace.permissions_of(admin):
            continue
        if not source.readable(app, aggregate, admin):
            continue
        deliveries.append(
            Delivery.queue(webhook_id, workspace.id, cmd.position, cmd.event_type, cause)
        )
    if not deliveries:
        return nothing
    return Decision(deliveries, {"queued": len(deliveries)}, status=201)


@HANDLERS.on(RecordWebhookAttempt)
def record_attempt(app: DecisionContext, cmd: RecordWebhookAttempt, cause: Cause) -> Decision:
    delivery = app.load(Delivery, cmd.delivery_id)
    hooks = app.load(Webhooks, webhooks_id(delivery.workspace_id))
    retry_at = None
    if cmd.retry_after_ms is not None and not cmd.succeeded:
        retry_at = app.clock() + timedelta(milliseconds=max(0, cmd.retry_after_ms))
    delivery.attempt(cmd.attempt, cmd.status_code, cmd.error, cmd.succeeded, retry_at, cause)
    if cmd.succeeded:
        hooks.attempt_succeeded(delivery.webhook_id, cause)
    else:
        hooks.attempt_failed(delivery.webhook_id, max(1, cmd.disable_after), cause)
    changed: list[ChorusAggregate] = [delivery]
    if hooks.pending_events:
        changed.append(hooks)
    hook = hooks.hooks.get(delivery.webhook_id)
    return Decision(changed, {"state": delivery.state, "enabled": bool(hook and hook.enabled)})


# -- an admin's commands ----------------------------------------------------------------------


def _admin_of(app: DecisionContext, workspace_id: str, cause: Cause) -> Workspace:
    workspace = app.load(Workspace, workspace_id)
    workspace.check_permission(cause.actor, Permission.MANAGE_WEBHOOKS.value)
    return workspace


def _webhooks(app: DecisionContext, workspace_id: str, cause: Cause) -> Webhooks:
    workspace = _admin_of(app, workspace_id, cause)
    return app.load(Webhooks, webhooks_id(workspace.id), "webhook")


@HANDLERS.on(RegisterWebhook)
def register_webhook(app: DecisionContext, cmd: RegisterWebhook, cause: Cause) -> Decision:
    """The secret is in the answer (once) and in the credentials table beside the log, never
    in an event."""
    workspace = _admin_of(app, cmd.workspace_id, cause)
    # The scheme and addresses allowed are the operator's (checked over HTTP, with a look-up,
    # before this runs: told only to an admin); here the shape.
    if cmd.url_refused is not None:
        raise InvalidValue(cmd.url_refused)
    url = check_url_shape(cmd.url, allow_http=True)
    types = check_event_types(cmd.event_types)
    uid = webhooks_id(workspace.id)
    hooks = app.load(Webhooks, uid) if app.exists(uid) else Webhooks.open(workspace.id, cause)
    webhook_id = uuid4()
    secret = new_secret()
    hooks.register(webhook_id, url, types, secret_hint(secret), app.clock(), cause)
    return Decision(
        [hooks],
        {"id": str(webhook_id), "secret": secret},
        status=201,
        credentials={webhook_id: secret},
    )


@HANDLERS.on(ChangeWebhook)
def change_webhook(app: DecisionContext, cmd: ChangeWebhook, cause: Cause) -> Decision:
    hooks = _webhooks(app, cmd.workspace_id, cause)
    hooks.hook(cmd.webhook_id)
    if cmd.url_refused is not None:
        raise InvalidValue(cmd.url_refused)
    url = None if cmd.url is None else check_url_shape(cmd.url, allow_http=True)
    types = None if cmd.event_types is None else check_event_types(cmd.event_types)
    hooks.change(cmd.webhook_id, url, types, cause)
    return Decision([hooks])


@HANDLERS.on(RotateWebhookSecret)
def rotate_secret(app: DecisionContext, cmd: RotateWebhookSecret, cause: Cause) -> Decision:
    """The old secret stops signing at once (no overlap: receivers take the new one)."""
    hooks = _webhooks(app, cmd.workspace_id, cause)
    secret = new_secret()
    hooks.rotate_secret(cmd.webhook_id, secret_hint(secret), cause)
    return Decision([hooks], {"secret": secret}, credentials={UUID(cmd.webhook_id): secret})


@HANDLERS.on(DisableWebhook)
def disable_webhook(app: DecisionContext, cmd: DisableWebhook, cause: Cause) -> Decision:
    hooks = _webhooks(app, cmd.workspace_id, cause)
    hooks.disable(cmd.webhook_id, cause)
    return Decision([hooks])


@HANDLERS.on(EnableWebhook)
def enable_webhook(app: DecisionContext, cmd: EnableWebhook, cause: Cause) -> Decision:
    """Deliveries held while it was disabled go out again."""
    hooks = _webhooks(app, cmd.workspace_id, cause)
    hooks.enable(cmd.webhook_id, cause)
    return Decision([hooks])


@HANDLERS.on(DeleteWebhook)
def delete_webhook(app: DecisionContext, cmd: DeleteWebhook, cause: Cause) -> Decision:
    hooks = _webhooks(app, cmd.workspace_id, cause)
    hooks.delete(cmd.webhook_id, cause)
    return Decision([hooks])
