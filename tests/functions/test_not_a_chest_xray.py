"""Out-of-distribution refusal in the functions: the model says an image is not a frontal chest
X-ray (its `ood_reason` output); predict and Grad-CAM answer 422 `not_a_chest_xray` in words a
person understands and store a record saying so (no overlay), `accept_ood=true` answers anyway,
flagged; versions without the check answer as before and say so; the original system's routes
never refuse (its clients know no such answer)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from storage import keys
from tests.functions.conftest import Stack, error_of
from tests.functions.sample_images import png_bytes


def _post(stack: Stack, target: str = "predict", query: str = "") -> Any:
    headers = {**stack.bearer(), "Accept": "application/json"}
    if target == "predict":
        return stack.client("predict").post(
            f"/{query}", data=png_bytes(), headers={**headers, "Content-Type": "image/png"}
        )
    return stack.client("gradcam").post(
        f"/{query}",
        data={"file": (io.BytesIO(png_bytes()), "film.png", "image/png")},
        headers=headers,
    )


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("colour", "colour photograph"),
        ("nearly_constant", "nearly blank"),
        ("aspect_ratio", "far from square"),
        ("features", "does not look like a frontal chest X-ray"),
    ],
)
def test_predict_refuses_what_the_model_says_is_not_a_chest_film(
    stack: Stack, reason: str, words: str
) -> None:
    stack.fake.ood_reason, stack.fake.ood_score = reason, 3.2

    response = _post(stack)

    assert response.status_code == 422
    assert error_of(response) == "not_a_chest_xray"
    body = response.get_json()
    assert words in body["message"]
    assert "accept_ood=true" in body["message"]
    assert body["reason"] == reason
    record = stack.root.get_json(keys.inference_record("1", body["inference_id"]))
    assert record["decision"] == "not_a_chest_xray"
    assert record["ood"] == {"checked": True, "reason": reason, "score": 3.2, "accepted": False}


def test_gradcam_refusal_stores_the_record_and_no_overlay(stack: Stack) -> None:
    stack.fake.ood_reason = "features"

    response = _post(stack, "gradcam")

    assert response.status_code == 422
    assert error_of(response) == "not_a_chest_xray"
    inference_id = response.get_json()["inference_id"]
    record = stack.root.get_json(keys.inference_record("1", inference_id))
    assert record["kind"] == "gradcam"
    assert record["decision"] == "not_a_chest_xray"
    assert "gradcam" not in record
    assert not stack.root.exists(keys.gradcam_image("1", inference_id))
    overlay = stack.client("history").get(f"/{inference_id}/gradcam", headers=stack.bearer())
    assert overlay.status_code == 404


@pytest.mark.parametrize("target", ["predict", "gradcam"])
def test_accept_ood_answers_anyway_flagged(stack: Stack, target: str) -> None:
    stack.fake.ood_reason, stack.fake.ood_score = "features", 1.7

    response = _post(stack, target, "?accept_ood=true")

    assert response.status_code == 200
    body = response.get_json()
    assert body["ood"] == {"checked": True, "reason": "features", "score": 1.7, "accepted": True}
    assert body["decision"] == "covid"
    stored = stack.root.get_json(keys.inference_record("1", body["id"]))
    assert stored["ood"]["accepted"] is True


def test_accept_ood_as_a_form_field(stack: Stack) -> None:
    stack.fake.ood_reason = "features"
    response = stack.client("predict").post(
        "/",
        data={"file": (io.BytesIO(png_bytes()), "film.png", "image/png"), "accept_ood": "true"},
        headers=stack.bearer(),
    )
    assert response.status_code == 200


def test_a_chest_film_passes_and_says_it_was_checked(stack: Stack) -> None:
    stack.fake.ood_reason, stack.fake.ood_score = "", 0.4

    body = _post(stack).get_json()

    assert body["ood"] == {"checked": True, "reason": "", "score": 0.4}
    assert body["decision"] == "covid"


def test_a_version_without_the_check_answers_and_says_so(stack: Stack) -> None:
    body = _post(stack).get_json()

    assert body["ood"]["checked"] is False
    assert "version 3 does not check" in body["ood"]["note"]


def test_an_unknown_reason_from_the_model_is_a_bad_answer(stack: Stack) -> None:
    stack.fake.ood_reason = "looks odd"

    response = _post(stack)

    assert response.status_code == 502
    assert error_of(response) == "model_bad_response"


def test_accept_ood_must_be_a_flag(stack: Stack) -> None:
    response = _post(stack, "predict", "?accept_ood=maybe")

    assert response.status_code == 400
    assert error_of(response) == "invalid_parameter"


def test_the_original_routes_never_refuse_and_flag_the_record(stack: Stack) -> None:
    stack.fake.ood_reason = "features"
    response = stack.client("legacy").post(
        "/x-ray",
        data={"file": (io.BytesIO(png_bytes()), "film.png", "image/png")},
        headers=stack.bearer(),
        content_type="multipart/form-data",
    )

    assert response.status_code == 200
    (key,) = stack.root.list_keys(keys.inference_user_prefix("1"))
    assert stack.root.get_json(key)["ood"]["accepted"] is True


def test_the_reason_list_is_the_model_contracts() -> None:
    from model_contract.artifact import OOD_REASONS

    assert OOD_REASONS == ("colour", "nearly_constant", "aspect_ratio", "features")
