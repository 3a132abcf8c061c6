"""The predict function: validated uploads in, the model's answer out, recorded before answering."""

from __future__ import annotations

import hashlib
import io

import pytest

from functions.runtime import Runtime, install_runtime
from storage import StorageUnavailable, keys
from tests.conftest import free_port
from tests.functions.conftest import Stack, error_of
from tests.functions.sample_images import (
    bomb_png,
    gif_bytes,
    jpeg_bytes,
    png_bytes,
    png_with_stream,
)
from tests.functions.stores import FaultyStore


def _post_raw(stack: Stack, data: bytes, content_type: str | None = "image/png", user: str = "1"):  # type: ignore[no-untyped-def]
    headers = stack.bearer(user)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return stack.client("predict").post("/", data=data, headers=headers)


def _records(stack: Stack, user: str = "1") -> list[str]:
    return stack.root.list_keys(keys.inference_user_prefix(user))


def test_predict_raw_png_answers_and_stores_the_same_record(any_stack: Stack) -> None:
    image = png_bytes()
    response = _post_raw(any_stack, image)
    assert response.status_code == 200
    body = response.get_json()
    assert body["predicted_class"] == "covid"
    assert body["probabilities"] == pytest.approx({"normal": 0.05, "covid": 0.9, "no-covid": 0.05})
    assert body["model"] == {"name": "cnn_vit", "version": 3, "run_id": "20261127T101500Z-ab12cd"}
    assert body["input"]["sha256"] == hashlib.sha256(image).hexdigest()
    assert (body["input"]["size_bytes"], body["input"]["pixels"]) == (len(image), 64 * 48)
    assert body["user_id"] == "1"
    stored = any_stack.root.get_json(keys.inference_record("1", body["id"]))
    assert stored == body
    assert any_stack.fake.requests[0].images == [image]  # unchanged bytes reach the model


def test_predict_multipart_file_field_is_accepted(stack: Stack) -> None:
    image = jpeg_bytes()
    response = stack.client("predict").post(
        "/",
        data={"file": (io.BytesIO(image), "../../etc/passwd.jpg", "image/jpeg")},
        headers=stack.bearer(),
    )
    assert response.status_code == 200
    assert response.get_json()["input"]["format"] == "JPEG"
    assert stack.fake.requests[0].images == [image]
    assert all("passwd" not in key for key in stack.root.list_keys(""))


def test_predict_cmyk_jpeg_reaches_the_model_as_png(stack: Stack) -> None:
    response = _post_raw(stack, jpeg_bytes(mode="CMYK"), "image/jpeg")
    assert response.status_code == 200
    assert response.get_json()["input"]["transformation"] == "cmyk_to_rgb"
    assert stack.fake.requests[0].images[0].startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"", "image/png", 400, "empty_image"),
        (b"", None, 400, "empty_image"),
        (png_bytes(), None, 415, "unsupported_media_type"),
        (png_bytes(), "text/plain", 415, "unsupported_media_type"),
        (png_bytes(), "application/json", 415, "unsupported_media_type"),
        (png_bytes(), "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (gif_bytes(), "image/gif", 415, "unsupported_media_type"),
        (png_bytes(), "image/jpeg", 415, "content_type_mismatch"),
        (png_bytes()[:300], "image/png", 422, "invalid_image"),
        # valid chunk CRCs, the compressed image stream cut short: refused here, not by the model
        (
            png_with_stream(png_bytes(256, 256), lambda stream: stream[: len(stream) // 2]),
            "image/png",
            422,
            "invalid_image",
        ),
        (bomb_png(20_000, 20_000), "image/png", 422, "too_many_pixels"),
    ],
)
def test_predict_bad_uploads_are_refused_and_nothing_is_stored(
    stack: Stack, data: bytes, content_type: str | None, status: int, code: str
) -> None:
    response = _post_raw(stack, data, content_type)
    assert response.status_code == status
    assert error_of(response) == code
    assert stack.fake.requests == []
    assert _records(stack) == []


def test_predict_multipart_without_file_field_is_400(stack: Stack) -> None:
    response = stack.client("predict").post(
        "/", data={"image": (io.BytesIO(png_bytes()), "x.png")}, headers=stack.bearer()
    )
    assert response.status_code == 400
    assert error_of(response) == "missing_file"


def test_predict_two_files_are_400(stack: Stack) -> None:
    files = [(io.BytesIO(png_bytes()), "a.png"), (io.BytesIO(png_bytes()), "b.png")]
    response = stack.client("predict").post("/", data={"file": files}, headers=stack.bearer())
    assert error_of(response) == "too_many_files"


def test_predict_body_over_the_cap_is_413_before_authentication(stack: Stack) -> None:
    body = b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * 1024 * 1024 + 100 * 1024)
    response = stack.client("predict").post("/", data=body, content_type="image/png")
    assert response.status_code == 413
    assert error_of(response) == "payload_too_large"
    assert response.headers["Connection"] == "close"


