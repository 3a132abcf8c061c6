"""Fail fast: the circuit breaker's states (fake clock), then the model client in front of a fake
TF Serving that is down, hanging, flapping and recovering, and the bulkhead."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from common.settings import EnvReader, SettingsError
from functions.breaker import (
    BreakerSettings,
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpen,
)
from functions.errors import ApiError, ModelTimeout, ModelUnavailable
from functions.serving_client import ServingClient
from functions.settings import ServingSettings, _read_serving
from tests.functions.fake_serving import FakeTFServing
from tests.functions.sample_images import png_bytes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, **changes: Any) -> CircuitBreaker:
    return CircuitBreaker("cnn_vit/labels/stable", BreakerSettings(**changes), clock=clock)


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.allow().failure("HTTP 503")


# -- the breaker alone --------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_refuses_until_the_cool_down() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=3, open_seconds=5.0)

    _fail(breaker, 2)
    assert breaker.state == "closed"
    _fail(breaker, 1)

    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as caught:
        breaker.allow()
    assert caught.value.retry_after == 5
    clock.now += 3.2
    assert breaker.retry_after() == 2  # rounded up: never "come back now" too early


def test_breaker_success_resets_the_consecutive_count() -> None:
    breaker = _breaker(Clock(), failures=3, min_calls=100, window=100)

    for _ in range(10):
        _fail(breaker, 2)
        breaker.allow().success()

    assert breaker.state == "closed"


def test_breaker_opens_on_the_failure_rate_over_its_window() -> None:
    breaker = _breaker(Clock(), failures=100, failure_rate=0.5, window=10, min_calls=10)

    for index in range(9):  # alternating: never two failures in a row
        permit = breaker.allow()
        permit.success() if index % 2 else permit.failure()
    assert breaker.state == "closed"  # 5 failures in 9 calls: fewer than min_calls
    breaker.allow().success()
    assert breaker.state == "closed"  # the rate is judged when a call fails
    breaker.allow().failure()  # the window: the last 10 calls, 5 of them failed

    assert breaker.state == "open"
    assert breaker.stats()["transitions"] == {"closed->open": 1}


def test_breaker_half_open_lets_one_probe_through_and_closes_on_its_success() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=1, open_seconds=5.0)
    _fail(breaker, 1)
    clock.now += 5.0

    probe = breaker.allow()
    assert breaker.state == "half_open"
    with pytest.raises(CircuitOpen):
        breaker.allow()  # one probe at a time
    probe.success()

    assert breaker.state == "closed"
    breaker.allow().success()
    assert breaker.stats()["transitions"] == {
        "closed->open": 1,
        "open->half_open": 1,
        "half_open->closed": 1,
    }


def test_breaker_failed_probe_reopens_for_twice_as_long_up_to_the_cap() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=1, open_seconds=2.0, max_open_seconds=6.0)
    _fail(breaker, 1)
    waits = []
    for _ in range(4):
        clock.now += breaker.retry_after()
        breaker.allow().failure("still down")
        waits.append(breaker.retry_after())

    assert waits == [4, 6, 6, 6]
    clock.now += 6
    breaker.allow().success()
    _fail(breaker, 1)
    assert breaker.retry_after() == 2  # a success resets the cool-down


def test_breaker_released_probe_frees_the_slot_and_counts_nothing() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=1)
    _fail(breaker, 1)
    clock.now += 10

    breaker.allow().release()

    assert breaker.state == "half_open"
    breaker.allow().success()
    assert breaker.state == "closed"


def test_breaker_late_outcome_of_a_call_admitted_before_opening_changes_nothing() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=2)
    slow = breaker.allow()
    _fail(breaker, 2)

    slow.success()

    assert breaker.state == "open"


def test_bulkhead_refuses_one_call_beyond_its_limit_and_frees_slots() -> None:
    bulkhead = Bulkhead("m", 2)

    with bulkhead, bulkhead:
        with pytest.raises(BulkheadFull):
            bulkhead.__enter__()
        assert bulkhead.stats() == {"limit": 2, "in_flight": 2, "rejected": 1}
    with bulkhead:
        pass
    assert bulkhead.stats()["in_flight"] == 0


def test_breaker_settings_read_from_the_environment_with_their_problems() -> None:
    env = EnvReader(
        {
            "TF_SERVING_BREAKER_FAILURES": "3",
            "TF_SERVING_BREAKER_OPEN_SECONDS": "2.5",
            "TF_SERVING_MAX_IN_FLIGHT": "4",
        },
        "functions",
    )
    settings = _read_serving(env, {})
    env.check()

    assert settings.breaker.failures == 3
    assert settings.breaker.open_seconds == 2.5
    assert settings.breaker.max_in_flight == 4

    bad = EnvReader(
        {"TF_SERVING_BREAKER_WINDOW": "5", "TF_SERVING_BREAKER_MIN_CALLS": "6"}, "functions"
    )
    _read_serving(bad, {})
    with pytest.raises(SettingsError, match="MIN_CALLS"):
        bad.check()


# -- the model client in front of a fake TF Serving ---------------------------------------------


def _client(fake: FakeTFServing, read_timeout: float = 0.5, **breaker: Any) -> ServingClient:
    settings = ServingSettings(
        url=fake.url,
        connect_timeout=0.5,
        read_timeout=read_timeout,
        deadline=2.0,
        max_attempts=3,
        breaker=BreakerSettings(**{"failures": 3, "open_seconds": 0.5, **breaker}),
    )
    return ServingClient(settings, sleep=lambda _: None)


def _error(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def test_client_model_down_opens_the_breaker_then_answers_503_fast_with_no_call(
    fake_serving: FakeTFServing,
) -> None:
    client = _client(fake_serving)
    fake_serving.status(503)
    image = png_bytes()

    first = _error(lambda: client.predict([image]))
    calls_to_open = fake_serving.attempts
    for _ in range(10):
        error = _error(lambda: client.predict([image]))
        assert isinstance(error, ModelUnavailable)
        assert error.headers["Retry-After"] == "1"  # the cool-down left, rounded up

    assert isinstance(first, ModelUnavailable)
    assert calls_to_open == 3  # the first request's attempts opened it
    assert fake_serving.attempts == calls_to_open  # ten more requests, zero upstream calls
    assert client.health()["breaker"]["state"] == "open"
    assert client.health()["breaker"]["rejected"] == 10


def test_client_model_recovering_is_probed_after_the_cool_down_and_closes(
    fake_serving: FakeTFServing,
) -> None:
    client = _client(fake_serving, open_seconds=0.3)
    fake_serving.status(503)
    _error(lambda: client.predict([png_bytes()]))
    fake_serving.ok()

    time.sleep(0.35)
    (prediction,) = client.predict([png_bytes()])

    assert prediction.class_name == "covid"
    assert client.health()["breaker"]["state"] == "closed"
    assert client.health()["breaker"]["transitions"] == {
        "closed->open": 1,
        "open->half_open": 1,
        "half_open->closed": 1,
    }


def test_client_model_still_down_after_the_cool_down_costs_one_probe_call(
    fake_serving: FakeTFServing,
) -> None:
    client = _client(fake_serving, open_seconds=0.3)
    fake_serving.status(503)
    _error(lambda: client.predict([png_bytes()]))
    before = fake_serving.attempts

    time.sleep(0.35)
    error = _error(lambda: client.predict([png_bytes()]))

    assert isinstance(error, ModelUnavailable)
    assert fake_serving.attempts == before + 1  # the probe, not three retries
    assert client.health()["breaker"]["state"] == "open"
    assert client.health()["breaker"]["open_seconds"] == pytest.approx(0.6)


def test_client_hanging_model_opens_the_breaker_after_timeouts(
    fake_serving: FakeTFServing,
) -> None:
    client = _client(fake_serving, failures=2)
    fake_serving.hang(1.5)

    errors = [_error(lambda: client.predict([png_bytes()])) for _ in range(2)]
    fast = _error(lambda: client.predict([png_bytes()]))

    assert all(isinstance(error, ModelTimeout) for error in errors)
    assert isinstance(fast, ModelUnavailable)
    assert fake_serving.attempts == 2


def test_client_flapping_model_opens_on_the_failure_rate(fake_serving: FakeTFServing) -> None:
    client = _client(fake_serving, failures=100, window=10, min_calls=10, failure_rate=0.5)
    outcomes = []
    for index in range(30):
        if index % 2:
            fake_serving.status(500, times=1)  # every other call fails, never two in a row
        try:
            client.predict([png_bytes()])
            outcomes.append("ok")
        except ApiError as error:
            outcomes.append(error.code)

    assert "model_unavailable" in outcomes  # opened...
    assert outcomes[:10].count("model_unavailable") == 0  # ...not before the window filled
    assert fake_serving.attempts < 30


def test_client_refused_request_proves_the_server_alive(fake_serving: FakeTFServing) -> None:
    client = _client(fake_serving, failures=2)
    fake_serving.status(400, json.dumps({"error": "Invalid argument: bad image"}).encode())

    codes = [_error(lambda: client.predict([png_bytes()])).code for _ in range(5)]

    assert codes == ["model_error"] * 5
    assert client.health()["breaker"]["state"] == "closed"
    assert fake_serving.attempts == 5


def test_client_bulkhead_refuses_beyond_its_calls_in_flight_at_once(
    fake_serving: FakeTFServing,
) -> None:
    client = _client(fake_serving, max_in_flight=2, failures=100, read_timeout=2.0)
    fake_serving.hang(0.5, times=2)

    with ThreadPoolExecutor(2) as pool:
        hanging = [pool.submit(client.predict, [png_bytes()]) for _ in range(2)]
        deadline = time.monotonic() + 2
        while client.health()["bulkhead"]["in_flight"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = _error(lambda: client.predict([png_bytes()]))
        answers = [future.result() for future in hanging]

    assert isinstance(refused, ModelUnavailable)
    assert refused.headers["Retry-After"] == "1"
    assert [len(answer) for answer in answers] == [1, 1]
    assert fake_serving.attempts == 2
    assert client.health()["bulkhead"] == {"limit": 2, "in_flight": 0, "rejected": 1}
