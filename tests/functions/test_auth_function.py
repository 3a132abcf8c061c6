"""The auth function through functions-framework: RFC 6749 token endpoint, RFC 6750 bearer use."""

from __future__ import annotations

import json
import re
import time

import bcrypt
import jwt
import pytest

from functions.users import User, format_users_csv, parse_users_csv, update_users
from storage import keys
from tests.functions.conftest import PASSWORDS, SECRET, Stack, error_of

FORM = "application/x-www-form-urlencoded"
_DESCRIPTION = re.compile(r"^[\x20\x21\x23-\x5B\x5D-\x7E]*$")


def _login(stack: Stack, body: str, content_type: str = FORM, path: str = "/token"):  # type: ignore[no-untyped-def]
    return stack.client("auth").post(path, data=body, content_type=content_type)


def _form(
    username: str = "alice@example.com", password: str = PASSWORDS["1"], grant: str = "password"
) -> str:
    from urllib.parse import urlencode

    return urlencode({"grant_type": grant, "username": username, "password": password})


def _assert_oauth_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) <= {"error", "error_description", "error_uri"}
    assert body["error"] == code
    assert _DESCRIPTION.match(body.get("error_description", ""))
    assert response.headers["Cache-Control"] == "no-store"


def test_token_valid_credentials_issue_a_bearer_token(stack: Stack) -> None:
    response = _login(stack, _form())
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"], audience="xray-api")
    assert claims["sub"] == "1"
    assert claims["role"] == "user"


def test_token_username_matches_case_insensitively(stack: Stack) -> None:
    assert _login(stack, _form(username="ALICE@Example.com")).status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice@example.com", "wrong"),
        ("nobody@example.com", PASSWORDS["1"]),
        ("alice@example.com", "x" * 2000),
        ("a" * 300, "x"),
        ("alice@example.com", "é" * 80),
    ],
)
def test_token_bad_credentials_are_invalid_grant_alike(
    stack: Stack, username: str, password: str
) -> None:
    response = _login(stack, _form(username=username, password=password))
    _assert_oauth_error(response, 400, "invalid_grant")
    assert response.get_json()["error_description"] == "invalid username or password"


def test_token_disabled_user_cannot_log_in(stack: Stack) -> None:
    _assert_oauth_error(
        _login(stack, _form("off@example.com", PASSWORDS["4"])), 400, "invalid_grant"
    )


def test_token_legacy_bcrypt_user_logs_in(stack: Stack) -> None:
    legacy = bcrypt.hashpw(b"legacy-password", bcrypt.gensalt(rounds=12)).decode()
    assert legacy.startswith("$2b$12$")
    update_users(
        stack.auth_store, lambda table: table.added(User("9", "old@example.com", "user", legacy))
    )
    assert _login(stack, _form("old@example.com", "legacy-password")).status_code == 200
    # bcrypt 5 raises on passwords over 72 bytes: that must be a plain refusal, not a 500.
    _assert_oauth_error(_login(stack, _form("old@example.com", "p" * 100)), 400, "invalid_grant")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("username=alice@example.com&password=x", "invalid_request"),
        ("grant_type=&username=alice@example.com&password=x", "invalid_request"),
        ("grant_type=password&username=alice@example.com", "invalid_request"),
        ("grant_type=password&username=&password=x", "invalid_request"),
        ("grant_type=password&grant_type=password&username=a&password=b", "invalid_request"),
        ("grant_type=password&username=a&username=b&password=c", "invalid_request"),
        ("grant_type=client_credentials", "unsupported_grant_type"),
        ("grant_type=authorization_code&code=x", "unsupported_grant_type"),
    ],
)
def test_token_malformed_requests_follow_rfc6749(stack: Stack, body: str, code: str) -> None:
    _assert_oauth_error(_login(stack, body), 400, code)


def test_token_unknown_parameters_are_ignored(stack: Stack) -> None:
    assert _login(stack, _form() + "&scope=anything&client_id=app&extra=1").status_code == 200


def test_token_json_body_is_refused(stack: Stack) -> None:
    body = json.dumps({"grant_type": "password", "username": "alice@example.com", "password": "x"})
    _assert_oauth_error(
        _login(stack, body, content_type="application/json"), 400, "invalid_request"
    )


