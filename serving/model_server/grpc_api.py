"""TF Serving's gRPC API (reference/tfserving.md §2) on grpcio with tensorflow-serving-api's stubs.

PredictionService (Predict, GetModelMetadata, Classify, Regress; MultiInference is
UNIMPLEMENTED) and ModelService (GetModelStatus, HandleReloadConfigRequest), with the same
status codes as the real server. Messages up to 2 GB, as TF Serving allows.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.model_server.errors import Code, ServingError
from serving.model_server.manager import ModelManager
from serving.model_server.metrics import Metrics
from serving.model_server.servable import (
    DEFAULT_SIGNATURE,
    LoadedVersion,
    classify,
    examples_from_input,
    predict_request_inputs,
    regress,
)
from serving.model_server.tensors import ndarray_to_tensor_proto

__all__ = ["GrpcServer"]

logger = logging.getLogger("serving.model_server")

_MAX_MESSAGE = 2**31 - 1
_MAX_ERROR_CHARS = 1024

ReloadConfig = Callable[[model_server_config_pb2.ModelServerConfig], None]


def _details(error: ServingError) -> str:
    """ToGRPCStatus: the message, cut to 1024 characters."""
    message = error.message
    if len(message) > _MAX_ERROR_CHARS:
        message = message[:_MAX_ERROR_CHARS] + "...TRUNCATED"
    return message


def _abort(context: grpc.ServicerContext, error: ServingError) -> NoReturn:
    context.abort(grpc.StatusCode[error.code.name], _details(error))
    raise AssertionError("unreachable")  # context.abort raises


def _handle(
    manager: ModelManager, request: Any
) -> contextlib.AbstractContextManager[LoadedVersion]:
    """The request's version, held while the request runs (ServerCore::GetServableHandle)."""
    if not request.HasField("model_spec"):
        raise ServingError.invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    if not spec.name:
        raise ServingError.invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        return manager.handle(spec.name, label=spec.version_label)
    if choice == "version":
        return manager.handle(spec.name, version=spec.version.value)
    return manager.handle(spec.name)


def _answer_spec(target: model_pb2.ModelSpec, loaded: LoadedVersion, signature: str) -> None:
    target.name = loaded.name
    target.version.value = loaded.version
    target.signature_name = signature


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, metrics: Metrics) -> None:
        self._manager = manager
        self._metrics = metrics

    def _call(
        self, api: str, name: str, context: grpc.ServicerContext, work: Callable[[], Any]
    ) -> Any:
        started = time.monotonic()
        code = Code.OK
        try:
            return work()
        except ServingError as error:
            code = error.code
            _abort(context, error)
        except Exception:
            logger.exception("gRPC %s failed", api)
            code = Code.INTERNAL
            _abort(context, ServingError.internal("Internal error"))
        finally:
            self._metrics.record_request(
                name, api, "GRPC", code.name, (time.monotonic() - started) * 1e6
            )

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        def work() -> predict_pb2.PredictResponse:
            with _handle(self._manager, request) as loaded:
                key, signature, inputs = predict_request_inputs(loaded, request)
                wanted = list(request.output_filter)
                for alias in wanted:
                    if alias not in signature.output_types:
                        raise ServingError.invalid_argument(
                            f"output tensor alias not found in signature: {alias} Outputs "
                            f"expected to be in the set "
                            f"{{{','.join(sorted(signature.output_types))}}}."
                        )
                if len(set(wanted)) != len(wanted):
                    duplicate = next(alias for alias in wanted if wanted.count(alias) > 1)
                    raise ServingError.invalid_argument(
                        f"duplicate output tensor alias: {duplicate}"
                    )
                deadline = context.time_remaining()
                outputs = loaded.run(key, inputs, deadline)
                response = predict_pb2.PredictResponse()
                for alias, array in outputs.items():
                    if not wanted or alias in wanted:
                        response.outputs[alias].CopyFrom(ndarray_to_tensor_proto(array))
                _answer_spec(response.model_spec, loaded, key)
            return response

        return self._call("predict", request.model_spec.name, context, work)

    def GetModelMetadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.HasField("model_spec"):
                raise ServingError.invalid_argument("Missing ModelSpec")
            if not request.metadata_field:
                raise ServingError.invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != "signature_def":
                    raise ServingError.invalid_argument(f"Metadata field {field} is not supported")
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            with _handle(self._manager, request) as loaded:
                response.model_spec.name = loaded.name
                response.model_spec.version.value = loaded.version
                response.metadata["signature_def"].Pack(loaded.signature_def_map)
            return response

        return self._call("GetModelMetadata", request.model_spec.name, context, work)

    def Classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        def work() -> classification_pb2.ClassificationResponse:
            with _handle(self._manager, request) as loaded:
                key = request.model_spec.signature_name or DEFAULT_SIGNATURE
                results = classify(loaded, key, examples_from_input(request.input))
                response = classification_pb2.ClassificationResponse()
                for pairs in results:
                    classifications = response.result.classifications.add()
                    for label, score in pairs:
                        classifications.classes.add(label=label, score=score)
                _answer_spec(response.model_spec, loaded, key)
            return response

        return self._call("classify", request.model_spec.name, context, work)

    def Regress(
        self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        def work() -> regression_pb2.RegressionResponse:
            with _handle(self._manager, request) as loaded:
                key = request.model_spec.signature_name or DEFAULT_SIGNATURE
                values = regress(loaded, key, examples_from_input(request.input))
                response = regression_pb2.RegressionResponse()
                for value in values:
                    response.result.regressions.add(value=value)
                _answer_spec(response.model_spec, loaded, key)
            return response

        return self._call("regress", request.model_spec.name, context, work)

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        _abort(context, ServingError.unimplemented("MultiInference is not supported"))


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager, reload_config: ReloadConfig | None) -> None:
        self._manager = manager
        self._reload_config = reload_config

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        try:
            # GetModelStatusImpl: no ModelSpec is an error; an empty name is just a model that
            # has no versions (the label, if any, is ignored).
            if not request.HasField("model_spec"):
                raise ServingError.invalid_argument("Missing ModelSpec")
            version = spec.version.value if spec.HasField("version") else None
            statuses = self._manager.statuses(spec.name, version)
        except ServingError as error:
            _abort(context, error)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            if status.error is not None:
                entry.status.error_code = int(status.error.code)
                entry.status.error_message = status.error.message
        return response

    def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        response = model_management_pb2.ReloadConfigResponse()
        try:
            if self._reload_config is None:
                raise ServingError.unimplemented("Config reload is not enabled")
            if request.config.WhichOneof("config") != "model_config_list":
                raise ServingError.invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            self._reload_config(request.config)
        except ServingError as error:
            response.status.error_code = int(error.code)
            response.status.error_message = error.message
            context.set_code(grpc.StatusCode[error.code.name])
            context.set_details(_details(error))
        return response


class GrpcServer:
    """Both services on `host:port`."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        host: str,
        port: int,
        *,
        max_threads: int = 32,
        reload_config: ReloadConfig | None = None,
    ) -> None:
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(manager, metrics), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            _ModelService(manager, reload_config), self._server
        )
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float = 2.0) -> None:
        self._server.stop(grace).wait()
