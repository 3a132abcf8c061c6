"""Traces across the function -> model server hop (functions/tracing.py): a SERVER span per
request continuing the caller's trace, a CLIENT span per model call, the `traceparent` the
model server receives, the ids in the access log; off without an endpoint."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from functions import tracing
from tests.functions.conftest import Stack
from tests.functions.fake_serving import FakeTFServing
from tests.functions.sample_images import png_bytes

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


class _RecordingProxy:
    """Forwards every POST to the fake model server and keeps the headers it received."""

    def __init__(self, upstream: str) -> None:
        self.headers: list[dict[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_POST(self) -> None:
                proxy.headers.append({k.lower(): v for k, v in self.headers.items()})
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                forwarded = urllib.request.Request(
                    upstream + self.path, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(forwarded, timeout=10) as answer:
                    data, status = answer.read(), answer.status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy(fake_serving: FakeTFServing) -> Iterator[_RecordingProxy]:
    recording = _RecordingProxy(fake_serving.url)
    yield recording
    recording.stop()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.reset()


def _access_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "functions.access"]


def test_tracing_settings_endpoint_service_and_off_switch() -> None:
    read = tracing.TracingSettings.from_env
    assert read({}).endpoint is None
    assert read({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}).endpoint == (
        "http://collector:4318/v1/traces"
    )
    both = read(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
            "OTEL_SERVICE_NAME": "predict",
        }
    )
    assert (both.endpoint, both.service_name) == ("http://traces:4318/custom", "predict")
    assert (
        read({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}).endpoint
        is None
    )
    with pytest.raises(ValueError, match="OTLP endpoint"):
        read({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


def test_tracing_configured_endpoint_exports_over_otlp_http() -> None:
    assert not tracing.configure(tracing.TracingSettings())
    assert not tracing.active()
    try:
        assert tracing.configure(tracing.TracingSettings(endpoint="http://127.0.0.1:9/v1/traces"))
        assert tracing.active()
        tracer = tracing._tracer
        assert tracer is not None
        processor = tracer.processor
        assert type(processor).__name__ == "BatchSpanProcessor"
    finally:
        tracing.reset()
    assert not tracing.active()


def test_tracing_request_and_model_call_spans_share_the_callers_trace(
    stack_factory: Any,
    proxy: _RecordingProxy,
    spans: InMemorySpanExporter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack: Stack = stack_factory(TF_SERVING_URL=proxy.url)
    capsys.readouterr()
    answer = stack.client("predict").post(
        "/",
        data=png_bytes(),
        content_type="image/png",
        headers={**stack.bearer(), "traceparent": CALLER_TRACEPARENT, "X-Request-ID": "req-7"},
    )
    assert answer.status_code == 200, answer.get_json()

    finished = spans.get_finished_spans()
    (server,) = [span for span in finished if span.kind == SpanKind.SERVER]
    clients = [span for span in finished if span.kind == SpanKind.CLIENT]
    assert len(clients) == 1
    (client,) = clients
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert client.context.trace_id == server.context.trace_id
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert server.name == "predict /"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["xray.request_id"] == "req-7"
    assert server.attributes["xray.model.version"] == 3
    assert client.attributes["http.response.status_code"] == 200

    # The model server got the client span's context.
    (received,) = proxy.headers
    client_span_id = format(client.context.span_id, "016x")
    assert received["traceparent"] == f"00-{CALLER_TRACE}-{client_span_id}-01"

    (line,) = _access_lines(capsys.readouterr().out)
    assert line["request_id"] == "req-7"
    assert line["trace_id"] == CALLER_TRACE


def test_tracing_a_request_without_a_caller_trace_starts_one(
    stack_factory: Any, proxy: _RecordingProxy, spans: InMemorySpanExporter
) -> None:
    stack: Stack = stack_factory(TF_SERVING_URL=proxy.url)
    answer = stack.client("gradcam").post(
        "/", data=png_bytes(), content_type="image/png", headers=stack.bearer()
    )
    assert answer.status_code == 200
    finished = spans.get_finished_spans()
    (server,) = [span for span in finished if span.kind == SpanKind.SERVER]
    assert server.parent is None
    trace_id = format(server.context.trace_id, "032x")
    assert all(f"-{trace_id}-" in headers["traceparent"] for headers in proxy.headers)
    assert len(proxy.headers) >= 1


def test_tracing_a_failed_model_call_is_an_error_span(
    stack: Stack, fake_serving: FakeTFServing, spans: InMemorySpanExporter
) -> None:
    fake_serving.status(500, b'{"error": "boom"}')
    answer = stack.client("predict").post(
        "/", data=png_bytes(), content_type="image/png", headers=stack.bearer()
    )
    assert answer.status_code == 502
    finished = spans.get_finished_spans()
    (server,) = [span for span in finished if span.kind == SpanKind.SERVER]
    clients = [span for span in finished if span.kind == SpanKind.CLIENT]
    assert clients
    assert all(span.status.status_code.name == "ERROR" for span in clients)
    assert server.status.status_code.name == "ERROR"
    assert server.attributes["xray.error"]


def test_tracing_off_makes_no_span_and_passes_the_callers_traceparent_through(
    stack_factory: Any, proxy: _RecordingProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not tracing.active()
    stack: Stack = stack_factory(TF_SERVING_URL=proxy.url)
    client = stack.client("predict")
    capsys.readouterr()
    traced = client.post(
        "/",
        data=png_bytes(),
        content_type="image/png",
        headers={**stack.bearer(), "traceparent": CALLER_TRACEPARENT},
    )
    untraced = client.post(
        "/",
        data=png_bytes(),
        content_type="image/png",
        headers={**stack.bearer(), "traceparent": "00-not-a-trace-01"},
    )
    assert traced.status_code == untraced.status_code == 200
    first, second = proxy.headers
    assert first["traceparent"] == CALLER_TRACEPARENT
    assert "traceparent" not in second
    lines = _access_lines(capsys.readouterr().out)
    assert [line["trace_id"] for line in lines] == [CALLER_TRACE, None]
    assert all(line["request_id"] for line in lines)
