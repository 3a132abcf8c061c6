"""The OpenAPI document: valid 3.1, and the functions' real answers match what it says."""

from __future__ import annotations

import io

import pytest
from openapi_spec_validator import validate

from functions.docs import load_openapi, openapi_for_swagger_ui
from tests.functions.conftest import PASSWORDS, Stack
from tests.functions.openapi_checks import check_response
from tests.functions.sample_images import gif_bytes, png_bytes


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
