"""What every client relies on: the OpenAPI document, CORS, limits, health, paging."""

from __future__ import annotations

from pathlib import Path

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Running, running_chorus


def test_openapi_declares_the_problems_each_route_can_give(chorus: Running) -> None:
    doc = chorus.api.ok(chorus.api.http.get("/schema/openapi.json"))
    operations = {
        (path, method): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert len(operations) >= 30
    for (path, method), op in operations.items():
        if path in ("/health", "/ready"):
            continue
        codes = set(op["responses"])
        assert "429" in codes, (path, method)
        if method != "get" or path.startswith("/api/auth/me"):
            assert codes & {"400", "401", "422"}, (path, method)
        if "{" in path:
            assert "404" in codes, (path, method)
        problem = op["responses"]["429"]["content"]
        assert "application/problem+json" in problem, (path, method)
    assert doc["paths"]["/api/channels/{ch}/messages"]["post"]["operationId"] == "SendMessage"
    assert "SendBody" in str(doc["components"]["schemas"])


def test_cors_allows_only_configured_origins(chorus: Running) -> None:
    http = chorus.api.http
    allowed = http.options(
        "/api/workspaces",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert allowed.headers.get("access-control-allow-origin") == "https://app.example"
    denied = http.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers


def test_health_and_readiness(chorus: Running) -> None:
    assert chorus.api.ok(chorus.api.http.get("/health")) == {"status": "ok"}
    ready = chorus.api.ok(chorus.api.http.get("/ready"))
    assert ready["status"] == "ok" and ready["database"] is True
    # Positions are for the instance's operators (CHORUS_OPS_TOKEN; tests/e2e/test_ready.py).
    assert ready["projection_lag"] is None


def test_rate_limit_answers_429(postgres_server: EmbeddedPostgres, tmp_path: Path) -> None:
    with running_chorus(postgres_server, tmp_path, rate_limit_per_second=3) as limited:
        statuses = [limited.api.http.get("/api/workspaces").status_code for _ in range(12)]
    assert 429 in statuses
    assert statuses[0] == 401  # under the limit, the request is handled normally


def test_timeline_pages_back_and_forth_without_gaps(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("pager")
    ws = api.ok(api.post("/api/workspaces", user, {"name": "Pages"}), 201)
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", user, {"name": "p"}), 201)["id"]
    sent = [
        api.ok(api.post(f"/api/channels/{ch}/messages", user, {"text": f"n{i}"}), 201)["id"]
        for i in range(23)
    ]
    seen: list[str] = []
    page = api.ok(api.get(f"/api/channels/{ch}/messages", user, limit=10))
    seen += [m["id"] for m in page["items"]]
    while page["next"] is not None:
        page = api.ok(api.get(f"/api/channels/{ch}/messages", user, limit=10, before=page["next"]))
        seen += [m["id"] for m in page["items"]]
    assert seen == list(reversed(sent))
    # Forward from an old message: the page right after it, newest first, then onwards.
    cursor = api.ok(api.get("/api/events", user, stream=sent[4]))["items"][0]["position"]
    forward = api.ok(api.get(f"/api/channels/{ch}/messages", user, limit=5, after=str(cursor)))
    assert [m["id"] for m in forward["items"]] == list(reversed(sent[5:10]))
    rest = api.ok(api.get(f"/api/channels/{ch}/messages", user, limit=50, after=forward["next"]))
    assert [m["id"] for m in rest["items"]] == list(reversed(sent[10:]))
    assert rest["next"] is None


def test_direct_messages_are_one_channel_per_pair(chorus: Running) -> None:
    api = chorus.api
    a, b, c = api.signup("dm_a"), api.signup("dm_b"), api.signup("dm_c")
    api.acquaint(a, b, c)
    first = api.ok(api.post("/api/dms", a, {"user_id": b.user_id}), 201)
    again = api.ok(api.post("/api/dms", b, {"user_id": a.user_id}), 200)
    assert first["channel_id"] == again["channel_id"] and again["position"] is None
    ch = first["channel_id"]
    api.ok(api.post(f"/api/channels/{ch}/messages", b, {"text": "psst"}), 201)
    assert [m["text"] for m in api.ok(api.get(f"/api/channels/{ch}/messages", a))["items"]] == [
        "psst"
    ]
    assert api.get(f"/api/channels/{ch}/messages", c).status_code == 404
    assert api.post(f"/api/channels/{ch}/messages", c, {"text": "me too"}).status_code == 404
    assert api.post("/api/dms", a, {"user_id": a.user_id}).status_code == 422


def test_an_edit_of_a_stale_version_is_a_409_and_appends_nothing(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("editor")
    ws = api.ok(api.post("/api/workspaces", user, {"name": "Edits"}), 201)
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", user, {"name": "e"}), 201)["id"]
    msg = api.ok(api.post(f"/api/channels/{ch}/messages", user, {"text": "draft"}), 201)["id"]
    seen = api.ok(api.get(f"/api/channels/{ch}/messages", user))["items"][0]
    assert seen["version"] == 1
    api.ok(
        api.patch(f"/api/messages/{msg}", user, {"text": "tab one"}, headers={"If-Match": '"1"'})
    )
    before = chorus.events()
    stale = api.patch(
        f"/api/messages/{msg}", user, {"text": "tab two"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 409 and "version 2" in stale.json()["detail"]
    assert chorus.events() == before
    bad = api.patch(f"/api/messages/{msg}", user, {"text": "x"}, headers={"If-Match": "latest"})
    assert bad.status_code == 422
    assert api.ok(api.get(f"/api/channels/{ch}/messages", user))["items"][0]["version"] == 2
