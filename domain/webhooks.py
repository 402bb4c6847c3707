"""Outgoing webhooks: each workspace's registered endpoints, and one delivery per (event,
webhook).

A workspace's webhooks are one stream (``Webhooks``, at a fixed id per workspace, opened by
its first registration): the reaction that routes an event to the webhooks that want it
loads one aggregate, and a workspace without webhooks costs it one existence check. Each
delivery is a stream of its own (``Delivery``) at an id derived from the webhook and the
causing event's position, so the store itself refuses a second delivery of one event to one
webhook; its id is also the ``webhook-id`` header the receiver sees on every attempt.

The signing secret is never in these events: it lives beside the log, in the credentials
table (application/webhooks.py); the log keeps only a short hint to tell secrets apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import Conflict, InvalidValue, NotFound
from domain.permissions import Permission
from domain.scopes import StreamKind, holders_of

_WEBHOOKS = uuid5(NAMESPACE_URL, "chorus:webhooks")

MAX_URL = 2048
MAX_EVENT_TYPES = 64
MAX_WEBHOOKS_PER_WORKSPACE = 20
# Why a webhook was disabled.
BY_ADMIN = "admin"
BY_FAILURES = "failures"
# A delivery's states.
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


def webhooks_id(workspace_id: str | UUID) -> UUID:
    """A workspace's webhooks have a fixed stream id: two first registrations at once
    conflict on its first version (one is decided again) instead of opening two."""
    return uuid5(_WEBHOOKS, str(workspace_id))


def delivery_id(webhook_id: str | UUID, position: int) -> UUID:
    """One delivery per (webhook, causing event): the same id however often it is queued."""
    return uuid5(UUID(str(webhook_id)), f"event:{position}")


def message_id(delivery: UUID) -> str:
    """The ``webhook-id`` header: the same on every attempt of one delivery."""
    return f"msg_{delivery.hex}"


@dataclass(frozen=True)
class Due:
    """A delivery whose next attempt is due, with what sending it needs (read from the read
    model, projections/webhooks.py; sent by application/webhook_delivery.py)."""

    delivery_id: str
    webhook_id: str
    position: int
    attempt: int  # the number of this attempt (1 for the first)
    url: str
    registered_by: str


def check_url_shape(url: str, *, allow_http: bool) -> str:
    """What the domain says of a webhook URL without looking anything up: absolute http(s)
    (http only where the operator allows it), a host, no credentials, no fragment. Where it
    points is checked by the caller (infrastructure/ssrf.py), before and at each delivery."""
    if not 1 <= len(url) <= MAX_URL:
        raise InvalidValue(f"url must be 1 to {MAX_URL} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidValue("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidValue("url is not a valid URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidValue("url must be https" + ("" if allow_http else " (http is not allowed)"))
    if not parts.hostname:
        raise InvalidValue("url must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidValue("url must not carry credentials")
    if parts.fragment:
        raise InvalidValue("url must not have a fragment")
    if port == 0:
        raise InvalidValue("url port must not be 0")
    return url


@dataclass
class Hook:
    """One webhook as the workspace's stream holds it."""

    url: str
    event_types: list[str]
    registered_by: str
    secret_hint: str
    # Events that happened before are not its business, however late the reaction runs.
    registered_at: datetime | None = None
    enabled: bool = True
    disabled_reason: str | None = None
    consecutive_failures: int = 0
    deleted: bool = False

    def wants(self, event_type: str, occurred_at: datetime) -> bool:
        return (
            self.enabled
            and not self.deleted
            and event_type in self.event_types
            and (self.registered_at is None or self.registered_at <= occurred_at)
        )


