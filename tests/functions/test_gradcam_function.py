"""The gradcam function: overlay PNG or JSON, target class by name, stored without orphans."""

from __future__ import annotations

import base64
import io

import pytest

from functions.runtime import Runtime, install_runtime
from storage import StorageUnavailable, keys
from tests.functions.conftest import Stack, error_of
from tests.functions.fake_serving import HEATMAP_SIZE, OVERLAY_SIZE, overlay_png
from tests.functions.sample_images import png_bytes
from tests.functions.stores import FaultyStore


def _post(stack: Stack, query: str = "", headers: dict[str, str] | None = None, **form: str):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {"file": (io.BytesIO(png_bytes()), "x.png", "image/png"), **form}
    return stack.client("gradcam").post(
        "/" + query, data=data, headers={**stack.bearer(), **(headers or {})}
    )


def _stored(stack: Stack) -> tuple[list[str], list[str]]:
    return (
        stack.root.list_keys(keys.inference_user_prefix("1")),
        stack.root.list_keys(keys.GRAD_CAM_AREA),
    )


def test_gradcam_default_answer_is_the_overlay_png_with_naming_headers(any_stack: Stack) -> None:
    response = _post(any_stack)
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.data == overlay_png()
    inference_id = response.headers["X-Inference-Id"]
    assert response.headers["X-Predicted-Class"] == "covid"
    assert response.headers["X-Target-Class"] == "covid"
    assert response.headers["X-Model-Version"] == "3"
    record = any_stack.root.get_json(keys.inference_record("1", inference_id))
    assert record["kind"] == "gradcam"
    assert record["gradcam"] == {
        "target_class": "covid",
        "target_class_index": 1,
        "overlay_size_bytes": len(overlay_png()),
        "overlay_size": OVERLAY_SIZE,
    }
    assert [r.signature for r in any_stack.fake.requests] == ["gradcam_overlay"]
    assert any_stack.root.get_bytes(keys.gradcam_image("1", inference_id)) == response.data


@pytest.mark.parametrize(
    ("query", "headers"),
    [("?format=json", {}), ("", {"Accept": "application/json"})],
)
def test_gradcam_json_when_asked(stack: Stack, query: str, headers: dict[str, str]) -> None:
    response = _post(stack, query, headers)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert base64.b64decode(body["overlay_png_b64"]) == overlay_png()
    assert body["predicted_class"] == "covid"
    assert set(body["probabilities"]) == {"normal", "covid", "no-covid"}
    assert "heatmap" not in body
    assert "heatmap_size" not in body["gradcam"]
    assert [r.signature for r in stack.fake.requests] == ["gradcam_overlay"]


@pytest.mark.parametrize("where", ["query", "form"])
def test_gradcam_json_with_heatmap_asks_the_model_for_gradcam(stack: Stack, where: str) -> None:
    if where == "query":
        response = _post(stack, "?format=json&heatmap=true")
    else:
        response = _post(stack, format="json", heatmap="true")
    body = response.get_json()
    assert [r.signature for r in stack.fake.requests] == ["gradcam"]
    assert len(body["heatmap"]) == HEATMAP_SIZE
    assert all(len(row) == HEATMAP_SIZE for row in body["heatmap"])
    assert all(0 <= value <= 1 for row in body["heatmap"] for value in row)
    assert body["gradcam"]["heatmap_size"] == HEATMAP_SIZE
    assert body["gradcam"]["overlay_size"] == OVERLAY_SIZE


def test_gradcam_png_answer_ignores_heatmap_and_skips_it(stack: Stack) -> None:
    response = _post(stack, "?heatmap=true")
    assert response.mimetype == "image/png"
    assert [r.signature for r in stack.fake.requests] == ["gradcam_overlay"]


def test_gradcam_on_a_model_without_the_overlay_signature_answers_once_asked_twice(
    stack: Stack,
) -> None:
    stack.fake.versions_without_overlay = {3}
    first = _post(stack)
    second = _post(stack, "?format=json")
    assert first.status_code == second.status_code == 200
    assert first.data == overlay_png()
    assert base64.b64decode(second.get_json()["overlay_png_b64"]) == overlay_png()
    assert second.get_json()["gradcam"]["overlay_size"] == OVERLAY_SIZE
    # One refused call for the old version, then straight to `gradcam`.
    assert [(r.signature, r.refused) for r in stack.fake.requests] == [
        ("gradcam_overlay", True),
        ("gradcam", False),
        ("gradcam", False),
    ]


@pytest.mark.parametrize("where", ["query", "form"])
def test_gradcam_target_class_by_name(stack: Stack, where: str) -> None:
    if where == "query":
        response = _post(stack, "?target_class=no-covid")
    else:
        response = _post(stack, target_class="no-covid")
    assert response.status_code == 200
    assert response.headers["X-Target-Class"] == "no-covid"
    assert stack.fake.requests[-1].target_classes == [2]


def test_gradcam_known_classes_need_one_model_call(stack: Stack) -> None:
    _post(stack)  # learns the class list
    stack.fake.requests.clear()
    assert _post(stack, "?target_class=normal").headers["X-Target-Class"] == "normal"
    assert [r.target_classes for r in stack.fake.requests] == [[0]]


def test_gradcam_unknown_class_is_400_listing_the_valid_ones(stack: Stack) -> None:
    response = _post(stack, "?target_class=pneumonia")
    assert response.status_code == 400
    assert error_of(response) == "unknown_class"
    assert response.get_json()["valid_classes"] == ["normal", "covid", "no-covid"]
    assert _stored(stack) == ([], [])


def test_gradcam_bad_format_is_400(stack: Stack) -> None:
    assert error_of(_post(stack, "?format=gif")) == "invalid_parameter"


def test_gradcam_record_failure_removes_the_overlay(stack: Stack) -> None:
    failing = FaultyStore(
        stack.root,
        fails=lambda op, key: op == "put" and key.startswith(keys.INFERENCE_AREA),
        error=lambda: StorageUnavailable("SlowDown"),
    )
    install_runtime(
        Runtime(stack.runtime.settings, root_store=failing, auth_store=stack.auth_store)
    )
    response = _post(stack)
    assert response.status_code == 503
    assert error_of(response) == "storage_unavailable"
    assert _stored(stack) == ([], [])  # no orphan overlay


def test_gradcam_model_failure_stores_nothing(stack: Stack) -> None:
    stack.fake.status(503)
    response = _post(stack)
    assert response.status_code == 503
    assert _stored(stack) == ([], [])


def test_gradcam_needs_a_token(stack: Stack) -> None:
    response = stack.client("gradcam").post("/", data=png_bytes(), content_type="image/png")
    assert response.status_code == 401
