from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from typing import Any

import jwt
import pytest

from infrastructure.tokens import AccessClaims, AccessTokens, InvalidToken

# 64 bytes so pyjwt does not warn when the tests sign with HS384/HS512 using the same key.
SECRET = secrets.token_bytes(64)
ISSUER = "chorus"
AUDIENCE = "chorus-api"
# User ids are UUIDs; a subject that is not one is refused.
USER = "0b6f4c52-2a6e-4f43-9d3c-5d1f0e6a7b21"
OTHER = "7d2e9a10-41c5-4b8e-8f6a-0c3b5e9d1a44"


@pytest.fixture
def tokens() -> AccessTokens:
    return AccessTokens(SECRET)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": USER,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "jti-1",
        "typ": "access",
    }
    for name, value in overrides.items():
        if value is _DROP:
            del claims[name]
        else:
            claims[name] = value
    return claims


_DROP = object()


def _sign(claims: dict[str, Any], *, key: bytes = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _rejected(tokens: AccessTokens, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        tokens.decode(token)
    message = str(info.value)
    assert message
    # The message must never leak the token or any of its segments.
    assert not token or token not in message
    for segment in token.split("."):
        if len(segment) > 8:
            assert segment not in message
    return message


# --- round trip -------------------------------------------------------------------------


def test_round_trip(tokens: AccessTokens) -> None:
    before = int(time.time())
    token, expires_in = tokens.issue(OTHER)
    claims = tokens.decode(token)
    assert isinstance(claims, AccessClaims)
    assert claims.user_id == OTHER
    assert expires_in == 900
    assert before + 900 <= claims.expires_at <= int(time.time()) + 900
    assert claims.token_id


def test_issued_token_carries_all_claims(tokens: AccessTokens) -> None:
    token, _ = tokens.issue(OTHER)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert payload["iss"] == ISSUER
    assert payload["aud"] == AUDIENCE
    assert payload["sub"] == OTHER
    assert payload["typ"] == "access"
    assert payload["exp"] - payload["iat"] == 900
    assert payload["nbf"] == payload["iat"]
    assert isinstance(payload["jti"], str)


def test_token_ids_are_unique(tokens: AccessTokens) -> None:
    ids = {tokens.decode(tokens.issue(USER)[0]).token_id for _ in range(20)}
    assert len(ids) == 20


def test_custom_ttl_issuer_audience() -> None:
    custom = AccessTokens(SECRET, issuer="iss-x", audience="aud-x", ttl_s=60)
    token, expires_in = custom.issue(USER)
    assert expires_in == 60
    assert custom.decode(token).user_id == USER
    # Verifiers configured for another issuer or audience must not accept it.
    assert "issuer" in _rejected(AccessTokens(SECRET), token)
    assert "audience" in _rejected(AccessTokens(SECRET, issuer="iss-x"), token)


def test_str_secret_equals_its_utf8_bytes() -> None:
    text_secret = "k" * 40
    token, _ = AccessTokens(text_secret).issue(USER)
    assert AccessTokens(text_secret.encode()).decode(token).user_id == USER


def test_decode_accepts_hand_built_valid_token(tokens: AccessTokens) -> None:
    assert tokens.decode(_sign(_claims())).user_id == USER


def test_issue_rejects_empty_user_id(tokens: AccessTokens) -> None:
    with pytest.raises(ValueError):
        tokens.issue("")


# --- secret -----------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [b"", b"x" * 31, "x" * 31, "é" * 15])
def test_short_secret_rejected(secret: bytes | str) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        AccessTokens(secret)


def test_32_byte_secret_accepted() -> None:
    AccessTokens(b"x" * 32)
    AccessTokens("é" * 16)  # 32 bytes in UTF-8


def test_asymmetric_key_as_secret_rejected() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\n" + "A" * 64 + "\n-----END PUBLIC KEY-----\n"
    with pytest.raises(ValueError):
        AccessTokens(pem)


@pytest.mark.parametrize("ttl", [0, -1])
def test_non_positive_ttl_rejected(ttl: int) -> None:
    with pytest.raises(ValueError):
        AccessTokens(SECRET, ttl_s=ttl)


# --- time claims ------------------------------------------------------------------------


def test_expired(tokens: AccessTokens) -> None:
    now = int(time.time())
    token = _sign(_claims(iat=now - 1000, nbf=now - 1000, exp=now - 10))
    assert "expired" in _rejected(tokens, token)


def test_expired_via_short_ttl() -> None:
    short = AccessTokens(SECRET, ttl_s=1)
    now = int(time.time())
    token = _sign(_claims(iat=now - 20, nbf=now - 20, exp=now - 19))
    assert "expired" in _rejected(short, token)


def test_small_clock_skew_tolerated(tokens: AccessTokens) -> None:
    now = int(time.time())
    assert tokens.decode(_sign(_claims(exp=now - 2, iat=now - 60, nbf=now - 60)))
    assert tokens.decode(_sign(_claims(nbf=now + 2, iat=now + 2)))


def test_leeway_is_at_most_five_seconds(tokens: AccessTokens) -> None:
    now = int(time.time())
    assert "expired" in _rejected(tokens, _sign(_claims(exp=now - 6, iat=now - 60)))
    assert "not yet valid" in _rejected(tokens, _sign(_claims(nbf=now + 7, iat=now)))


def test_nbf_in_future(tokens: AccessTokens) -> None:
    now = int(time.time())
    assert "not yet valid" in _rejected(tokens, _sign(_claims(nbf=now + 60)))


def test_iat_in_future(tokens: AccessTokens) -> None:
    now = int(time.time())
    assert "not yet valid" in _rejected(tokens, _sign(_claims(iat=now + 60)))


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_non_integer_time_claims(tokens: AccessTokens, claim: str) -> None:
    now = int(time.time())
    _rejected(tokens, _sign(_claims(**{claim: str(now)})))
    _rejected(tokens, _sign(_claims(**{claim: "soon"})))
    _rejected(tokens, _sign(_claims(**{claim: float(now)})))


# --- issuer, audience, subject, type ----------------------------------------------------


def test_wrong_audience(tokens: AccessTokens) -> None:
    assert "audience" in _rejected(tokens, _sign(_claims(aud="some-other-api")))


def test_audience_list_rejected(tokens: AccessTokens) -> None:
    _rejected(tokens, _sign(_claims(aud=[AUDIENCE, "some-other-api"])))


def test_wrong_issuer(tokens: AccessTokens) -> None:
    assert "issuer" in _rejected(tokens, _sign(_claims(iss="evil")))


@pytest.mark.parametrize("typ", ["refresh", "ACCESS", "", 1])
def test_type_mismatch(tokens: AccessTokens, typ: object) -> None:
    _rejected(tokens, _sign(_claims(typ=typ)))


def test_type_mismatch_message(tokens: AccessTokens) -> None:
    assert "type" in _rejected(tokens, _sign(_claims(typ="refresh")))


@pytest.mark.parametrize("sub", [42, "", [USER]])
def test_bad_subject(tokens: AccessTokens, sub: object) -> None:
    _rejected(tokens, _sign(_claims(sub=sub)))


@pytest.mark.parametrize(
    "sub",
    ["user-1", "\x00", " ", USER.upper(), "{" + USER + "}", USER.replace("-", ""), USER + "\x00"],
)
def test_a_subject_that_is_not_a_user_id_is_refused(tokens: AccessTokens, sub: str) -> None:
    """Validly signed, but the subject is not a user id in its one form: it would become the
    actor of what the token does, in the log."""
    assert "sub" in _rejected(tokens, _sign(_claims(sub=sub)))


@pytest.mark.parametrize("jti", [7, ""])
def test_bad_token_id(tokens: AccessTokens, jti: object) -> None:
    _rejected(tokens, _sign(_claims(jti=jti)))


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "typ"])
def test_missing_claim(tokens: AccessTokens, claim: str) -> None:
    message = _rejected(tokens, _sign(_claims(**{claim: _DROP})))
    assert claim in message