class Webhooks(ChorusAggregate):
    """The webhooks of one workspace: registered, changed, disabled and enabled (by an
    admin, or automatically after repeated failures), deleted."""

    stream_kind = StreamKind(
        "webhooks", holders_of(Permission.MANAGE_WEBHOOKS), workspace="workspace_id"
    )

    @classmethod
    @caused
    def open(cls, workspace_id: UUID, cause: Cause) -> Webhooks:
        return cls(
            id=webhooks_id(workspace_id),
            workspace_id=workspace_id,
        )

    @event("WebhooksOpened")
    def __init__(self, id: UUID, workspace_id: UUID) -> None:
        self.workspace_id = workspace_id
        self.hooks: dict[str, Hook] = {}

    # -- queries -----------------------------------------------------------------------------

    def hook(self, webhook_id: str | UUID) -> Hook:
        """A webhook of this workspace; one of another workspace, a deleted one or an unknown
        id are the same NotFound."""
        found = self.hooks.get(str(webhook_id))
        if found is None or found.deleted:
            raise NotFound("unknown webhook")
        return found

    def wanting(self, event_type: str, occurred_at: datetime) -> list[tuple[str, Hook]]:
        """The enabled webhooks that want ``event_type`` and were registered before
        ``occurred_at``, in registration order."""
        return [(i, h) for i, h in self.hooks.items() if h.wants(event_type, occurred_at)]

    # -- an admin's changes -----------------------------------------------------------------

    @caused
    def register(
        self,
        webhook_id: UUID,
        url: str,
        event_types: list[str],
        secret_hint: str,
        now: datetime,
        cause: Cause,
    ) -> None:
        live = sum(1 for h in self.hooks.values() if not h.deleted)
        if live >= MAX_WEBHOOKS_PER_WORKSPACE:
            raise Conflict(f"a workspace has at most {MAX_WEBHOOKS_PER_WORKSPACE} webhooks")
        self._registered(
            webhook_id=str(webhook_id),
            url=url,
            event_types=event_types,
            secret_hint=secret_hint,
            registered_by=cause.actor,
            registered_at=now,
        )

    @event("WebhookRegistered")
    def _registered(
        self,
        webhook_id: str,
        url: str,
        event_types: list[str],
        secret_hint: str,
        registered_by: str,
        registered_at: datetime,
    ) -> None:
        self.hooks[webhook_id] = Hook(
            url, list(event_types), registered_by, secret_hint, registered_at
        )

    @caused
    def change(
        self, webhook_id: str, url: str | None, event_types: list[str] | None, cause: Cause
    ) -> bool:
        """False (nothing recorded) when nothing would change."""
        hook = self.hook(webhook_id)
        new_url = hook.url if url is None else url
        new_types = hook.event_types if event_types is None else event_types
        if (new_url, new_types) == (hook.url, hook.event_types):
            return False
        self._changed(
            webhook_id=webhook_id,
            url=new_url,
            event_types=new_types,
        )
        return True

    @event("WebhookChanged")
    def _changed(
        self,
        webhook_id: str,
        url: str,
        event_types: list[str],
    ) -> None:
        hook = self.hooks[webhook_id]
        hook.url, hook.event_types = url, list(event_types)

    @caused
    def rotate_secret(self, webhook_id: str, secret_hint: str, cause: Cause) -> None:
        self.hook(webhook_id)
        self._secret_rotated(
            webhook_id=webhook_id,
            secret_hint=secret_hint,
        )

    @event("WebhookSecretRotated")
    def _secret_rotated(self, webhook_id: str, secret_hint: str) -> None:
        self.hooks[webhook_id].secret_hint = secret_hint

    @caused
    def disable(self, webhook_id: str, cause: Cause, reason: str = BY_ADMIN) -> bool:
        """False (nothing recorded) when already disabled."""
        hook = self.hook(webhook_id)
        if not hook.enabled:
            return False
        self._disabled(
            webhook_id=webhook_id,
            reason=reason,
        )
        return True

    @event("WebhookDisabled")
    def _disabled(self, webhook_id: str, reason: str) -> None:
        hook = self.hooks[webhook_id]
        hook.enabled, hook.disabled_reason = False, reason

    @caused
    def enable(self, webhook_id: str, cause: Cause) -> bool:
        """False (nothing recorded) when already enabled. Counting failures starts again."""
        hook = self.hook(webhook_id)
        if hook.enabled:
            return False
        self._enabled(webhook_id=webhook_id)
        return True

    @event("WebhookEnabled")
    def _enabled(self, webhook_id: str) -> None:
        hook = self.hooks[webhook_id]
        hook.enabled, hook.disabled_reason, hook.consecutive_failures = True, None, 0

    @caused
    def delete(self, webhook_id: str, cause: Cause) -> None:
        self.hook(webhook_id)
        self._deleted(webhook_id=webhook_id)

    @event("WebhookDeleted")
    def _deleted(self, webhook_id: str) -> None:
        self.hooks[webhook_id].deleted = True

    # -- what deliveries report ------------------------------------------------------------

    @caused
    def attempt_failed(self, webhook_id: str, disable_after: int, cause: Cause) -> None:
        """Counts a failed attempt; the ``disable_after``-th in a row disables the webhook.
        Nothing for a webhook disabled or deleted meanwhile."""
        hook = self.hooks.get(webhook_id)
        if hook is None or hook.deleted or not hook.enabled:
            return
        self._failed(
            webhook_id=webhook_id,
            consecutive=hook.consecutive_failures + 1,
        )
        if hook.consecutive_failures >= disable_after:
            self.disable(webhook_id, cause, reason=BY_FAILURES)

    @event("WebhookAttemptFailed")
    def _failed(self, webhook_id: str, consecutive: int) -> None:
        self.hooks[webhook_id].consecutive_failures = consecutive

    @caused
    def attempt_succeeded(self, webhook_id: str, cause: Cause) -> None:
        """Ends a run of failures (nothing recorded when there was none)."""
        hook = self.hooks.get(webhook_id)
        if hook is None or hook.deleted or hook.consecutive_failures == 0:
            return
        self._recovered(webhook_id=webhook_id)

    @event("WebhookRecovered")
    def _recovered(self, webhook_id: str) -> None:
        self.hooks[webhook_id].consecutive_failures = 0


