"""Prometheus metrics of the functions, served on their own port (never the public one).

Off unless asked for: with neither `METRICS_PORT` nor `PROMETHEUS_MULTIPROC_DIR` set, nothing
is recorded and `prometheus_client` is not even imported (a function's cold start pays nothing).
With `METRICS_PORT`, the process serves `/metrics` (any path, in fact) on
`METRICS_HOST:METRICS_PORT` (default host 127.0.0.1; a container sets 0.0.0.0), a port no
public route leads to. Under gunicorn (functions-framework and the gateway both fork their
workers from the process that built the app), the endpoint moves to the worker at fork time:
the worker serves what it records. Several workers need `PROMETHEUS_MULTIPROC_DIR` (a real
environment variable, read by prometheus_client itself when imported): each worker writes its
values there and whichever worker holds the port serves them all.

What is recorded (label values are bounded: route templates, error codes, model names,
versions and labels, the model's own class names):

| metric | labels |
|---|---|
| `xray_requests_total` | function, route, method, status, error |
| `xray_request_duration_seconds` (histogram) | function, route, part (`total`, `model`, `own`) |
| `xray_model_answers_total` | function, model_name, model_version, model_label |
| `xray_predictions_total` | model_name, model_version, model_label, predicted_class, decision |
| `xray_prediction_confidence` (histogram) | model_name, model_version, model_label |
| `xray_shadow_calls_total` | status |
| `xray_model_calls_total` | endpoint, outcome |
| `xray_model_call_duration_seconds` (histogram) | endpoint |
| `xray_model_breaker_state` (gauge, 1 on the current state) | endpoint, state |
| `xray_storage_operations_total` | store, operation, outcome |
| `xray_storage_operation_duration_seconds` (histogram) | store, operation |
| `xray_login_failures_total` | reason |
| `xray_login_throttled_total` | scope |

`model` time is what the inference spent calling the model server (`model_ms` in the access
log); `own` is the rest of the request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from common.logs import log_event
from common.settings import EnvReader
from storage import ObjectNotFound, PreconditionFailed, Store
from storage.base import ObjectInfo, StoredObject

__all__ = [
    "MeteredStore",
    "MetricsSettings",
    "breaker_state",
    "enable",
    "enabled",
    "inference",
    "login_failure",
    "login_throttled",
    "metered",
    "model_call",
    "request",
    "serve",
    "setup",
]

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_HOST = "127.0.0.1"
# Request latency: 5 ms to 30 s (a cold model, a Grad-CAM on CPU).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STORAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# Confidence of the predicted class: finer near 1, where a well-calibrated model mostly answers.
_CONFIDENCE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BREAKER_STATES = ("closed", "half_open", "open")


@dataclass(frozen=True)
class MetricsSettings:
    """METRICS_PORT (unset: no endpoint), METRICS_HOST, PROMETHEUS_MULTIPROC_DIR."""

    port: int | None = None
    host: str = DEFAULT_HOST
    multiprocess_dir: str | None = None

    @property
    def enabled(self) -> bool:
        return self.port is not None or self.multiprocess_dir is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MetricsSettings:
        env = EnvReader(environ, "functions (metrics)")
        port: int | None = None
        if env.raw("METRICS_PORT") is not None:
            port = env.integer("METRICS_PORT", 0, minimum=1, maximum=65535) or None
        host = env.string("METRICS_HOST", DEFAULT_HOST)
        multiprocess_dir = env.optional(MULTIPROC_ENV)
        env.check()
        return cls(port=port, host=host, multiprocess_dir=multiprocess_dir)


class _Metrics:
    """The metric objects; built once per process, when metrics are enabled."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "xray_requests",
            "Requests answered, by function, route template, method, status and error code",
            ["function", "route", "method", "status", "error"],
        )
        self.duration = Histogram(
            "xray_request_duration_seconds",
            "Request latency: total, time spent calling the model server, and the rest (own)",
            ["function", "route", "part"],
            buckets=_LATENCY_BUCKETS,
        )
        self.answers = Counter(
            "xray_model_answers",
            "Inference answers, by the model version that gave them",
            ["function", "model_name", "model_version", "model_label"],
        )
        self.predictions = Counter(
            "xray_predictions",
            "Predicted classes per model version and decision",
            ["model_name", "model_version", "model_label", "predicted_class", "decision"],
        )
        self.confidence = Histogram(
            "xray_prediction_confidence",
            "Probability of the predicted class, per model version",
            ["model_name", "model_version", "model_label"],
            buckets=_CONFIDENCE_BUCKETS,
        )
        self.shadow = Counter(
            "xray_shadow_calls", "Shadow calls to the canary, by outcome", ["status"]
        )
        self.model_calls = Counter(
            "xray_model_calls",
            "HTTP calls (attempts) to the model server, by endpoint and outcome",
            ["endpoint", "outcome"],
        )
        self.model_call_duration = Histogram(
            "xray_model_call_duration_seconds",
            "Duration of one HTTP call to the model server",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
        )
        self.breaker = Gauge(
            "xray_model_breaker_state",
            "Circuit breaker of a model endpoint: 1 on its current state",
            ["endpoint", "state"],
            multiprocess_mode="livemax",
        )
        self.storage = Counter(
            "xray_storage_operations",
            "Storage calls by store, operation and outcome (ok, not_found, conflict, error)",
            ["store", "operation", "outcome"],
        )
        self.storage_duration = Histogram(
            "xray_storage_operation_duration_seconds",
            "Duration of one storage call",
            ["store", "operation"],
            buckets=_STORAGE_BUCKETS,
        )
        self.login_failures = Counter("xray_login_failures", "Failed logins, by reason", ["reason"])
        self.login_throttled = Counter(
            "xray_login_throttled", "Logins refused by the throttle, by scope", ["scope"]
        )


