"""Faults at the real seams: the model server as a separate process (down, killed mid-call,
hanging, garbage, version swaps) and S3 (moto's server) behind a TCP proxy that resets, loses
answers or stalls. Each fault gives its documented status within the deadline, and the store is
checked after each one: no partial record, no orphan image, no half-written users file.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from functions.users import parse_users_csv, update_users
from storage import StorageUnavailable, keys, open_areas
from tests.conftest import free_port
from tests.functions.conftest import Stack, error_of
from tests.functions.fake_serving_process import FakeServingProcess
from tests.functions.sample_images import png_bytes
from tests.functions.tcp_proxy import TcpProxy

# -- the model server, a process -------------------------------------------------------------


@pytest.fixture(scope="module")
def model_process() -> Iterator[FakeServingProcess]:
    process = FakeServingProcess(free_port()).start()
    yield process
    process.kill()


@pytest.fixture
def model_stack(
    stack_factory: Callable[..., Stack], model_process: FakeServingProcess
) -> Iterator[Stack]:
    if not model_process.running:  # a test before this one killed it
        model_process.start()
    model_process.control("reset")
    model_process.control("set", version=3)
    yield stack_factory(TF_SERVING_URL=model_process.url, TF_SERVING_DEADLINE="3")
    if not model_process.running:
        model_process.start()


def _predict(stack: Stack, user: str = "1") -> Any:
    return stack.client("predict").post(
        "/", data=png_bytes(), content_type="image/png", headers=stack.bearer(user)
    )


def _gradcam(stack: Stack) -> Any:
    return stack.client("gradcam").post(
        "/",
        data={"file": (io.BytesIO(png_bytes()), "x.png", "image/png")},
        headers=stack.bearer(),
    )


def _outputs(stack: Stack) -> list[str]:
    return stack.root.list_keys("output/")


def test_faults_model_server_down_is_503_then_recovers(
    model_stack: Stack, model_process: FakeServingProcess
) -> None:
    assert _predict(model_stack).status_code == 200  # a pooled connection to the old process
    model_process.kill()

    down = _predict(model_stack)

    assert down.status_code == 503
    assert error_of(down) == "model_unavailable"
    assert down.headers["Retry-After"] == "5"
    assert len(_outputs(model_stack)) == 1
    model_process.start()
    assert _predict(model_stack).status_code == 200
    assert len(_outputs(model_stack)) == 2


def test_faults_model_server_answering_503_trips_the_breaker_then_recovers(
    stack_factory: Callable[..., Stack], model_process: FakeServingProcess
) -> None:
    if not model_process.running:
        model_process.start()
    model_process.control("reset")
    stack = stack_factory(
        TF_SERVING_URL=model_process.url,
        TF_SERVING_DEADLINE="3",
        TF_SERVING_BREAKER_OPEN_SECONDS="0.5",
    )
    model_process.control("status", code=503)
    predict, image, bearer = stack.client("predict"), png_bytes(), stack.bearer("1")

    answers = [
        predict.post("/", data=image, content_type="image/png", headers=bearer) for _ in range(10)
    ]

    assert {answer.status_code for answer in answers} == {503}
    assert {error_of(answer) for answer in answers} == {"model_unavailable"}
    # Five failed attempts open the breaker (default): then no more upstream calls (how fast
    # the refusals are is measured in bench/, `python -m bench --only breaker`).
    assert model_process.report()["attempts"] == 5
    assert {answer.headers["Retry-After"] for answer in answers[2:]} == {"1"}
    assert _outputs(stack) == []
    model_process.control("reset")
    time.sleep(0.55)
    assert _predict(stack).status_code == 200  # the probe closes it


def test_faults_model_server_killed_mid_call_is_503_and_stores_nothing(
    model_stack: Stack, model_process: FakeServingProcess
) -> None:
    model_process.control("hang", seconds=60)

    def kill_when_called() -> None:
        deadline = time.monotonic() + 10
        while model_process.report()["attempts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        model_process.kill()

    killer = threading.Thread(target=kill_when_called)
    killer.start()
    response = _gradcam(model_stack)
    killer.join()

    assert response.status_code == 503
    assert error_of(response) == "model_unavailable"
    assert _outputs(model_stack) == []


@pytest.mark.parametrize("call", [_predict, _gradcam], ids=["predict", "gradcam"])
def test_faults_hanging_model_server_is_504_within_the_deadline(
    model_stack: Stack, model_process: FakeServingProcess, call: Callable[[Stack], Any]
) -> None:
    # The fake would answer 200 after 60 s; a 504 proves the call gave up at its deadline.
    model_process.control("hang", seconds=60)
    response = call(model_stack)
    assert response.status_code == 504
    assert error_of(response) == "model_timeout"
    assert _outputs(model_stack) == []


@pytest.mark.parametrize(
    ("action", "arguments", "status", "code"),
    [
        ("garbage", {}, 502, "model_bad_response"),
        ("wrong_shape", {}, 502, "model_bad_response"),
        ("non_finite", {}, 502, "model_bad_response"),
        ("status", {"code": 500}, 502, "model_error"),
        ("status", {"code": 400}, 502, "model_error"),
        ("status", {"code": 404}, 503, "model_unavailable"),  # a swap gap: no version loaded
        ("status", {"code": 503}, 503, "model_unavailable"),
        ("status", {"code": 429}, 503, "model_unavailable"),
        ("status", {"code": 504}, 504, "model_timeout"),
    ],
)
def test_faults_model_server_bad_answers_map_and_store_nothing(
    model_stack: Stack,
    model_process: FakeServingProcess,
    action: str,
    arguments: dict[str, Any],
    status: int,
    code: str,
) -> None:
    model_process.control(action, **arguments)
    for response in (_predict(model_stack), _gradcam(model_stack)):
        assert response.status_code == status
        assert error_of(response) == code
        assert model_process.url not in response.get_data(as_text=True)
    assert _outputs(model_stack) == []


def test_faults_dropped_connection_is_retried_once_and_recorded_once(
    model_stack: Stack, model_process: FakeServingProcess
) -> None:
    model_process.control("drop", times=1)
    response = _predict(model_stack)
    assert response.status_code == 200
    assert model_process.report()["attempts"] == 2
    assert _outputs(model_stack) == [keys.inference_record("1", response.get_json()["id"])]


def test_faults_version_swap_each_record_names_the_version_that_answered(
    model_stack: Stack, model_process: FakeServingProcess
) -> None:
    before = _predict(model_stack).get_json()
    model_process.control("set", version=4)
    after = _predict(model_stack).get_json()
    explained = _gradcam(model_stack)

    assert (before["model"]["version"], after["model"]["version"]) == (3, 4)
    assert explained.headers["X-Model-Version"] == "4"
    stored = model_stack.root.get_json(
        keys.inference_record("1", explained.headers["X-Inference-Id"])
    )
    assert stored["model"]["version"] == 4
    assert model_process.report()["versions_answered"] == [3, 4, 4]


def test_faults_swap_gap_then_new_version(
    model_stack: Stack, model_process: FakeServingProcess
) -> None:
    # Resource-preserving swap: the label answers 404 for a moment, then the new version.
    model_process.control("status", code=404, times=1)
    model_process.control("set", version=5)
    gap = _predict(model_stack)
    assert (gap.status_code, gap.headers["Retry-After"]) == (503, "5")
    assert _predict(model_stack).get_json()["model"]["version"] == 5
    assert len(_outputs(model_stack)) == 1


# -- S3 behind a TCP proxy ---------------------------------------------------------------------


@pytest.fixture
def proxy(moto_server: str) -> Iterator[TcpProxy]:
    target = urlparse(moto_server)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80).start()
    yield proxy
    proxy.heal()
    proxy.stop()


@pytest.fixture
def s3_stack(stack_factory: Callable[..., Stack], proxy: TcpProxy) -> Stack:
    """The functions on a moto bucket reached through the proxy (short S3 timeouts)."""
    return stack_factory(
        "s3",
        S3_ENDPOINT_URL=proxy.url,
        S3_CONNECT_TIMEOUT="1",
        S3_READ_TIMEOUT="1",
        S3_MAX_ATTEMPTS="3",
    )


def _put_of(stack: Stack, area: str) -> bytes:
    """The start of an S3 PUT request line for keys under `area` (path-style addressing)."""
    bucket_and_prefix = stack.env["STORAGE_URL"].removeprefix("s3://")
    return f"PUT /{bucket_and_prefix}/{area}".encode()


def test_faults_s3_reset_write_is_retried_and_recorded_once(
    s3_stack: Stack, proxy: TcpProxy
) -> None:
    proxy.reset_requests(times=1, match=_put_of(s3_stack, keys.INFERENCE_AREA))
    response = _predict(s3_stack)
    assert response.status_code == 200
    assert proxy.resets == 1
    assert _outputs(s3_stack) == [keys.inference_record("1", response.get_json()["id"])]


def test_faults_s3_lost_answer_to_a_record_write_is_recognised_not_duplicated(
    s3_stack: Stack, proxy: TcpProxy
) -> None:
    # The write happened, its answer was lost, boto3 retried and found the object there.
    proxy.lose_responses(times=1, match=_put_of(s3_stack, keys.INFERENCE_AREA))
    response = _predict(s3_stack)
    assert response.status_code == 200, response.get_json()
    assert proxy.lost_responses == 1
    (key,) = _outputs(s3_stack)
    assert s3_stack.root.get_json(key) == response.get_json()


def test_faults_s3_lost_answers_to_gradcam_writes_are_recognised(
    s3_stack: Stack, proxy: TcpProxy
) -> None:
    proxy.lose_responses(times=1, match=_put_of(s3_stack, keys.GRAD_CAM_AREA))
    proxy.lose_responses(times=1, match=_put_of(s3_stack, keys.INFERENCE_AREA))
    response = _gradcam(s3_stack)
    assert response.status_code == 200
    assert proxy.lost_responses == 2
    inference_id = response.headers["X-Inference-Id"]
    assert sorted(_outputs(s3_stack)) == sorted(
        [keys.inference_record("1", inference_id), keys.gradcam_image("1", inference_id)]
    )
    assert s3_stack.root.get_bytes(keys.gradcam_image("1", inference_id)) == response.data


def test_faults_s3_persistent_write_failure_is_503_with_no_partial_state(
    s3_stack: Stack, proxy: TcpProxy
) -> None:
    proxy.reset_requests(times=None, match=_put_of(s3_stack, keys.INFERENCE_AREA))
    predicted, explained = _predict(s3_stack), _gradcam(s3_stack)

    for response in (predicted, explained):
        assert response.status_code == 503
        assert error_of(response) == "storage_unavailable"
        assert response.headers["Retry-After"] == "5"
        assert "output/" not in response.get_data(as_text=True)
    # No record, and the overlay written before the failed record was taken back.
    assert proxy.resets >= 6  # every attempt of both calls
    assert _outputs(s3_stack) == []


def test_faults_s3_stalled_write_is_503_and_never_lands_later(
    stack_factory: Callable[..., Stack], proxy: TcpProxy
) -> None:
    stack = stack_factory(
        "s3",
        S3_ENDPOINT_URL=proxy.url,
        S3_CONNECT_TIMEOUT="1",
        S3_READ_TIMEOUT="0.5",
        S3_MAX_ATTEMPTS="2",
    )
    proxy.stall(match=_put_of(stack, keys.INFERENCE_AREA))
    response = _predict(stack)
    proxy.heal()  # what was held is dropped: its client gave up at its read timeout

    assert response.status_code == 503
    assert error_of(response) == "storage_unavailable"
    assert _outputs(stack) == []
    assert _predict(stack).status_code == 200  # healed


def test_faults_s3_users_file_unreadable_is_503_and_calls_nothing(
    s3_stack: Stack, proxy: TcpProxy
) -> None:
    bucket_and_prefix = s3_stack.env["STORAGE_URL"].removeprefix("s3://")
    for method in (b"GET", b"HEAD"):
        proxy.reset_requests(
            times=None, match=method + f" /{bucket_and_prefix}/{keys.AUTH_AREA}".encode()
        )
    response = _predict(s3_stack)
    assert response.status_code == 503
    assert error_of(response) == "storage_unavailable"
    assert s3_stack.fake.requests == []
    proxy.heal()
    assert _outputs(s3_stack) == []


def test_faults_s3_users_file_is_never_half_updated(s3_stack: Stack, proxy: TcpProxy) -> None:
    auth = open_areas(s3_stack.runtime.settings.storage).auth
    before = auth.get_bytes(keys.USERS_FILE)
    users_put = _put_of(s3_stack, keys.AUTH_AREA + keys.USERS_FILE)

    # A write that keeps failing leaves the file exactly as it was.
    proxy.reset_requests(times=None, match=users_put)
    with pytest.raises(StorageUnavailable):
        update_users(auth, lambda table: table.updated("3", disabled=True), sleep=lambda _: None)
    assert auth.get_bytes(keys.USERS_FILE) == before
    proxy.heal()

    # A write whose answer is lost: the retry's If-Match fails on our own write, the change is
    # re-read and re-applied, and the file holds every user once, changed once.
    proxy.lose_responses(times=1, match=users_put)
    update_users(auth, lambda table: table.updated("3", disabled=True), sleep=lambda _: None)
    table = parse_users_csv(auth.get_bytes(keys.USERS_FILE))
    assert table.problems == ()
    assert [user.id for user in table.users] == ["1", "2", "3", "4"]
    assert table.by_id("3").disabled  # type: ignore[union-attr]
    assert proxy.lost_responses == 1
