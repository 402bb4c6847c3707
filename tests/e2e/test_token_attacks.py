"""Hostile access and refresh tokens (issue #7, item 8), against the running server.

Every attack is a token that is well-formed enough to reach the verifier and valid in every
respect but one, made for a real user who may open the document under test: a refusal is
then due to the attack alone. Each attack is tried on REST (401) and on both WebSocket
endpoints (close 4401), with the token in ``?token=`` and in an ``Authorization`` header.

Already covered elsewhere, so not repeated here: the verifier itself (tests/unit/
test_tokens.py), REST refusing expired / not-yet-valid (nbf) / wrong audience / wrong issuer
/ wrong type / another key / ``alg: none`` / refresh token / tampered tokens
(tests/e2e/test_auth.py), ``/ws`` refusing another key and a refresh token
(tests/e2e/test_websocket.py), and a reused refresh token revoking its first descendant
(tests/e2e/test_auth.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fixtures.chorus import TEST_SECRET, Running, User

pytestmark = pytest.mark.security

TIMEOUT = 10

# A syntactically real RSA public key, as an attacker would find it published (JWKS, PEM):
# the classic HS/RS confusion signs an HS256 token with it as the HMAC secret.
PUBLIC_KEY_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
    "+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\n"
    "kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ\n"
    "0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg\n"
    "cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc\n"
    "mwIDAQAB\n"
    "-----END PUBLIC KEY-----\n"
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claims(user: User, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "chorus", "aud": "chorus-api", "sub": user.user_id, "iat": now, "nbf": now,
        "exp": now + 600, "jti": uuid.uuid4().hex, "typ": "access",
    }  # fmt: skip
    claims.update(overrides)
    return claims


def _signed(header: dict[str, Any], claims: dict[str, Any], key: bytes, digest: Any) -> str:
    """A JWT signed by hand (pyjwt refuses PEM keys as HMAC secrets and warns about short
    HS384/HS512 keys: an attacker does neither)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def _good(user: User, **overrides: Any) -> str:
    return jwt.encode(_claims(user, **overrides), TEST_SECRET, algorithm="HS256")


def _swap_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


@dataclass(frozen=True)
class Victims:
    """The user an attack impersonates, another user, and a document the first may edit."""

    user: User
    other: User
    document_id: str


Attack = Callable[[Victims], str]
_SECRET = TEST_SECRET.encode()


def _expired(v: Victims) -> str:
    now = int(time.time())
    return _good(v.user, iat=now - 700, nbf=now - 700, exp=now - 60)


def _nbf_future(v: Victims) -> str:
    return _good(v.user, nbf=int(time.time()) + 300)


def _iat_future(v: Victims) -> str:
    now = int(time.time())
    return _good(v.user, iat=now + 300, nbf=now)


def _rs256_random_signature(v: Victims) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims(v.user)).encode())
    return f"{header}.{payload}.{_b64(secrets.token_bytes(256))}"


def _rs256_header_hmac_with_server_secret(v: Victims) -> str:
    # The inverse confusion: an HMAC made with the right secret under a header that says
    # RS256. Pinning the algorithm refuses it before the signature is looked at.
    return _signed({"alg": "RS256", "typ": "JWT"}, _claims(v.user), _SECRET, hashlib.sha256)


def _hs256_public_key_as_secret(v: Victims) -> str:
    header = {"alg": "HS256", "typ": "JWT"}
    return _signed(header, _claims(v.user), PUBLIC_KEY_PEM.encode(), hashlib.sha256)


def _hs512_with_server_secret(v: Victims) -> str:
    return _signed({"alg": "HS512", "typ": "JWT"}, _claims(v.user), _SECRET, hashlib.sha512)


def _embedded_jwk(v: Victims) -> str:
    # The attacker names their own key in the header (RFC 7515 "jwk") and signs with it.
    key = secrets.token_bytes(32)
    header = {"alg": "HS256", "typ": "JWT", "jwk": {"kty": "oct", "k": _b64(key)}}
    return _signed(header, _claims(v.user), key, hashlib.sha256)


def _alg_none(v: Victims) -> str:
    return jwt.encode(_claims(v.user), None, algorithm="none")  # type: ignore[arg-type]


def _alg_none_signature_stripped(v: Victims) -> str:
    # A genuine token whose header is rewritten to "none" and signature dropped.
    token = _swap_segment(_good(v.user), 0, _b64(json.dumps({"alg": "none"}).encode()))
    return _swap_segment(token, 2, "")