_metrics: _Metrics | None = None
_lock = threading.Lock()


def enabled() -> bool:
    return _metrics is not None


def enable() -> None:
    """Record from now on in this process (idempotent). Imports prometheus_client."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()


# -- recording (each a no-op while metrics are off) ---------------------------------------------


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def request(
    function: str,
    route: str,
    method: str,
    status: int,
    error: str | None,
    total_seconds: float,
    model_seconds: float | None,
) -> None:
    metrics = _metrics
    if metrics is None:
        return
    method = method if method in _METHODS else "other"
    metrics.requests.labels(function, route, method, str(status), error or "").inc()
    metrics.duration.labels(function, route, "total").observe(total_seconds)
    own = total_seconds
    if model_seconds is not None:
        model_seconds = min(max(model_seconds, 0.0), total_seconds)
        metrics.duration.labels(function, route, "model").observe(model_seconds)
        own = total_seconds - model_seconds
    metrics.duration.labels(function, route, "own").observe(own)


def inference(function: str, fields: Mapping[str, Any]) -> None:
    """One answered inference, from the fields `web.note` collected (model_version...)."""
    metrics = _metrics
    if metrics is None or fields.get("model_version") is None:
        return
    model = (
        _label(fields.get("model_name")),
        _label(fields.get("model_version")),
        _label(fields.get("model_label") or "stable"),
    )
    metrics.answers.labels(function, *model).inc()
    predicted = fields.get("predicted_class")
    if predicted is not None:
        metrics.predictions.labels(*model, str(predicted), _label(fields.get("decision"))).inc()
    confidence = fields.get("confidence")
    if isinstance(confidence, int | float) and not isinstance(confidence, bool):
        metrics.confidence.labels(*model).observe(float(confidence))
    shadow = fields.get("shadow")
    if shadow:
        metrics.shadow.labels(str(shadow)).inc()


def model_call(endpoint: str, outcome: str, seconds: float) -> None:
    metrics = _metrics
    if metrics is None:
        return
    metrics.model_calls.labels(endpoint, outcome).inc()
    metrics.model_call_duration.labels(endpoint).observe(seconds)


def breaker_state(endpoint: str, state: str) -> None:
    metrics = _metrics
    if metrics is None:
        return
    for each in _BREAKER_STATES:
        metrics.breaker.labels(endpoint, each).set(1 if each == state else 0)


def login_failure(reason: str) -> None:
    if _metrics is not None:
        _metrics.login_failures.labels(reason).inc()


def login_throttled(scope: str) -> None:
    if _metrics is not None:
        _metrics.login_throttled.labels(scope).inc()


def _storage(store: str, operation: str, outcome: str, seconds: float) -> None:
    metrics = _metrics
    if metrics is None:
        return
    metrics.storage.labels(store, operation, outcome).inc()
    metrics.storage_duration.labels(store, operation).observe(seconds)


# -- storage -----------------------------------------------------------------------------------


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, ObjectNotFound):
        return "not_found"
    if isinstance(exc, PreconditionFailed):
        return "conflict"
    return "error"


class MeteredStore(Store):
    """A store whose calls are timed and counted (`xray_storage_*`), by outcome."""

    def __init__(self, inner: Store, name: str) -> None:
        self._inner = inner
        self._name = name

    def _timed(self, operation: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = call(*args, **kwargs)
        except BaseException as exc:
            _storage(self._name, operation, _outcome(exc), time.perf_counter() - started)
            raise
        _storage(self._name, operation, "ok", time.perf_counter() - started)
        return result

    def get(self, key: str) -> StoredObject:
        result: StoredObject = self._timed("get", self._inner.get, key)
        return result

    def head(self, key: str) -> ObjectInfo:
        result: ObjectInfo = self._timed("head", self._inner.head, key)
        return result

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        result: ObjectInfo = self._timed(
            "put",
            self._inner.put,
            key,
            data,
            content_type=content_type,
            if_none_match=if_none_match,
            if_match=if_match,
        )
        return result

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Timed over the whole listing (pages are fetched lazily): the caller's wait."""
        spent = 0.0
        outcome: str | None = None
        items = self._inner.list(prefix, start_after=start_after, page_size=page_size)
        try:
            while True:
                started = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    spent += time.perf_counter() - started
                    outcome = "ok"
                    return
                except BaseException as exc:
                    spent += time.perf_counter() - started
                    outcome = _outcome(exc)
                    raise
                spent += time.perf_counter() - started
                yield item
        finally:
            # A listing abandoned early (the caller had enough) counts as ok.
            _storage(self._name, "list", outcome or "ok", spent)

    def delete(self, key: str) -> None:
        self._timed("delete", self._inner.delete, key)

    def describe(self) -> str:
        return self._inner.describe()

    def copy(self, source_key: str, destination_key: str, **options: Any) -> ObjectInfo:
        result: ObjectInfo = self._timed(
            "copy", self._inner.copy, source_key, destination_key, **options
        )
        return result


