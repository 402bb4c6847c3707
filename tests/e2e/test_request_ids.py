"""Every response echoes its request's id (issue 22, point 2), errors included: those the
routes answer (403, 404 for an unknown id, 413, 422) and those answered outside a route's
middleware (the authentication middleware's 401, the router's 404 and 405, the rate
limiter's 429)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Running, running_chorus

pytestmark = pytest.mark.slow

CHORUS_SETTINGS = {"max_body_bytes": 2048}


def echoed(response: httpx.Response, sent: str, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("x-request-id") == sent, dict(response.headers)


@pytest.fixture
def rid() -> Iterator[str]:
    yield f"rid-{uuid.uuid4().hex[:12]}"


def test_401_from_the_authentication_middleware(chorus: Running, rid: str) -> None:
    http = chorus.api.http
    echoed(http.get("/api/auth/me", headers={"X-Request-ID": rid}), rid, 401)
    bad = {"X-Request-ID": rid, "Authorization": "Bearer not-a-token"}
    echoed(http.get("/api/workspaces", headers=bad), rid, 401)


def test_403_404_413_422_from_routes_and_the_router(chorus: Running, rid: str) -> None:
    api = chorus.api
    user = api.signup("rid")
    h = {**user.headers, "X-Request-ID": rid}
    echoed(api.http.get("/api/audit/verify", headers=h), rid, 403)
    echoed(api.http.get(f"/api/channels/{uuid.uuid4()}/messages", headers=h), rid, 404)
    echoed(api.http.get("/api/no-such-route", headers=h), rid, 404)
    echoed(api.http.delete("/api/auth/me", headers=h), rid, 405)
    echoed(api.http.post("/api/workspaces", headers=h, json={"name": "x" * 4000}), rid, 413)
    echoed(api.http.post("/api/workspaces", headers=h, json={"name": ""}), rid, 422)
    # No id sent: one is made up and echoed, on errors too.
    made = api.http.get("/api/auth/me").headers.get("x-request-id")
    assert made is not None and len(made) == 32


def test_429_from_the_rate_limiter(
    postgres_server: EmbeddedPostgres, tmp_path: Path, rid: str
) -> None:
    with running_chorus(postgres_server, tmp_path, rate_limit_per_second=1) as limited:
        http = limited.api.http
        answers = [http.get("/api/auth/me", headers={"X-Request-ID": rid}) for _ in range(20)]
    refused = [r for r in answers if r.status_code == 429]
    assert refused, [r.status_code for r in answers]
    for r in refused:
        echoed(r, rid, 429)