def _alg_none_capitalised(v: Victims) -> str:
    header = _b64(json.dumps({"alg": "None", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_claims(v.user)).encode())}."


def _wrong_audience(v: Victims) -> str:
    return _good(v.user, aud="another-api")


def _audience_list(v: Victims) -> str:
    return _good(v.user, aud=["chorus-api", "another-api"])


def _wrong_issuer(v: Victims) -> str:
    return _good(v.user, iss="evil")


def _wrong_type(v: Victims) -> str:
    return _good(v.user, typ="refresh")


def _other_key(v: Victims) -> str:
    return jwt.encode(_claims(v.user), "another-secret-" + "y" * 40, algorithm="HS256")


def _refresh_token(v: Victims) -> str:
    return v.user.refresh_token


def _tampered_signature(v: Victims) -> str:
    token = v.user.access_token
    signature = token.rsplit(".", 1)[1]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return _swap_segment(token, 2, flipped)


def _payload_swapped_to_another_user(v: Victims) -> str:
    # The signature of one user's genuine token under claims naming someone else.
    forged = _b64(json.dumps(_claims(v.user)).encode())
    return _swap_segment(v.other.access_token, 1, forged)


# Each attack, and why the verifier refuses it (the close reason and the 401's detail say so).
ATTACKS: dict[str, tuple[Attack, str]] = {
    "expired": (_expired, "token expired"),
    "nbf in the future": (_nbf_future, "token not yet valid"),
    "iat in the future": (_iat_future, "token not yet valid"),
    "RS256 with a random signature": (_rs256_random_signature, "algorithm not allowed"),
    "RS256 header, HMAC with the server secret": (
        _rs256_header_hmac_with_server_secret, "algorithm not allowed"
    ),
    "HS256 signed with a public key as secret": (_hs256_public_key_as_secret, "bad signature"),
    "HS512 with the server secret": (_hs512_with_server_secret, "algorithm not allowed"),
    "embedded jwk header": (_embedded_jwk, "bad signature"),
    "alg none": (_alg_none, "algorithm not allowed"),
    "alg none, signature stripped": (_alg_none_signature_stripped, "algorithm not allowed"),
    "alg None": (_alg_none_capitalised, "algorithm not allowed"),
    "wrong audience": (_wrong_audience, "wrong audience"),
    "audience list": (_audience_list, "wrong audience"),
    "wrong issuer": (_wrong_issuer, "wrong issuer"),
    "wrong type": (_wrong_type, "wrong token type"),
    "signed with another key": (_other_key, "bad signature"),
    "refresh token as access token": (_refresh_token, "malformed token"),
    "tampered signature": (_tampered_signature, "bad signature"),
    "payload swapped to another user": (_payload_swapped_to_another_user, "bad signature"),
}  # fmt: skip

# What tests/e2e/test_auth.py::test_access_tokens_are_checked already sends to REST.
_ON_REST_ELSEWHERE = {
    "expired", "nbf in the future", "wrong audience", "wrong issuer", "wrong type",
    "signed with another key", "alg none", "refresh token as access token",
    "tampered signature",
}  # fmt: skip
# What tests/e2e/test_websocket.py::test_missing_forged_and_expired_tokens_are_refused sends.
_ON_WS_ELSEWHERE = {"signed with another key", "refresh token as access token"}

REST_ATTACKS = [name for name in ATTACKS if name not in _ON_REST_ELSEWHERE]
WS_ATTACKS = [name for name in ATTACKS if name not in _ON_WS_ELSEWHERE]
YJS_ATTACKS = list(ATTACKS)
CARRIERS = ["query", "header"]


@pytest.fixture(scope="module")
def victims(chorus: Running) -> Victims:
    api = chorus.api
    user, other = api.signup("victim"), api.signup("other")
    ws = api.ok(
        api.post("/api/workspaces", user, {"name": "attacked", "visibility": "public"}), 201
    )
    doc = api.ok(api.post(f"/api/workspaces/{ws['id']}/documents", user, {"title": "d"}), 201)
    return Victims(user, other, str(doc["id"]))


def _me(chorus: Running, token: str) -> tuple[int, str]:
    """``GET /api/auth/me`` with ``token``: the status, and the problem's detail if any."""
    r = chorus.api.http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    if r.status_code == 200:
        return 200, ""
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return r.status_code, str(r.json()["detail"])