# --- algorithm and signature ------------------------------------------------------------


def test_alg_none(tokens: AccessTokens) -> None:
    token = jwt.encode(_claims(), None, algorithm="none")  # type: ignore[arg-type]  # with cryptography installed (issue 20), pyjwt types the key
    assert "algorithm" in _rejected(tokens, token)


def test_alg_none_with_signature_stripped(tokens: AccessTokens) -> None:
    valid = _sign(_claims())
    _, payload, _ = valid.split(".")
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    _rejected(tokens, f"{header}.{payload}.")


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms_with_the_right_key(tokens: AccessTokens, alg: str) -> None:
    assert "algorithm" in _rejected(tokens, _sign(_claims(), alg=alg))


def test_rs256_token(tokens: AccessTokens) -> None:
    # pyjwt needs `cryptography` to sign RS256; the verifier must refuse on the header
    # alone, so a well-formed token with a random 2048-bit signature is enough.
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    token = f"{header}.{payload}.{_b64(secrets.token_bytes(256))}"
    assert "algorithm" in _rejected(tokens, token)


def test_header_alg_swapped_on_valid_token(tokens: AccessTokens) -> None:
    _, payload, signature = _sign(_claims()).split(".")
    header = _b64(json.dumps({"alg": "HS384", "typ": "JWT"}).encode())
    assert "algorithm" in _rejected(tokens, f"{header}.{payload}.{signature}")


