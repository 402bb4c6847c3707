"""Outgoing webhooks (issue 19, point 6), end to end: a real Chorus server, a real HTTP
receiver on 127.0.0.1 (allowed here by the operator's settings), the Standard Webhooks
library verifying what arrives.

Covered: signed deliveries of the types asked for and no others; retries after a 500 and a
timeout with one ``webhook-id`` and a doubling delay; automatic disabling after failures in
a row and a re-enable that resumes; a private channel the registering admin is not in is not
delivered; the delivery log; the secret shown once and never in the log; and, without the
operator's settings, private and plain-http URLs refused with 422 and nothing appended.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import NOT_BY_REACTIONS, Api, Running, User, running_chorus
from tests.fixtures.polling import wait_until
from tests.fixtures.webhook_receiver import STALL, Receiver, receiver

TIMEOUT_S = 0.5
RETRY_BASE_S = 0.2
CHORUS_SETTINGS = {
    "webhook_allow_private": True,
    "webhook_allow_http": True,
    "webhook_timeout_s": TIMEOUT_S,
    "webhook_retry_base_s": RETRY_BASE_S,
    "webhook_retry_max_s": 5.0,
    "webhook_attempts": 6,
    "webhook_disable_after": 3,
}


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


class Scene:
    def __init__(self, chorus: Running) -> None:
        self.api: Api = chorus.api
        self.url = chorus.database_url
        self.owner = self.api.signup("owner")
        self.ws = self.api.ok(self.api.post("/api/workspaces", self.owner, {"name": "Hooks"}), 201)[
            "id"
        ]
        self.channel = self.new_channel("general")

    def new_channel(self, name: str, private: bool = False) -> str:
        body = {"name": name, "private": private}
        made = self.api.post(f"/api/workspaces/{self.ws}/channels", self.owner, body)
        return str(self.api.ok(made, 201)["id"])

    def register(self, url: str, types: list[str], user: User | None = None) -> dict[str, Any]:
        body = {"url": url, "event_types": types}
        r = self.api.post(f"/api/workspaces/{self.ws}/webhooks", user or self.owner, body)
        return dict(self.api.ok(r, 201))

    def say(self, text: str, channel: str | None = None) -> dict[str, Any]:
        r = self.api.post(
            f"/api/channels/{channel or self.channel}/messages", self.owner, {"text": text}
        )
        return dict(self.api.ok(r, 201))

    def webhook(self, webhook_id: str) -> dict[str, Any]:
        r = self.api.get(f"/api/workspaces/{self.ws}/webhooks/{webhook_id}", self.owner)
        return dict(self.api.ok(r))

    def events(self) -> int:
        """Events clients' commands appended: the delivery worker's and the reactions' come at
        moments of their own (an earlier test's retries), so they are left out."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                f"SELECT count(*) FROM chorus_events WHERE {NOT_BY_REACTIONS}"
                " AND topic NOT LIKE 'domain.webhooks:Delivery.%%'"
                " AND topic NOT LIKE 'domain.webhooks:Webhooks.WebhookAttemptFailed'"
                " AND topic NOT LIKE 'domain.webhooks:Webhooks.WebhookRecovered'"
                " AND topic NOT LIKE 'domain.webhooks:Webhooks.WebhookDisabled'"
            ).fetchone()
        return int(row[0]) if row else 0

    def reacted_past(self, position: int) -> None:
        """Waits until the webhooks reaction has handled every event up to ``position``."""

        def passed() -> bool:
            with psycopg.connect(self.url) as conn:
                row = conn.execute(
                    "SELECT position, done FROM chorus_reactions WHERE policy = 'webhooks'"
                ).fetchone()
            return row is not None and (row[0] > position or (row[0] == position and not row[1]))

        wait_until(f"the webhooks reaction to pass {position}", passed)

    def delivered(self, webhook_id: str, count: int) -> list[dict[str, Any]] | None:
        """The delivery log once ``count`` deliveries in it are delivered."""
        log = self.deliveries(webhook_id)
        return log if sum(d["state"] == "delivered" for d in log) >= count else None

    def deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        r = self.api.get(f"/api/workspaces/{self.ws}/webhooks/{webhook_id}/deliveries", self.owner)
        return list(self.api.ok(r)["items"])


