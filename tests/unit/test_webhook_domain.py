"""Webhooks in the domain (domain/webhooks.py) and where their events come from
(application/webhooks.py): which events a webhook may ask for, how failures in a row disable
it, and that a delivery's attempts are recorded once each, in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from api.contexts import CONTEXTS
from application.webhooks import EVENT_TYPES, SOURCES, check_event_types, new_secret, secret_hint
from domain.base import Cause
from domain.errors import Conflict, InvalidValue, NotFound
from domain.scopes import SELF
from domain.webhooks import (
    BY_FAILURES,
    DELIVERED,
    FAILED,
    MAX_WEBHOOKS_PER_WORKSPACE,
    Delivery,
    Webhooks,
    check_url_shape,
    delivery_id,
    message_id,
)

ADMIN = Cause(actor_id=str(uuid4()))
WORKER = Cause(actor_id=None)
NOW = datetime(2026, 12, 7, tzinfo=UTC)
OWN = {"Webhooks", "Delivery"}


def test_every_aggregate_living_in_a_workspace_is_a_source_or_this_context_s_own() -> None:
    """A new context whose streams belong to a workspace must say whether webhooks carry
    its events (a source in application/webhooks.py) or not."""
    in_workspaces = {
        a.__name__
        for a in CONTEXTS.aggregates
        if (kind := CONTEXTS.kinds.of(a)) is not None and kind.workspace not in (None,)
    }
    assert in_workspaces - OWN == set(SOURCES)
    assert all(CONTEXTS.kinds.of(SOURCES[n].aggregate) for n in SOURCES)
    assert "Workspace" in SOURCES and CONTEXTS.kinds.by_name["workspace"].workspace == SELF


def test_webhooks_cannot_ask_for_their_own_events() -> None:
    """A delivery's events would otherwise cause deliveries, without end."""
    own = {e for a in (Webhooks, Delivery) for e in vars(a) if e[:1].isupper()}
    assert "DeliveryAttempted" in own and not own & EVENT_TYPES
    assert {"MessageSent", "ChannelCreated", "MemberJoined", "DocumentCreated"} <= EVENT_TYPES
    assert check_event_types(["MessageSent", "MessageSent", "ChannelCreated"]) == [
        "ChannelCreated",
        "MessageSent",
    ]
    for bad in ([], ["DeliveryAttempted"], ["messagesent"], ["x"] * 65):
        with pytest.raises(InvalidValue):
            check_event_types(bad)


def test_url_shapes() -> None:
    assert check_url_shape("https://hooks.example/a?b=1", allow_http=False)
    for bad in (
        "http://hooks.example/",
        "ftp://hooks.example/",
        "https:///nohost",
        "https://u:p@hooks.example/",
        "https://hooks.example/#frag",
        "https://hooks.example/ space",
        "https://hooks.example:0/",
        "https://hooks.example:99999/",
        "https://" + "a" * 2048,
    ):
        with pytest.raises(InvalidValue):
            check_url_shape(bad, allow_http=False)
    assert check_url_shape("http://hooks.example/", allow_http=True)


def registry() -> tuple[Webhooks, str]:
    hooks = Webhooks.open(uuid4(), ADMIN)
    webhook_id = uuid4()
    hooks.register(webhook_id, "https://h.example/", ["MessageSent"], "h", NOW, ADMIN)
    return hooks, str(webhook_id)


def test_failures_in_a_row_disable_and_a_success_or_re_enable_starts_the_count_again() -> None:
    hooks, hook = registry()
    hooks.attempt_failed(hook, 3, WORKER)
    hooks.attempt_failed(hook, 3, WORKER)
    hooks.attempt_succeeded(hook, WORKER)  # the run is broken
    assert hooks.hook(hook).consecutive_failures == 0
    for _ in range(3):
        hooks.attempt_failed(hook, 3, WORKER)
    assert not hooks.hook(hook).enabled and hooks.hook(hook).disabled_reason == BY_FAILURES
    assert hooks.wanting("MessageSent", NOW + timedelta(1)) == []
    hooks.attempt_failed(hook, 3, WORKER)  # a late report changes nothing
    assert hooks.hook(hook).consecutive_failures == 3
    assert hooks.enable(hook, ADMIN) and hooks.hook(hook).consecutive_failures == 0
    assert [i for i, _ in hooks.wanting("MessageSent", NOW + timedelta(1))] == [hook]
    # Events from before the registration are not its business.
    assert hooks.wanting("MessageSent", NOW - timedelta(seconds=1)) == []


def test_a_deleted_or_foreign_webhook_is_unknown_and_the_count_is_capped() -> None:
    hooks, hook = registry()
    with pytest.raises(NotFound):
        hooks.hook(str(uuid4()))
    hooks.delete(hook, ADMIN)
    with pytest.raises(NotFound):
        hooks.disable(hook, ADMIN)
    for _ in range(MAX_WEBHOOKS_PER_WORKSPACE):
        hooks.register(uuid4(), "https://h.example/", ["MessageSent"], "h", NOW, ADMIN)
    with pytest.raises(Conflict):
        hooks.register(uuid4(), "https://h.example/", ["MessageSent"], "h", NOW, ADMIN)


def test_each_attempt_is_recorded_once_in_order_until_the_delivery_ends() -> None:
    hook = str(uuid4())
    delivery = Delivery.queue(hook, uuid4(), 42, "MessageSent", WORKER)
    assert delivery.id == delivery_id(hook, 42)  # one per (webhook, event)
    assert message_id(delivery.id) == f"msg_{delivery.id.hex}"
    with pytest.raises(Conflict):
        delivery.attempt(2, 500, "HTTP 500", False, NOW, WORKER)
    delivery.attempt(1, 500, "HTTP 500", False, NOW, WORKER)
    with pytest.raises(Conflict):
        delivery.attempt(1, 500, "HTTP 500", False, NOW, WORKER)  # recorded already
    delivery.attempt(2, 200, None, True, None, WORKER)
    assert delivery.state == DELIVERED
    with pytest.raises(Conflict):
        delivery.attempt(3, 200, None, True, None, WORKER)
    last = Delivery.queue(hook, uuid4(), 43, "MessageSent", WORKER)
    last.attempt(1, None, "timed out", False, None, WORKER)  # no retry left
    assert last.state == FAILED


def test_secrets_are_standard_webhooks_secrets_and_the_log_keeps_only_a_hint() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret) > 40 and new_secret() != secret
    assert secret.removeprefix("whsec_")[:8] not in secret_hint(secret)
