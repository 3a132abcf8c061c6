"""REST conformance of the local model server against reference/tfserving.md (§1, §8).

Real HTTP against the session's conformance server. Test vector numbers refer to §1.10.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
from typing import Any

import pytest
import requests

from tests.serving.server_process import ServerProcess

HPT = "/v1/models/half_plus_two"
OK_STATUS = {
    "model_version_status": [
        {
            "version": "123",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
    ]
}


@pytest.fixture(scope="module")
def http(conformance_server: ServerProcess) -> requests.Session:
    session = requests.Session()
    session.base_url = conformance_server.url  # type: ignore[attr-defined]
    return session


def call(
    http: requests.Session, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> requests.Response:
    data = raw if raw is not None else (None if body is None else json.dumps(body))
    return http.request(method, http.base_url + path, data=data, timeout=30)  # type: ignore[attr-defined]


# Successful calls: (vector, method, path, body, expected JSON).
SUCCESSES = [
    ("1 status", "GET", HPT, None, OK_STATUS),
    ("2 status of version", "GET", f"{HPT}/versions/123", None, OK_STATUS),
    (
        "7 row",
        "POST",
        f"{HPT}:predict",
        {"instances": [[1.0], [2.0], [5.0]]},
        {"predictions": [[2.5], [3.0], [4.5]]},
    ),
    (
        "7 row, flat values",
        "POST",
        f"{HPT}:predict",
        {"instances": [1.0, 2.0, 5.0]},
        {"predictions": [2.5, 3.0, 4.5]},
    ),
    (
        "8 columnar",
        "POST",
        f"{HPT}/versions/123:predict",
        {"inputs": [[1.0], [2.0]]},
        {"outputs": [[2.5], [3.0]]},
    ),
    (
        "9 label, objects",
        "POST",
        f"{HPT}/labels/stable:predict",
        {"signature_name": "serving_default", "instances": [{"x": [3.0]}, {"x": [4.0]}]},
        {"predictions": [[3.5], [4.0]]},
    ),
    (
        "10 integers to float",
        "POST",
        f"{HPT}:predict",
        {"instances": [[1], [2]]},
        {"predictions": [[2.5], [3.0]]},
    ),
    (
        "case-insensitive route",
        "POST",
        "/V1/Models/half_plus_two:predict",
        {"instances": [[1.0]]},
        {"predictions": [[2.5]]},
    ),
    (
        "29 regress",
        "POST",
        f"{HPT}:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]},
        {"results": [42.0]},
    ),
    (
        "30 classify",
        "POST",
        f"{HPT}:classify",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]},
        {"results": [[["", 12.0]]]},
    ),
    ("33 unknown label ignored by status", "GET", f"{HPT}/labels/anything", None, OK_STATUS),
    (
        "extra top-level keys ignored",
        "POST",
        f"{HPT}:predict",
        {"instances": [[1.0]], "whatever": {"x": 1}},
        {"predictions": [[2.5]]},
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [case[1:] for case in SUCCESSES],
    ids=[case[0] for case in SUCCESSES],
)
def test_rest_valid_request_answers_tf_serving_json(
    http: requests.Session, method: str, path: str, body: Any, expected: Any
) -> None:
    response = call(http, method, path, body)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == expected


# Errors: (vector, method, path, raw body, status, substring of the error message).
ERRORS = [
    (
        "3 unknown model status",
        "GET",
        "/v1/models/nosuch",
        None,
        404,
        "Could not find any versions of model nosuch",
    ),
    (
        "4 unknown version status",
        "GET",
        f"{HPT}/versions/999",
        None,
        404,
        "Could not find version 999 of model half_plus_two",
    ),
    ("5 missing model name", "GET", "/v1/models", None, 400, "Missing model name in request."),
    (
        "11 unknown model",
        "POST",
        "/v1/models/nosuch:predict",
        b'{"instances":[1.0]}',
        404,
        "Servable not found for request: Latest(nosuch)",
    ),
    (
        "12 unknown version",
        "POST",
        f"{HPT}/versions/99:predict",
        b'{"instances":[1.0]}',
        404,
        "Servable not found for request: Specific(half_plus_two, 99)",
    ),
    (
        "13 unknown label",
        "POST",
        f"{HPT}/labels/nolabel:predict",
        b'{"instances":[1.0]}',
        400,
        "Unrecognized servable version label: nolabel",
    ),
    (
        "14 empty body",
        "POST",
        f"{HPT}:predict",
        b"",
        400,
        "JSON Parse error: The document is empty",
    ),
    (
        "15 not JSON",
        "POST",
        f"{HPT}:predict",
        b"instances = [1, 2]",
        400,
        "JSON Parse error: Invalid value",
    ),
    (
        "16 bad JSON before model lookup",
        "POST",
        "/v1/models/nosuch:predict",
        b"{bad",
        400,
        "JSON Parse error",
    ),
    (
        "17 strings to float",
        "POST",
        f"{HPT}:predict",
        b'{"instances":["x","y"]}',
        400,
        "not of expected type: float",
    ),
    (
        "18 signature_name not string",
        "POST",
        f"{HPT}:predict",
        b'{"signature_name":100,"instances":[1.0]}',
        400,
        "'signature_name' key must be a string value.",
    ),
    (
        "19 unknown signature",
        "POST",
        f"{HPT}:predict",
        b'{"signature_name":"nope","instances":[1.0]}',
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    (
        "20 both formats",
        "POST",
        f"{HPT}:predict",
        b'{"instances":[1.0],"inputs":[1.0]}',
        400,
        "expecting only one of 'inputs' or 'instances'",
    ),
    (
        "21 no inputs",
        "POST",
        f"{HPT}:predict",
        b'{"foo":1}',
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    (
        "22 empty instances",
        "POST",
        f"{HPT}:predict",
        b'{"instances":[]}',
        400,
        "No values in 'instances' array",
    ),
    (
        "23 size",
        "POST",
        f"{HPT}:predict",
        b'{"instances":[[1.0,2.0],[3.0]]}',
        400,
        "Expecting tensor size",
    ),
    ("23 shape", "POST", f"{HPT}:predict", b'{"instances":[1.0,[1.0]]}', 400, "Expecting shape"),
    (
        "instances not a list",
        "POST",
        f"{HPT}:predict",
        b'{"instances":{"x":1}}',
        400,
        "to be an list/array",
    ),
    ("top level not an object", "POST", f"{HPT}:predict", b"[1.0]", 400, "Is not object"),
    (
        "ragged list",
        "POST",
        f"{HPT}:predict",
        b'{"inputs":[[1.0],[2.0,3.0]]}',
        400,
        "Encountered list at unexpected size",
    ),
    (
        "25 GET predict",
        "GET",
        f"{HPT}:predict",
        None,
        400,
        "Malformed request: GET /v1/models/half_plus_two:predict",
    ),
    ("26 singular version", "POST", f"{HPT}/version/123:predict", b"{}", 400, "Malformed request"),
    ("27 PUT", "PUT", HPT, b"{}", 400, "Malformed request: PUT /v1/models/half_plus_two"),
    ("DELETE", "DELETE", HPT, None, 400, "Malformed request: DELETE"),
    ("unknown path under v1", "GET", "/v1/foo", None, 400, "Malformed request: GET /v1/foo"),
    ("POST v1 models", "POST", "/v1/models", b"{}", 400, "Malformed request"),
    (
        "version and label",
        "POST",
        f"{HPT}/versions/50/labels/x:regress",
        b"{}",
        400,
        "Malformed request",
    ),
    ("POST metadata", "POST", f"{HPT}/metadata", b"{}", 400, "Malformed request"),
    ("method word compared exactly", "POST", f"{HPT}:PREDICT", b"{}", 400, "Malformed request"),
    (
        "non-numeric version",
        "POST",
        f"{HPT}/versions/HELLO:regress",
        b"{}",
        400,
        "Malformed request",
    ),
    (
        "31 examples not a list",
        "POST",
        f"{HPT}:classify",
        b'{"examples":{"x":1.0}}',
        400,
        "list/array",
    ),
    (
        "classify on a predict signature",
        "POST",
        f"{HPT}:classify",
        b'{"examples":[{"x":1.0}]}',
        400,
        "method_name to be tensorflow/serving/classify",
    ),
    (
        "metadata of unknown label",
        "GET",
        f"{HPT}/labels/nolabel/metadata",
        None,
        400,
        "Unrecognized servable version label: nolabel",
    ),
    (
        "metadata of unknown model",
        "GET",
        "/v1/models/nosuch/metadata",
        None,
        404,
        "Servable not found for request: Latest(nosuch)",
    ),
    (
        "bool for float",
        "POST",
        f"{HPT}:predict",
        b'{"instances":[[true]]}',
        400,
        "Type: True is not of expected type: float",
    ),
    (
        "web-safe base64",
        "POST",
        "/v1/models/echo:predict",
        b'{"instances":[{"b64":"-_-_"}]}',
        400,
        "Unable to base64 decode",
    ),
    (
        "float for int32",
        "POST",
        "/v1/models/multi:predict",
        b'{"instances":[{"a":1.0,"b":1.5}]}',
        400,
        "is not of expected type: int32",
    ),
    (
        "row needs objects for two inputs",
        "POST",
        "/v1/models/multi:predict",
        b'{"instances":[1.0]}',
        400,
        "expecting list of objects",
    ),
    (
        "row keys must equal the inputs",
        "POST",
        "/v1/models/multi:predict",
        b'{"instances":[{"a":1.0}]}',
        400,
        "keys must be equal to: a,b",
    ),
    (
        "row extra key",
        "POST",
        "/v1/models/multi:predict",
        b'{"instances":[{"a":1.0,"b":1,"c":2}]}',
        400,
        "does not have named input: c",
    ),
    (
        "columnar missing input",
        "POST",
        "/v1/models/multi:predict",
        b'{"inputs":{"a":[1.0]}}',
        400,
        "Missing named input: b in 'inputs' object.",
    ),
    (
        "columnar plain value for two inputs",
        "POST",
        "/v1/models/multi:predict",
        b'{"inputs":[1.0]}',
        400,
        "inputs is a plain value/list, but expecting an object",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "raw", "status", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_rest_invalid_request_answers_json_error_with_tf_serving_status(
    http: requests.Session, method: str, path: str, raw: bytes | None, status: int, message: str
) -> None:
    response = call(http, method, path, raw=raw)

    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    assert message in body["error"]


def test_rest_version_beyond_int64_answers_400_with_empty_body(http: requests.Session) -> None:
    response = call(http, "POST", "/v1/models/foo/versions/18446744073709551615:regress", {})

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.content == b""


@pytest.mark.parametrize("path", ["/healthz", "/", "/v1", "/metrics"])
def test_rest_path_outside_v1_answers_404_not_json(http: requests.Session, path: str) -> None:
    response = call(http, "GET", path)

    assert response.status_code == 404
    assert "json" not in response.headers["Content-Type"]
    with pytest.raises(ValueError):
        response.json()


def test_rest_non_finite_floats_round_trip_as_bare_tokens(http: requests.Session) -> None:
    response = call(
        http, "POST", f"{HPT}:predict", raw=b'{"instances":[[NaN],[Infinity],[-Infinity],[-Inf]]}'
    )

    assert response.status_code == 200, response.text
    tokens = re.findall(r"-?Infinity|NaN", response.text)
    assert tokens == ["NaN", "Infinity", "-Infinity", "-Infinity"]
    assert json.loads(response.text)["predictions"][1] == [float("inf")]


def test_rest_floats_written_the_tf_way(http: requests.Session) -> None:
    # y = 0.5x + 2: these inputs give 9e+06, 999999.0, 0.5 (printed %g, with .0 added).
    response = call(
        http, "POST", f"{HPT}:predict", {"instances": [[17999996.0], [1999994.0], [-3.0]]}
    )

    assert response.status_code == 200, response.text
    assert re.sub(r"\s", "", response.text) == '{"predictions":[[9e+06],[999999.0],[0.5]]}'


def test_rest_metadata_has_signature_def_twice_nested_with_string_int64(
    http: requests.Session,
) -> None:
    response = call(http, "GET", f"{HPT}/metadata")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert default["inputs"]["x"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "1", "name": ""},
    ]
    assert default["outputs"]["y"]["dtype"] == "DT_FLOAT"
    assert signatures["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert signatures["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"
    assert "__saved_model_init_op" in signatures


def test_rest_metadata_by_label_and_version_resolve(http: requests.Session) -> None:
    by_label = call(http, "GET", f"{HPT}/labels/stable/metadata")
    by_version = call(http, "GET", f"{HPT}/versions/123/metadata")

    assert by_label.json()["model_spec"]["version"] == "123"
    assert by_version.json() == by_label.json()


MULTI_ROW = {
    "predictions": [
        {
            "count": 2,
            "label": "n1",
            "positive": True,
            "product": 1.5,
            "raw_bytes": {"b64": base64.b64encode(b"1\x00\xff").decode()},
            "sum": 2.5,
        },
        {
            "count": -4,
            "label": "n-2",
            "positive": False,
            "product": -2.0,
            "raw_bytes": {"b64": base64.b64encode(b"-2\x00\xff").decode()},
            "sum": -1.0,
        },
    ]
}


def test_rest_multi_output_row_format_gives_one_object_per_row(http: requests.Session) -> None:
    response = call(
        http,
        "POST",
        "/v1/models/multi:predict",
        {"instances": [{"a": 1.5, "b": 1}, {"a": 1.0, "b": -2}]},
    )

    assert response.status_code == 200, response.text
    assert response.json() == MULTI_ROW


def test_rest_multi_output_columnar_format_gives_whole_tensors(http: requests.Session) -> None:
    response = call(
        http, "POST", "/v1/models/multi:predict", {"inputs": {"a": [1.5, 1.0], "b": [1, -2]}}
    )

    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["sum"] == [2.5, -1.0]
    assert outputs["count"] == [2, -4]
    assert outputs["positive"] == [True, False]
    assert outputs["label"] == ["n1", "n-2"]
    assert outputs["raw_bytes"] == [row["raw_bytes"] for row in MULTI_ROW["predictions"]]


def test_rest_b64_in_and_bytes_suffix_out(http: requests.Session) -> None:
    payload = bytes(range(256))
    response = call(
        http,
        "POST",
        "/v1/models/echo:predict",
        {"instances": [{"b64": base64.b64encode(payload).decode()}, "plain"]},
    )

    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert base64.b64decode(first["echo_bytes"]["b64"]) == payload
    assert first["length"] == 256
    assert second == {
        "echo_bytes": {"b64": base64.b64encode(b"plain").decode()},
        "length": 5,
        "upper": "PLAIN",
    }


def test_rest_gzip_request_body_is_accepted(http: requests.Session) -> None:
    response = http.post(
        http.base_url + f"{HPT}:predict",  # type: ignore[attr-defined]
        data=gzip.compress(b'{"instances": [[1.0]]}'),
        headers={"Content-Encoding": "gzip"},
        timeout=30,
    )

    assert response.json() == {"predictions": [[2.5]]}


def test_rest_keep_alive_connection_serves_many_requests(http: requests.Session) -> None:
    responses = [
        call(http, "POST", f"{HPT}:predict", {"instances": [[float(i)]]}) for i in range(20)
    ]

    assert [r.json()["predictions"][0][0] for r in responses] == [0.5 * i + 2 for i in range(20)]
    assert all(r.headers.get("Connection", "keep-alive").lower() != "close" for r in responses)


def test_rest_concurrent_requests_each_get_their_own_answer(
    conformance_server: ServerProcess,
) -> None:
    # Batching is on in this server: concurrent rows are merged and must be split back right.
    results: dict[int, Any] = {}

    def client(index: int) -> None:
        with requests.Session() as session:
            for round_ in range(10):
                value = float(index * 100 + round_)
                response = session.post(
                    f"{conformance_server.url}{HPT}:predict",
                    json={"instances": [[value], [value + 1]]},
                    timeout=30,
                )
                results[index * 100 + round_] = (value, response.status_code, response.json())

    threads = [threading.Thread(target=client, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 80
    for value, status, body in results.values():
        assert status == 200
        assert body == {"predictions": [[0.5 * value + 2], [0.5 * (value + 1) + 2]]}


def test_rest_monitoring_path_serves_prometheus_text(http: requests.Session) -> None:
    call(http, "POST", f"{HPT}:predict", {"instances": [[1.0]]})

    response = call(http, "GET", "/monitoring/prometheus/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert re.search(
        r':tensorflow:serving:request_count\{model_name="half_plus_two",status="OK"\} \d+',
        response.text,
    )
    assert ":tensorflow:serving:batching_session:processed_batch_size_bucket" in response.text


@pytest.mark.parametrize(
    ("origin", "status"),
    [("http://app.example", 200), ("https://app.example", 200), (None, 400), ("app", 400)],
)
def test_rest_cors_preflight_is_answered_without_the_cors_flag_and_without_a_body(
    http: requests.Session, origin: str | None, status: int
) -> None:
    # The conformance server runs without --rest_api_enable_cors_support.
    headers = {"Origin": origin} if origin else {}
    response = http.options(
        http.base_url + HPT,  # type: ignore[attr-defined]
        headers=headers,
        timeout=30,
    )

    assert response.status_code == status
    assert response.content == b""
    assert "Access-Control-Allow-Origin" not in response.headers
