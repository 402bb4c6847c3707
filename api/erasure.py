"""``DELETE /api/users/me`` (issue 20): a user erases their own personal data."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete
from litestar.params import JSONBody

from api.auth_limits import LoginThrottle
from api.commands import Written, execute, run_command, services_of
from api.errors import problems
from api.rate_limits import client_address
from application.commands import EndSignIns, EraseUser
from domain.base import Cause, as_uuid
from domain.errors import PermissionDenied
from domain.rules import MAX_PASSWORD
from infrastructure.serialisation import key_ring
from infrastructure.tokens import AccessClaims


class EraseBody(msgspec.Struct, forbid_unknown_fields=True):
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD)]


class ErasureController(Controller):
    path = "/api/users/me"
    tags = ["users"]

    @delete(
        "/",
        operation_id="EraseMe",
        status_code=200,
        responses=problems(400, 401, 403, 404, 413, 422, 429),
        security=[{"BearerToken": []}],
    )
    async def erase_me(self, request: Request[str, Any, Any], data: JSONBody[EraseBody]) -> Written:
        """Erases the caller: their username, display name and every message text they wrote
        become unreadable on every read path (their keys are destroyed; the log keeps the
        ciphertext), their password stops working, their sessions end. The password is
        required (a wrong one counts as a failed login)."""
        services = services_of(request)
        claims = request.auth
        assert isinstance(claims, AccessClaims)
        throttle: LoginThrottle = request.app.state.login_throttle
        account = "user:" + claims.user_id
        throttle.attempt(account, client_address(request.scope))
        stored = await anyio.to_thread.run_sync(
            services.app.store.find_password_hash, as_uuid(claims.user_id)
        )
        if stored is None or not await services.passwords.verify_async(stored, data.password):
            throttle.failed(account, client_address(request.scope))
            raise PermissionDenied("wrong password")
        throttle.succeeded(account)
        result = await execute(request, EraseUser(user_id=claims.user_id), claims.user_id)
        await anyio.to_thread.run_sync(erase_keys_of, services.app.mapper, claims.user_id)
        sessions = [
            s.session_id
            for s in await anyio.to_thread.run_sync(
                services.refresh_tokens.live_sessions, claims.user_id
            )
        ]
        if claims.session_id not in sessions and claims.session_id:
            sessions.append(claims.session_id)
        if sessions:
            await run_command(
                services,
                EndSignIns(session_ids=sessions, reason="erased"),
                Cause(actor_id=claims.user_id),
            )
            services.access_tokens.end_sessions(sessions)
            await anyio.to_thread.run_sync(services.refresh_tokens.end, claims.user_id, sessions)
        return Written(result.position)


def erase_keys_of(mapper: Any, user_id: str) -> int:
    """Destroys a user's keys at once (the erasures read model does it again from the log:
    projections/erasures.py). The number of keys destroyed."""
    keys = key_ring(mapper)
    if keys is None:
        return 0
    uid = as_uuid(user_id)
    return keys.erase(subjects=[uid], owners=[uid]).keys
