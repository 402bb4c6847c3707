"""Authentication of every request and WebSocket, and the sign-up/login endpoints."""

from __future__ import annotations

import re
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.params import Body, FromQuery, JSONBody
from litestar.response import Response
from litestar.status_codes import HTTP_204_NO_CONTENT

from api.auth_limits import HourlyBudget, LoginThrottle, Throttled
from api.commands import execute, services_of
from api.errors import problem, problems
from api.rate_limits import client_address
from api.reads import read_cursor_async
from application.commands import RegisterUser
from domain.errors import NotFound, UsernameTaken
from domain.identity import user_id_for
from domain.rules import MAX_PASSWORD, check_user_password
from infrastructure.passwords import PasswordsBusy
from infrastructure.settings import Settings
from infrastructure.tokens import InvalidToken
from projections.queries import run_async
from projections.users import get_user

PUBLIC_PATHS = [
    r"^/health$",
    r"^/ready$",
    r"^/schema",
    r"^/api/auth/(signup|login|refresh|logout)$",
    # The socket authenticates itself after accepting, to refuse with a close code.
    r"^/ws$",
    r"^/yjs/",
]
_PUBLIC = [re.compile(p) for p in PUBLIC_PATHS]


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Checks the access JWT of every request not on a public path."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header and connection.scope["type"] == ScopeType.WEBSOCKET:
            token, scheme = connection.query_params.get("token", ""), "bearer"
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("missing bearer token")
        try:
            claims = services_of(connection).access_tokens.decode(token.strip())
        except InvalidToken as exc:
            raise NotAuthorizedException(f"invalid access token: {exc}") from None
        return AuthenticationResult(user=claims.user_id, auth=claims)


# -- bodies ------------------------------------------------------------------------------------

Username = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD)]
Opaque = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class SignupBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    display_name: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Opaque


class TokenPair(msgspec.Struct):
    user_id: str
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"
    position: int | None = None


class Me(msgspec.Struct):
    user_id: str
    username: str
    display_name: str


def _tokens(request: Request[Any, Any, Any], user_id: str, position: int | None) -> TokenPair:
    services = services_of(request)
    access, expires_in = services.access_tokens.issue(user_id)
    refresh = services.refresh_tokens.issue(user_id)
    return TokenPair(user_id, access, refresh, expires_in, position=position)


def auth_limits(settings: Settings) -> dict[str, Any]:
    """The app state the auth routes' budgets live in (one per server process)."""
    return {
        "login_throttle": LoginThrottle(
            settings.login_free_failures_per_account,
            settings.login_free_failures_per_address,
            settings.login_backoff_base_s,
            settings.login_backoff_max_s,
        ),
        "signup_budget": HourlyBudget(
            settings.signups_per_address_per_hour, settings.signups_per_hour
        ),
    }


def _throttled(_: Request[Any, Any, Any], exc: Throttled) -> Response[Any]:
    return problem(429, exc.detail, {"Retry-After": str(exc.retry_after_s)})


def _passwords_busy(_: Request[Any, Any, Any], exc: PasswordsBusy) -> Response[Any]:
    return problem(429, str(exc), {"Retry-After": str(exc.retry_after_s)})


# Registered beside api/errors.py's handlers by create_app.
AUTH_LIMIT_HANDLERS: dict[Any, Any] = {Throttled: _throttled, PasswordsBusy: _passwords_busy}


def _account_key(username: str) -> str:
    try:
        return str(user_id_for(username))
    except Exception:  # an impossible username: its own key, as for an unknown user
        return "raw:" + username