def metered(store: Store, name: str) -> Store:
    """`store`, timed and counted as `name` when metrics are on; itself otherwise."""
    if _metrics is None or isinstance(store, MeteredStore):
        return store
    return MeteredStore(store, name)


# -- the endpoint ------------------------------------------------------------------------------


class _Endpoint:
    """The metrics HTTP server of this process, handed to the child when the process forks."""

    def __init__(self, settings: MetricsSettings) -> None:
        self.settings = settings
        self.server: Any = None
        self.pid = 0
        self.lock = threading.Lock()
        os.register_at_fork(before=self._before_fork, after_in_child=self._after_fork_in_child)

    def start(self) -> bool:
        from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

        settings = self.settings
        assert settings.port is not None
        with self.lock:
            if self.server is not None and self.pid == os.getpid():
                return True
            registry: Any = REGISTRY
            if os.environ.get(MULTIPROC_ENV):
                from prometheus_client import multiprocess

                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry)
            try:
                self.server, _ = start_http_server(settings.port, settings.host, registry)
            except OSError as exc:
                # Another worker of a multiprocess group holds it (and serves every worker's).
                self.server = None
                log_event(
                    logger,
                    "metrics_port_busy",
                    logging.INFO,
                    f"metrics port {settings.port} is served by another process",
                    reason=str(exc),
                )
                return False
            self.pid = os.getpid()
        log_event(
            logger,
            "metrics_serving",
            message=f"metrics on http://{settings.host}:{settings.port}/metrics",
            port=settings.port,
        )
        return True

    def _before_fork(self) -> None:
        # The forked child (a gunicorn worker) handles the requests: it takes the port over.
        with self.lock:
            if self.server is not None and self.pid == os.getpid():
                self.server.shutdown()
                self.server.server_close()
                self.server = None
                self.pid = -os.getpid()  # had one, handed over

    def _after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        if self.pid < 0:
            self.server, self.pid = None, 0
            self.start()


_endpoint: _Endpoint | None = None


def serve(settings: MetricsSettings) -> bool:
    """Serve this process's metrics on `settings.port` (once per process); False if busy."""
    global _endpoint
    if settings.port is None:
        return False
    enable()
    with _lock:
        if _endpoint is None:
            _endpoint = _Endpoint(settings)
        endpoint = _endpoint
    return endpoint.start()


def setup(settings: MetricsSettings) -> None:
    """Turn metrics on as the settings say (nothing when neither variable is set)."""
    if not settings.enabled:
        return
    enable()
    if settings.port is not None:
        serve(settings)


def sample(name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """One value of this process's default registry (tests, bench)."""
    from prometheus_client import REGISTRY

    value: float | None = REGISTRY.get_sample_value(name, dict(labels or {}))
    return value
