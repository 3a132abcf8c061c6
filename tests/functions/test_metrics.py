"""Prometheus metrics of the functions (functions/metrics.py): what a request records, the
storage and breaker metrics, the endpoint on its own port (handed to a forked worker), the
gateway serving it apart from the public port, and nothing at all when not configured."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from functions import metrics
from functions.breaker import BreakerSettings, CircuitBreaker
from storage import ObjectNotFound, PreconditionFailed
from storage.local import LocalStore
from tests.conftest import free_port
from tests.functions.conftest import PASSWORDS, Stack
from tests.functions.fake_serving import FakeTFServing
from tests.functions.gateway_process import ROOT, gateway_environment, start_gateway, stop_gateway
from tests.functions.sample_images import png_bytes


@pytest.fixture(autouse=True)
def _metrics_on() -> None:
    metrics.enable()  # once per process; recording only (no endpoint)


def _value(name: str, **labels: str) -> float:
    return metrics.sample(name, labels) or 0.0


def _sum(name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include these."""
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


class _Delta:
    """Counter values before and after a block, for the labels asked."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.before = _value(name, **labels)

    @property
    def value(self) -> float:
        return _value(self.name, **self.labels) - self.before


def test_metrics_settings_read_the_port_host_and_multiprocess_folder() -> None:
    assert not metrics.MetricsSettings.from_env({}).enabled
    settings = metrics.MetricsSettings.from_env({"METRICS_PORT": "9464", "METRICS_HOST": "0.0.0.0"})
    assert (settings.port, settings.host, settings.enabled) == (9464, "0.0.0.0", True)
    only_folder = metrics.MetricsSettings.from_env({"PROMETHEUS_MULTIPROC_DIR": "/tmp/m"})
    assert only_folder.enabled
    assert only_folder.port is None
    with pytest.raises(ValueError, match="METRICS_PORT"):
        metrics.MetricsSettings.from_env({"METRICS_PORT": "http"})
    with pytest.raises(ValueError, match="METRICS_PORT"):
        metrics.MetricsSettings.from_env({"METRICS_PORT": "70000"})


def test_metrics_requests_latency_model_version_classes_and_logins(stack: Stack) -> None:
    predict_ok = _Delta(
        "xray_requests_total", function="predict", route="/", method="POST", status="200", error=""
    )
    unauthenticated = _Delta(
        "xray_requests_total",
        function="predict",
        route="/",
        method="POST",
        status="401",
        error="authentication_required",
    )
    model_part = _Delta(
        "xray_request_duration_seconds_count", function="predict", route="/", part="model"
    )
    own_part = _Delta(
        "xray_request_duration_seconds_count", function="predict", route="/", part="own"
    )
    answers = _Delta(
        "xray_model_answers_total",
        function="predict",
        model_name="cnn_vit",
        model_version="3",
        model_label="stable",
    )
    covid = _Delta(
        "xray_predictions_total",
        model_name="cnn_vit",
        model_version="3",
        model_label="stable",
        predicted_class="covid",
        decision="covid",
    )
    confidence = _Delta(
        "xray_prediction_confidence_count",
        model_name="cnn_vit",
        model_version="3",
        model_label="stable",
    )
    calls_before = _sum("xray_model_calls_total", outcome="200")
    bad_password = _Delta("xray_login_failures_total", reason="bad_credentials")
    not_found = _Delta(
        "xray_requests_total",
        function="history",
        route="unknown",
        method="GET",
        status="404",
        error="not_found",
    )

    predict = stack.client("predict")
    for _ in range(3):
        answer = predict.post(
            "/", data=png_bytes(), content_type="image/png", headers=stack.bearer()
        )
        assert answer.status_code == 200, answer.get_json()
    assert predict.post("/", data=png_bytes(), content_type="image/png").status_code == 401
    refused = stack.client("auth").post(
        "/token",
        data={"grant_type": "password", "username": "alice@example.com", "password": "wrong"},
    )
    assert refused.status_code == 400
    assert stack.client("history").get("/a/b/c/d").status_code == 404

    assert predict_ok.value == 3
    assert unauthenticated.value == 1
    assert model_part.value == 3  # only inferences spend model time
    assert own_part.value == 4
    assert answers.value == 3
    assert covid.value == 3, "the fake predicts class index 1 (covid)"
    assert confidence.value == 3
    assert _sum("xray_model_calls_total", outcome="200") - calls_before == 3
    assert bad_password.value == 1
    assert not_found.value == 1
    # The model part never exceeds the request's total.
    total = _value("xray_request_duration_seconds_sum", function="predict", route="/", part="total")
    model = _value("xray_request_duration_seconds_sum", function="predict", route="/", part="model")
    assert 0 < model <= total


def test_metrics_login_throttle_is_counted_by_scope(stack_factory: object) -> None:
    stack: Stack = stack_factory(LOGIN_MAX_FAILURES_PER_CLIENT="2")  # type: ignore[operator]
    throttled = _Delta("xray_login_throttled_total", scope="client")
    auth = stack.client("auth")
    statuses = [
        auth.post(
            "/token",
            data={"grant_type": "password", "username": "bob@example.com", "password": "no"},
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [400, 400, 429]
    assert throttled.value == 1
    ok = auth.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "alice@example.com",
            "password": PASSWORDS["1"],
        },
    )
    assert ok.status_code == 429  # the same client address is throttled for everyone
    assert throttled.value == 2


def test_metrics_storage_calls_are_timed_and_counted_by_outcome(tmp_path: Path) -> None:
    store = metrics.metered(LocalStore(tmp_path), "root")
    assert isinstance(store, metrics.MeteredStore)
    assert metrics.metered(store, "root") is store
    puts = _Delta("xray_storage_operations_total", store="root", operation="put", outcome="ok")
    conflicts = _Delta(
        "xray_storage_operations_total", store="root", operation="put", outcome="conflict"
    )
    missing = _Delta(
        "xray_storage_operations_total", store="root", operation="get", outcome="not_found"
    )
    lists = _Delta("xray_storage_operations_total", store="root", operation="list", outcome="ok")
    timed = _Delta("xray_storage_operation_duration_seconds_count", store="root", operation="put")

    store.put("a/1", b"one", if_none_match=True)
    store.put_json("a/2", {"two": 2})
    with pytest.raises(PreconditionFailed):
        store.put("a/1", b"again", if_none_match=True)
    with pytest.raises(ObjectNotFound):
        store.get("a/missing")
    assert store.get_bytes("a/1") == b"one"
    assert store.list_keys("a/") == ["a/1", "a/2"]
    assert [info.key for info in store.child("a").list()] == ["1", "2"]

    assert puts.value == 2
    assert conflicts.value == 1
    assert missing.value == 1
    assert lists.value == 2
    assert timed.value == 3


def test_metrics_breaker_state_is_a_gauge_per_endpoint() -> None:
    clock = [0.0]
    breaker = CircuitBreaker(
        "test-endpoint", BreakerSettings(failures=2, open_seconds=5), clock=lambda: clock[0]
    )

    def state(name: str) -> float:
        return _value("xray_model_breaker_state", endpoint="test-endpoint", state=name)

    assert (state("closed"), state("open")) == (1, 0)
    for _ in range(2):
        breaker.allow().failure("HTTP 503")
    assert (state("closed"), state("open")) == (0, 1)
    clock[0] = 6.0
    breaker.allow().success()
    assert (state("closed"), state("half_open"), state("open")) == (1, 0, 0)


_FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from functions import metrics

    port = int(sys.argv[1])
    assert metrics.serve(metrics.MetricsSettings(port=port))
    pid = os.fork()
    if pid == 0:
        # The worker: it records, and it now serves the port.
        metrics.request("predict", "/", "POST", 200, None, 0.5, 0.2)
        time.sleep(30)
        os._exit(0)
    print(pid, flush=True)
    time.sleep(30)
    """
)