def test_predict_image_over_the_configured_size_is_413(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(MAX_UPLOAD_BYTES="2048")
    response = _post_raw(stack, png_bytes(128, 128, "RGB"))
    assert response.status_code == 413


def test_predict_pixel_cap_from_settings_is_enforced(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(MAX_PIXELS="1000")
    assert error_of(_post_raw(stack, png_bytes(64, 48))) == "too_many_pixels"


def test_predict_without_token_is_401_and_calls_nothing(stack: Stack) -> None:
    response = stack.client("predict").post("/", data=png_bytes(), content_type="image/png")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="xray"'
    assert stack.fake.requests == []


def test_predict_wrong_method_and_path_are_json(stack: Stack) -> None:
    client = stack.client("predict")
    response = client.get("/", headers=stack.bearer())
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")
    assert error_of(response) == "method_not_allowed"
    assert error_of(client.post("/other", headers=stack.bearer())) == "not_found"


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        (lambda fake: fake.status(503), 503, "model_unavailable"),
        (lambda fake: fake.unassigned_labels.add("stable"), 503, "model_unavailable"),
        (lambda fake: fake.hang(10), 504, "model_timeout"),
        (lambda fake: fake.garbage(), 502, "model_bad_response"),
        (lambda fake: fake.wrong_shape(), 502, "model_bad_response"),
        (lambda fake: fake.status(500), 502, "model_error"),
    ],
)
def test_predict_model_failures_map_to_gateway_errors_and_store_nothing(
    stack: Stack,
    behaviour,
    status: int,
    code: str,  # type: ignore[no-untyped-def]
) -> None:
    behaviour(stack.fake)
    response = _post_raw(stack, png_bytes())
    assert response.status_code == status
    assert error_of(response) == code
    assert stack.fake.url not in response.get_data(as_text=True)
    assert _records(stack) == []


def test_predict_model_server_down_is_503_with_retry_after(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(TF_SERVING_URL=f"http://127.0.0.1:{free_port()}")
    response = _post_raw(stack, png_bytes())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert error_of(response) == "model_unavailable"
    assert _records(stack) == []


def test_predict_record_that_cannot_be_stored_is_503_not_an_answer(stack: Stack) -> None:
    failing = FaultyStore(
        stack.root,
        fails=lambda op, key: op == "put" and key.startswith(keys.INFERENCE_AREA),
        error=lambda: StorageUnavailable("put output/inference/...: SlowDown"),
    )
    install_runtime(
        Runtime(stack.runtime.settings, root_store=failing, auth_store=stack.auth_store)
    )
    response = _post_raw(stack, png_bytes())
    assert response.status_code == 503
    assert error_of(response) == "storage_unavailable"
    assert "predicted_class" not in response.get_json()
    assert "output/" not in response.get_data(as_text=True)
    assert _records(stack) == []


def test_predict_pinned_version_and_label_reach_the_model_server(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(MODEL_VERSION="3", PROD_MODEL_NAME="cnn_vit")
    assert _post_raw(stack, png_bytes()).status_code == 200
    assert stack.fake.requests[0].path == "/v1/models/cnn_vit/versions/3:predict"
