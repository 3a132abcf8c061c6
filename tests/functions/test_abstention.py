"""Abstention in the functions: the answer and its record say `refer` when the model's confidence
is below the refer threshold (the one the model version serves, or the deployment's
REFER_BELOW), the probabilities still given; versions without a threshold are never referred and
the answer says why; history filters by decision."""

from __future__ import annotations

import io
from typing import Any

import pytest

from storage import keys
from tests.functions.conftest import Stack, error_of
from tests.functions.sample_images import png_bytes


def _predict(stack: Stack, user: str = "1") -> Any:
    response = stack.client("predict").post(
        "/", data=png_bytes(), headers={**stack.bearer(user), "Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.data[:300]
    return response.get_json()


def test_confident_answer_keeps_its_class_with_the_model_threshold(stack: Stack) -> None:
    stack.fake.refer_threshold = 0.75  # the fake answers 0.9 for its class

    body = _predict(stack)

    assert body["decision"] == "covid"
    assert body["abstention"] == {
        "confidence": pytest.approx(0.9),
        "threshold": 0.75,
        "source": "model",
    }
    assert stack.root.get_json(keys.inference_record("1", body["id"])) == body


def test_uncertain_answer_is_referred_with_its_probabilities(stack: Stack) -> None:
    stack.fake.refer_threshold = 0.95

    body = _predict(stack)

    assert body["decision"] == "refer"
    assert body["predicted_class"] == "covid"  # still said, with every probability
    assert body["probabilities"]["covid"] == pytest.approx(0.9)
    assert body["abstention"]["source"] == "model"
    assert stack.root.get_json(keys.inference_record("1", body["id"]))["decision"] == "refer"


def test_gradcam_answer_carries_the_decision_too(stack: Stack) -> None:
    stack.fake.refer_threshold = 0.95
    response = stack.client("gradcam").post(
        "/",
        data={"file": (io.BytesIO(png_bytes()), "film.png", "image/png")},
        headers={**stack.bearer(), "Accept": "application/json"},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["decision"] == "refer"
    stored = stack.root.get_json(keys.inference_record("1", body["id"]))
    assert stored["decision"] == "refer"


def test_deployment_threshold_overrides_the_models(stack_factory: Any) -> None:
    stack = stack_factory(REFER_BELOW="0.95")
    stack.fake.refer_threshold = 0.5

    body = _predict(stack)

    assert body["decision"] == "refer"
    assert body["abstention"] == {
        "confidence": pytest.approx(0.9),
        "threshold": 0.95,
        "source": "deployment",
    }


def test_deployment_threshold_refers_for_a_model_without_one(stack_factory: Any) -> None:
    stack = stack_factory(REFER_BELOW="0.95")

    assert _predict(stack)["decision"] == "refer"


def test_model_without_a_threshold_is_never_referred_and_the_answer_says_why(stack: Stack) -> None:
    body = _predict(stack)  # the fake serves no refer_threshold: a version exported before it

    assert body["decision"] == "covid"
    assert body["abstention"]["source"] == "none"
    assert body["abstention"]["threshold"] is None
    assert "version 3 has no refer threshold" in body["abstention"]["note"]


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_refer_below_out_of_range_stops_the_start(stack_factory: Any, value: str) -> None:
    from common.settings import SettingsError

    with pytest.raises(SettingsError, match="REFER_BELOW"):
        stack_factory(REFER_BELOW=value)


def test_malformed_threshold_from_the_model_is_a_bad_answer(stack: Stack) -> None:
    stack.fake.refer_threshold = 1.5

    response = stack.client("predict").post(
        "/", data=png_bytes(), headers={**stack.bearer(), "Content-Type": "image/png"}
    )

    assert response.status_code == 502
    assert error_of(response) == "model_bad_response"


def test_history_filters_by_decision_across_pages(stack: Stack) -> None:
    made: list[tuple[str, str]] = []
    for index in range(7):
        stack.fake.refer_threshold = 0.95 if index % 3 == 0 else 0.5
        body = _predict(stack)
        made.append((body["id"], body["decision"]))
    history = stack.client("history")
    referred = [inference_id for inference_id, decision in reversed(made) if decision == "refer"]

    first = history.get("/?decision=refer&limit=2", headers=stack.bearer()).get_json()
    assert [record["id"] for record in first["records"]] == referred[:2]
    assert first["next_page_token"]
    second = history.get(
        f"/?decision=refer&limit=2&page_token={first['next_page_token']}", headers=stack.bearer()
    ).get_json()
    assert [record["id"] for record in second["records"]] == referred[2:]
    assert second["next_page_token"] is None
    kept = history.get("/?decision=covid", headers=stack.bearer()).get_json()["records"]
    assert len(kept) == 7 - len(referred)
    # A filtered page's token is bound to its filter.
    other = history.get(
        f"/?decision=covid&limit=2&page_token={first['next_page_token']}", headers=stack.bearer()
    )
    assert other.status_code == 400
    assert error_of(other) == "invalid_page_token"


def test_history_decision_filter_refuses_odd_values(stack: Stack) -> None:
    response = stack.client("history").get("/?decision=../x", headers=stack.bearer())

    assert response.status_code == 400
    assert error_of(response) == "invalid_parameter"
