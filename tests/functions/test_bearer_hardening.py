"""Bearer tokens end to end (RFC 6750, RFC 8725): every forged, stale or misplaced token is
refused by every protected function with the RFC 6750 answer, before any work is done."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from functions.users import update_users
from storage import keys
from tests.functions.conftest import SECRET, Stack, error_of
from tests.functions.sample_images import png_bytes

ISSUER, AUDIENCE = "xray-serverless", "xray-api"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "1",
        "role": "user",
        "iat": now,
        "exp": now + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": "j-1",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _signed(claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "at+jwt", **header})


def _hand_made(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT built byte by byte: any `alg` in the header, HMAC-SHA256 with `key` (or none)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _tampered_payload() -> str:
    header, _, signature = _signed(_claims()).split(".")
    forged = _b64(json.dumps(_claims(role="admin", sub="2")).encode())
    return f"{header}.{forged}.{signature}"


def _tampered_signature() -> str:
    token = _signed(_claims())
    last = "A" if token[-1] != "A" else "B"
    return token[:-1] + last


def _now() -> int:
    # Read when a token is made, not at import: a long suite reaches these tests minutes after
    # collection, and "120 s in the future" must still be in the future then.
    return int(time.time())


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "alg none": lambda: _hand_made({"alg": "none", "typ": "at+jwt"}, _claims(), None),
    "alg None": lambda: _hand_made({"alg": "None", "typ": "at+jwt"}, _claims(), None),
    "alg none with signature": lambda: _hand_made(
        {"alg": "none", "typ": "at+jwt"}, _claims(), SECRET.encode()
    ),
    "HS512": lambda: jwt.encode(
        _claims(), SECRET * 2, algorithm="HS512", headers={"typ": "at+jwt"}
    ),
    "HS384": lambda: jwt.encode(
        _claims(), SECRET * 2, algorithm="HS384", headers={"typ": "at+jwt"}
    ),
    # Algorithm confusion: RS256 in the header, "verified" with the shared secret as key.
    "RS256 with the secret": lambda: _hand_made(
        {"alg": "RS256", "typ": "at+jwt"}, _claims(), SECRET.encode()
    ),
    "lower-case hs256": lambda: _hand_made(
        {"alg": "hs256", "typ": "at+jwt"}, _claims(), SECRET.encode()
    ),
    "missing exp": lambda: _signed(_claims(exp=None)),
    "missing iat": lambda: _signed(_claims(iat=None)),
    "missing sub": lambda: _signed(_claims(sub=None)),
    "missing jti": lambda: _signed(_claims(jti=None)),
    "missing iss": lambda: _signed(_claims(iss=None)),
    "missing aud": lambda: _signed(_claims(aud=None)),
    "wrong iss": lambda: _signed(_claims(iss="https://evil.example")),
    "iss prefix": lambda: _signed(_claims(iss=ISSUER[:-1])),
    "wrong aud": lambda: _signed(_claims(aud="another-api")),
    "aud list without ours": lambda: _signed(_claims(aud=["a", "b"])),
    "expired beyond leeway": lambda: _signed(_claims(iat=_now() - 4000, exp=_now() - 31)),
    "iat beyond leeway": lambda: _signed(_claims(iat=_now() + 120, exp=_now() + 900)),
    "nbf beyond leeway": lambda: _signed(_claims(nbf=_now() + 120)),
    "tampered payload": _tampered_payload,
    "tampered signature": _tampered_signature,
    "other key": lambda: jwt.encode(_claims(), "k" * 64, algorithm="HS256"),
    "not an access token (typ JWT)": lambda: jwt.encode(
        _claims(), SECRET, algorithm="HS256", headers={"typ": "JWT"}
    ),
    "unknown crit extension": lambda: _signed(_claims(), crit=["exp-ext"], **{"exp-ext": 1}),
    "sub not a string": lambda: _signed(_claims(sub=1)),
    "unknown role": lambda: _signed(_claims(role="root")),
    "user who never existed": lambda: _signed(_claims(sub="404")),
    "two parts": lambda: ".".join(_signed(_claims()).split(".")[:2]),
    "garbage": lambda: "abc.def.ghi",
}

PROTECTED = [
    ("auth", "get", "/me"),
    ("predict", "post", "/"),
    ("gradcam", "post", "/"),
    ("history", "get", "/"),
]


def _call(stack: Stack, function: str, method: str, path: str, headers: dict[str, str]) -> Any:
    client = stack.client(function)
    if method == "post":
        return client.post(path, data=png_bytes(), content_type="image/png", headers=headers)
    return client.get(path, headers=headers)


@pytest.mark.parametrize("case", list(BAD_TOKENS), ids=list(BAD_TOKENS))
def test_bearer_bad_token_is_refused_by_every_function_with_invalid_token(
    stack: Stack, case: str
) -> None:
    token = BAD_TOKENS[case]()
    for function, method, path in PROTECTED:
        response = _call(stack, function, method, path, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (function, response.get_json())
        assert error_of(response) == "invalid_token"
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="xray", error="invalid_token"')
    assert stack.fake.requests == []
    assert stack.root.list_keys("output/") == []


def test_bearer_valid_token_passes_every_function(stack: Stack) -> None:
    # The control: the same requests with a good token are served.
    token = _signed(_claims())
    for function, method, path in PROTECTED:
        response = _call(stack, function, method, path, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, (function, response.get_json())


def test_bearer_small_clock_skew_is_accepted_within_the_leeway(stack: Stack) -> None:
    for token in (
        _signed(_claims(iat=_now() - 700, exp=_now() - 10)),
        _signed(_claims(iat=int(time.time()) + 10)),
        _signed(_claims(nbf=int(time.time()) + 10)),
    ):
        response = stack.client("auth").get("/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("place", "status", "error"),
    [
        ("query", 400, "invalid_request"),
        ("two headers", 400, "invalid_request"),
        ("form body", 401, None),  # RFC 6750 §2.2 is not offered: no credentials at all
        ("basic scheme", 401, None),
        ("cookie", 401, None),
    ],
)
def test_bearer_token_outside_the_authorization_header_is_refused(
    stack: Stack, place: str, status: int, error: str | None
) -> None:
    token = stack.token()
    client = stack.client("history")
    if place == "query":
        response = client.get(f"/?access_token={token}", headers=stack.bearer())
    elif place == "two headers":
        response = client.get(
            "/", headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")]
        )
    elif place == "form body":
        response = client.get(
            "/", data={"access_token": token}, content_type="application/x-www-form-urlencoded"
        )
    elif place == "basic scheme":
        response = client.get("/", headers={"Authorization": f"Basic {token}"})
    else:
        client.set_cookie("access_token", token)
        response = client.get("/")
    assert response.status_code == status
    challenge = response.headers["WWW-Authenticate"]
    if error is None:
        assert challenge == 'Bearer realm="xray"'  # no error code without credentials
        assert error_of(response) == "authentication_required"
    else:
        assert f'error="{error}"' in challenge
        assert error_of(response) == error


def test_bearer_token_in_the_query_of_predict_is_refused_before_the_model(stack: Stack) -> None:
    response = stack.client("predict").post(
        f"/?access_token={stack.token()}", data=png_bytes(), content_type="image/png"
    )
    assert response.status_code == 400
    assert stack.fake.requests == []


def test_bearer_scheme_name_is_case_insensitive(stack: Stack) -> None:
    response = stack.client("auth").get("/me", headers={"Authorization": f"bEaReR {stack.token()}"})
    assert response.status_code == 200


def test_bearer_token_of_a_user_disabled_since_issue_is_refused_everywhere(stack: Stack) -> None:
    headers = stack.bearer("3")
    assert _call(stack, "predict", "post", "/", headers).status_code == 200
    update_users(stack.auth_store, lambda table: table.updated("3", disabled=True))
    for function, method, path in PROTECTED:
        response = _call(stack, function, method, path, headers)
        assert response.status_code == 401
        assert error_of(response) == "invalid_token"
    assert len(stack.root.list_keys(keys.inference_user_prefix("3"))) == 1


def test_bearer_role_removed_since_issue_is_no_longer_admin(stack: Stack) -> None:
    headers = stack.bearer("2")  # an admin token
    assert stack.client("history").get("/?user=1", headers=headers).status_code == 200
    update_users(stack.auth_store, lambda table: table.updated("2", role="user"))
    response = stack.client("history").get("/?user=1", headers=headers)
    assert response.status_code == 403
    assert error_of(response) == "insufficient_scope"


def test_bearer_token_signed_with_the_page_token_key_is_refused(stack: Stack) -> None:
    # One key, one purpose: a key derived from the secret for another use signs no tokens.
    derived = hmac.new(SECRET.encode(), b"history-page-token/v1", hashlib.sha256).digest()
    token = jwt.encode(_claims(), derived, algorithm="HS256", headers={"typ": "at+jwt"})
    response = stack.client("auth").get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
