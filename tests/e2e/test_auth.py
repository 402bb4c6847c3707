"""Sign-up, login, token rotation and the checks on access tokens."""

from __future__ import annotations

import time
import uuid

import jwt
import psycopg

from tests.fixtures.chorus import TEST_SECRET, Running


def test_signup_then_me_and_login(chorus: Running) -> None:
    api = chorus.api
    name = f"Grace_{uuid.uuid4().hex[:8]}"
    r = api.http.post(
        "/api/auth/signup",
        json={"username": name, "password": "Grace-hopper-COBOL-1959", "display_name": "Grace H"},
    )
    body = api.ok(r, 201)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    me = api.ok(
        api.http.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    )
    assert me == {
        "user_id": body["user_id"],
        "username": name.lower(),
        "display_name": "Grace H",
        "avatar_url": None,  # issue 20: none until the user sets one
    }
    # Usernames are case-insensitive: the same name differently cased is taken.
    dup = api.http.post(
        "/api/auth/signup", json={"username": name.upper(), "password": "another-Strong-pass-77"}
    )
    assert dup.status_code == 409
    login = api.http.post(
        "/api/auth/login", json={"username": name.upper(), "password": "Grace-hopper-COBOL-1959"}
    )
    assert api.ok(login)["user_id"] == body["user_id"]


def test_wrong_password_and_unknown_user_are_the_same_401(chorus: Running) -> None:
    user = chorus.api.signup("pw")
    wrong = chorus.api.http.post(
        "/api/auth/login", json={"username": user.username, "password": "nope-nope"}
    )
    unknown = chorus.api.http.post(
        "/api/auth/login",
        json={"username": "ghost_" + uuid.uuid4().hex[:8], "password": "nope-nope"},
    )
    impossible = chorus.api.http.post(
        "/api/auth/login", json={"username": "!!", "password": "nope-nope"}
    )
    for r in (wrong, unknown, impossible):
        assert r.status_code == 401
        assert r.json()["detail"] == "wrong username or password"


def test_signup_rules(chorus: Running) -> None:
    before = chorus.events()
    for body in (
        {"username": "ab", "password": "plum-Orbit-kettle-42"},
        {"username": "has space", "password": "plum-Orbit-kettle-42"},
        {"username": "fine_name", "password": "short"},
    ):
        assert chorus.api.http.post("/api/auth/signup", json=body).status_code == 422
    assert chorus.events() == before


def test_passwords_are_argon2id_hashes_beside_the_log_never_in_it(chorus: Running) -> None:
    user = chorus.api.signup("secret", password="a very particular password")
    with psycopg.connect(chorus.database_url) as conn:
        stored = conn.execute(
            "SELECT password_hash FROM chorus_credentials WHERE subject_id = %s", (user.user_id,)
        ).fetchone()
        leaked = conn.execute(
            "SELECT count(*) FROM chorus_events"
            " WHERE position(%s in convert_from(state, 'UTF8')) > 0",
            ("particular",),
        ).fetchone()
    assert stored is not None and stored[0].startswith("$argon2id$")
    assert leaked == (0,)


def test_refresh_rotates_and_reuse_revokes_the_family(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("rot")
    first = api.ok(api.http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token}))
    assert first["refresh_token"] != user.refresh_token
    api.ok(
        api.http.get("/api/auth/me", headers={"Authorization": f"Bearer {first['access_token']}"})
    )
    # The spent token comes back (stolen?): refused, and the whole family with it.
    reuse = api.http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert reuse.status_code == 401
    after = api.http.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert after.status_code == 401


def test_logout_revokes_the_refresh_token(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("bye")
    assert (
        api.http.post("/api/auth/logout", json={"refresh_token": user.refresh_token}).status_code
        == 204
    )
    assert (
        api.http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token}).status_code
        == 401
    )


def _token(**claims: object) -> str:
    now = int(time.time())
    payload = {
        "iss": "chorus", "aud": "chorus-api", "sub": str(uuid.uuid4()), "iat": now,
        "nbf": now, "exp": now + 600, "jti": "j", "typ": "access",
    }  # fmt: skip
    payload.update(claims)
    return jwt.encode(payload, TEST_SECRET, algorithm="HS256")


def test_access_tokens_are_checked(chorus: Running) -> None:
    user = chorus.api.signup("tok")
    now = int(time.time())
    bad = {
        "expired": _token(sub=user.user_id, exp=now - 60, iat=now - 700, nbf=now - 700),
        "not yet valid": _token(sub=user.user_id, nbf=now + 300),
        "wrong audience": _token(sub=user.user_id, aud="someone-else"),
        "wrong issuer": _token(sub=user.user_id, iss="evil"),
        "wrong type": _token(sub=user.user_id, typ="refresh"),
        "other key": jwt.encode(
            {"sub": user.user_id}, "another-secret-" + "y" * 40, algorithm="HS256"
        ),
        "alg none": jwt.encode({"sub": user.user_id, "exp": now + 60}, key=None, algorithm="none"),  # type: ignore[arg-type]
        "refresh token as access": user.refresh_token,
        "tampered": user.access_token[:-3]
        + ("AAA" if not user.access_token.endswith("AAA") else "BBB"),
    }
    for why, token in bad.items():
        r = chorus.api.http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, why
    good = _token(sub=user.user_id)
    assert (
        chorus.api.http.get("/api/auth/me", headers={"Authorization": f"Bearer {good}"}).status_code
        == 200
    )


def test_signup_retry_with_the_same_key_returns_the_first_user(chorus: Running) -> None:
    api, before = chorus.api, chorus.events()
    name = "retry_" + uuid.uuid4().hex[:8]
    body = {"username": name, "password": "the walrus carpenter oyster"}
    first = api.ok(
        api.http.post("/api/auth/signup", json=body, headers={"Idempotency-Key": "s1"}), 201
    )
    again = api.ok(
        api.http.post("/api/auth/signup", json=body, headers={"Idempotency-Key": "s1"}), 201
    )
    assert again["user_id"] == first["user_id"] and again["position"] == first["position"]
    # The user and its username claim, once, and the sign-up's session (issue 17: SignedIn);
    # the retry continues that session.
    assert chorus.events() == before + 3
    # Knowing the key is not enough to get tokens: the password must match too.
    other = {"username": name, "password": "not the walrus carpenter oyster"}
    assert (
        api.http.post("/api/auth/signup", json=other, headers={"Idempotency-Key": "s1"}).status_code
        == 409
    )
