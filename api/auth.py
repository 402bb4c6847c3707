"""Authentication of every request and WebSocket, and the sign-up/login endpoints."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.params import Body, FromPath, FromQuery, JSONBody
from litestar.response import Response
from litestar.status_codes import HTTP_204_NO_CONTENT

from api.auth_limits import HourlyBudget, LoginThrottle, Throttled
from api.commands import Written, execute, run_command, services_of
from api.errors import problem, problems
from api.logs import note_user
from api.rate_limits import client_address
from api.reads import read_cursor_async
from application.commands import (
    ChangePassword,
    EndSignIns,
    RegisterUser,
    ResetPassword,
    StartSignIn,
)
from application.identity import user_id_of
from application.sign_ins import ended_in_log
from domain.base import Cause, as_uuid
from domain.errors import InvalidValue, NotFound, PermissionDenied, UsernameTaken
from domain.identity import User, display_name_rule, reset_token_hash
from domain.rules import MAX_PASSWORD, check_user_password, normalise_username
from infrastructure.passwords import PasswordsBusy
from infrastructure.refresh_tokens import InvalidRefreshToken, RefreshTokenReused
from infrastructure.settings import Settings
from infrastructure.tokens import AccessClaims, InvalidToken
from projections.queries import run_async
from projections.users import get_user

PUBLIC_PATHS = [
    r"^/health$",
    r"^/ready$",
    # Checks the operators' bearer secret itself (api/metrics.py).
    r"^/metrics$",
    r"^/schema",
    r"^/api/auth/(signup|login|refresh|logout)$",
    # The reset token is the credential (issue 20).
    r"^/api/auth/password-reset$",
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
        note_user(claims.user_id)
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


class LogoutBody(msgspec.Struct, forbid_unknown_fields=True):
    """The session to end: the refresh token's, or (left out) the access token's."""

    refresh_token: Opaque | None = None


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    old_password: Password
    new_password: Password


class SessionItem(msgspec.Struct):
    id: str
    created_at: datetime
    # The session's last sign-in or refresh (an access token is used without a trace).
    last_used_at: datetime
    current: bool


class SessionList(msgspec.Struct):
    items: list[SessionItem]
    next: str | None = None


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
    avatar_url: str | None = None


class PasswordResetBody(msgspec.Struct, forbid_unknown_fields=True):
    token: Opaque
    new_password: Password


async def _sign_in(
    request: Request[Any, Any, Any], user_id: str, position: int | None, replayable: bool = False
) -> TokenPair:
    """Starts a session (a SignedIn event: no key of the request's, whose command is the
    sign-up's) and hands out its tokens: a refresh-token family of the session's id, and
    access tokens that name it (``sid``)."""
    services = services_of(request)
    key = request.headers.get("idempotency-key") if replayable else None
    if key is None:
        session_id, command_id = uuid.uuid4(), None
    else:
        # A retried sign-up (same key, already checked) continues the first one's session:
        # nothing appended again, one more refresh token in the same family.
        session_id = uuid.uuid5(uuid.UUID(user_id), "signin:" + key)
        command_id = "signin:" + key
    started = await run_command(
        services,
        StartSignIn(session_id=str(session_id), user_id=user_id),
        Cause(actor_id=user_id, command_id=command_id),
    )
    if started.position is not None:
        services.last_writes.record(user_id, started.position)
    refresh = await anyio.to_thread.run_sync(services.refresh_tokens.issue, user_id, session_id)
    access, expires_in = services.access_tokens.issue(user_id, str(session_id))
    return TokenPair(user_id, access, refresh, expires_in, position=position)


async def _end_sessions(
    request: Request[Any, Any, Any], user_id: str, session_ids: list[str], reason: str
) -> Written:
    """Ends the user's sessions: in the log first (every instance refuses their tokens and
    closes their sockets once it has the event), here at once, then their refresh-token
    families. A retry after a failure finds the families still live and ends them."""
    services = services_of(request)
    if not session_ids:
        return Written(None)
    result = await run_command(
        services, EndSignIns(session_ids=session_ids, reason=reason), Cause(actor_id=user_id)
    )
    if result.position is not None:
        services.last_writes.record(user_id, result.position)
    await end_tokens(request, user_id, session_ids)
    return Written(result.position)


async def end_tokens(request: Request[Any, Any, Any], user_id: str, session_ids: list[str]) -> None:
    """After the sessions' ends are in the log: their access tokens are refused here at
    once, their refresh-token families spent."""
    services = services_of(request)
    services.access_tokens.end_sessions(session_ids)
    await anyio.to_thread.run_sync(services.refresh_tokens.end, user_id, session_ids)


def claims_of(request: Request[Any, Any, Any]) -> AccessClaims:
    claims = request.auth
    assert isinstance(claims, AccessClaims)
    return claims


def _bearer(request: Request[Any, Any, Any]) -> AccessClaims:
    """The access token of a request on a public path, checked as the middleware would."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("send the refresh_token, or an access token")
    try:
        return services_of(request).access_tokens.decode(token.strip())
    except InvalidToken as exc:
        raise NotAuthorizedException(f"invalid access token: {exc}") from None


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


