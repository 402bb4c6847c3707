"""Outgoing webhooks over real TLS (issue 19, point 6): a receiver on 127.0.0.1 serving a
certificate made here by a test CA (``trustme``), the server trusting that CA through the
operator's ``webhook_ca_file`` (verification on, never turned off) and reaching loopback
through ``webhook_allow_private``; plain http stays refused.

Covered: a delivery to ``https://localhost:<port>`` carries the URL's host in SNI and
``Host``, and is verified against the name; a certificate the CA did not sign, or signed for
another name, fails the attempt and nothing arrives; an answer is read up to the cap (a body
that does not end still makes a success); an envelope over the payload cap is sent with its
largest data fields withheld and named under ``redacted``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from standardwebhooks.webhooks import Webhook

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api, Running, running_chorus
from tests.fixtures.polling import wait_until
from tests.fixtures.webhook_receiver import FLOOD, Receiver, receiver

PAYLOAD_CAP = 2048


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def chorus(
    postgres_server: EmbeddedPostgres,
    tmp_path_factory: pytest.TempPathFactory,
    ca: trustme.CA,
) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("chorus")
    ca_file = tmp / "webhook-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings: dict[str, Any] = {
        "webhook_allow_private": True,  # the receiver is on 127.0.0.1
        "webhook_ca_file": str(ca_file),
        "webhook_timeout_s": 3.0,
        "webhook_attempts": 1,  # a failed attempt ends its delivery: the log shows why
        "webhook_disable_after": 100,
        "webhook_max_payload_bytes": PAYLOAD_CAP,
    }
    with running_chorus(postgres_server, tmp, **settings) as running:
        yield running


def serving(cert: trustme.LeafCert, names: list[str]) -> ssl.SSLContext:
    """A server context presenting ``cert``; the SNI names clients send go into ``names``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    def seen(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name or "")

    context.sni_callback = seen
    return context


class Scene:
    def __init__(self, chorus: Running) -> None:
        self.api: Api = chorus.api
        self.owner = self.api.signup("owner")
        made = self.api.post("/api/workspaces", self.owner, {"name": "Hooks"})
        self.ws = self.api.ok(made, 201)["id"]
        channel = self.api.post(f"/api/workspaces/{self.ws}/channels", self.owner, {"name": "c"})
        self.channel = self.api.ok(channel, 201)["id"]

    def register(self, url: str) -> dict[str, Any]:
        body = {"url": url, "event_types": ["MessageSent"]}
        made = self.api.post(f"/api/workspaces/{self.ws}/webhooks", self.owner, body)
        return dict(self.api.ok(made, 201))

    def say(self, text: str) -> dict[str, Any]:
        r = self.api.post(f"/api/channels/{self.channel}/messages", self.owner, {"text": text})
        return dict(self.api.ok(r, 201))

    def ended(self, webhook_id: str) -> dict[str, Any] | None:
        """The webhook's one delivery once it has ended (delivered or failed)."""
        r = self.api.get(f"/api/workspaces/{self.ws}/webhooks/{webhook_id}/deliveries", self.owner)
        items = self.api.ok(r)["items"]
        done = [d for d in items if d["state"] in ("delivered", "failed")]
        return dict(done[0]) if done else None


@pytest.fixture(scope="module")
def scene(chorus: Running) -> Scene:
    return Scene(chorus)


@pytest.fixture(scope="module")
def names() -> list[str]:
    return []


@pytest.fixture(scope="module")
def hooks(ca: trustme.CA, names: list[str]) -> Iterator[Receiver]:
    with receiver(serving(ca.issue_cert("localhost"), names)) as r:
        yield r


def test_https_with_the_urls_host_in_sni_and_host_checked_against_the_test_ca(
    scene: Scene, hooks: Receiver, names: list[str]
) -> None:
    made = scene.register(hooks.url("/tls", host="localhost"))
    sent = scene.say("over tls")
    (got,) = hooks.wait_for(1, path="/tls")
    payload = Webhook(made["secret"]).verify(got.body, got.headers)
    assert payload["stream"] == sent["id"] and payload["data"]["text"] == "over tls"
    assert got.headers["host"] == f"localhost:{hooks.port}"
    assert "localhost" in names
    delivery = wait_until("the delivery to end", lambda: scene.ended(made["id"]))
    assert delivery["state"] == "delivered"


@pytest.mark.parametrize("other", ["another CA", "another name"])
def test_a_certificate_not_for_this_host_by_the_trusted_ca_fails_the_attempt(
    scene: Scene, ca: trustme.CA, other: str
) -> None:
    cert = (
        trustme.CA().issue_cert("localhost")
        if other == "another CA"
        else ca.issue_cert("other.example")
    )
    with receiver(serving(cert, [])) as wrong:
        made = scene.register(wrong.url("/wrong", host="localhost"))
        scene.say(f"to a receiver with {other}")
        delivery = wait_until("the attempt to fail", lambda: scene.ended(made["id"]))
        assert wrong.of("/wrong") == []
    assert delivery["state"] == "failed"
    (attempt,) = delivery["tries"]
    assert attempt["status_code"] is None
    assert "CERTIFICATE_VERIFY_FAILED" in attempt["error"], attempt


def test_an_answer_is_read_up_to_the_cap_and_one_that_does_not_end_still_succeeds(
    scene: Scene, hooks: Receiver
) -> None:
    made = scene.register(hooks.url("/flood", host="localhost"))
    hooks.answer("/flood", FLOOD)
    scene.say("answered with a flood")
    delivery = wait_until("the delivery to end", lambda: scene.ended(made["id"]))
    assert delivery["state"] == "delivered", delivery
    assert delivery["tries"][0]["status_code"] == 200


def test_an_envelope_over_the_cap_goes_with_its_largest_fields_withheld(
    scene: Scene, hooks: Receiver
) -> None:
    made = scene.register(hooks.url("/big", host="localhost"))
    small = scene.say("small")
    big = scene.say("é" * 1500)  # 3,000 bytes of text: the envelope is over 2 KiB
    got = hooks.wait_for(2, path="/big")
    payloads = {
        p["stream"]: p for p in (Webhook(made["secret"]).verify(r.body, r.headers) for r in got)
    }
    assert all(len(r.body) <= PAYLOAD_CAP for r in got)
    assert payloads[small["id"]]["data"]["text"] == "small"
    assert "redacted" not in payloads[small["id"]]["data"]
    whole = payloads[big["id"]]
    assert whole["data"]["text"] is None and whole["data"]["redacted"] == ["text"]
    assert whole["position"] == big["position"] and whole["type"] == "MessageSent"