def _open_socket(chorus: Running, path: str, token: str, carrier: str) -> tuple[int, str]:
    """Opens the socket with ``token`` and says how it ended: ``(close code, reason)``, or
    ``(0, "open")`` when the server kept it open and answered."""
    url = chorus.server.url.replace("http", "ws", 1) + path
    headers: dict[str, str] = {}
    if carrier == "query":
        url += f"?token={token}"
    else:
        headers["Authorization"] = f"Bearer {token}"
    with connect(url, additional_headers=headers, open_timeout=TIMEOUT) as ws:
        try:
            if path == "/ws":
                ws.send(json.dumps({"op": "ping"}))
            # /yjs speaks first (sync step 1); /ws answers the ping. Either way an accepted
            # socket sends a frame, a refused one closes.
            ws.recv(timeout=TIMEOUT)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code, closed.rcvd.reason
        return 0, "open"


# -- the controls: the same requests with a genuine token succeed -----------------------------


def test_a_genuine_token_is_accepted_everywhere(chorus: Running, victims: Victims) -> None:
    token = _good(victims.user)
    assert _me(chorus, token) == (200, "")
    for carrier in CARRIERS:
        assert _open_socket(chorus, "/ws", token, carrier) == (0, "open")
        assert _open_socket(chorus, f"/yjs/{victims.document_id}", token, carrier) == (0, "open")


# -- the attacks ----------------------------------------------------------------------------


@pytest.mark.parametrize("attack", REST_ATTACKS)
def test_rest_refuses_the_attack_with_401(chorus: Running, victims: Victims, attack: str) -> None:
    make, why = ATTACKS[attack]
    token = make(victims)
    status, detail = _me(chorus, token)
    assert status == 401
    assert detail == f"invalid access token: {why}"


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("attack", WS_ATTACKS)
def test_ws_closes_with_4401(chorus: Running, victims: Victims, attack: str, carrier: str) -> None:
    make, why = ATTACKS[attack]
    token = make(victims)
    assert _open_socket(chorus, "/ws", token, carrier) == (4401, f"unauthorized: {why}")


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("attack", YJS_ATTACKS)
def test_yjs_closes_with_4401(chorus: Running, victims: Victims, attack: str, carrier: str) -> None:
    make, why = ATTACKS[attack]
    token = make(victims)
    assert _open_socket(chorus, f"/yjs/{victims.document_id}", token, carrier) == (
        4401,
        f"unauthorized: {why}",
    )


def test_a_bad_header_is_not_rescued_by_a_good_query_token(
    chorus: Running, victims: Victims
) -> None:
    """Whichever carrier the server reads, it never falls back to the other one."""
    good, bad = _good(victims.user), _alg_none(victims)
    url = chorus.server.url.replace("http", "ws", 1)
    for path in ("/ws", f"/yjs/{victims.document_id}"):
        with connect(
            f"{url}{path}?token={good}",
            additional_headers={"Authorization": f"Bearer {bad}"},
            open_timeout=TIMEOUT,
        ) as ws:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=TIMEOUT)
            assert info.value.rcvd is not None and info.value.rcvd.code == 4401, path


# -- refresh token families ------------------------------------------------------------------


def _refresh(chorus: Running, token: str) -> tuple[int, dict[str, Any]]:
    r = chorus.api.http.post("/api/auth/refresh", json={"refresh_token": token})
    return r.status_code, (r.json() if r.status_code == 200 else {})


@pytest.mark.parametrize("reused_generation", [0, 1])
def test_a_reused_refresh_token_revokes_its_whole_family_and_only_it(
    chorus: Running, reused_generation: int
) -> None:
    """A family is every token one sign-in rotated into. Replaying any spent generation
    revokes all of it, the newest included, and leaves the user's other sign-ins alone."""
    api = chorus.api
    user = api.signup("family")
    login = api.ok(
        api.http.post(
            "/api/auth/login", json={"username": user.username, "password": user.password}
        )
    )
    generations = [user.refresh_token]
    for _ in range(2):
        status, body = _refresh(chorus, generations[-1])
        assert status == 200
        generations.append(body["refresh_token"])
    # generations: [spent, spent, live]

    status, _ = _refresh(chorus, generations[reused_generation])
    assert status == 401
    for token in generations:
        assert _refresh(chorus, token)[0] == 401
    # The other sign-in (another family of the same user) still rotates.
    status, body = _refresh(chorus, login["refresh_token"])
    assert status == 200 and body["user_id"] == user.user_id
    assert _me(chorus, body["access_token"]) == (200, "")