def test_token_credentials_in_the_url_are_refused(stack: Stack) -> None:
    response = stack.client("auth").post(
        "/token?username=alice@example.com&password=x",
        data="grant_type=password",
        content_type=FORM,
    )
    _assert_oauth_error(response, 400, "invalid_request")


def test_token_wrong_method_is_405_with_allow_in_rfc6749_shape(stack: Stack) -> None:
    response = stack.client("auth").get("/token")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.get_json()["error"] == "invalid_request"


def test_token_oversized_body_is_413_in_rfc6749_shape(stack: Stack) -> None:
    response = _login(stack, "grant_type=password&password=" + "x" * 200_000)
    _assert_oauth_error(response, 413, "invalid_request")


# -- /me and RFC 6750 --------------------------------------------------------------------------


def test_me_returns_the_profile_without_the_hash(stack: Stack) -> None:
    response = stack.client("auth").get("/me", headers=stack.bearer("2"))
    assert response.status_code == 200
    assert response.get_json() == {
        "id": "2",
        "email": "admin@example.com",
        "role": "admin",
        "disabled": False,
    }


def test_me_with_a_token_from_the_token_endpoint(stack: Stack) -> None:
    token = _login(stack, _form()).get_json()["access_token"]
    response = stack.client("auth").get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.get_json()["id"] == "1"


def test_me_without_credentials_is_401_with_a_bare_challenge(stack: Stack) -> None:
    response = stack.client("auth").get("/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="xray"'
    assert error_of(response) == "authentication_required"


def test_me_other_scheme_is_treated_as_no_credentials(stack: Stack) -> None:
    response = stack.client("auth").get("/me", headers={"Authorization": "Basic YTpi"})
    assert response.status_code == 401
    assert "error=" not in response.headers["WWW-Authenticate"]


def _expired_token() -> str:
    now = int(time.time())
    claims = {
        "sub": "1",
        "role": "user",
        "iat": now - 4000,
        "exp": now - 400,
        "iss": "xray-serverless",
        "aud": "xray-api",
        "jti": "x",
    }
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer not a token",
        "Bearer abc.def.ghi",
        "Bearer " + "a" * 5000,
        "Bearer {expired}",
    ],
)
def test_me_invalid_token_is_401_with_invalid_token(stack: Stack, authorization: str) -> None:
    authorization = authorization.replace("{expired}", _expired_token())
    response = stack.client("auth").get("/me", headers={"Authorization": authorization})
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="xray", error="invalid_token"')
    assert error_of(response) == "invalid_token"


def test_me_token_in_query_string_is_400_invalid_request(stack: Stack) -> None:
    response = stack.client("auth").get(f"/me?access_token={stack.token()}")
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


def test_me_token_of_a_user_disabled_since_issue_is_refused(stack: Stack) -> None:
    headers = stack.bearer("3")
    assert stack.client("auth").get("/me", headers=headers).status_code == 200
    update_users(stack.auth_store, lambda table: table.updated("3", disabled=True))
    response = stack.client("auth").get("/me", headers=headers)
    assert response.status_code == 401
    assert error_of(response) == "invalid_token"


def test_me_token_of_a_deleted_user_is_refused(stack: Stack) -> None:
    headers = stack.bearer("3")
    table = parse_users_csv(stack.auth_store.get_bytes(keys.USERS_FILE))
    stack.auth_store.put(keys.USERS_FILE, format_users_csv(u for u in table.users if u.id != "3"))
    assert stack.client("auth").get("/me", headers=headers).status_code == 401


def test_auth_unknown_path_is_json_404(stack: Stack) -> None:
    for path in ("/nothing", "/favicon.ico", "/token/extra"):
        response = stack.client("auth").get(path)
        assert response.status_code == 404
        assert error_of(response) == "not_found"


def test_auth_on_s3_logs_in_and_reads_the_profile(stack_factory) -> None:  # type: ignore[no-untyped-def]
    s3_stack = stack_factory("s3")
    token = _login(s3_stack, _form()).get_json()["access_token"]
    response = s3_stack.client("auth").get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.get_json()["email"] == "alice@example.com"
