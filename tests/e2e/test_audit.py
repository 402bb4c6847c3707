"""GET /api/audit/verify: the tamper-evidence chain, for the instance's auditors; streams as
of a position, for holders of view_audit."""

from __future__ import annotations

import uuid

import psycopg

from tests.fixtures.chorus import Running, all_events, reactions_quiet
from tests.fixtures.operators import instance_role


def test_instance_auditors_verify_the_log_and_see_tampering(chorus: Running) -> None:
    api = chorus.api
    owner, member, auditor = api.signup("own"), api.signup("mem"), api.signup("aud")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "A", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)["id"]
    msg = api.ok(api.post(f"/api/channels/{ch}/messages", member, {"text": "original"}), 201)

    # A workspace's view_audit (anyone gets it by creating a workspace) is not enough: the
    # count and head of the whole log are the instance's (issue 17, finding 8).
    assert api.get("/api/audit/verify", owner).status_code == 403
    assert api.get("/api/audit/verify", auditor).status_code == 403
    instance_role(chorus, "grant", auditor)
    # Every event, the reactions' notifications included (the join told the owner).
    granted = reactions_quiet(chorus.database_url)
    report = api.ok(api.get("/api/audit/verify", auditor, min_position=granted))
    assert report["ok"] is True and report["count"] == all_events(chorus.database_url)
    assert report["from_position"] == 0
    assert report["bad_position"] is None and len(report["head_hash"]) == 64
    head = f"{report['head_position']}:{report['head_hash']}"
    assert api.ok(api.get("/api/audit/verify", auditor, expect=head))["ok"] is True
    assert api.get("/api/audit/verify", auditor, expect="12:nothex").status_code == 422

    # The next check starts where the last good one ended: it costs what was appended since.
    api.ok(api.post(f"/api/channels/{ch}/messages", member, {"text": "later"}), 201)
    since = api.ok(api.get("/api/audit/verify", auditor))
    assert since["ok"] and since["from_position"] == report["head_position"]
    reactions_quiet(chorus.database_url)
    assert since["count"] == all_events(chorus.database_url) - report["head_position"]

    # Someone with database access rewrites a message in place.
    with psycopg.connect(chorus.database_url) as conn:
        conn.execute(
            # The text itself is stored sealed (issue 20): the field's name is rewritten.
            "UPDATE chorus_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
            " '\"text\":', '\"text\" :'), 'UTF8') WHERE notification_id = %s",
            (msg["position"],),
        )
    # Before the last good head, with its chain left alone: only the full check sees it.
    assert api.ok(api.get("/api/audit/verify", auditor))["ok"] is True
    tampered = api.ok(api.get("/api/audit/verify", auditor, full="true"))
    assert tampered["ok"] is False and tampered["bad_position"] == msg["position"]
    assert tampered["problem"]
    # Re-chaining the rewritten log changes the hash the last check saw: caught at once.
    with psycopg.connect(chorus.database_url) as conn:
        conn.execute(
            "UPDATE chorus_event_chain SET hash = sha256(hash) WHERE notification_id >= %s",
            (msg["position"],),
        )
    rechained = api.ok(api.get("/api/audit/verify", auditor))
    assert rechained["ok"] is False and "rewritten" in rechained["problem"]

    instance_role(chorus, "revoke", auditor)
    revoked = chorus.events()
    assert api.get("/api/audit/verify", auditor, min_position=revoked).status_code == 403


def test_a_stream_as_of_a_position_shows_a_message_before_its_edit(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "T", "visibility": "public"}), 201)[
        "id"
    ]
    joined = api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)["id"]
    sent = api.ok(api.post(f"/api/channels/{ch}/messages", member, {"text": "first draft"}), 201)
    api.ok(api.patch(f"/api/messages/{sent['id']}", member, {"text": "final text"}))
    api.ok(api.put(f"/api/messages/{sent['id']}/reactions/ok", owner))

    then = api.ok(api.get(f"/api/streams/{sent['id']}", owner, at=sent["position"]))
    assert then["type"] == "Message" and then["version"] == 1
    assert then["state"]["text"] == "first draft" and then["state"]["reactions"] == {}
    now = api.ok(api.get(f"/api/streams/{sent['id']}", owner))
    assert now["state"]["text"] == "final text" and now["version"] == 3
    assert now["state"]["reactions"] == {"ok": [owner.user_id]}
    # Before the stream existed; without view_audit; outside the workspace.
    assert api.get(f"/api/streams/{sent['id']}", owner, at=sent["position"] - 1).status_code == 404
    assert api.get(f"/api/streams/{sent['id']}", member).status_code == 403
    assert api.get(f"/api/streams/{sent['id']}", api.signup("out")).status_code == 404
    # A workspace's own stream, as it was when it had one member.
    early = api.ok(api.get(f"/api/streams/{ws}", owner, at=joined["position"] - 1))
    assert early["type"] == "Workspace" and list(early["state"]["members"]) == [owner.user_id]
    assert early["state"]["members"][owner.user_id] == ["owner"]


def test_a_private_channels_streams_do_not_exist_for_members_outside_it(chorus: Running) -> None:
    """Issue 17, finding 9: answering 403 told a member that a private channel, or a message
    in it, exists. Outside it, the answer is the unknown id's 404, byte for byte."""
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "P", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    secret = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "s", "private": True}), 201
    )["id"]
    msg = api.ok(api.post(f"/api/channels/{secret}/messages", owner, {"text": "shh"}), 201)["id"]
    unknown = api.get(f"/api/streams/{uuid.uuid4()}", member)
    assert unknown.status_code == 404
    for stream in (secret, msg):
        hidden = api.get(f"/api/streams/{stream}", member)
        assert (hidden.status_code, hidden.content) == (404, unknown.content)
    # Once a member of the channel, they know it exists but still need view_audit.
    added = api.ok(api.post(f"/api/channels/{secret}/members", owner, {"user_id": member.user_id}))
    # (This read waits for the read models to take the addition in.)
    api.ok(api.get(f"/api/channels/{secret}", member, min_position=added["position"]))
    for stream in (secret, msg):
        assert api.get(f"/api/streams/{stream}", member).status_code == 403