@pytest.fixture(scope="module")
def scene(chorus: Running) -> Scene:
    return Scene(chorus)


def verified(secret: str, request: Any) -> dict[str, Any]:
    """The payload, once the Standard Webhooks library has checked its signature."""
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


def test_deliveries_are_signed_envelopes_of_the_types_asked_for(
    scene: Scene, hooks: Receiver
) -> None:
    made = scene.register(hooks.url("/signed"), ["MessageSent"])
    assert made["secret"].startswith("whsec_")
    first = scene.say("hello hooks")
    edited = scene.api.patch(f"/api/messages/{first['id']}", scene.owner, {"text": "edited"})
    scene.api.ok(edited)
    second = scene.say("second")
    scene.reacted_past(second["position"])
    got = hooks.wait_for(2, path="/signed")
    payloads = [verified(made["secret"], r) for r in got]
    # The envelope of docs/API.md, for MessageSent only (the edit was not asked for).
    assert [p["type"] for p in payloads] == ["MessageSent", "MessageSent"]
    assert [p["stream"] for p in payloads] == [first["id"], second["id"]]
    assert payloads[0]["position"] == first["position"]
    assert set(payloads[0]) == {
        "position", "stream", "version", "type", "at", "actor", "command_id", "data",
    }  # fmt: skip
    assert [p["data"]["text"] for p in payloads] == ["hello hooks", "second"]
    assert got[0].headers["webhook-id"] != got[1].headers["webhook-id"]
    assert got[0].headers["content-type"] == "application/json"
    # A wrong secret does not verify.
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "QUJD" * 8).verify(got[0].body, got[0].headers)

    log = wait_until("both deliveries in the log", lambda: scene.delivered(made["id"], 2))
    assert [d["position"] for d in log] == [second["position"], first["position"]]
    assert {d["webhook_message_id"] for d in log} == {r.headers["webhook-id"] for r in got}
    assert all(d["attempts"] == 1 and d["tries"][0]["status_code"] == 200 for d in log)


def test_the_secret_is_shown_once_and_never_stored_in_the_log(
    scene: Scene, hooks: Receiver
) -> None:
    made = scene.register(hooks.url("/secret"), ["ChannelCreated"])
    rotated = scene.api.post(
        f"/api/workspaces/{scene.ws}/webhooks/{made['id']}/rotate-secret", scene.owner
    )
    new_secret = scene.api.ok(rotated)["secret"]
    assert new_secret != made["secret"]
    shown = scene.webhook(made["id"])
    assert "secret" not in shown and shown["secret_hint"].startswith("sha256:")
    listed = scene.api.ok(scene.api.get(f"/api/workspaces/{scene.ws}/webhooks", scene.owner))
    assert made["secret"] not in json.dumps(listed) and new_secret not in json.dumps(listed)
    with psycopg.connect(scene.url) as conn:
        for secret in (made["secret"], new_secret):
            key = secret.removeprefix("whsec_")
            row = conn.execute(
                "SELECT count(*) FROM chorus_events WHERE position(%s in convert_from(state,"
                " 'UTF8')) > 0",
                (key[:16],),
            ).fetchone()
            assert row is not None and row[0] == 0
    # The rotated secret signs from now on.
    scene.new_channel("after-rotation")
    got = hooks.wait_for(1, path="/secret")
    assert verified(new_secret, got[0])["type"] == "ChannelCreated"
    with pytest.raises(Exception, match="signature"):
        verified(made["secret"], got[0])


