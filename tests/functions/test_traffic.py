"""Canary traffic and shadow mode: who the canary answers, what the record says, what the caller
never sees (functions/traffic.py, functions/inference.py)."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable

import pytest

from common.settings import SettingsError
from functions.passwords import PasswordHasher
from functions.settings import FunctionSettings
from functions.traffic import canary_bucket, in_canary
from functions.users import User, format_users_csv
from storage import keys
from tests.functions.conftest import CHEAP_HASH, Stack, cheap_env
from tests.functions.sample_images import png_bytes

STABLE_VERSION, CANARY_VERSION = 3, 4


# -- the share ----------------------------------------------------------------------------------


def _binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


@pytest.mark.parametrize("percent", [1.0, 10.0, 25.0, 50.0, 90.0])
def test_canary_share_is_within_binomial_bounds_over_many_users(percent: float) -> None:
    users = [f"user-{index}" for index in range(20_000)]
    chosen = sum(in_canary(user, percent) for user in users)
    low, high = _binomial_bounds(len(users), percent / 100)
    assert low <= chosen <= high


def test_canary_share_is_stable_per_user_and_only_grows() -> None:
    users = [f"u{index}@example.org" for index in range(5_000)]
    at_10 = {user for user in users if in_canary(user, 10)}
    assert at_10 == {user for user in users if in_canary(user, 10)}  # same answer every time
    at_20 = {user for user in users if in_canary(user, 20)}
    assert at_10 < at_20  # raising the share only adds users
    assert not any(in_canary(user, 0) for user in users)
    assert all(in_canary(user, 100) for user in users)
    # The hash is fixed (SHA-256, not Python's per-process salted hash()): the same bucket in
    # every process, on every machine, after every restart.
    assert canary_bucket("1") == 4980
    assert canary_bucket("alice@example.com") == 484


def test_traffic_settings_are_checked() -> None:
    base = {**cheap_env(), "STORAGE_URL": "/tmp/unused-store"}
    settings = FunctionSettings.from_env({**base, "CANARY_PERCENT": "12.5"})
    assert settings.traffic.canary_percent == 12.5
    assert settings.traffic.shadow is None
    shadow = FunctionSettings.from_env({**base, "SHADOW": "canary", "SHADOW_BUDGET_MS": "80"})
    assert (shadow.traffic.shadow, shadow.traffic.shadow_budget_ms) == ("canary", 80.0)
    bad = [
        {"CANARY_PERCENT": "101"},
        {"CANARY_PERCENT": "-1"},
        {"SHADOW": "blue"},
        {"SHADOW": "canary", "CANARY_PERCENT": "10"},
        {"CANARY_PERCENT": "10", "MODEL_VERSION": "3"},
        {"SHADOW": "canary", "MODEL_LABEL": "canary"},
    ]
    for overrides in bad:
        with pytest.raises(SettingsError):
            FunctionSettings.from_env({**base, **overrides})


# -- through the functions ----------------------------------------------------------------------


def _with_many_users(stack: Stack, count: int) -> list[str]:
    hasher = PasswordHasher(CHEAP_HASH)
    extra = [
        User(f"u{index}", f"u{index}@example.org", "user", hasher.hash("pw-" + str(index)))
        for index in range(count)
    ]
    everyone = [*stack.users.values(), *extra]
    stack.auth_store.put(keys.USERS_FILE, format_users_csv(everyone))
    stack.users.update({user.id: user for user in extra})
    return [user.id for user in extra]


def _predict(stack: Stack, user: str, **query: str):  # type: ignore[no-untyped-def]
    headers = {**stack.bearer(user), "Content-Type": "image/png"}
    return stack.client("predict").post("/", data=png_bytes(), headers=headers, query_string=query)


def _stored(stack: Stack, user: str, inference_id: str) -> dict:  # type: ignore[type-arg]
    return stack.root.get_json(keys.inference_record(user, inference_id))  # type: ignore[no-any-return]


def test_canary_answers_its_share_of_users_and_each_user_sees_one_model(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(CANARY_PERCENT="50")
    stack.fake.label_versions = {"stable": STABLE_VERSION, "canary": CANARY_VERSION}
    users = _with_many_users(stack, 40)
    seen: dict[str, set[int]] = {}
    for _ in range(2):
        for user in users:
            response = _predict(stack, user)
            assert response.status_code == 200
            body = response.get_json()
            seen.setdefault(user, set()).add(body["model"]["version"])
            expected = "canary" if in_canary(user, 50) else "stable"
            assert body["routed_to"] == expected
            assert body["model"]["version"] == (
                CANARY_VERSION if expected == "canary" else STABLE_VERSION
            )
            assert _stored(stack, user, body["id"])["routed_to"] == expected
    assert all(len(versions) == 1 for versions in seen.values())  # one user, one model
    share = Counter(next(iter(versions)) for versions in seen.values())
    low, high = _binomial_bounds(len(users), 0.5)
    assert low <= share[CANARY_VERSION] <= high
    labels = {request.label for request in stack.fake.requests}
    assert labels == {"stable", "canary"}


def test_gradcam_follows_the_same_route(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(CANARY_PERCENT="100")
    stack.fake.label_versions = {"stable": STABLE_VERSION, "canary": CANARY_VERSION}
    response = stack.client("gradcam").post(
        "/",
        data=png_bytes(),
        headers={**stack.bearer("1"), "Content-Type": "image/png"},
    )
    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == str(CANARY_VERSION)
    stored = _stored(stack, "1", response.headers["X-Inference-Id"])
    assert stored["routed_to"] == "canary"
    assert stored["kind"] == "gradcam"


def test_a_failing_canary_is_replaced_by_stable_and_the_record_says_so(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(CANARY_PERCENT="100")
    stack.fake.label_versions = {"stable": STABLE_VERSION, "canary": CANARY_VERSION}
    stack.fake.label_status = {"canary": 503}
    response = _predict(stack, "1")
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"]["version"] == STABLE_VERSION
    assert body["routed_to"] == "stable"
    assert body["canary_fallback"] == {"error": "model_unavailable"}
    # One attempt at the canary (the stable model is the retry), then the stable call.
    assert [request.label for request in stack.fake.requests] == ["stable"]
    assert stack.fake.attempts == 2


def test_shadow_answer_is_recorded_and_never_returned(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(SHADOW="canary")
    stack.fake.label_versions = {"stable": STABLE_VERSION, "canary": CANARY_VERSION}
    stack.fake.label_predicted = {"canary": 0}  # the canary says normal, stable covid
    response = _predict(stack, "1")
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"]["version"] == STABLE_VERSION
    assert body["predicted_class"] == "covid"
    assert "shadow" not in body
    stored = _stored(stack, "1", body["id"])
    shadow = stored["shadow"]
    assert shadow["status"] == "ok"
    assert shadow["label"] == "canary"
    assert shadow["model"]["version"] == CANARY_VERSION
    assert shadow["predicted_class"] == "normal"
    assert shadow["probabilities"]["normal"] == pytest.approx(0.9)
    assert shadow["latency_ms"] >= 0
    assert sorted(request.label for request in stack.fake.requests) == ["canary", "stable"]
    # Neither the history list nor one record shows it.
    history = stack.client("history")
    listed = history.get("/", headers=stack.bearer("1")).get_json()["records"]
    assert listed
    assert all("shadow" not in record for record in listed)
    one = history.get(f"/{body['id']}", headers=stack.bearer("1")).get_json()
    assert "shadow" not in one
    assert one["id"] == body["id"]


def test_a_slow_shadow_does_not_hold_the_answer_beyond_its_budget(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(SHADOW="canary", SHADOW_BUDGET_MS="50")
    stack.fake.label_delay = {"canary": 0.8}
    started = time.perf_counter()
    response = _predict(stack, "1")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert elapsed < 0.6  # the canary takes 0.8 s; the answer did not wait for it
    stored = _stored(stack, "1", response.get_json()["id"])
    assert stored["shadow"] == {"label": "canary", "status": "late", "budget_ms": 50.0}


def test_a_failing_shadow_is_recorded_as_failed_and_the_caller_is_answered(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(SHADOW="canary")
    stack.fake.label_status = {"canary": 503}
    response = _predict(stack, "1")
    assert response.status_code == 200
    stored = _stored(stack, "1", response.get_json()["id"])
    assert stored["shadow"]["status"] == "error"
    assert stored["shadow"]["error"] == "model_unavailable"


def test_records_carry_the_image_statistics(stack: Stack) -> None:
    response = _predict(stack, "1")
    stats = response.get_json()["input"]["stats"]
    assert set(stats) == {"mean", "std"}
    assert 0 <= stats["mean"] <= 1
    assert 0 <= stats["std"] <= 0.5
    # Without CANARY_PERCENT or SHADOW: stable only, no canary client at all.
    assert stack.runtime.canary_serving is None
    assert response.get_json()["routed_to"] == "stable"