class Delivery(ChorusAggregate):
    """One event on its way to one webhook: queued once, then each attempt (its HTTP
    status or error, and when the next one is due) until one succeeds or they run out."""

    stream_kind = StreamKind(
        "webhook_delivery", holders_of(Permission.MANAGE_WEBHOOKS), workspace="workspace_id"
    )

    @classmethod
    @caused
    def queue(
        cls,
        webhook_id: str,
        workspace_id: UUID,
        position: int,
        event_type: str,
        cause: Cause,
    ) -> Delivery:
        return cls(
            id=delivery_id(webhook_id, position),
            webhook_id=webhook_id,
            workspace_id=workspace_id,
            position=position,
            event_type=event_type,
        )

    @event("DeliveryQueued")
    def __init__(
        self,
        id: UUID,
        webhook_id: str,
        workspace_id: UUID,
        position: int,
        event_type: str,
    ) -> None:
        self.webhook_id = webhook_id
        self.workspace_id = workspace_id
        self.position = position
        self.event_type = event_type
        self.attempts = 0
        self.state = PENDING

    @caused
    def attempt(
        self,
        number: int,
        status_code: int | None,
        error: str | None,
        succeeded: bool,
        retry_at: datetime | None,
        cause: Cause,
    ) -> None:
        """Attempt ``number`` (1 for the first) and its outcome. ``retry_at``: when the next
        is due, None when a failed one was the last. Refused for an attempt already recorded
        (a worker that recorded it before it was killed sends it again) or after the end."""
        if self.state != PENDING:
            raise Conflict(f"the delivery is already {self.state}")
        if number != self.attempts + 1:
            raise Conflict(f"attempt {number} is not the next one ({self.attempts + 1})")
        if not 0 <= (status_code or 0) < 1000:
            raise InvalidValue("status_code out of range")
        self._attempted(
            attempt=number,
            status_code=status_code,
            error=error,
            succeeded=succeeded,
            retry_at=None if succeeded else retry_at,
        )

    @event("DeliveryAttempted")
    def _attempted(
        self,
        attempt: int,
        status_code: int | None,
        error: str | None,
        succeeded: bool,
        retry_at: datetime | None,
    ) -> None:
        self.attempts = attempt
        if succeeded:
            self.state = DELIVERED
        elif retry_at is None:
            self.state = FAILED
