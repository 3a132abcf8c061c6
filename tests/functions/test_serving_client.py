"""The REST client against a fake TF Serving: the contract's requests, answers and failures."""

from __future__ import annotations

import json

import pytest

from functions.errors import ApiError
from functions.serving_client import ServingClient
from functions.settings import ServingSettings
from tests.conftest import free_port
from tests.functions.fake_serving import CLASS_NAMES, FakeTFServing, overlay_png
from tests.functions.sample_images import png_bytes


def _client(url: str, **changes: object) -> ServingClient:
    settings = ServingSettings(
        url=url, connect_timeout=0.5, read_timeout=1.0, deadline=3.0, max_attempts=3
    )
    settings = ServingSettings(**{**settings.__dict__, **changes})  # type: ignore[arg-type]
    return ServingClient(settings, sleep=lambda _: None)


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
    assert predictions[0].model.as_dict() == {
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


def test_client_gradcam_reads_overlay_heatmap_and_target(fake_serving: FakeTFServing) -> None:
    client = _client(fake_serving.url)
    predicted = client.gradcam(png_bytes(), None)
    chosen = client.gradcam(png_bytes(), 2)
    assert [r.target_classes for r in fake_serving.requests] == [[-1], [2]]
    assert fake_serving.requests[0].signature == "gradcam"
    assert predicted.target_class == "covid"
    assert chosen.target_class == "no-covid"
    assert chosen.overlay_png == overlay_png(8)
    assert chosen.heatmap.shape == (8, 8)
    assert 0.0 <= float(chosen.heatmap.min()) <= float(chosen.heatmap.max()) <= 1.0


def test_client_retries_dropped_connections_then_succeeds(fake_serving: FakeTFServing) -> None:
    fake_serving.drop(times=2)
    (prediction,) = _client(fake_serving.url).predict([png_bytes()])
    assert prediction.class_name == "covid"
    assert fake_serving.attempts == 3


def test_client_retries_503_then_succeeds(fake_serving: FakeTFServing) -> None:
    fake_serving.status(503, times=1)
    _client(fake_serving.url).predict([png_bytes()])
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