class AuthController(Controller):
    path = "/api/auth"
    tags = ["auth"]

    @post(
        "/signup",
        operation_id="Signup",
        responses=problems(400, 409, 413, 422, 429),
    )
    async def signup(
        self, request: Request[Any, Any, Any], data: JSONBody[SignupBody]
    ) -> Response[TokenPair]:
        """Registers a user and signs them in."""
        signups: HourlyBudget = request.app.state.signup_budget
        signups.take(client_address(request.scope))
        # Refused before the costly part; then hashed on the hashing pool, awaited here, so
        # no request thread waits for argon2 (a full queue: 429 at once).
        check_user_password(data.password, data.username, data.display_name)
        services = services_of(request)
        command = RegisterUser(
            username=data.username,
            password=data.password,
            display_name=data.display_name,
            password_hash=await services.passwords.hash_async(data.password),
        )
        result = await execute(request, command, None)
        user_id = str(result.body["user_id"])

        if result.replayed:
            # A replayed sign-up hands out tokens only to whoever knows the password (checked
            # on the hashing pool, as the hash was made).
            stored = await anyio.to_thread.run_sync(
                services.app.store.find_password_hash, user_id_for(data.username)
            )
            if not await services.passwords.verify_async(stored, data.password):
                raise UsernameTaken("that username is taken")
        if result.position is not None:
            services.last_writes.record(user_id, result.position)
        tokens = await anyio.to_thread.run_sync(_tokens, request, user_id, result.position)
        return Response(tokens, status_code=result.status)

    @post(
        "/login",
        operation_id="Login",
        status_code=200,
        responses=problems(400, 401, 413, 422, 429),
    )
    async def login(self, request: Request[Any, Any, Any], data: JSONBody[LoginBody]) -> TokenPair:
        """Exchanges a username and password for a token pair."""
        services = services_of(request)
        throttle: LoginThrottle = request.app.state.login_throttle
        account = _account_key(data.username)
        throttle.attempt(account, client_address(request.scope))

        def lookup() -> tuple[Any, str | None]:
            try:
                user_id = user_id_for(data.username)
                return user_id, services.app.store.find_password_hash(user_id)
            except Exception:  # an impossible username is an unknown user, at the same cost
                return None, None

        user_id, stored = await anyio.to_thread.run_sync(lookup)
        # Awaited, not run in a worker thread: a burst of logins waits on the hashing pool's
        # queue without holding the threads other routes need (issue #16, finding 3).
        if not await services.passwords.verify_async(stored, data.password) or user_id is None:
            throttle.failed(account, client_address(request.scope))
            raise NotAuthorizedException("wrong username or password")
        throttle.succeeded(account)
        return await anyio.to_thread.run_sync(_tokens, request, str(user_id), None)

    @post(
        "/refresh",
        sync_to_thread=True,
        operation_id="RefreshTokens",
        status_code=200,
        responses=problems(400, 401, 413, 422, 429),
    )
    def refresh(self, request: Request[Any, Any, Any], data: JSONBody[RefreshBody]) -> TokenPair:
        """Spends a refresh token for a new pair; reusing a spent one revokes its family."""
        services = services_of(request)
        user_id, new_refresh = services.refresh_tokens.rotate(data.refresh_token)
        access, expires_in = services.access_tokens.issue(user_id)
        return TokenPair(user_id, access, new_refresh, expires_in)

    @post(
        "/logout",
        sync_to_thread=True,
        operation_id="Logout",
        status_code=HTTP_204_NO_CONTENT,
        responses=problems(400, 413, 422, 429),
    )
    def logout(self, request: Request[Any, Any, Any], data: JSONBody[RefreshBody]) -> None:
        """Revokes the refresh token's whole family (every token of this sign-in)."""
        services_of(request).refresh_tokens.revoke(data.refresh_token)

    @get(
        "/me",
        operation_id="GetMe",
        responses=problems(401, 404, 422, 429),
        security=[{"BearerToken": []}],  # the one route here that needs a token
    )
    async def me(
        self, request: Request[str, Any, Any], min_position: FromQuery[int | None] = None
    ) -> Me:
        """The signed-in user."""
        async with read_cursor_async(request, min_position) as cur:
            row = await run_async(cur, get_user(request.user))
        if row is None:
            raise NotFound("unknown user")
        return Me(row["user_id"], row["username"], row["display_name"])


__all__ = ["AUTH_LIMIT_HANDLERS", "PUBLIC_PATHS", "AuthController", "BearerAuthMiddleware", "Body"]