def test_a_failed_attempt_is_retried_with_the_same_id_after_a_doubling_delay(
    scene: Scene, hooks: Receiver
) -> None:
    made = scene.register(hooks.url("/retry"), ["MessageSent"])
    hooks.answer("/retry", 500, STALL)  # then 200
    sent = scene.say("retry me")
    got = hooks.wait_for(3, path="/retry")
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert all(verified(made["secret"], r)["stream"] == sent["id"] for r in got)
    # Attempt 2 came at least the first delay after attempt 1; attempt 3 at least the
    # timeout and the doubled delay after attempt 2.
    assert got[1].at - got[0].at >= RETRY_BASE_S
    assert got[2].at - got[1].at >= TIMEOUT_S + 2 * RETRY_BASE_S

    delivery = wait_until("the delivery to succeed", lambda: scene.delivered(made["id"], 1))[0]
    tries = delivery["tries"]
    assert [t["status_code"] for t in tries] == [500, None, 200]
    assert tries[0]["error"] == "HTTP 500" and tries[1]["error"] == "timed out"
    assert [t["succeeded"] for t in tries] == [False, False, True]
    assert tries[2]["retry_at"] is None
    assert scene.webhook(made["id"])["consecutive_failures"] == 0


def test_failures_in_a_row_disable_the_webhook_and_a_re_enable_resumes(
    scene: Scene, hooks: Receiver
) -> None:
    made = scene.register(hooks.url("/failing"), ["MessageSent"])
    hooks.answer("/failing", 503, 503, 503)
    held = scene.say("held back")
    hooks.wait_for(3, path="/failing")
    disabled = wait_until(
        "the webhook to be disabled",
        lambda: (w := scene.webhook(made["id"]))["enabled"] is False and w,
    )
    assert disabled["disabled_reason"] == "failures"
    assert disabled["consecutive_failures"] == 3
    # Disabled: a new event is not queued, the pending delivery waits.
    scene.reacted_past(scene.say("while disabled")["position"])
    log = scene.deliveries(made["id"])
    assert [(d["position"], d["state"], d["attempts"]) for d in log] == [
        (held["position"], "pending", 3)
    ]
    enabled = scene.api.post(
        f"/api/workspaces/{scene.ws}/webhooks/{made['id']}/enable", scene.owner
    )
    scene.api.ok(enabled)
    got = hooks.wait_for(4, path="/failing")
    assert len({r.headers["webhook-id"] for r in got}) == 1
    after = wait_until("the held delivery to go out", lambda: scene.delivered(made["id"], 1))
    assert len(after) == 1 and after[0]["attempts"] == 4
    assert scene.webhook(made["id"])["enabled"] is True
    assert len(hooks.of("/failing")) == 4


def test_a_private_channel_the_registering_admin_is_not_in_is_not_delivered(
    scene: Scene, hooks: Receiver
) -> None:
    admin = scene.api.signup("admin")
    code = scene.api.ok(
        scene.api.post(f"/api/workspaces/{scene.ws}/invites", scene.owner, {}), 201
    )["code"]
    scene.api.ok(scene.api.post(f"/api/invites/{code}/accept", admin))
    scene.api.ok(
        scene.api.put(
            f"/api/workspaces/{scene.ws}/members/{admin.user_id}/roles/admin", scene.owner
        )
    )
    made = scene.register(hooks.url("/private"), ["MessageSent"], user=admin)
    secret_channel = scene.new_channel("owners-only", private=True)
    scene.say("not for the admin", channel=secret_channel)
    public = scene.say("for everyone")
    got = hooks.wait_for(1, path="/private")
    assert verified(made["secret"], got[0])["stream"] == public["id"]
    # The private message came first in the log: had it been queued, it would be here.
    log = wait_until("the delivery in the log", lambda: scene.delivered(made["id"], 1))
    assert [d["position"] for d in log] == [public["position"]]


