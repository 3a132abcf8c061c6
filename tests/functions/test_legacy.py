"""The original system's routes answer exactly as the original did (reference section 1): its
status codes, FastAPI's `{"detail": ...}` errors and 422 validation errors, field names and value
types; with the two deliberate differences (true class names, today's security)."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.functions.conftest import PASSWORDS, Stack
from tests.functions.sample_images import png_bytes

ORIGINAL_LOGIN = {
    "grant_type": "",
    "username": "alice@example.com",
    "password": PASSWORDS["1"],
    "scope": "",
    "client_id": "",
    "client_secret": "",
}
RESULTS_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")


def _legacy(stack: Stack) -> Any:
    return stack.client("legacy")


def _upload(content_type: str = "image/png") -> dict[str, Any]:
    return {"file": (io.BytesIO(png_bytes()), "x.png", content_type)}


def _detail(response: Any) -> Any:
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"detail"}, body
    return body["detail"]


def test_legacy_root_is_the_available_string(stack: Stack) -> None:
    response = _legacy(stack).get("/")
    assert response.status_code == 200
    assert response.data == b'"The API is available."'


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_legacy_token_takes_the_original_clients_form(stack: Stack, encoding: str) -> None:
    if encoding == "urlencoded":
        response = _legacy(stack).post("/token", data=ORIGINAL_LOGIN)
    else:
        response = _legacy(stack).post(
            "/token", data=ORIGINAL_LOGIN, content_type="multipart/form-data"
        )
    assert response.status_code == 200, response.data
    body = response.get_json()
    assert set(body) == {"access_token", "token_type"}
    assert body["token_type"] == "Bearer"
    me = _legacy(stack).get(
        "/user/me", headers={"Authorization": f"{body['token_type']} {body['access_token']}"}
    )
    assert me.get_json() == {
        "id": 1,
        "email": "alice@example.com",
        "role": "user",
        "disabled": False,
    }


@pytest.mark.parametrize(
    "changes",
    [{"password": "wrong"}, {"username": "nobody@example.com"}, {"username": ""}],
    ids=["wrong-password", "unknown-user", "empty-user"],
)
def test_legacy_token_bad_credentials_are_401(stack: Stack, changes: dict[str, str]) -> None:
    response = _legacy(stack).post("/token", data={**ORIGINAL_LOGIN, **changes})
    assert response.status_code == 401
    assert _detail(response) == "Incorrect username or password"
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"username": "alice@example.com"}, "password"),
        ({"password": "x"}, "username"),
        ({**ORIGINAL_LOGIN, "grant_type": "client_credentials"}, "grant_type"),
    ],
)
def test_legacy_token_invalid_forms_are_fastapi_422(
    stack: Stack, form: dict[str, str], field: str
) -> None:
    response = _legacy(stack).post("/token", data=form)
    assert response.status_code == 422
    (entry,) = _detail(response)
    assert entry["loc"] == ["body", field]
    assert {"type", "msg"} <= set(entry)


def test_legacy_token_json_body_is_422(stack: Stack) -> None:
    response = _legacy(stack).post("/token", json=ORIGINAL_LOGIN)
    assert response.status_code == 422


def test_legacy_token_disabled_user_is_refused_as_inactive(stack: Stack) -> None:
    login = {**ORIGINAL_LOGIN, "username": "off@example.com", "password": PASSWORDS["4"]}
    response = _legacy(stack).post("/token", data=login)
    assert response.status_code == 400
    assert _detail(response) == "Inactive user"


def test_legacy_me_without_token_bad_token_and_disabled_user(stack: Stack) -> None:
    client = _legacy(stack)
    missing = client.get("/user/me")
    assert (missing.status_code, _detail(missing)) == (401, "Not authenticated")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    bad = client.get("/user/me", headers={"Authorization": "Bearer not.a.token"})
    assert (bad.status_code, _detail(bad)) == (401, "Could not validate credentials")
    # User 4's account is disabled (a token issued before that, as far as it knows).
    off = client.get("/user/me", headers=stack.bearer("4"))
    assert (off.status_code, _detail(off)) == (400, "Inactive user")


def test_legacy_xray_answers_each_probability_as_text_under_its_true_name(stack: Stack) -> None:
    response = _legacy(stack).post(
        "/x-ray",
        data=_upload(),
        headers={**stack.bearer(), "Accept": "application/json"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.data
    body = response.get_json()
    assert list(body) == ["covid", "no-covid", "normal"]
    # The fake model answers covid (index 1 of normal, covid, no-covid) with 0.9.
    assert body == {
        "covid": str(np.float32(0.9)),
        "no-covid": str(np.float32(0.05)),
        "normal": str(np.float32(0.05)),
    }
    assert all(isinstance(value, str) for value in body.values())
    listing = stack.client("history").get("/", headers=stack.bearer())
    assert listing.get_json()["count"] == 1


def test_legacy_xray_part_not_declared_png_is_400_invalid_image_type(stack: Stack) -> None:
    response = _legacy(stack).post(
        "/x-ray",
        data=_upload("image/jpeg"),
        headers=stack.bearer(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert _detail(response) == "Invalid image type"


@pytest.mark.parametrize("path", ["/x-ray", "/grad_cam"])
def test_legacy_upload_without_file_is_422(stack: Stack, path: str) -> None:
    response = _legacy(stack).post(
        path, data={"other": "x"}, headers=stack.bearer(), content_type="multipart/form-data"
    )
    assert response.status_code == 422
    (entry,) = _detail(response)
    assert entry["loc"] == ["body", "file"]


def test_legacy_grad_cam_is_a_png_whatever_accept_says(stack: Stack) -> None:
    response = _legacy(stack).post(
        "/grad_cam",
        data=_upload(),
        headers={**stack.bearer(), "Accept": "application/json"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    Image.open(io.BytesIO(response.data)).verify()


def test_legacy_results_plain_list_without_history_then_json_text_oldest_first(
    stack: Stack,
) -> None:
    client = _legacy(stack)
    empty = client.get("/user/results", headers=stack.bearer())
    assert (empty.status_code, empty.data) == (200, b"[]")

    for _ in range(2):
        client.post(
            "/x-ray", data=_upload(), headers=stack.bearer(), content_type="multipart/form-data"
        )
    response = client.get("/user/results", headers=stack.bearer())
    text = response.get_json()
    assert isinstance(text, str)  # the original serialised the list twice
    entries = json.loads(text)
    assert len(entries) == 2
    for entry in entries:
        assert list(entry) == ["datetime", "covid", "no-covid", "normal"]
        assert RESULTS_TIME.match(entry["datetime"])
        assert entry["covid"] == pytest.approx(0.9)
    assert entries[0]["datetime"] <= entries[1]["datetime"]

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    later = client.get(
        "/user/results", headers=stack.bearer(), query_string={"start_time": tomorrow}
    )
    assert later.get_json() == "[]"
    bad = client.get("/user/results", headers=stack.bearer(), query_string={"stop_time": "soon"})
    assert bad.status_code == 422
    (entry,) = _detail(bad)
    assert entry["loc"] == ["query", "stop_time"]


def test_legacy_results_are_the_callers_only(stack: Stack) -> None:
    client = _legacy(stack)
    client.post(
        "/x-ray", data=_upload(), headers=stack.bearer("1"), content_type="multipart/form-data"
    )
    other = client.get("/user/results", headers=stack.bearer("3"))
    assert other.data == b"[]"


def test_legacy_unknown_method_is_fastapi_405(stack: Stack) -> None:
    response = _legacy(stack).delete("/x-ray")
    assert response.status_code == 405
    assert _detail(response) == "Method Not Allowed"
    assert "POST" in response.headers["Allow"]