def test_header_tampered_on_valid_token(tokens: AccessTokens) -> None:
    _, payload, signature = _sign(_claims()).split(".")
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "other"}).encode())
    assert "signature" in _rejected(tokens, f"{header}.{payload}.{signature}")


def test_tampered_signature(tokens: AccessTokens) -> None:
    header, payload, signature = _sign(_claims()).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert "signature" in _rejected(tokens, f"{header}.{payload}.{flipped}")


def test_tampered_payload(tokens: AccessTokens) -> None:
    header, _, signature = _sign(_claims()).split(".")
    forged = _b64(json.dumps(_claims(sub=OTHER)).encode())
    assert "signature" in _rejected(tokens, f"{header}.{forged}.{signature}")


def test_signed_with_another_secret(tokens: AccessTokens) -> None:
    token = _sign(_claims(), key=secrets.token_bytes(64))
    assert "signature" in _rejected(tokens, token)


def test_issued_by_another_instance_with_another_secret(tokens: AccessTokens) -> None:
    token, _ = AccessTokens(secrets.token_bytes(32)).issue(USER)
    _rejected(tokens, token)


# --- garbage ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    ["", "abc", "a.b.c", "a.b", "....", "Bearer x.y.z", "é.é.é", "\ud800.a.b", "x" * 10_000],
)
def test_garbage(tokens: AccessTokens, garbage: str) -> None:
    _rejected(tokens, garbage)


def test_non_json_payload(tokens: AccessTokens) -> None:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    _rejected(tokens, f"{header}.{_b64(b'not json')}.{_b64(b'sig')}")


# --- verified tokens remembered ---------------------------------------------------------


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    now = [time.time()]
    tokens = AccessTokens(SECRET, ttl_s=60, clock=lambda: now[0])
    token, _ = tokens.issue(USER)
    claims = tokens.decode(token)
    assert tokens.decode(token) is claims  # the second time, from memory
    now[0] = claims.expires_at + 4  # inside the leeway
    assert tokens.decode(token) == claims
    now[0] = claims.expires_at + 5
    assert "expired" in _rejected(tokens, token)
    assert "expired" in _rejected(tokens, token)


def test_remembering_a_token_does_not_admit_an_altered_copy(tokens: AccessTokens) -> None:
    token, _ = tokens.issue(USER)
    tokens.decode(token)
    header, payload, signature = token.split(".")
    forged_claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_claims["sub"] = OTHER
    forged = ".".join((header, _b64(json.dumps(forged_claims).encode()), signature))
    assert "signature" in _rejected(tokens, forged)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert _rejected(tokens, flipped)


def test_the_memory_of_verified_tokens_is_bounded() -> None:
    tokens = AccessTokens(SECRET, cache_size=2)
    users = [str(uuid.UUID(int=i)) for i in range(3)]
    issued = [tokens.issue(user)[0] for user in users]
    for token in issued:
        tokens.decode(token)
    assert list(tokens._verified) == issued[1:]
    assert tokens.decode(issued[0]).user_id == users[0]  # verified again, not refused
