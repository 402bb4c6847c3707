"""The webhook sender (infrastructure/webhook_delivery.py) against a real HTTP receiver on
127.0.0.1: it connects to the address the check handed it (with the URL's host in ``Host``),
refuses before connecting where the policy says no, follows no redirect and gives up at its
timeout."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from infrastructure import ssrf
from infrastructure.ssrf import IPAddress, OutboundPolicy
from infrastructure.webhook_delivery import WebhookSender
from tests.fixtures.webhook_receiver import STALL, Receiver, receiver

OPEN = OutboundPolicy(allow_private=True, allow_http=True)
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def always_loopback(host: str, port: int, policy: OutboundPolicy) -> list[IPAddress]:
    """A check that found ``host`` at 127.0.0.1 (whatever the system's DNS would say)."""
    return [LOOPBACK]


def test_it_connects_to_the_checked_address_with_the_url_s_host(hooks: Receiver) -> None:
    sender = WebhookSender(OPEN, timeout_s=5, addresses=always_loopback)
    try:
        outcome = sender.send(
            f"http://hooks.invalid:{hooks.port}/checked", {"webhook-id": "msg_1"}, b"{}"
        )
    finally:
        sender.close()
    assert outcome.succeeded and outcome.status_code == 200, outcome
    (got,) = hooks.of("/checked")
    assert got.headers["host"] == f"hooks.invalid:{hooks.port}"
    assert got.headers["webhook-id"] == "msg_1" and got.body == b"{}"


def test_an_address_that_takes_no_connection_is_passed_for_the_next_checked_one(
    hooks: Receiver,
) -> None:
    """A name checked at two addresses, the receiver listening on the second only (as a
    name resolving to ::1 and 127.0.0.1 with a receiver on 127.0.0.1): it arrives."""
    nobody = ipaddress.ip_address("127.0.0.2")  # loopback too, with nothing on the port
    sender = WebhookSender(OPEN, timeout_s=5, addresses=lambda h, p, o: [nobody, LOOPBACK])
    try:
        outcome = sender.send(f"http://hooks.invalid:{hooks.port}/second", {}, b"{}")
    finally:
        sender.close()
    assert outcome.succeeded, outcome
    assert len(hooks.of("/second")) == 1


def test_a_name_resolving_to_one_refused_address_is_refused_before_connecting(
    hooks: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver answering with a public and a private address (rebinding halfway): no
    request goes out."""
    answers = [ipaddress.ip_address("93.184.215.14"), LOOPBACK]
    monkeypatch.setattr(ssrf, "resolve", lambda host, port: answers)
    sender = WebhookSender(OutboundPolicy(allow_http=True), timeout_s=5)
    https_only = WebhookSender(OutboundPolicy(), timeout_s=5)
    try:
        outcome = sender.send(f"http://hooks.invalid:{hooks.port}/refused", {}, b"{}")
        plain = https_only.send(f"http://127.0.0.1:{hooks.port}/refused", {}, b"{}")
    finally:
        sender.close()
        https_only.close()
    assert not outcome.succeeded and outcome.status_code is None
    assert outcome.error is not None and "refused" in outcome.error
    assert plain.error == "url refused: https only"
    assert hooks.of("/refused") == []


def test_redirects_are_not_followed_and_a_stall_times_out(hooks: Receiver) -> None:
    hooks.answer("/moved", 302)
    hooks.answer("/stalled", STALL)
    sender = WebhookSender(OPEN, timeout_s=0.3)
    try:
        moved = sender.send(hooks.url("/moved"), {}, b"{}")
        stalled = sender.send(hooks.url("/stalled"), {}, b"{}")
    finally:
        sender.close()
        hooks.release_stalls()
    assert (moved.status_code, moved.error, moved.succeeded) == (
        302,
        "redirects are not followed",
        False,
    )
    assert len(hooks.of("/moved")) == 1
    assert (stalled.status_code, stalled.error) == (None, "timed out")
