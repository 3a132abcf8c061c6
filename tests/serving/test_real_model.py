"""The local model server with the real exported CNN-ViT (an untrained `small` model).

Exported by model_export.export with the signatures of docs/CONTRACTS.md and its warmup records,
served from a base path, called exactly as the functions call TF Serving: REST with
`{"b64": ...}` image bytes on both signatures, plus gRPC and metadata.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.serving.server_process import ServerProcess

MODEL = "cnn_vit"


def png_bytes(size: int = 80, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base path holding version 1 of an untrained `small` model, as the export writes it
    (Grad-CAM's tail compiled with XLA, warmup records for every signature)."""
    from cnn_vit.config import get_preset
    from cnn_vit.model import build_model
    from model_export.export import export_saved_model

    config = get_preset("small")
    folder = tmp_path_factory.mktemp("real")
    result = export_saved_model(
        build_model(config), config, folder / MODEL / "1", model_name=MODEL, run_id="test-run"
    )
    assert result.gradcam_xla
    assert (folder / MODEL / "1" / "assets.extra" / "tf_serving_warmup_requests").is_file()
    return folder / MODEL


@pytest.fixture(scope="module")
def real_model_server(exported: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        [f"--model_name={MODEL}", f"--model_base_path={exported}"],
        exported.parent / "server.log",
    )
    try:
        server.wait_ready(timeout=180)
        yield server
    finally:
        server.stop()


def test_real_model_needs_the_xla_flag_as_tf_serving_does(exported: Path, tmp_path: Path) -> None:
    # Without --xla_cpu_compilation_enabled TF Serving fails any function compiled with XLA
    # ("XLA compilation disabled"); the export's warmup calls the Grad-CAM signatures, so the
    # version fails to load and a server started on it alone stops.
    server = ServerProcess(
        [
            f"--model_name={MODEL}",
            f"--model_base_path={exported}",
            "--max_num_load_retries=0",
        ],
        tmp_path / "server.log",
        xla=False,
    )
    try:
        assert server.wait_exit(timeout=180) != 0
    finally:
        server.stop()
    log = server.log()
    assert "XLA compilation disabled" in log, log[-3000:]


def test_real_model_predict_row_format_with_b64_image(real_model_server: ServerProcess) -> None:
    image = base64.b64encode(png_bytes()).decode()

    response = requests.post(
        f"{real_model_server.url}/v1/models/{MODEL}:predict",
        json={"instances": [{"b64": image}]},
        timeout=60,
    )

    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    assert sorted(row) == [
        "class_index",
        "class_name",
        "class_names",
        "model_name",
        "model_run_id",
        "model_version",
        "ood_reason",
        "ood_score",
        "probabilities",
        "refer_threshold",
    ]
    assert (row["ood_reason"], row["ood_score"]) == ("", 0.0)  # exported without the check
    assert row["refer_threshold"] == 0.0  # exported without one: never refer
    assert len(row["probabilities"]) == 3
    assert abs(sum(row["probabilities"]) - 1.0) < 1e-4
    assert row["class_names"] == ["normal", "covid", "no-covid"]
    assert row["class_name"] == row["class_names"][row["class_index"]]
    assert row["model_name"] == MODEL
    assert row["model_run_id"] == "test-run"
    assert isinstance(row["model_version"], int)


def test_real_model_gradcam_signature_returns_heatmap_and_png_overlay(
    real_model_server: ServerProcess,
) -> None:
    image = base64.b64encode(png_bytes(seed=1)).decode()

    response = requests.post(
        f"{real_model_server.url}/v1/models/{MODEL}:predict",
        json={
            "signature_name": "gradcam",
            "instances": [{"image_bytes": {"b64": image}, "target_class": -1}],
        },
        timeout=60,
    )

    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    heatmap = np.array(row["heatmap"])
    assert heatmap.shape == (64, 64)
    assert heatmap.min() >= 0.0
    assert heatmap.max() <= 1.0
    overlay = base64.b64decode(row["overlay_png_bytes"]["b64"])
    assert overlay.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(overlay)).size == (256, 256)
    assert row["target_class_index"] == row["class_index"]


def test_real_model_batch_of_images_columnar_and_metadata(real_model_server: ServerProcess) -> None:
    images = [{"b64": base64.b64encode(png_bytes(seed=seed)).decode()} for seed in range(3)]

    columnar = requests.post(
        f"{real_model_server.url}/v1/models/{MODEL}:predict",
        json={"inputs": {"image_bytes": images}},
        timeout=60,
    )
    metadata = requests.get(f"{real_model_server.url}/v1/models/{MODEL}/metadata", timeout=30)

    assert columnar.status_code == 200, columnar.text
    assert np.array(columnar.json()["outputs"]["probabilities"]).shape == (3, 3)
    signatures = metadata.json()["metadata"]["signature_def"]["signature_def"]
    assert signatures["serving_default"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert set(signatures["gradcam"]["inputs"]) == {"image_bytes", "target_class"}


def test_real_model_grpc_predict_answers_the_same_as_rest(
    real_model_server: ServerProcess,
) -> None:
    image = png_bytes(seed=2)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image]))
    rest = requests.post(
        f"{real_model_server.url}/v1/models/{MODEL}:predict",
        json={"instances": [{"b64": base64.b64encode(image).decode()}]},
        timeout=60,
    ).json()["predictions"][0]

    with grpc.insecure_channel(real_model_server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=60
        )

    probabilities = tf.make_ndarray(response.outputs["probabilities"])[0]
    np.testing.assert_allclose(probabilities, rest["probabilities"], atol=1e-6)
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
