"""Access tokens: issued with every claim, and refused when anything is off (RFC 8725)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from functions.settings import FunctionSettings
from functions.tokens import InvalidAccessToken, TokenService
from functions.users import User
from tests.functions.conftest import SECRET

SETTINGS = FunctionSettings.from_env({"SECRET_KEY": SECRET})
USER = User("7", "u@example.com", "admin", "$argon2id$x")


def _claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "7",
        "role": "admin",
        "iat": now,
        "exp": now + 600,
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
        "jti": "abc",
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def _sign(
    claims: dict[str, object], key: str = SECRET, algorithm: str = "HS256", typ: str = "at+jwt"
) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"typ": typ})


def test_tokens_issue_carries_every_claim_and_the_type() -> None:
    issued = TokenService(SETTINGS).issue(USER)
    header = jwt.get_unverified_header(issued.access_token)
    claims = jwt.decode(
        issued.access_token, SECRET, algorithms=["HS256"], audience=SETTINGS.jwt_audience
    )
    assert header == {"alg": "HS256", "typ": "at+jwt"}
    assert set(claims) == {"sub", "role", "iat", "exp", "iss", "aud", "jti"}
    assert claims["exp"] - claims["iat"] == 3600 == issued.expires_in
    verified = TokenService(SETTINGS).verify(issued.access_token)
    assert (verified.user_id, verified.role, verified.token_id) == ("7", "admin", issued.token_id)


def test_tokens_each_issue_has_its_own_id() -> None:
    service = TokenService(SETTINGS)
    assert service.issue(USER).token_id != service.issue(USER).token_id


def _none_token() -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'at+jwt'})}.{part(_claims())}."


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: _none_token(), "algorithm"),
        (lambda: _sign(_claims(), key=SECRET * 2, algorithm="HS512"), "algorithm"),
        (lambda: _sign(_claims(exp=None)), "claim"),
        (lambda: _sign(_claims(iat=None)), "claim"),
        (lambda: _sign(_claims(sub=None)), "claim"),
        (lambda: _sign(_claims(jti=None)), "claim"),
        (lambda: _sign(_claims(iss="someone-else")), "issuer"),
        (lambda: _sign(_claims(aud="another-api")), "audience"),
        (lambda: _sign(_claims(exp=int(time.time()) - 31)), "expired"),
        (lambda: _sign(_claims(iat=int(time.time()) + 300)), "not valid yet"),
        (lambda: _sign(_claims(), key="x" * 40), "signature"),
        (lambda: _sign(_claims(), typ="JWT"), "access token"),
        (lambda: _sign(_claims(role="root")), "role"),
        (lambda: "not.a.token", "malformed"),
    ],
)
def test_tokens_bad_tokens_are_refused_with_a_reason(token, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidAccessToken) as caught:
        TokenService(SETTINGS).verify(token())
    assert reason in caught.value.reason


def test_tokens_tampered_payload_is_refused() -> None:
    header, payload, signature = _sign(_claims()).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin" if claims["role"] == "user" else "user"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidAccessToken):
        TokenService(SETTINGS).verify(f"{header}.{forged}.{signature}")


def test_tokens_leeway_accepts_small_clock_skew() -> None:
    service = TokenService(SETTINGS)
    assert service.verify(_sign(_claims(exp=int(time.time()) - 10))).user_id == "7"
    assert service.verify(_sign(_claims(iat=int(time.time()) + 10))).user_id == "7"
