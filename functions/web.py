"""The Flask edge shared by the four functions: routing, body limits, errors as JSON, access logs.

functions-framework sends every method and path to a function and answers its own errors with
HTML, so this module (1) routes each function's paths and methods itself (404, 405 with Allow),
(2) sets the request's body limit before anything reads the body (functions-framework reads the
whole body after every response, with no limit of its own), (3) renders every error, its own or
the framework's, as JSON in one place, and (4) writes one JSON log line per request.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flask
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map, Rule

from common.logs import log_event
from common.settings import SettingsError, load_environment
from functions import metrics, tracing
from functions.errors import (
    ApiError,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    OAuthError,
    PayloadTooLarge,
    StorageUnavailableError,
    UnsupportedMediaType,
)
from functions.logs import ACCESS_LOGGER, configure_logging
from storage import StorageError

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "Route",
    "Router",
    "Upload",
    "error_response",
    "install",
    "json_response",
    "note",
    "read_upload",
]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger(ACCESS_LOGGER)

# Routes without uploads take small bodies only (a token request is a few hundred bytes).
DEFAULT_BODY_LIMIT = 64 * 1024
# Multipart framing around an upload: boundaries, part headers and small form fields.
_MULTIPART_OVERHEAD = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


ErrorRenderer = Callable[[ApiError], tuple[int, Any, Mapping[str, str]]]


@dataclass(frozen=True)
class Route:
    rule: str  # werkzeug rule, relative to the function: "/", "/token", "/<inference_id>"
    methods: tuple[str, ...]
    view: Callable[..., flask.Response]
    name: str  # what the access log calls it
    oauth_errors: bool = False  # the token endpoint speaks RFC 6749's error shape
    # Another error shape altogether (the original system's routes): (status, body, headers).
    render_error: ErrorRenderer | None = None
    upload_limit: Callable[[], int] | None = None  # the body cap of an upload route


def note(**fields: Any) -> None:
    """Add fields (user_id, model_version...) to this request's access log line."""
    flask.g.setdefault("log_fields", {}).update(fields)


@functools.cache
def _route_map(rules: tuple[tuple[str, tuple[str, ...]], ...]) -> Map:
    """The werkzeug Map of these rules (endpoints are their indices), built once per process.

    functions-framework executes functions/main.py again for every app it creates (the gateway
    creates five, each defining every function's Router), and werkzeug compiles each rule into
    Python code when it is added: sharing the Maps saves that at every start. A Map is not
    changed after it is built; each request binds its own adapter.
    """
    return Map(
        [
            Rule(rule, methods=list(methods), endpoint=str(index))
            for index, (rule, methods) in enumerate(rules)
        ],
        strict_slashes=False,
        merge_slashes=False,
    )


class Router:
    """One function's routes: dispatches, and turns every failure into a JSON answer."""

    def __init__(
        self,
        function_name: str,
        routes: Sequence[Route],
        retry_after: Callable[[], int] = lambda: 5,
        render_error: ErrorRenderer | None = None,
    ) -> None:
        self.function_name = function_name
        # The error shape of every answer of this function (unknown paths too), if not ours.
        self._render_error = render_error
        self._retry_after = retry_after  # RETRY_AFTER_SECONDS, read when an answer needs it
        self._routes = list(routes)
        self._map = _route_map(tuple((route.rule, route.methods) for route in self._routes))

    def __call__(self, request: flask.Request) -> flask.Response:
        flask.g.function = self.function_name
        if self._render_error is not None:
            flask.g.render_error = self._render_error
        request.max_content_length = DEFAULT_BODY_LIMIT
        try:
            route, values = self._match(request)
            flask.g.route = route.name
            _set_error_style(route)
            if route.upload_limit is not None:
                request.max_content_length = route.upload_limit() + _MULTIPART_OVERHEAD
            if (request.content_length or 0) > request.max_content_length:
                raise PayloadTooLarge()
            return route.view(request, **values)
        except ApiError as error:
            return error_response(error)
        except StorageError as exc:
            # The one place a storage failure becomes an answer; the services log what they were
            # doing and let it through.
            log_event(
                logger,
                "storage_failed",
                logging.WARNING,
                f"storage failed in {self.function_name} {flask.g.get('route')}",
                reason=type(exc).__name__,
            )
            return error_response(StorageUnavailableError(retry_after=self._retry_after()))
        except SettingsError as exc:
            log_event(
                logger,
                "misconfigured",
                logging.ERROR,
                "the function is misconfigured",
                problems=exc.problems,
            )
            return error_response(ApiError("the service is misconfigured"))
        except HTTPException as exc:
            return _http_error(exc)
        except Exception:
            logger.exception("unexpected error", extra={"event": "unexpected_error"})
            return error_response(ApiError())

    def _match(self, request: flask.Request) -> tuple[Route, Mapping[str, Any]]:
        adapter = self._map.bind("function", path_info=request.path or "/")
        try:
            endpoint, values = adapter.match(request.path or "/", method=request.method)
        except WerkzeugNotFound:
            flask.g.route = "unknown"
            raise NotFound("no such path") from None
        except WerkzeugMethodNotAllowed as exc:
            allowed = list(exc.valid_methods or [])
            if allowed:
                endpoint, _ = adapter.match(request.path or "/", method=allowed[0])
                route = self._routes[int(endpoint)]
                flask.g.route = route.name
                _set_error_style(route)
            raise MethodNotAllowed(allowed) from None
        return self._routes[int(str(endpoint))], values


