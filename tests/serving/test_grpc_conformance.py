"""gRPC conformance of the local model server (reference/tfserving.md §2), with TF's stubs."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.serving.server_process import ServerProcess


@pytest.fixture(scope="module")
def channel(conformance_server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(conformance_server.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def prediction(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def hpt_request(**spec: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = str(spec.pop("name", "half_plus_two"))
    if "version" in spec:
        request.model_spec.version.value = int(spec.pop("version"))  # type: ignore[call-overload]
    if "label" in spec:
        request.model_spec.version_label = str(spec.pop("label"))
    if "signature" in spec:
        request.model_spec.signature_name = str(spec.pop("signature"))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [4.0]], np.float32)))
    return request


def test_grpc_predict_answers_outputs_and_the_version_that_answered(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    response = prediction.Predict(hpt_request(), timeout=30)

    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[2.5], [4.0]]
    assert list(response.outputs["y"].float_val) == [2.5, 4.0]  # typed fields, as TF Serving
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_grpc_predict_by_label_and_tensor_content_input(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = hpt_request(label="stable")
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(6, 1)))
    assert request.inputs["x"].tensor_content  # packed encoding on the way in

    response = prediction.Predict(request, timeout=30)

    assert tf.make_ndarray(response.outputs["y"]).ravel().tolist() == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert response.model_spec.version.value == 123


def test_grpc_predict_output_filter_returns_only_named_outputs(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "multi"
    request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.array([1.5], np.float32)))
    request.inputs["b"].CopyFrom(tf.make_tensor_proto(np.array([2], np.int32)))
    request.output_filter.extend(["sum", "raw_bytes"])

    response = prediction.Predict(request, timeout=30)

    assert sorted(response.outputs) == ["raw_bytes", "sum"]
    assert tf.make_ndarray(response.outputs["raw_bytes"]).tolist() == [b"2\x00\xff"]


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            {"name": "nosuch"},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nosuch)",
        ),
        (
            {"version": 99},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(half_plus_two, 99)",
        ),
        (
            {"label": "nolabel"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: nolabel",
        ),
        (
            {"signature": "foo"},
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "foo" not found.',
        ),
        ({"name": ""}, grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    ],
)
def test_grpc_predict_bad_model_spec_gives_tf_serving_status(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
    change: dict[str, object],
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(hpt_request(**change), timeout=30)

    assert raised.value.code() == code
    assert message in raised.value.details()


def test_grpc_predict_bad_inputs_give_invalid_argument(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    missing = predict_pb2.PredictRequest()
    missing.model_spec.name = "multi"
    missing.inputs["a"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    unknown = hpt_request()
    unknown.inputs["z"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    del unknown.inputs["x"]
    bad_filter = hpt_request()
    bad_filter.output_filter.append("nope")

    for request, message in [
        (missing, "input size does not match signature: 1!=2"),
        (unknown, "input tensor alias not found in signature: z"),
        (bad_filter, "output tensor alias not found in signature: nope"),
    ]:
        with pytest.raises(grpc.RpcError) as raised:
            prediction.Predict(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in raised.value.details()


def test_grpc_get_model_metadata_packs_signature_def_map(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"

    response = prediction.GetModelMetadata(request, timeout=30)

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert signature_map.signature_def["serving_default"].inputs["x"].dtype == 1  # DT_FLOAT
    assert response.model_spec.version.value == 123

    request.ClearField("metadata_field")
    with pytest.raises(grpc.RpcError) as raised:
        prediction.GetModelMetadata(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_get_model_status_lists_versions(
    models: model_service_pb2_grpc.ModelServiceStub,
) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"

    response = models.GetModelStatus(request, timeout=30)

    (status,) = response.model_version_status
    assert status.version == 123
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0

    request.model_spec.name = "nosuch"
    with pytest.raises(grpc.RpcError) as raised:
        models.GetModelStatus(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Could not find any versions of model nosuch" in raised.value.details()


def test_grpc_regress_answers_results(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(80.0)

    response = prediction.Regress(request, timeout=30)

    assert [item.value for item in response.result.regressions] == [42.0]


@pytest.mark.parametrize(
    "call",
    ["Predict", "Classify", "Regress", "GetModelMetadata"],
)
def test_grpc_request_without_model_spec_is_missing_model_spec(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub, call: str
) -> None:
    request = {
        "Predict": predict_pb2.PredictRequest(),
        "Classify": classification_pb2.ClassificationRequest(),
        "Regress": regression_pb2.RegressionRequest(),
        "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataRequest(),
    }[call]

    with pytest.raises(grpc.RpcError) as raised:
        getattr(prediction, call)(request, timeout=30)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "Missing ModelSpec"


def test_grpc_get_model_status_without_spec_or_name(
    models: model_service_pb2_grpc.ModelServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=30)
    unnamed = get_model_status_pb2.GetModelStatusRequest()
    unnamed.model_spec.signature_name = "serving_default"  # a ModelSpec, with no name
    with pytest.raises(grpc.RpcError) as nameless:
        models.GetModelStatus(unnamed, timeout=30)

    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert missing.value.details() == "Missing ModelSpec"
    assert nameless.value.code() == grpc.StatusCode.NOT_FOUND
    assert nameless.value.details() == "Could not find any versions of model "


def test_grpc_get_model_status_ignores_the_label(
    models: model_service_pb2_grpc.ModelServiceStub,
) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.version_label = "no-such-label"

    response = models.GetModelStatus(request, timeout=30)

    assert [status.version for status in response.model_version_status] == [123]
