"""Issue 20, point 3: the audit trail shows who erased what kind of data and when, to the
instance's auditors only (``GET /api/audit/erasures``): a user's own erasure (shown as
"erased user", not by the id of someone erased), an operator's ``chorus erase-user``, a
workspace's retention run; never the data."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fixtures.chorus import GOOD_PASSWORD, TEST_MASTER_KEY, Running, User
from tests.fixtures.operators import instance_role
from tests.fixtures.polling import wait_until
from tests.fixtures.processes import CHORUS

CHORUS_SETTINGS = {"retention_poll_s": 3600.0}


def _trail(chorus: Running, user: User, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = chorus.api.ok(chorus.api.get("/api/audit/erasures", user, **params))
        items += page["items"]
        if page["next"] is None:
            return items
        params["after"] = page["next"]


def test_auditors_see_who_erased_what_kind_and_when_and_no_one_else(chorus: Running) -> None:
    api = chorus.api
    tag = uuid.uuid4().hex[:8]
    owner, auditor, ana, cleo = (api.signup(n) for n in ("own", "aud", f"ana{tag}", f"cleo{tag}"))
    instance_role(chorus, "grant", auditor)
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "A", "visibility": "public"}), 201)
    for user in (ana, cleo):
        api.ok(api.post(f"/api/workspaces/{ws['id']}/join", user))
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "a"}), 201)["id"]
    for user in (owner, ana, cleo):
        api.ok(api.post(f"/api/channels/{ch}/messages", user, {"text": f"said-{tag}"}), 201)
    boundary = datetime.now(UTC)
    before = len(_trail(chorus, auditor))

    # Ana erases herself; Cleo is erased by an operator; the workspace's retention runs.
    erased = api.http.request(
        "DELETE", "/api/users/me", json={"password": GOOD_PASSWORD}, headers=ana.headers
    )
    assert erased.status_code == 200, erased.text
    env = {**os.environ, "DATABASE_URL": chorus.database_url, "CHORUS_MASTER_KEY": TEST_MASTER_KEY}
    done = subprocess.run(
        [CHORUS, "erase-user", cleo.username], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    api.ok(api.put(f"/api/workspaces/{ws['id']}/retention", owner, json={"days": 1}))
    worker = chorus.server.services.retention
    worker.clock = lambda: boundary + timedelta(days=1)
    worker.wake()

    def three() -> list[dict[str, Any]] | None:
        got = _trail(chorus, auditor)[before:]
        return got if len(got) == 3 else None

    trail = wait_until("the three erasures in the trail", three)
    by_type = {(e["type"], e["actor"]["kind"]): e for e in trail}
    own = by_type[("UserErased", "erased user")]
    assert own["actor"].get("id") is None and own["kinds"] == ["profile", "messages"]
    by_operator = by_type[("UserErased", "operator")]
    assert by_operator["kinds"] == ["profile", "messages"]
    run = by_type[("RetentionApplied", "retention")]
    assert run["workspace_id"] == ws["id"] and run["count"] == 3 and run["kinds"] == ["messages"]
    assert datetime.fromisoformat(run["cutoff"]) == boundary
    positions = [e["position"] for e in trail]
    assert positions == sorted(positions) and all(e["at"] for e in trail)
    # Nothing of what was erased, nor whom by name.
    for secret in (tag, ana.username, cleo.username, ana.user_id, cleo.user_id):
        assert secret not in str(trail)
    # Paging: one at a time gives the same trail.
    assert _trail(chorus, auditor, limit=1)[before:] == trail

    # Everyone else: 403, signed out: 401, bad paging: 4xx.
    for user in (owner, api.signup("nobody")):
        assert api.get("/api/audit/erasures", user).status_code == 403
    assert api.get("/api/audit/erasures", None).status_code == 401
    for bad in ({"limit": 0}, {"limit": 501}, {"after": -1}, {"after": "x"}):
        assert api.get("/api/audit/erasures", auditor, **bad).status_code in (400, 422), bad
