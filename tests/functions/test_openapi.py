"""The OpenAPI document: valid 3.1, and the functions' real answers match what it says."""

from __future__ import annotations

import io
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from functions.docs import load_openapi, openapi_for_swagger_ui
from tests.functions.conftest import PASSWORDS, Stack
from tests.functions.sample_images import gif_bytes, png_bytes

_DOC_URI = "urn:xray-openapi"


def test_openapi_document_is_valid_openapi_31() -> None:
    document = load_openapi()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_openapi_swagger_ui_rendition_is_valid_openapi_30() -> None:
    rendition = openapi_for_swagger_ui(load_openapi())
    assert rendition["openapi"] == "3.0.3"
    validate(rendition)


def test_openapi_documents_every_gateway_route() -> None:
    paths = set(load_openapi()["paths"])
    assert {
        "/auth/token",
        "/auth/me",
        "/predict",
        "/gradcam",
        "/history",
        "/history/{inference_id}",
        "/history/{inference_id}/gradcam",
        "/token",
        "/user/me",
        "/x-ray",
        "/grad_cam",
        "/user/results",
        "/openapi.yaml",
        "/openapi.json",
        "/docs",
    } <= paths


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Follow a local `$ref` once; returns the node and its JSON pointer parts."""
    parts = node["$ref"].removeprefix("#/").split("/")
    target: Any = document
    for part in parts:
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target, parts


def check_response(path: str, method: str, response: Any) -> None:
    """Assert the status, the content type and (for JSON) the body are what the document says."""
    document = load_openapi()
    operation = document["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method.upper()} {path} -> {status} undocumented"
    described = operation["responses"][status]
    pointer = ["paths", path, method, "responses", status]
    if "$ref" in described:
        described, pointer = _resolve(document, described)
    content_type = response.mimetype
    assert content_type in described["content"], f"{content_type} undocumented for {status}"
    for header in described.get("headers", {}):
        if header not in ("Retry-After",) or response.status_code == 503:
            assert header in response.headers, f"{header} missing on {status}"
    if content_type != "application/json":
        return
    location = "/".join(_escape(part) for part in [*pointer, "content", content_type, "schema"])
    registry = Registry().with_resource(
        _DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    validator = Draft202012Validator({"$ref": f"{_DOC_URI}#/{location}"}, registry=registry)
    errors = sorted(validator.iter_errors(response.get_json()), key=str)
    assert not errors, f"{method.upper()} {path} {status}: {errors[0].message}"


@pytest.fixture
def token(stack: Stack) -> str:
    response = stack.client("auth").post(
        "/token",
        data={
            "grant_type": "password",
            "username": "alice@example.com",
            "password": PASSWORDS["1"],
        },
    )
    check_response("/auth/token", "post", response)
    return str(response.get_json()["access_token"])


def test_openapi_auth_answers_match_the_document(stack: Stack, token: str) -> None:
    client = stack.client("auth")
    bearer = {"Authorization": f"Bearer {token}"}
    check_response("/auth/token", "post", client.post("/token", data={"grant_type": "x"}))
    check_response("/auth/token", "post", client.post("/token", json={"grant_type": "password"}))
    check_response("/auth/token", "post", client.get("/token"))
    check_response("/auth/me", "get", client.get("/me", headers=bearer))
    check_response("/auth/me", "get", client.get("/me"))
    check_response("/auth/me", "get", client.get("/me", headers={"Authorization": "Bearer x.y.z"}))
    check_response("/auth/me", "get", client.get(f"/me?access_token={token}"))
    check_response("/auth/me", "get", client.delete("/me", headers=bearer))


def test_openapi_predict_and_gradcam_answers_match_the_document(stack: Stack, token: str) -> None:
    bearer = {"Authorization": f"Bearer {token}"}
    predict, gradcam = stack.client("predict"), stack.client("gradcam")
    check_response(
        "/predict",
        "post",
        predict.post("/", data=png_bytes(), content_type="image/png", headers=bearer),
    )
    check_response(
        "/predict",
        "post",
        predict.post("/", data=gif_bytes(), content_type="image/gif", headers=bearer),
    )
    check_response(
        "/predict", "post", predict.post("/", data=b"", content_type="image/png", headers=bearer)
    )
    check_response(
        "/predict",
        "post",
        predict.post("/", data=png_bytes()[:100], content_type="image/png", headers=bearer),
    )
    check_response(
        "/predict", "post", predict.post("/", data=png_bytes(), content_type="image/png")
    )
    stack.fake.status(503)
    check_response(
        "/predict",
        "post",
        predict.post("/", data=png_bytes(), content_type="image/png", headers=bearer),
    )
    stack.fake.garbage()
    check_response(
        "/predict",
        "post",
        predict.post("/", data=png_bytes(), content_type="image/png", headers=bearer),
    )
    stack.fake.ok()

    def upload(**form: str) -> dict[str, object]:
        return {"file": (io.BytesIO(png_bytes()), "x.png", "image/png"), **form}

    check_response("/gradcam", "post", gradcam.post("/", data=upload(), headers=bearer))
    check_response(
        "/gradcam",
        "post",
        gradcam.post("/?format=json&heatmap=true", data=upload(), headers=bearer),
    )
    check_response(
        "/gradcam", "post", gradcam.post("/?target_class=nope", data=upload(), headers=bearer)
    )


def test_openapi_history_answers_match_the_document(stack: Stack, token: str) -> None:
    bearer = {"Authorization": f"Bearer {token}"}
    record = (
        stack.client("predict")
        .post("/", data=png_bytes(), content_type="image/png", headers=bearer)
        .get_json()
    )
    stack.client("predict").post("/", data=png_bytes(), content_type="image/png", headers=bearer)
    history = stack.client("history")
    check_response("/history", "get", history.get("/?limit=1", headers=bearer))
    check_response("/history", "get", history.get("/?limit=0", headers=bearer))
    check_response("/history", "get", history.get("/?user=2", headers=bearer))
    check_response(
        "/history/{inference_id}", "get", history.get(f"/{record['id']}", headers=bearer)
    )
    check_response("/history/{inference_id}", "get", history.get("/missing", headers=bearer))
    check_response(
        "/history/{inference_id}/gradcam",
        "get",
        history.get(f"/{record['id']}/gradcam", headers=bearer),
    )