# -- responses ---------------------------------------------------------------------------------


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> flask.Response:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    response = flask.Response(data, status=status, mimetype="application/json")
    response.headers.update(_SECURITY_HEADERS)
    response.headers.update(dict(headers or {}))
    return _guarded(response)


def png_response(data: bytes, headers: Mapping[str, str]) -> flask.Response:
    response = flask.Response(data, mimetype="image/png")
    response.headers.update(_SECURITY_HEADERS)
    response.headers.update(dict(headers))
    return response


def _guarded(response: flask.Response) -> flask.Response:
    """A body that was refused must not be read after the answer: stream the answer instead.

    functions-framework reads the request body after every non-streamed response; for a body
    over the limit that read raises again and turns the answer into an error page.
    """
    request = flask.request
    limit = request.max_content_length
    too_large = limit is not None and (request.content_length or 0) > limit
    if too_large or flask.g.get("body_refused"):
        data = response.get_data()
        response.response = iter([data])
        response.headers["Content-Length"] = str(len(data))
        response.headers["Connection"] = "close"
    return response


def _set_error_style(route: Route) -> None:
    if route.oauth_errors:
        flask.g.error_style = "oauth"
    if route.render_error is not None:
        flask.g.render_error = route.render_error


def error_response(error: ApiError) -> flask.Response:
    flask.g.error_code = error.code
    render = flask.g.get("render_error")
    if render is not None:
        status, body, headers = render(error)
        return json_response(body, status, headers)
    if flask.g.get("error_style") == "oauth" and not isinstance(error, OAuthError):
        error = _as_oauth(error)
    headers = dict(error.headers)
    if isinstance(error, OAuthError):
        headers["Pragma"] = "no-cache"
    return json_response(error.body(), error.status, headers)


def _as_oauth(error: ApiError) -> OAuthError:
    """The token endpoint's other failures, in RFC 6749's shape."""
    if error.status == 503:
        code = "temporarily_unavailable"
    elif error.status >= 500:
        code = "server_error"
    else:
        code = "invalid_request"
    return OAuthError(code, error.message, status=error.status, headers=error.headers)


_HTTP_ERRORS: dict[int, Callable[[HTTPException], ApiError]] = {
    400: lambda _: InvalidParameter("the request is malformed", code="bad_request"),
    404: lambda _: NotFound("no such path"),
    405: lambda exc: MethodNotAllowed(list(getattr(exc, "valid_methods", None) or [])),
    413: lambda _: PayloadTooLarge(),
    415: lambda _: UnsupportedMediaType(),
}


def _http_error(exc: HTTPException) -> flask.Response:
    code = exc.code or 500
    if code == 413:
        flask.g.body_refused = True
    make = _HTTP_ERRORS.get(code)
    if make is not None:
        return error_response(make(exc))
    if code >= 500:
        return error_response(ApiError())
    return error_response(
        ApiError("the request cannot be served", code=f"http_{code}", status=code)
    )


def _server_error(exc: InternalServerError) -> flask.Response:
    original = getattr(exc, "original_exception", None)
    if isinstance(original, HTTPException):
        # e.g. the framework's after-response body read hit the size limit.
        return _http_error(original)
    if original is not None:
        logger.error("unexpected error", exc_info=original, extra={"event": "unexpected_error"})
    return error_response(ApiError())


def _unexpected(exc: Exception) -> flask.Response:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    logger.error("unexpected error", exc_info=exc, extra={"event": "unexpected_error"})
    return error_response(ApiError())


# -- request lifecycle -------------------------------------------------------------------------


def _start() -> None:
    flask.g.started = time.perf_counter()
    flask.g.function = flask.current_app.name  # functions-framework names the app by target
    request = flask.request
    incoming = request.headers.get("X-Request-ID", "")
    flask.g.request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
    # The request's trace: a SERVER span when tracing is on, else the caller's trace id only.
    flask.g.trace = tracing.start_request(
        request.headers.get("traceparent"), f"{flask.g.function} {request.method}"
    )