def test_only_admins_with_the_permission_manage_webhooks_and_ids_stay_in_their_workspace(
    scene: Scene, hooks: Receiver
) -> None:
    made = scene.register(hooks.url("/acl"), ["MemberJoined"])
    member = scene.api.signup("member")
    code = scene.api.ok(
        scene.api.post(f"/api/workspaces/{scene.ws}/invites", scene.owner, {}), 201
    )["code"]
    scene.api.ok(scene.api.post(f"/api/invites/{code}/accept", member))
    body = {"url": hooks.url("/x"), "event_types": ["MessageSent"]}
    assert scene.api.post(f"/api/workspaces/{scene.ws}/webhooks", member, body).status_code == 403
    assert scene.api.get(f"/api/workspaces/{scene.ws}/webhooks", member).status_code == 403
    # Another workspace's admin: its id is an unknown one there.
    other = scene.api.signup("other")
    ws_b = scene.api.ok(scene.api.post("/api/workspaces", other, {"name": "B"}), 201)["id"]
    mine = scene.api.get(f"/api/workspaces/{ws_b}/webhooks/{made['id']}", other)
    unknown = scene.api.get(f"/api/workspaces/{ws_b}/webhooks/{ws_b}", other)
    assert (mine.status_code, mine.json()["detail"]) == (404, unknown.json()["detail"])
    disabled = scene.api.post(f"/api/workspaces/{ws_b}/webhooks/{made['id']}/disable", other)
    assert disabled.status_code == 404
    assert scene.webhook(made["id"])["enabled"] is True


@pytest.mark.parametrize(
    "types", [[], ["NoSuchEvent"], ["WebhookRegistered"], ["DeliveryAttempted"], ["x"] * 65]
)
def test_unknown_or_own_event_types_are_refused(
    scene: Scene, hooks: Receiver, types: list[str]
) -> None:
    body = {"url": hooks.url("/types"), "event_types": types}
    before = scene.events()
    r = scene.api.post(f"/api/workspaces/{scene.ws}/webhooks", scene.owner, body)
    assert r.status_code == 422, r.text
    assert scene.events() == before


# -- without the operator's settings ----------------------------------------------------------

REFUSED_URLS = [
    "http://127.0.0.1/hook",  # plain http
    "https://127.0.0.1/hook",
    "https://localhost/hook",
    "https://2130706433/hook",
    "https://0x7f.1/hook",
    "https://0177.0.0.1/hook",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::ffff:7f00:1]/hook",
    "https://10.1.2.3/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://100.100.100.200/hook",
    "https://[fd00:ec2::254]/hook",
    "https://192.168.1.1:8443/hook",
    "https://0.0.0.0/hook",
    "https://user:pass@93.184.215.14/hook",
]


def test_private_addresses_and_plain_http_are_refused_by_default(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path) as chorus:
        api = chorus.api
        owner = api.signup("owner")
        ws = api.ok(api.post("/api/workspaces", owner, {"name": "Strict"}), 201)["id"]
        for url in REFUSED_URLS:
            before = chorus.events()
            r = api.post(
                f"/api/workspaces/{ws}/webhooks",
                owner,
                {"url": url, "event_types": ["MessageSent"]},
            )
            assert r.status_code == 422, (url, r.status_code, r.text)
            assert chorus.events() == before, url
        # A public address is taken (nothing is sent to it here: no event of its type).
        ok = api.post(
            f"/api/workspaces/{ws}/webhooks",
            owner,
            {"url": "https://93.184.215.14/hook", "event_types": ["MessageSent"]},
        )
        assert ok.status_code == 201, ok.text
        # Changing a URL to a refused one is refused too.
        hook = ok.json()["id"]
        changed = api.patch(
            f"/api/workspaces/{ws}/webhooks/{hook}", owner, {"url": "https://127.0.0.1/"}
        )
        assert changed.status_code == 422, changed.text


def test_events_from_before_a_registration_are_not_delivered_however_late_the_reaction_runs(
    scene: Scene, hooks: Receiver
) -> None:
    with psycopg.connect(scene.url) as gate:
        # The reaction's next step waits for its mark's row: it runs late, after the
        # registration below.
        gate.execute("SELECT 1 FROM chorus_reactions WHERE policy = 'webhooks' FOR UPDATE")
        before = scene.say("before the webhook")
        made = scene.register(hooks.url("/late"), ["MessageSent"])
        after = scene.say("after the webhook")
        gate.rollback()
    got = hooks.wait_for(1, path="/late")
    scene.reacted_past(after["position"])
    assert [verified(made["secret"], r)["stream"] for r in hooks.of("/late")] == [after["id"]]
    log = wait_until("the delivery in the log", lambda: scene.delivered(made["id"], 1))
    assert [d["position"] for d in log] == [after["position"]]
    assert before["position"] < after["position"] and len(got) == 1
