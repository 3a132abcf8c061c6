"""The REST client against a fake TF Serving: the contract's requests, answers and failures."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from functions.errors import ApiError
from functions.serving_client import ServingClient, _OverlaySupport
from functions.settings import ServingSettings
from tests.conftest import free_port
from tests.functions.fake_serving import (
    CLASS_NAMES,
    HEATMAP_SIZE,
    OVERLAY_SIZE,
    FakeTFServing,
    overlay_png,
)
from tests.functions.sample_images import png_bytes


def _client(url: str, **changes: object) -> ServingClient:
    settings = ServingSettings(
        url=url, connect_timeout=0.5, read_timeout=1.0, deadline=3.0, max_attempts=3
    )
    settings = ServingSettings(**{**settings.__dict__, **changes})  # type: ignore[arg-type]
    return ServingClient(settings, sleep=lambda _: None)


def _non_square_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _failure(call) -> tuple[int, str, dict[str, str]]:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as caught:
        call()
    error = caught.value
    return error.status, error.code, error.headers


def test_client_predict_sends_the_contract_request_and_reads_the_answer(
    fake_serving: FakeTFServing,
) -> None:
    images = [png_bytes(), png_bytes(32, 32)]
    predictions = _client(fake_serving.url).predict(images)
    (received,) = fake_serving.requests
    assert received.path == "/v1/models/cnn_vit/labels/stable:predict"
    assert received.signature == "serving_default"
    assert received.images == images
    assert [p.class_name for p in predictions] == ["covid", "covid"]
    assert predictions[0].class_names == tuple(CLASS_NAMES)
    assert predictions[0].probabilities_by_class()["covid"] == pytest.approx(0.9)
    assert predictions[0].model.to_json() == {
        "name": "cnn_vit",
        "version": 3,
        "run_id": "20261127T101500Z-ab12cd",
    }


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"model_label": None}, "/v1/models/cnn_vit:predict"),
        ({"model_label": None, "model_version": 7}, "/v1/models/cnn_vit/versions/7:predict"),
        (
            {"model_label": "canary", "model_name": "other"},
            "/v1/models/other/labels/canary:predict",
        ),
    ],
)
def test_client_model_label_or_version_selects_the_path(
    fake_serving: FakeTFServing, changes: dict[str, object], path: str
) -> None:
    _client(fake_serving.url, **changes).predict([png_bytes()])
    assert fake_serving.requests[0].path == path


def test_client_gradcam_asks_for_the_overlay_signature_without_heatmap(
    fake_serving: FakeTFServing,
) -> None:
    client = _client(fake_serving.url)
    predicted = client.gradcam(png_bytes(), None)
    chosen = client.gradcam(png_bytes(), 2)
    assert [r.signature for r in fake_serving.requests] == ["gradcam_overlay"] * 2
    assert [r.target_classes for r in fake_serving.requests] == [[-1], [2]]
    assert predicted.target_class == "covid"
    assert chosen.target_class == "no-covid"
    assert chosen.overlay_png == overlay_png()
    assert chosen.overlay_size == OVERLAY_SIZE
    assert chosen.heatmap is None


def test_client_gradcam_with_heatmap_asks_for_gradcam_and_reads_the_heatmap(
    fake_serving: FakeTFServing,
) -> None:
    result = _client(fake_serving.url).gradcam(png_bytes(), 2, with_heatmap=True)
    assert [r.signature for r in fake_serving.requests] == ["gradcam"]
    assert result.target_class == "no-covid"
    assert result.overlay_size == OVERLAY_SIZE
    assert result.heatmap is not None
    assert result.heatmap.shape == (HEATMAP_SIZE, HEATMAP_SIZE)
    assert 0.0 <= float(result.heatmap.min()) <= float(result.heatmap.max()) <= 1.0


def _signatures(fake: FakeTFServing) -> list[str]:
    """What the fake was asked for, refused calls marked."""
    return [r.signature + (" (refused)" if r.refused else "") for r in fake.requests]


def test_client_gradcam_on_a_version_without_the_overlay_signature_falls_back_to_gradcam(
    fake_serving: FakeTFServing,
) -> None:
    fake_serving.versions_without_overlay = {3}
    result = _client(fake_serving.url).gradcam(png_bytes(), 2)
    assert _signatures(fake_serving) == ["gradcam_overlay (refused)", "gradcam"]
    assert result.target_class == "no-covid"
    assert result.overlay_png == overlay_png()
    assert result.heatmap is None  # not asked for: the same answer as from gradcam_overlay


def test_client_gradcam_fallback_is_remembered_per_version(fake_serving: FakeTFServing) -> None:
    fake_serving.versions_without_overlay = {3}
    client = _client(fake_serving.url)
    for _ in range(3):
        client.gradcam(png_bytes())
    assert _signatures(fake_serving) == [
        "gradcam_overlay (refused)",
        "gradcam",
        "gradcam",
        "gradcam",
    ]
    assert client.overlay_lacking_versions() == [3]

    # Version 4 (exported with the signature) replaces it: one more gradcam call learns the
    # new version from its answer, then the overlay signature is used again.
    fake_serving.requests.clear()
    fake_serving.version = 4
    client.gradcam(png_bytes())
    client.gradcam(png_bytes())
    assert _signatures(fake_serving) == ["gradcam", "gradcam_overlay"]

    # A rollback to version 3: predictions name it, so Grad-CAM goes straight to gradcam.
    fake_serving.requests.clear()
    fake_serving.version = 3
    client.predict([png_bytes()])
    client.gradcam(png_bytes())
    assert _signatures(fake_serving) == ["serving_default", "gradcam"]


def test_client_gradcam_fallback_memory_expires_and_asks_again(
    fake_serving: FakeTFServing,
) -> None:
    # A version wrongly remembered (a swap between the refusal and the fallback) is not
    # stuck on the slower signature forever.
    now = [1000.0]
    settings = ServingSettings(url=fake_serving.url, read_timeout=1.0, deadline=3.0)
    client = ServingClient(settings, clock=lambda: now[0], sleep=lambda _: None)
    fake_serving.versions_without_overlay = {3}
    client.gradcam(png_bytes())
    now[0] += 599.0
    client.gradcam(png_bytes())
    now[0] += 2.0
    client.gradcam(png_bytes())
    assert _signatures(fake_serving) == [
        "gradcam_overlay (refused)",
        "gradcam",
        "gradcam",
        "gradcam_overlay (refused)",
        "gradcam",
    ]


def test_client_gradcam_fallback_from_many_threads_remembers_the_version_once(
    fake_serving: FakeTFServing,
) -> None:
    fake_serving.versions_without_overlay = {3}
    client = _client(fake_serving.url)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: client.gradcam(png_bytes()), range(32)))
    assert all(result.overlay_png == overlay_png() for result in results)
    assert client.overlay_lacking_versions() == [3]
    answered = [r for r in fake_serving.requests if not r.refused]
    assert len(answered) == 32
    refused = len(fake_serving.requests) - len(answered)
    assert 1 <= refused <= 8  # only calls already in flight before the first fallback


def test_overlay_support_memory_is_bounded_oldest_first() -> None:
    support = _OverlaySupport(lambda: 0.0, max_versions=3)
    for version in range(1, 6):
        support.remember_lacking(version)
    assert support.lacking_versions() == [3, 4, 5]
    support.note_answer(2)
    assert support.overlay_expected()  # forgotten: asked again
    support.note_answer(5)
    assert not support.overlay_expected()


def test_client_gradcam_other_400_on_the_overlay_signature_is_502_without_fallback(
    fake_serving: FakeTFServing,
) -> None:
    fake_serving.status(400, json.dumps({"error": "INVALID_ARGUMENT: target_class"}).encode())
    status, code, _ = _failure(lambda: _client(fake_serving.url).gradcam(png_bytes()))
    assert (status, code) == (502, "model_error")
    assert fake_serving.attempts == 1


@pytest.mark.parametrize(
    "overlay",
    [b"not a png", overlay_png()[:20], _non_square_png()],
    ids=["not-png", "truncated", "not-square"],
)
def test_client_gradcam_overlay_off_contract_is_502(
    fake_serving: FakeTFServing, overlay: bytes
) -> None:
    row = {
        "probabilities": [0.1, 0.8, 0.1],
        "class_index": 1,
        "class_name": "covid",
        "class_names": CLASS_NAMES,
        "model_name": "cnn_vit",
        "model_version": 3,
        "model_run_id": "r",
        "target_class_index": 1,
        "overlay_png_bytes": {"b64": base64.b64encode(overlay).decode()},
    }
    fake_serving.raw(json.dumps({"predictions": [row]}).encode())
    assert _failure(lambda: _client(fake_serving.url).gradcam(png_bytes()))[:2] == (
        502,
        "model_bad_response",
    )


def test_client_retries_dropped_connections_then_succeeds(fake_serving: FakeTFServing) -> None:
    fake_serving.drop(times=2)
    (prediction,) = _client(fake_serving.url).predict([png_bytes()])
    assert prediction.class_name == "covid"
    assert fake_serving.attempts == 3


def test_client_retries_503_then_succeeds(fake_serving: FakeTFServing) -> None:
    fake_serving.status(503, times=1)
    _client(fake_serving.url).predict([png_bytes()])
    assert fake_serving.attempts == 2


@pytest.mark.parametrize("call", ["predict", "gradcam"])
def test_client_label_not_assigned_yet_is_503_with_retry_after_after_bounded_attempts(
    fake_serving: FakeTFServing, call: str
) -> None:
    fake_serving.unassigned_labels = {"stable"}
    client = _client(fake_serving.url)
    status, code, headers = _failure(
        lambda: client.predict([png_bytes()]) if call == "predict" else client.gradcam(png_bytes())
    )
    assert (status, code) == (503, "model_unavailable")
    assert headers["Retry-After"] == "5"
    assert fake_serving.attempts == 3  # retried like any other 503


def test_client_label_assigned_while_retrying_succeeds(fake_serving: FakeTFServing) -> None:
    fake_serving.unassigned_labels = {"stable"}

    def assign_label(_: float) -> None:  # the model sync assigns it during the backoff
        fake_serving.unassigned_labels = set()

    client = ServingClient(
        ServingSettings(url=fake_serving.url, deadline=3.0, max_attempts=3), sleep=assign_label
    )
    (prediction,) = client.predict([png_bytes()])
    assert prediction.model.version == 3
    assert fake_serving.attempts == 2


def test_client_server_down_is_503_with_retry_after() -> None:
    status, code, headers = _failure(
        lambda: _client(f"http://127.0.0.1:{free_port()}").predict([png_bytes()])
    )
    assert (status, code) == (503, "model_unavailable")
    assert headers["Retry-After"] == "5"


def test_client_persistent_503_is_503_after_bounded_attempts(fake_serving: FakeTFServing) -> None:
    fake_serving.status(503)
    assert _failure(lambda: _client(fake_serving.url).predict([png_bytes()]))[:2] == (
        503,
        "model_unavailable",
    )
    assert fake_serving.attempts == 3


def test_client_hanging_server_is_504_without_retry(fake_serving: FakeTFServing) -> None:
    fake_serving.hang(5)
    client = _client(fake_serving.url, read_timeout=0.3)
    assert _failure(lambda: client.predict([png_bytes()]))[:2] == (504, "model_timeout")
    assert fake_serving.attempts == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, (502, "model_error")),
        (400, (502, "model_error")),
        (501, (502, "model_error")),
        (404, (503, "model_unavailable")),
        (429, (503, "model_unavailable")),
        (504, (504, "model_timeout")),
    ],
)
def test_client_upstream_error_statuses_map_to_gateway_answers(
    fake_serving: FakeTFServing, status: int, expected: tuple[int, str]
) -> None:
    fake_serving.status(status, json.dumps({"error": "secret upstream detail"}).encode())
    error_status, code, _ = _failure(lambda: _client(fake_serving.url).predict([png_bytes()]))
    assert (error_status, code) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # TensorFlow's own messages when the in-graph decoder cannot read the bytes: the image's
        # fault (422), whatever TF Serving wraps around them.
        ("Invalid PNG data, size 2142\n\t [[{{node DecodeImage}}]]", (422, "invalid_image")),
        ("Invalid PNG. Failed to initialize decoder.", (422, "invalid_image")),
        ("jpeg::Uncompress failed. Invalid JPEG data or crop window.", (422, "invalid_image")),
        (
            "Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required.",
            (422, "invalid_image"),
        ),
        # Anything else the model refuses stays the model's error.
        ("Invalid argument: invalid PNG", (502, "model_error")),
        ("Invalid PNG data", (502, "model_error")),
        ("Expected image (JPEG, PNG, or GIF), got unknown format", (502, "model_error")),
    ],
)
def test_client_model_decode_refusal_is_the_images_fault_matched_exactly(
    fake_serving: FakeTFServing, message: str, expected: tuple[int, str]
) -> None:
    fake_serving.status(400, json.dumps({"error": message}).encode())
    error_status, code, _ = _failure(lambda: _client(fake_serving.url).predict([png_bytes()]))
    assert (error_status, code) == expected


@pytest.mark.parametrize("behaviour", ["garbage", "wrong_shape", "non_finite"])
def test_client_malformed_answers_are_502(fake_serving: FakeTFServing, behaviour: str) -> None:
    getattr(fake_serving, behaviour)()
    with pytest.raises(ApiError) as caught:
        _client(fake_serving.url).predict([png_bytes()])
    assert (caught.value.status, caught.value.code) == (502, "model_bad_response")
    assert "127.0.0.1" not in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        b'{"predictions": []}',
        b'{"outputs": {}}',
        b'{"predictions": [{"probabilities": [0.5, 0.5, 0.5], "class_index": 0,'
        b' "class_names": ["a", "b", "c"], "model_name": "m", "model_version": 1,'
        b' "model_run_id": "r"}]}',
        b'{"predictions": [{"probabilities": [0.2, 0.8], "class_index": 5,'
        b' "class_names": ["a", "b"], "model_name": "m", "model_version": 1,'
        b' "model_run_id": "r"}]}',
        b'{"predictions": [{"probabilities": [0.2, 0.8], "class_index": 1,'
        b' "class_names": ["a", "a"], "model_name": "m", "model_version": 1,'
        b' "model_run_id": "r"}]}',
    ],
)
def test_client_answers_off_contract_are_502(fake_serving: FakeTFServing, body: bytes) -> None:
    fake_serving.raw(body)
    assert _failure(lambda: _client(fake_serving.url).predict([png_bytes()]))[:2] == (
        502,
        "model_bad_response",
    )