def test_metrics_endpoint_moves_to_the_forked_worker(tmp_path: Path) -> None:
    """What gunicorn does (functions-framework and the gateway build the app, then fork):
    the worker that records is the one that answers the scrape."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _FORK_SCRIPT, str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    try:
        deadline = time.monotonic() + 15
        text = ""
        while time.monotonic() < deadline:
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.ConnectionError:
                text = ""
            if "xray_requests_total{" in text:
                break
            time.sleep(0.05)
        assert (
            'xray_requests_total{error="",function="predict",method="POST",route="/",'
            'status="200"} 1.0' in text
        )
        assert 'xray_request_duration_seconds_count{function="predict",part="model"' in text
    finally:
        os.kill(child, 9)
        process.kill()
        process.wait()


def test_metrics_nothing_is_imported_or_served_when_not_configured(tmp_path: Path) -> None:
    """No METRICS_PORT and no OTLP endpoint: prometheus_client and OpenTelemetry stay out of
    the process (a function's cold start pays nothing for them)."""
    script = textwrap.dedent(
        """
        import sys
        import functions_framework
        from functions import metrics, tracing
        functions_framework.create_app("predict", sys.argv[1])
        print(metrics.enabled(), tracing.active(),
              "prometheus_client" in sys.modules,
              any(name.startswith("opentelemetry") for name in sys.modules))
        """
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("METRICS_", "PROMETHEUS_", "OTEL_"))
    }
    env.update(SECRET_KEY="k" * 48, PYTHONPATH=str(ROOT), STORAGE_URL=str(tmp_path / "store"))
    result = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "functions" / "main.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False", "False"]


