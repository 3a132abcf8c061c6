"""TF Serving's REST API (reference/tfserving.md §1) on a threaded HTTP/1.1 server.

`RestApi.handle(method, path, body)` is the whole protocol (routing, status, metadata, predict,
classify, regress, errors), independent of the socket layer; `RestServer` serves it with one
thread per keep-alive connection, at most `--rest_api_num_threads` requests computing at once.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2

from serving.model_server.errors import Code, ServingError
from serving.model_server.json_codec import (
    columnar_response,
    decode_base64,
    format_float_values,
    inputs_to_tensors,
    instances_to_tensors,
    json_type_name,
    json_value_text,
    parse_request_json,
    row_response,
)
from serving.model_server.manager import ModelManager
from serving.model_server.metrics import Metrics
from serving.model_server.servable import (
    DEFAULT_SIGNATURE,
    LoadedVersion,
    classify,
    regress,
    serialize_examples,
)

__all__ = ["Response", "RestApi", "RestServer"]

logger = logging.getLogger("serving.model_server")

_INT64_MAX = 2**63 - 1
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata)?",
    re.IGNORECASE,
)
_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_JSON = "application/json"
_NOT_FOUND_HTML = (
    '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
    "<title>404 Not Found</title>\n</head><body>\n<h1>Not Found</h1>\n"
    "<p>The requested URL {path} was not found on this server.</p>\n</body></html>\n"
)


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str | None = _JSON,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}


class _EmptyBodyError(ServingError):
    """TF Serving returns some errors early, with an empty body (reference §1.1 quirk)."""


def _error_body(error: ServingError) -> bytes:
    if isinstance(error, _EmptyBodyError):
        return b""
    return ('{ "error": ' + json.dumps(error.message, ensure_ascii=False) + " }").encode(
        "utf-8", "surrogateescape"
    )


def _format_error(document: Any, message: str) -> ServingError:
    return ServingError.invalid_argument(f"JSON Value: {json_value_text(document)} {message}")


def _signature_name(document: dict[str, Any]) -> str:
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise ServingError.invalid_argument(
            f"JSON Value: {json_value_text(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def _version_number(text: str | None) -> int | None:
    if text is None:
        return None
    number = int(text)
    if number > _INT64_MAX:
        raise _EmptyBodyError(
            Code.INVALID_ARGUMENT, f"Failed to convert version: {text} to numeric."
        )
    return number


# -- classify/regress examples ------------------------------------------------------------------


def _feature_kind(feature: feature_pb2.Feature) -> str:
    return {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind") or "", "UNKNOWN"
    )


def _add_feature_value(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    kind = feature.WhichOneof("kind")

    def require(wanted: str) -> None:
        if kind not in (None, wanted):
            raise ServingError.invalid_argument(
                f"Unexpected element type in feature: {name} expecting type: "
                f"{_feature_kind(feature)}"
            )

    if (
        value is None
        or isinstance(value, list)
        or (isinstance(value, dict) and not (len(value) == 1 and isinstance(value.get("b64"), str)))
    ):
        raise ServingError.invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type_name(value)}"
        )
    if isinstance(value, bool):
        require("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        require("bytes_list")
        feature.bytes_list.value.append(decode_base64(value))
    elif isinstance(value, str):
        require("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, float):
        require("float_list")
        feature.float_list.value.append(value)
    else:
        require("int64_list")
        if value > _INT64_MAX:
            raise ServingError.invalid_argument(
                f"Feature: {name} has uint64 element. Only int64_t is supported."
            )
        feature.int64_list.value.append(value)


def _example(document: Any) -> example_pb2.Example:
    if not isinstance(document, dict):
        raise ServingError.invalid_argument(
            f"Example must be JSON object but got JSON {json_type_name(document)}"
        )
    example = example_pb2.Example()
    for name, content in document.items():
        feature = feature_pb2.Feature()
        for value in content if isinstance(content, list) else [content]:
            _add_feature_value(value, name, feature)
        example.features.feature[name].CopyFrom(feature)
    return example


def _examples(document: dict[str, Any]) -> list[bytes]:
    context = _example(document["context"]) if "context" in document else None
    if "examples" not in document:
        raise _format_error(
            document, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = document["examples"]
    if not isinstance(examples, list):
        raise _format_error(document, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(document, "'examples' value is an empty array")
    return serialize_examples([_example(item) for item in examples], context)


# -- the API ------------------------------------------------------------------------------------


class RestApi:
    """Routes and answers REST requests against a ModelManager."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        *,
        timeout_seconds: float = 30.0,
        monitoring_path: str | None = None,
        enable_cors: bool = False,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._timeout = timeout_seconds
        self._monitoring_path = monitoring_path
        self._enable_cors = enable_cors

    def handle(self, method: str, target: str, body: bytes, origin: str | None = None) -> Response:
        path = target.split("?", 1)[0]
        if self._monitoring_path and method == "GET" and path == self._monitoring_path:
            return Response(
                200, self._metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8"
            )
        if not _V1.fullmatch(path):
            return Response(
                404, _NOT_FOUND_HTML.format(path=path).encode(), "text/html; charset=ISO-8859-1"
            )
        cors = (
            {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "POST, GET",
                "Access-Control-Allow-Headers": "Content-Type",
            }
            if self._enable_cors
            else {}
        )
        if method == "OPTIONS":
            # A CORS preflight is answered with or without --rest_api_enable_cors_support, and
            # never reaches the API handler: an empty body either way (http_server.cc); a
            # missing Origin is FAILED_PRECONDITION "Origin header is missing in CORS preflight".
            preflight_ok = bool(origin) and re.search(r"https?://", origin or "") is not None
            return Response(200 if preflight_ok else 400, b"", None, cors)
        started = time.monotonic()
        model_name, api = "", "unknown"
        try:
            predict = _PREDICT_PATH.fullmatch(path) if method == "POST" else None
            status = _STATUS_PATH.fullmatch(path) if method == "GET" else None
            if predict and predict.group(4) in ("classify", "regress", "predict"):
                model_name = unquote(predict.group(1))
                api = predict.group(4)
                version = _version_number(predict.group(2))
                label = unquote(predict.group(3)) if predict.group(3) is not None else None
                handler = {
                    "predict": self._predict,
                    "classify": self._classify,
                    "regress": self._regress,
                }[api]
                text = handler(model_name, version, label, body)
            elif status:
                if status.group(1) is None:
                    raise ServingError.invalid_argument("Missing model name in request.")
                model_name = unquote(status.group(1))
                version = _version_number(status.group(2))
                label = unquote(status.group(3)) if status.group(3) is not None else None
                if status.group(4):
                    api = "GetModelMetadata"
                    text = self._metadata(model_name, version, label)
                else:
                    api = "GetModelStatus"
                    text = self._status(model_name, version)
            else:
                raise ServingError.invalid_argument(f"Malformed request: {method} {path}")
            response = Response(200, text.encode("utf-8", "surrogateescape"), _JSON, cors)
            code = Code.OK
        except ServingError as error:
            response = Response(error.code.http_status, _error_body(error), _JSON, cors)
            code = error.code
        except Exception:
            logger.exception("REST request failed")
            internal = ServingError.internal("Internal error")
            response = Response(500, _error_body(internal), _JSON, cors)
            code = internal.code
        if model_name:
            self._metrics.record_request(
                model_name, api, "REST", code.name, (time.monotonic() - started) * 1e6
            )
        return response

    # -- handlers --------------------------------------------------------------------------------

    def _status(self, name: str, version: int | None) -> str:
        statuses = self._manager.statuses(name, version)
        document = {
            "model_version_status": [
                {
                    "version": str(status.version),
                    "state": status.state,
                    "status": {
                        "error_code": status.error.code.name if status.error else "OK",
                        "error_message": status.error.message if status.error else "",
                    },
                }
                for status in statuses
            ]
        }
        return json.dumps(document, indent=1, ensure_ascii=False)

    def _metadata(self, name: str, version: int | None, label: str | None) -> str:
        with self._manager.handle(name, version, label) as loaded:
            return self._metadata_text(name, loaded)

    @staticmethod
    def _metadata_text(name: str, loaded: LoadedVersion) -> str:
        # Cached on the version itself: it goes when the version is unloaded (a cache keyed
        # here would keep every unloaded version's variables alive).
        cached = loaded.metadata_json
        if cached is None:
            signature_def = json_format.MessageToDict(
                loaded.signature_def_map,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
            document = {
                "model_spec": {
                    "name": name,
                    "signature_name": "",
                    "version": str(loaded.version),
                },
                "metadata": {"signature_def": signature_def},
            }
            cached = json.dumps(document, indent=1, ensure_ascii=False)
            loaded.metadata_json = cached  # two racing requests compute the same text
        return cached

    def _predict(self, name: str, version: int | None, label: str | None, body: bytes) -> str:
        document = parse_request_json(body)
        signature_name = _signature_name(document)
        with self._manager.handle(name, version, label) as loaded:
            return self._predict_on(loaded, document, signature_name)

    def _predict_on(
        self, loaded: LoadedVersion, document: dict[str, Any], signature_name: str
    ) -> str:
        key = signature_name or DEFAULT_SIGNATURE
        signature = loaded.signatures.get(key)
        if signature is None:
            raise ServingError.invalid_argument(
                f'Serving signature name: "{key}" not found in signature def'
            )
        if not signature.input_types:
            raise ServingError.invalid_argument(
                f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
            )
        has_instances, has_inputs = "instances" in document, "inputs" in document
        if has_instances and has_inputs:
            raise _format_error(
                document,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
                "to exist ",
            )
        if has_instances:
            instances = document["instances"]
            if not isinstance(instances, list):
                raise _format_error(document, "Expecting 'instances' to be an list/array")
            if not instances:
                raise _format_error(document, "No values in 'instances' array")
            tensors = instances_to_tensors(instances, signature.input_types)
            write: Callable[[dict[str, Any]], str] = row_response
        elif has_inputs:
            tensors = inputs_to_tensors(document["inputs"], signature.input_types)
            write = columnar_response
        else:
            raise ServingError.invalid_argument("Missing 'inputs' or 'instances' key")
        started = time.monotonic()
        outputs = loaded.run(key, tensors, self._timeout)
        if time.monotonic() - started > self._timeout:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return write(outputs)

    def _classify(self, name: str, version: int | None, label: str | None, body: bytes) -> str:
        document = parse_request_json(body)
        signature_name = _signature_name(document)
        examples = _examples(document)
        with self._manager.handle(name, version, label) as loaded:
            results = classify(loaded, signature_name or DEFAULT_SIGNATURE, examples)
        rows = []
        for pairs in results:
            scores = format_float_values(np.array([score for _, score in pairs], np.float32))
            rows.append(
                "["
                + ", ".join(
                    f"[{json.dumps(label_text, ensure_ascii=False)}, {score}]"
                    for (label_text, _), score in zip(pairs, scores, strict=True)
                )
                + "]"
            )
        return '{\n    "results": [' + ", ".join(rows) + "]\n}"

    def _regress(self, name: str, version: int | None, label: str | None, body: bytes) -> str:
        document = parse_request_json(body)
        signature_name = _signature_name(document)
        examples = _examples(document)
        with self._manager.handle(name, version, label) as loaded:
            values = regress(loaded, signature_name or DEFAULT_SIGNATURE, examples)
        texts = format_float_values(np.array(values, dtype=np.float32))
        return '{\n    "results": [' + ", ".join(texts) + "]\n}"


# -- the socket layer ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection per thread
    server_version = "TensorFlowServingLocal"
    sys_version = ""
    timeout = 300  # an idle keep-alive connection is closed after five minutes
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            body = gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)
        return body

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError, EOFError, zlib.error):
            self.close_connection = True
            response = Response(
                400, _error_body(ServingError.invalid_argument("Malformed request body"))
            )
        else:
            with self.server.request_slots:
                response = self.server.api.handle(
                    self.command, self.path, body, self.headers.get("Origin")
                )
        head = [f"HTTP/1.1 {response.status} {self.responses.get(response.status, ('',))[0]}"]
        if response.content_type:
            head.append(f"Content-Type: {response.content_type}")
        head.append(f"Content-Length: {len(response.body)}")
        for key, value in response.headers.items():
            head.append(f"{key}: {value}")
        if self.close_connection:
            head.append("Connection: close")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if self.command != "HEAD":
            payload += response.body
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    api: RestApi
    request_slots: threading.Semaphore


class RestServer:
    """The REST API on `host:port`, served from background threads."""

    def __init__(self, api: RestApi, host: str, port: int, threads: int) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.api = api
        self._server.request_slots = threading.Semaphore(max(1, threads))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="rest",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
