"""GET /api/audit/verify: the tamper-evidence chain, for holders of view_audit."""

from __future__ import annotations

import psycopg

from tests.fixtures.chorus import Running


def test_owners_verify_the_log_and_see_tampering(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "A", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201)["id"]
    msg = api.ok(api.post(f"/api/channels/{ch}/messages", member, {"text": "original"}), 201)

    report = api.ok(api.get("/api/audit/verify", owner))
    assert report["ok"] is True and report["count"] == chorus.events()
    assert report["bad_position"] is None and len(report["head_hash"]) == 64
    head = f"{report['head_position']}:{report['head_hash']}"
    assert api.ok(api.get("/api/audit/verify", owner, expect=head))["ok"] is True
    # A plain member does not hold view_audit.
    assert api.get("/api/audit/verify", member).status_code == 403
    assert api.get("/api/audit/verify", owner, expect="12:nothex").status_code == 422

    # Someone with database access rewrites a message in place.
    with psycopg.connect(chorus.database_url) as conn:
        conn.execute(
            "UPDATE chorus_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
            " 'original', 'forged!!'), 'UTF8') WHERE notification_id = %s",
            (msg["position"],),
        )
    tampered = api.ok(api.get("/api/audit/verify", owner))
    assert tampered["ok"] is False and tampered["bad_position"] == msg["position"]
    assert tampered["problem"]