@pytest.fixture
def metered_gateway(tmp_path: Path, fake_serving: FakeTFServing) -> Iterator[tuple[str, str]]:
    env = gateway_environment(tmp_path, fake_serving)
    port = free_port()
    env["METRICS_PORT"] = str(port)
    gateway = start_gateway(tmp_path, env)
    try:
        yield gateway.url, f"http://127.0.0.1:{port}/metrics"
    finally:
        stop_gateway(gateway)


def test_metrics_gateway_serves_them_on_their_own_port_never_the_public_one(
    metered_gateway: tuple[str, str],
) -> None:
    api, scrape = metered_gateway
    token = requests.post(
        api + "/auth/token",
        data={
            "grant_type": "password",
            "username": "alice@example.com",
            "password": PASSWORDS["1"],
        },
        timeout=10,
    ).json()["access_token"]
    for _ in range(2):
        answer = requests.post(
            api + "/predict",
            data=png_bytes(),
            headers={"Content-Type": "image/png", "Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    for path in ("/metrics", "/auth/metrics", "/predict/metrics"):
        public = requests.get(api + path, timeout=10)
        assert public.status_code in (404, 405), path
        assert public.headers["Content-Type"].startswith("application/json"), path
        assert "xray_requests_total" not in public.text
    text = requests.get(scrape, timeout=10).text
    assert (
        'xray_requests_total{error="",function="predict",method="POST",route="/",'
        'status="200"} 2.0' in text
    )
    assert (
        'xray_requests_total{error="",function="auth",method="POST",route="/token",'
        'status="200"} 1.0' in text
    )
    assert (
        'xray_model_answers_total{function="predict",model_label="stable",'
        'model_name="cnn_vit",model_version="3"} 2.0' in text
    )


def test_metrics_the_runtime_meters_its_stores(stack: Stack) -> None:
    """The functions' own stores are metered: a prediction's record write and the users file
    read show up under `root` and `auth`."""
    writes = _Delta("xray_storage_operations_total", store="root", operation="put", outcome="ok")
    reads_before = _sum("xray_storage_operations_total", store="auth")
    response = stack.client("predict").post(
        "/", data=png_bytes(), headers={**stack.bearer("1"), "Content-Type": "image/png"}
    )
    assert response.status_code == 200
    assert writes.value >= 1
    assert _sum("xray_storage_operations_total", store="auth") > reads_before  # users file
