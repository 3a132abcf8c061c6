"""Object-level authorization (OWASP API1): records and Grad-CAM images for their owner and
admins only, ids nobody can guess, listings that never mix users."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from storage import keys
from tests.functions.conftest import Stack, error_of
from tests.functions.sample_images import png_bytes

_ID = re.compile(r"^(\d{8}T\d{12})Z([0-9a-f]{32})$")


def _predict(stack: Stack, user: str) -> dict[str, Any]:
    response = stack.client("predict").post(
        "/", data=png_bytes(), content_type="image/png", headers=stack.bearer(user)
    )
    assert response.status_code == 200
    return dict(response.get_json())


def _gradcam(stack: Stack, user: str) -> str:
    response = stack.client("gradcam").post(
        "/",
        data={"file": (io.BytesIO(png_bytes()), "x.png", "image/png")},
        headers=stack.bearer(user),
    )
    assert response.status_code == 200
    return str(response.headers["X-Inference-Id"])


def _get(stack: Stack, path: str, user: str) -> Any:
    return stack.client("history").get(path, headers=stack.bearer(user))


@pytest.fixture
def owned(any_stack: Stack) -> tuple[Stack, str, str]:
    """Alice (user 1) owns one prediction and one Grad-CAM."""
    return any_stack, _predict(any_stack, "1")["id"], _gradcam(any_stack, "1")


def test_access_owner_reads_own_record_and_image(owned: tuple[Stack, str, str]) -> None:
    stack, predicted, explained = owned
    assert _get(stack, f"/{predicted}", "1").get_json()["user_id"] == "1"
    image = _get(stack, f"/{explained}/gradcam", "1")
    assert (image.status_code, image.mimetype) == (200, "image/png")


@pytest.mark.parametrize(
    "path",
    ["/{predicted}", "/{explained}", "/{explained}/gradcam"],
)
def test_access_other_user_gets_404_for_an_id_they_know(
    owned: tuple[Stack, str, str], path: str
) -> None:
    stack, predicted, explained = owned
    response = _get(stack, path.format(predicted=predicted, explained=explained), "3")
    # Not 403: the answer does not even confirm that the id exists.
    assert response.status_code == 404
    assert error_of(response) == "not_found"
    assert predicted not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    ["/?user=1", "/{predicted}?user=1", "/{explained}/gradcam?user=1"],
)
def test_access_other_user_naming_the_owner_is_403(
    owned: tuple[Stack, str, str], path: str
) -> None:
    stack, predicted, explained = owned
    response = _get(stack, path.format(predicted=predicted, explained=explained), "3")
    assert response.status_code == 403
    assert error_of(response) == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_access_admin_reads_any_user(owned: tuple[Stack, str, str]) -> None:
    stack, predicted, explained = owned
    assert _get(stack, f"/{predicted}?user=1", "2").get_json()["id"] == predicted
    assert _get(stack, f"/{explained}/gradcam?user=1", "2").status_code == 200
    listing = _get(stack, "/?user=1", "2").get_json()
    assert {record["id"] for record in listing["records"]} == {predicted, explained}
    # Without naming the user, an admin sees their own (empty) history: no accidental mixing.
    assert _get(stack, f"/{predicted}", "2").status_code == 404
    assert _get(stack, "/", "2").get_json()["records"] == []


def test_access_listing_never_shows_another_users_records(any_stack: Stack) -> None:
    mine = {_predict(any_stack, "3")["id"] for _ in range(3)}
    for user in ("1", "2", "1"):
        _predict(any_stack, user)
    wide = quote((datetime.now(UTC) - timedelta(days=3)).isoformat())
    body = _get(any_stack, f"/?start_time={wide}&limit=100", "3").get_json()
    assert {record["id"] for record in body["records"]} == mine
    assert {record["user_id"] for record in body["records"]} == {"3"}


def test_access_listing_page_token_of_another_user_is_refused(stack: Stack) -> None:
    for _ in range(3):
        _predict(stack, "1")
    token = _get(stack, "/?limit=1", "1").get_json()["next_page_token"]
    assert token
    response = _get(stack, f"/?limit=1&page_token={quote(token)}", "3")
    assert response.status_code == 400
    assert error_of(response) == "invalid_page_token"
    # Nor may the admin replay it for themselves.
    assert _get(stack, f"/?limit=1&page_token={quote(token)}", "2").status_code == 400


@pytest.mark.parametrize(
    "user",
    ["../1", "1/../3", "..", "1%2F..%2F3", "output/inference/1", "a" * 200, "", " "],
)
def test_access_user_parameter_cannot_reach_other_keys(stack: Stack, user: str) -> None:
    _predict(stack, "1")
    response = _get(stack, f"/?user={quote(user, safe='%')}", "2")  # even as admin
    if user:
        assert response.status_code == 400
        assert error_of(response) == "invalid_parameter"
    else:
        assert response.get_json()["user_id"] == "2"


@pytest.mark.parametrize(
    "inference_id",
    [
        "..%2F..%2Fdb_auth%2Fauthentication.csv",
        "%2E%2E",
        "20261127T101500123456Z" + "0" * 31,
        "20261127T101500123456Z" + "G" * 32,
        "x" * 500,
    ],
)
def test_access_malformed_ids_are_404_and_read_nothing(stack: Stack, inference_id: str) -> None:
    response = _get(stack, f"/{inference_id}", "1")
    assert response.status_code == 404
    assert error_of(response) == "not_found"


def test_access_ids_are_unguessable(stack: Stack) -> None:
    ids = [_predict(stack, "1")["id"] for _ in range(20)]
    randoms = [_ID.match(inference_id).group(2) for inference_id in ids]  # type: ignore[union-attr]
    assert len(set(randoms)) == len(randoms)
    # 128 random bits: knowing the time to the microsecond is no help. The same time with
    # the random part of another id, or changed by one bit, finds nothing.
    first = _ID.match(ids[0])
    assert first is not None
    for guess in (
        f"{first.group(1)}Z{randoms[1]}",
        f"{first.group(1)}Z{int(randoms[0], 16) ^ 1:032x}",
        f"{first.group(1)}Z{'0' * 32}",
    ):
        assert _get(stack, f"/{guess}", "1").status_code == 404
    # Each id's random part is 32 hex digits whose bits look uniform (not a counter or time).
    bits = "".join(f"{int(random, 16):0128b}" for random in randoms)
    assert 0.4 < bits.count("1") / len(bits) < 0.6


def test_access_records_and_images_live_under_their_owner_only(
    owned: tuple[Stack, str, str],
) -> None:
    stack, predicted, explained = owned
    written = set(stack.root.list_keys("output/"))
    assert written == {
        keys.inference_record("1", predicted),
        keys.inference_record("1", explained),
        keys.gradcam_image("1", explained),
    }
