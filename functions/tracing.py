"""Traces across the function -> model server hop (OpenTelemetry, W3C Trace Context).

On only when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
`OTEL_EXPORTER_OTLP_ENDPOINT` to which `/v1/traces` is added; `OTEL_SERVICE_NAME` names the
service, default `xray-functions`; `OTEL_SDK_DISABLED=true` turns it off). Then each request is a
SERVER span (continuing the caller's `traceparent`), each HTTP call to the model server a CLIENT
span under it, and the call carries that span's `traceparent`; spans are batched and exported
over OTLP/HTTP. Off, OpenTelemetry is never imported (no start-up or per-request cost): a
caller's valid `traceparent` is passed to the model server unchanged, so the model server's
side of a trace still joins the caller's, and its trace id is logged.

The access log line of a request carries `trace_id` (and `request_id`, as before).
"""

from __future__ import annotations

import contextvars
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from common.settings import EnvReader
from functions import metrics

__all__ = [
    "ModelCall",
    "RequestTrace",
    "TracingSettings",
    "active",
    "configure",
    "finish_request",
    "model_call",
    "reset",
    "start_request",
    "use_span_processor",
]

DEFAULT_SERVICE_NAME = "xray-functions"
# W3C Trace Context: version-traceid-parentid-flags, lower-case hex; all-zero ids are invalid.
_TRACEPARENT = re.compile(r"^00-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")

# The incoming traceparent of the request being handled (tracing off: passed through as is).
_incoming: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "xray_incoming_traceparent", default=None
)


@dataclass(frozen=True)
class TracingSettings:
    endpoint: str | None = None  # the OTLP/HTTP traces URL; None: tracing off
    service_name: str = DEFAULT_SERVICE_NAME

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TracingSettings:
        env = EnvReader(environ, "functions (tracing)")
        traces = env.optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        base = env.optional("OTEL_EXPORTER_OTLP_ENDPOINT")
        service = env.string("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)
        disabled = env.boolean("OTEL_SDK_DISABLED", False)
        endpoint = traces or (base.rstrip("/") + "/v1/traces" if base else None)
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            env.problem(f"the OTLP endpoint {endpoint!r} is not an http(s) URL")
        env.check()
        return cls(endpoint=None if disabled else endpoint, service_name=service)


class _Tracer:
    """The OpenTelemetry pieces, imported and built only when tracing is on."""

    def __init__(self, processor: Any, service_name: str) -> None:
        from opentelemetry import context, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.context = context
        self.trace = trace
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(processor)
        self.processor = processor
        self.tracer = self.provider.get_tracer("functions")
        self.propagator = TraceContextTextMapPropagator()
        self.server = trace.SpanKind.SERVER
        self.client = trace.SpanKind.CLIENT


_tracer: _Tracer | None = None
_lock = threading.Lock()


def active() -> bool:
    """Whether spans are made (an endpoint, or a test's processor, is configured)."""
    return _tracer is not None


def configure(settings: TracingSettings) -> bool:
    """Turn tracing on when the settings name an endpoint (once per process)."""
    global _tracer
    if settings.endpoint is None:
        return False
    with _lock:
        if _tracer is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            exporter = OTLPSpanExporter(endpoint=settings.endpoint)
            _tracer = _Tracer(BatchSpanProcessor(exporter), settings.service_name)
    return True


def use_span_processor(processor: Any, service_name: str = DEFAULT_SERVICE_NAME) -> None:
    """Trace into `processor` (tests: a SimpleSpanProcessor over an in-memory exporter)."""
    global _tracer
    with _lock:
        _tracer = _Tracer(processor, service_name)


def reset() -> None:
    """Tracing off again (tests)."""
    global _tracer
    with _lock:
        tracer, _tracer = _tracer, None
    if tracer is not None:
        tracer.provider.shutdown()


# -- a request ---------------------------------------------------------------------------------


@dataclass
class RequestTrace:
    trace_id: str | None
    span: Any = None
    token: Any = None
    incoming_token: Any = None


def start_request(incoming: str | None, name: str) -> RequestTrace:
    """Begin the request's trace from the caller's `traceparent` header value (a SERVER span,
    or only the incoming trace id when tracing is off)."""
    valid = incoming.strip().lower() if incoming else None
    if valid is not None and not _TRACEPARENT.match(valid):
        valid = None
    tracer = _tracer
    if tracer is None:
        trace_id = valid.split("-")[1] if valid else None
        return RequestTrace(trace_id, incoming_token=_incoming.set(valid))
    parent = tracer.propagator.extract({"traceparent": valid} if valid else {})
    span = tracer.tracer.start_span(name, context=parent, kind=tracer.server)
    token = tracer.context.attach(tracer.trace.set_span_in_context(span, parent))
    trace_id = format(span.get_span_context().trace_id, "032x")
    return RequestTrace(trace_id, span=span, token=token)


def finish_request(
    trace: RequestTrace, name: str, attributes: Mapping[str, Any], error: bool
) -> None:
    """End the request's span (idempotent) and restore the thread's context."""
    if trace.incoming_token is not None:
        _incoming.reset(trace.incoming_token)
        trace.incoming_token = None
    span, trace.span = trace.span, None
    if span is None:
        return
    tracer = _tracer
    span.update_name(name)
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value if isinstance(value, bool | int | float) else str(value))
    if error and tracer is not None:
        span.set_status(tracer.trace.Status(tracer.trace.StatusCode.ERROR))
    span.end()
    if trace.token is not None and tracer is not None:
        # OpenTelemetry logs (never raises) a token that belongs to another context.
        tracer.context.detach(trace.token)
        trace.token = None


# -- a model call ------------------------------------------------------------------------------


class ModelCall:
    """One HTTP attempt to the model server: headers to send, and its outcome."""

    __slots__ = ("headers", "outcome", "span")

    def __init__(self, headers: dict[str, str], span: Any) -> None:
        self.headers = headers
        self.span = span
        self.outcome = "error"

    def answered(self, status: int) -> None:
        self.outcome = str(status)
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status)


@contextmanager
def model_call(endpoint: str, url: str, attempt: int) -> Iterator[ModelCall]:
    """Around one HTTP call to the model server: its CLIENT span and `traceparent` header,
    and its duration and outcome in `xray_model_call*` (an exception counts as `error`)."""
    started = time.perf_counter()
    tracer = _tracer
    if tracer is None:
        incoming = _incoming.get()
        call = ModelCall({"traceparent": incoming} if incoming else {}, None)
        try:
            yield call
        finally:
            metrics.model_call(endpoint, call.outcome, time.perf_counter() - started)
        return
    span = tracer.tracer.start_span(
        f"POST {endpoint}",
        kind=tracer.client,
        attributes={
            "http.request.method": "POST",
            "url.full": url,
            "xray.model.endpoint": endpoint,
            "xray.attempt": attempt,
        },
    )
    headers: dict[str, str] = {}
    tracer.propagator.inject(headers, context=tracer.trace.set_span_in_context(span))
    call = ModelCall(headers, span)
    try:
        yield call
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(tracer.trace.Status(tracer.trace.StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        if call.outcome != "error" and int(call.outcome) >= 500:
            span.set_status(tracer.trace.Status(tracer.trace.StatusCode.ERROR))
        span.end()
        metrics.model_call(endpoint, call.outcome, time.perf_counter() - started)