def account_key(username: str) -> str:
    try:
        return "name:" + normalise_username(username)
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
        normalise_username(data.username)
        if data.display_name is not None:
            display_name_rule(data.display_name)
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
                services.app.store.find_password_hash, as_uuid(user_id)
            )
            if not await services.passwords.verify_async(stored, data.password):
                raise UsernameTaken("that username is taken")
        if result.position is not None:
            services.last_writes.record(user_id, result.position)
        tokens = await _sign_in(request, user_id, result.position, replayable=True)
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
        account = account_key(data.username)
        throttle.attempt(account, client_address(request.scope))

        def lookup() -> tuple[Any, str | None]:
            try:
                # Through the username's claim (or a legacy user's derived id).
                user_id = user_id_of(services.app, data.username)
                if user_id is None:
                    return None, None
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
        # Said only to whoever knows the password: a deactivated account (issue 20) is
        # not told apart from an unknown one before that.
        user = await anyio.to_thread.run_sync(services.app.load, User, user_id)
        if not user.active:
            raise PermissionDenied("this account is deactivated: an operator can reactivate it")
        return await _sign_in(request, str(user_id), None)

    @post(
        "/refresh",
        operation_id="RefreshTokens",
        status_code=200,
        responses=problems(400, 401, 413, 422, 429),
    )
    async def refresh(
        self, request: Request[Any, Any, Any], data: JSONBody[RefreshBody]
    ) -> TokenPair:
        """Spends a refresh token for a new pair; reusing a spent one revokes its family
        and ends its session."""
        services = services_of(request)
        try:
            user_id, session_id, new_refresh = await anyio.to_thread.run_sync(
                services.refresh_tokens.rotate_in_session, data.refresh_token
            )
        except RefreshTokenReused as reused:
            # Two parties hold the session: it ends everywhere, access tokens included.
            await _end_sessions(
                request, reused.user_id, [reused.session_id], "refresh token reused"
            )
            raise
        if await anyio.to_thread.run_sync(ended_in_log, services.app, session_id):
            # Ended in the log, its family not yet revoked (the ending request failed
            # between the two): end it now.
            await _end_sessions(request, user_id, [session_id], "ended")
            raise InvalidRefreshToken("invalid refresh token")
        access, expires_in = services.access_tokens.issue(user_id, session_id)
        return TokenPair(user_id, access, new_refresh, expires_in)

    @post(
        "/logout",
        operation_id="Logout",
        status_code=HTTP_204_NO_CONTENT,
        responses=problems(400, 401, 413, 422, 429),
    )
    async def logout(
        self, request: Request[Any, Any, Any], data: JSONBody[LogoutBody | None] = None
    ) -> None:
        """Ends a session: the refresh token's (an unknown one: nothing to end), or, sent
        without one, the access token's. Its tokens are refused from then on and its
        sockets closed (4401 ``session ended``)."""
        services = services_of(request)
        if data is not None and data.refresh_token is not None:
            found = await anyio.to_thread.run_sync(
                services.refresh_tokens.session_of, data.refresh_token
            )
            if found is None:
                return
            session_id, user_id = found
        else:
            claims = _bearer(request)
            if claims.session_id is None:
                raise InvalidValue(
                    "this access token was issued before sessions could end: send the refresh_token"
                )
            session_id, user_id = claims.session_id, claims.user_id
        await _end_sessions(request, user_id, [session_id], "logout")

    @post(
        "/logout-all",
        operation_id="LogoutEverywhere",
        status_code=200,
        responses=problems(401, 422, 429),
        security=[{"BearerToken": []}],
    )
    async def logout_all(self, request: Request[str, Any, Any]) -> Written:
        """Ends every session of the caller, this one included."""
        claims = claims_of(request)
        live = await live_sessions(request, claims.user_id)
        ids = [s.session_id for s in live]
        if claims.session_id is not None and claims.session_id not in ids:
            ids.append(claims.session_id)
        return await _end_sessions(request, claims.user_id, ids, "logout everywhere")

    @get(
        "/sessions",
        operation_id="ListSessions",
        responses=problems(401, 422, 429),
        security=[{"BearerToken": []}],
    )
    async def sessions(self, request: Request[str, Any, Any]) -> SessionList:
        """The caller's live sessions, most recently used first (at most 200)."""
        claims = claims_of(request)
        live = await live_sessions(request, claims.user_id)
        return SessionList(
            [
                SessionItem(
                    s.session_id, s.created_at, s.last_used_at, s.session_id == claims.session_id
                )
                for s in live
            ]
        )

    @delete(
        "/sessions/{session_id:str}",
        operation_id="EndSession",
        status_code=200,
        responses=problems(401, 404, 422, 429),
        security=[{"BearerToken": []}],
    )
    async def end_session(
        self, request: Request[str, Any, Any], session_id: FromPath[str]
    ) -> Written:
        """Ends one of the caller's live sessions; any other id (another user's, ended,
        unknown, malformed) is 404 alike."""
        claims = claims_of(request)
        live = await live_sessions(request, claims.user_id)
        if session_id not in {s.session_id for s in live}:
            raise NotFound("unknown session")
        return await _end_sessions(request, claims.user_id, [session_id], "ended")

    @post(
        "/password",
        operation_id="ChangePassword",
        status_code=200,
        responses=problems(400, 401, 403, 413, 422, 429),
        security=[{"BearerToken": []}],
    )
    async def change_password(
        self, request: Request[str, Any, Any], data: JSONBody[PasswordBody]
    ) -> Written:
        """Changes the caller's password (the old one is required: a wrong one counts as a
        failed login). Every other session ends; this one goes on."""
        services = services_of(request)
        claims = claims_of(request)
        user = await anyio.to_thread.run_sync(services.app.load, User, claims.user_id)
        # Refused before the costly part, and before a guess of the old one counts.
        check_user_password(data.new_password, user.username, user.display_name)
        throttle: LoginThrottle = request.app.state.login_throttle
        account = account_key(user.username)
        throttle.attempt(account, client_address(request.scope))
        stored = await anyio.to_thread.run_sync(services.app.store.find_password_hash, user.id)
        if stored is None or not await services.passwords.verify_async(stored, data.old_password):
            throttle.failed(account, client_address(request.scope))
            raise PermissionDenied("wrong password")
        throttle.succeeded(account)
        others = [
            s.session_id
            for s in await live_sessions(request, claims.user_id)
            if s.session_id != claims.session_id
        ]
        command = ChangePassword(
            password=data.new_password,
            password_hash=await services.passwords.hash_async(data.new_password),
            kept_session_id=claims.session_id,
            ended_session_ids=others,
        )
        result = await execute(request, command, claims.user_id)
        services.access_tokens.end_sessions(others)
        await anyio.to_thread.run_sync(services.refresh_tokens.end, claims.user_id, others)
        return Written(result.position)

    @post(
        "/password-reset",
        operation_id="ResetPassword",
        status_code=200,
        responses=problems(400, 403, 413, 422, 429),
    )
    async def reset_password(
        self, request: Request[Any, Any, Any], data: JSONBody[PasswordResetBody]
    ) -> Written:
        """Sets a new password with a one-time token an operator issued (``chorus
        issue-password-reset``). The token is spent (with any other pending one), and
        every session of the user ends. An unknown, used or expired token: 403, alike."""
        services = services_of(request)
        user_part, _, secret = data.token.partition(".")
        throttle: LoginThrottle = request.app.state.login_throttle
        account = "reset:" + user_part[:64]
        throttle.attempt(account, client_address(request.scope))
        token_hash = reset_token_hash(secret)

        def checked() -> User:
            try:
                user = services.app.load(User, user_part, "user")
            except NotFound:
                raise PermissionDenied("invalid or expired reset token") from None
            user.check_reset_token(token_hash, services.app.clock())
            return user

        try:
            user = await anyio.to_thread.run_sync(checked)
        except PermissionDenied:
            throttle.failed(account, client_address(request.scope))
            raise
        throttle.succeeded(account)
        # Refused before the costly part.
        check_user_password(data.new_password, user.username, user.display_name)
        user_id = str(user.id)
        ended = [s.session_id for s in await live_sessions(request, user_id)]
        command = ResetPassword(
            token_hash=token_hash,
            password=data.new_password,
            password_hash=await services.passwords.hash_async(data.new_password),
            ended_session_ids=ended,
        )
        result = await execute(request, command, user_id)
        if result.position is not None:
            services.last_writes.record(user_id, result.position)
        await end_tokens(request, user_id, ended)
        return Written(result.position)

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
        return Me(row["user_id"], row["username"], row["display_name"], row["avatar_url"])


async def live_sessions(request: Request[Any, Any, Any], user_id: str) -> list[Any]:
    return await anyio.to_thread.run_sync(
        services_of(request).refresh_tokens.live_sessions, user_id
    )


__all__ = ["AUTH_LIMIT_HANDLERS", "PUBLIC_PATHS", "AuthController", "BearerAuthMiddleware", "Body"]
