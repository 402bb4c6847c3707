"""Short-lived access tokens (JWT, HS256)."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

__all__ = ["AccessClaims", "AccessTokens", "InvalidToken"]

_ALGORITHM: Final = "HS256"
_TOKEN_TYPE: Final = "access"
_REQUIRED_CLAIMS: Final = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti", "typ")
_MIN_SECRET_BYTES: Final = 32
# Tolerates clock skew between API nodes without materially extending a token's life.
_LEEWAY_S: Final = 5
# Our tokens are ~300 bytes; refusing huge inputs before base64/JSON decoding keeps a
# hostile Authorization header (or ?token=) from costing real CPU.
_MAX_TOKEN_CHARS: Final = 4096
# Tokens verified recently (a client sends the same one with every request for its whole
# life): checking the signature and parsing the claims again cost ~0.15 ms a request.
_VERIFIED_CACHE: Final = 10_000
# An ended session is remembered this much longer than its last token can live: a token
# minted by a refresh that committed just before the end is issued a moment after it.
_ENDED_MARGIN_S: Final = 60
# Expired entries of ended sessions are dropped whenever the set doubles past this.
_PRUNE_FLOOR: Final = 1024


@dataclass(frozen=True)
class AccessClaims:
    """The verified claims of an access token that callers act on."""

    user_id: str
    expires_at: int
    token_id: str
    # The sign-in the token belongs to (its refresh-token family); None in tokens issued
    # before sessions could be ended (honoured until their ``exp``).
    session_id: str | None = None


class InvalidToken(Exception):
    """An access token was rejected. The message says why; it never contains the token."""


class AccessTokens:
    """Issues and verifies access JWTs.

    Tokens are HS256-signed with claims ``iss``, ``aud``, ``sub`` (user id), ``iat``,
    ``nbf``, ``exp``, ``jti`` and a private claim ``typ: "access"``. The private claim
    (rather than the RFC 9068 header ``typ: at+jwt``) is what marks the token kind: it is
    covered by the same claim validation as everything else and lets any future
    HS256 token minted with this secret (e.g. an email-verification link) carry a
    different ``typ`` and be refused here. The JOSE header keeps pyjwt's default
    ``typ: JWT``.

    ``decode`` pins the algorithm to HS256 (``alg: none``, HS384, RS256 and anything
    else is refused before the signature is looked at), requires every claim above,
    and allows five seconds of clock skew.

    A token verified once is remembered (the last ``cache_size`` of them, exactly as
    sent): presented again, only its expiry is checked, against ``clock``.

    A token names its sign-in in the claim ``sid``. A session that ended (``end_sessions``,
    fed from the log by api/session_ends.py) has every token refused from then on, cached or
    not: a dictionary look-up per request. An ended session is remembered until the last
    access token that can name it has expired.
    """

    def __init__(
        self,
        secret: bytes | str,
        *,
        issuer: str = "chorus",
        audience: str = "chorus-api",
        ttl_s: int = 900,
        cache_size: int = _VERIFIED_CACHE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(key) < _MIN_SECRET_BYTES:
            # RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
            raise ValueError(f"JWT secret must be at least {_MIN_SECRET_BYTES} bytes")
        if not issuer or not audience:
            raise ValueError("issuer and audience must be non-empty")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        try:
            # pyjwt refuses some byte strings as HMAC keys (PEM/SSH/JWK-looking ones); fail
            # at startup rather than on the first login.
            jwt.encode({}, key, algorithm=_ALGORITHM)
        except jwt.InvalidKeyError as exc:
            raise ValueError(f"unusable JWT secret: {exc}") from None
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache_size = cache_size
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()
        self._verified_lock = threading.Lock()
        # Ended session id -> when to forget it (no token naming it is valid any more).
        self._ended: dict[str, float] = {}
        self._ended_lock = threading.Lock()
        self._pruned_at_size = _PRUNE_FLOOR

    @property
    def ttl_s(self) -> int:
        """Lifetime of newly issued tokens, in seconds."""
        return self._ttl_s

    def issue(self, user_id: str, session_id: str | None = None) -> tuple[str, int]:
        """Return ``(token, expires_in)`` for ``user_id`` in the sign-in ``session_id``;
        ``expires_in`` is in seconds."""
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl_s,
            "jti": secrets.token_urlsafe(16),
            "typ": _TOKEN_TYPE,
        }
        if session_id is not None:
            claims["sid"] = session_id
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM), self._ttl_s

    def decode(self, token: str) -> AccessClaims:
        """Verify ``token`` and return its claims, or raise ``InvalidToken``."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("missing token")
        if len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken("token too long")
        with self._verified_lock:
            known = self._verified.get(token)
            if known is not None:
                self._verified.move_to_end(token)
        if known is not None:
            # As pyjwt decides it: expired from ``exp`` plus the leeway on.
            if self._clock() >= known.expires_at + _LEEWAY_S:
                raise InvalidToken("token expired")
            if known.session_id is not None and known.session_id in self._ended:
                raise InvalidToken("session ended")
            return known
        claims = self._verify(token)
        if claims.session_id is not None and claims.session_id in self._ended:
            raise InvalidToken("session ended")
        with self._verified_lock:
            self._verified[token] = claims
            while len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> AccessClaims:
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=_LEEWAY_S,
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_iss": True,
                    "verify_aud": True,
                    "verify_sub": True,
                    "verify_jti": True,
                    "strict_aud": True,
                },
            )
        except jwt.PyJWTError as exc:
            # Fixed messages: some pyjwt messages quote decoded header/payload fragments.
            raise InvalidToken(_describe(exc)) from None
        except (TypeError, ValueError, UnicodeError):
            # Defensive: malformed input must never escape as a 500.
            raise InvalidToken("malformed token") from None

        if payload["typ"] != _TOKEN_TYPE:
            raise InvalidToken("wrong token type")
        for claim in ("exp", "iat", "nbf"):
            # We only ever mint integers; pyjwt would also accept floats and numeric strings.
            value = payload[claim]
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidToken(f"claim {claim!r} must be an integer")
        user_id = payload["sub"]
        token_id = payload["jti"]
        if not _is_user_id(user_id):
            # Every user id is a UUID; the subject becomes the actor of what the token does
            # (a socket's session starts in the log on connect), so anything else is refused
            # before it can reach the log.
            raise InvalidToken("invalid 'sub' claim: not a user id")
        if not token_id:
            raise InvalidToken("empty token id")
        session_id = payload.get("sid")
        if session_id is not None and not (isinstance(session_id, str) and _is_user_id(session_id)):
            raise InvalidToken("invalid 'sid' claim")
        return AccessClaims(
            user_id=user_id, expires_at=payload["exp"], token_id=token_id, session_id=session_id
        )

    # -- ended sessions ----------------------------------------------------------------------

    def end_sessions(self, session_ids: Iterable[str]) -> None:
        """Refuses from now on every token of these sessions. Kept until a token issued a
        moment after the end (a refresh that won the race with it) has expired too."""
        now = self._clock()
        forget_at = now + self._ttl_s + 2 * _LEEWAY_S + _ENDED_MARGIN_S
        with self._ended_lock:
            for session_id in session_ids:
                self._ended[session_id] = forget_at
            if len(self._ended) > self._pruned_at_size * 2:
                self._ended = {s: t for s, t in self._ended.items() if t > now}
                self._pruned_at_size = max(_PRUNE_FLOOR, len(self._ended))

    def session_ended(self, session_id: str | None) -> bool:
        return session_id is not None and session_id in self._ended


def _is_user_id(value: str) -> bool:
    """A UUID in its canonical form (the only form ids are issued and stored in)."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _describe(exc: jwt.PyJWTError) -> str:
    # Order matters: several of these subclass DecodeError / InvalidTokenError.
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim {exc.claim!r}"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "algorithm not allowed"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "invalid 'iat' claim"
    if isinstance(exc, InvalidSubjectError):
        return "invalid 'sub' claim"
    if isinstance(exc, InvalidJTIError):
        return "invalid 'jti' claim"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    return "invalid token"