def _finish(response: flask.Response) -> flask.Response:
    g = flask.g
    response.headers["X-Request-ID"] = g.get("request_id", "")
    total = time.perf_counter() - g.get("started", time.perf_counter())
    trace: tracing.RequestTrace | None = g.get("trace")
    fields = {
        "function": g.get("function"),
        "route": g.get("route", "unknown"),
        "method": flask.request.method,
        "status": response.status_code,
        "latency_ms": round(total * 1000, 3),
        "request_id": g.get("request_id"),
        "trace_id": trace.trace_id if trace is not None else None,
        "user_id": None,
        "model_version": None,
    }
    noted = g.get("log_fields", {})
    fields.update(noted)
    error_code = g.get("error_code")
    if error_code:
        fields["error"] = error_code
    message = f"{fields['method']} {fields['route']} {fields['status']}"
    log_event(access_logger, "request", logging.INFO, message, **fields)
    _observe(fields, noted, total, error_code)
    return response


def _observe(
    fields: Mapping[str, Any], noted: Mapping[str, Any], total: float, error_code: str | None
) -> None:
    """The request's metrics and the end of its span."""
    function, route = str(fields["function"]), str(fields["route"])
    status = int(fields["status"])
    model_ms = noted.get("model_ms")
    model_seconds = model_ms / 1000 if isinstance(model_ms, int | float) else None
    if metrics.enabled():
        metrics.request(
            function, route, str(fields["method"]), status, error_code, total, model_seconds
        )
        metrics.inference(function, noted)
    trace: tracing.RequestTrace | None = flask.g.pop("trace", None)
    if trace is not None:
        tracing.finish_request(
            trace,
            f"{function} {route}",
            {
                "http.request.method": fields["method"],
                "http.route": route,
                "http.response.status_code": status,
                "xray.function": function,
                "xray.request_id": fields["request_id"],
                "xray.error": error_code,
                "xray.model.name": noted.get("model_name"),
                "xray.model.version": noted.get("model_version"),
                "xray.model.label": noted.get("model_label"),
                "xray.model_ms": model_ms,
            },
            error=status >= 500,
        )


def _teardown(_: BaseException | None) -> None:
    """A request that ended without `_finish` (an error escaped): close its span anyway."""
    trace: tracing.RequestTrace | None = flask.g.pop("trace", None)
    if trace is not None:
        tracing.finish_request(trace, f"{flask.g.get('function')} unknown", {}, error=True)


_observability_lock = threading.Lock()
_observability_ready = False


def _setup_observability() -> None:
    """Metrics and tracing as the environment says, once per process (functions/metrics.py,
    functions/tracing.py): both cost nothing, not even their imports, when not configured."""
    global _observability_ready
    with _observability_lock:
        if _observability_ready:
            return
        _observability_ready = True
        environ = load_environment()
        metrics.setup(metrics.MetricsSettings.from_env(environ))
        tracing.configure(tracing.TracingSettings.from_env(environ))


class _UploadRequest(flask.Request):
    """Multipart parts are kept in memory, never in temporary files.

    The body is capped (Router) before any part is read, so a file on disk saves nothing; and
    when an over-long chunked body aborts parsing, werkzeug drops the temporary file it had
    opened without closing it (a leaked descriptor per refused request).
    """

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> io.BytesIO:
        del total_content_length, content_type, filename, content_length
        return io.BytesIO()


def install(app: flask.Flask) -> None:
    """Register the JSON error handlers and the per-request hooks on a function's app (once)."""
    if app.extensions.get("functions.web"):
        return
    app.extensions["functions.web"] = True
    app.request_class = _UploadRequest
    configure_logging()
    _setup_observability()
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_teardown)
    app.register_error_handler(HTTPException, _http_error)
    # Replaces functions-framework's HTML crash page.
    app.register_error_handler(500, _server_error)
    app.register_error_handler(Exception, _unexpected)


# -- request bodies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    data: bytes
    declared_type: str | None
    fields: Mapping[str, str]  # the other form fields of a multipart upload


def read_upload(request: flask.Request, max_bytes: int) -> Upload:
    """The uploaded image: multipart field `file`, or the raw body with an image content type.

    The body limit was set before (Router), so werkzeug stops reading at the cap (413) even
    for chunked bodies without Content-Length.
    """
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        files = request.files.getlist("file")
        if not files:
            raise InvalidParameter(
                "send the image in the multipart field 'file'", code="missing_file"
            )
        if len(files) > 1:
            raise InvalidParameter("send one image per request", code="too_many_files")
        data = files[0].stream.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"the image is larger than {max_bytes} bytes")
        fields = {name: request.form.get(name, "") for name in request.form}
        # The client's file name is ignored: it never reaches a key or a log.
        return Upload(data, files[0].mimetype or None, fields)
    if not mimetype:
        if request.content_length == 0 or not request.get_data():
            raise InvalidParameter("the request has no image", code="empty_image")
        raise UnsupportedMediaType("send the image with its content type (image/png or image/jpeg)")
    if mimetype == "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("send the image as multipart/form-data or a raw image body")
    return Upload(request.get_data(), mimetype, {})
