"""The HTTP functions `auth`, `predict`, `gradcam`, `history` and `legacy` (functions-framework
targets).

Each runs alone (`functions-framework --source functions/main.py --target predict`) or with the
others in the local gateway (`python -m functions.gateway`). Handlers are thin: parse the
request into typed values, call a core (`functions.auth`, `.inference`, `.history`), serialise.
Routing, body limits, JSON errors and access logs live in `functions.web`.
"""

from __future__ import annotations

import base64
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# functions-framework loads this file as a top-level module; make the project importable when
# it is not installed (e.g. a deployment that copies the source tree).
try:
    import functions  # noqa: F401
except ImportError:  # pragma: no cover - only outside an installed checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flask
import functions_framework

from functions import dicom, dicom_answers, web
from functions import legacy as original
from functions.auth import Principal, parse_password_grant
from functions.errors import InvalidParameter, OAuthError
from functions.history import HistoryQuery, parse_time
from functions.images import ValidatedImage, validate_image
from functions.records import as_served
from functions.runtime import Runtime, get_runtime
from functions.throttle import client_address
from functions.webapp import APP_PREFIX, WebApp
from storage import keys

__all__ = ["auth", "gradcam", "history", "legacy", "predict"]

if flask.has_app_context():
    # Loaded by functions-framework's create_app. Build the process's runtime now (settings
    # only: stores and clients open on first use, so no network), so that a bad environment,
    # such as a missing or weak SECRET_KEY outside local development, stops the start with
    # every problem listed (SettingsError) instead of answering each request 500. A runtime
    # already installed (the gateway checks its settings up front, tests) is the one used.
    get_runtime()
    # Register the JSON error handlers and the access log on the app being created.
    web.install(flask.current_app)


# -- shared parsing ----------------------------------------------------------------------------


def _authenticate(request: flask.Request, runtime: Runtime) -> Principal:
    principal = runtime.authenticator.authenticate(
        request.headers.getlist("Authorization"), token_in_query="access_token" in request.args
    )
    web.note(user_id=principal.user_id)
    return principal


def _upload_limit() -> int:
    return get_runtime().settings.max_upload_bytes


def _retry_after() -> int:
    return get_runtime().settings.serving.retry_after_seconds


@dataclass(frozen=True)
class _Upload:
    image: ValidatedImage  # what the model receives
    fields: dict[str, str]  # the multipart form's other fields
    dicom: dicom.DicomSource | None  # a DICOM upload's identifiers (never recorded)


def _image(request: flask.Request, runtime: Runtime) -> _Upload:
    settings = runtime.settings
    upload = web.read_upload(request, settings.max_upload_bytes)
    if dicom.is_dicom_upload(upload.data, upload.declared_type):
        converted = dicom.read_dicom(
            upload.data,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            key=dicom.uid_key(settings.secret_key),
        )
        return _Upload(converted.image, dict(upload.fields), converted.source)
    image = validate_image(
        upload.data,
        upload.declared_type,
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
    )
    return _Upload(image, dict(upload.fields), None)


def _parameter(request: flask.Request, fields: dict[str, str], name: str) -> str | None:
    """A parameter from the query string or the multipart form; both must agree."""
    from_query = request.args.get(name)
    from_form = fields.get(name)
    if from_query is not None and from_form is not None and from_query != from_form:
        raise InvalidParameter(f"{name} is given twice with different values")
    value = from_query if from_query is not None else from_form
    return value if value not in (None, "") else None


def _flag(value: str | None, name: str) -> bool:
    """`true`/`1` or `false`/`0` (as openapi.yaml lists them); absent or empty is false."""
    if value is None:
        return False
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise InvalidParameter(f"{name} must be true or false")


def _note_inference(record: dict[str, object]) -> None:
    """What the access log (and the metrics read from it) says about an answered inference."""
    model = record["model"]
    assert isinstance(model, dict)
    latency, shadow = record.get("latency_ms"), record.get("shadow")
    abstention = record.get("abstention")
    web.note(
        inference_id=record["id"],
        model_name=model["name"],
        model_version=model["version"],
        model_label=record.get("routed_to", "stable"),
        predicted_class=record["predicted_class"],
        confidence=abstention.get("confidence") if isinstance(abstention, dict) else None,
        decision=record.get("decision"),
        model_ms=latency.get("model") if isinstance(latency, dict) else None,
        shadow=shadow.get("status") if isinstance(shadow, dict) else None,
    )


# -- web app -------------------------------------------------------------------------------------

_WEBAPP = WebApp(prefix="")


@functions_framework.http
def webapp(request: flask.Request) -> flask.Response:
    """The web app's static files (functions/webapp.py), for a deployment without the gateway:
    deploy this function at the site's root or under `/app/`; it talks to the API on its
    origin."""
    path = request.path
    if path.startswith(APP_PREFIX + "/") or path == APP_PREFIX:
        path = path[len(APP_PREFIX) :] or "/"
    status, headers, body = _WEBAPP.answer(path, request.method)
    return flask.Response(body, status=status, headers=headers)


# -- auth ----------------------------------------------------------------------------------------


def _token(request: flask.Request) -> flask.Response:
    if any(name in request.args for name in ("username", "password")):
        raise OAuthError("invalid_request", "credentials belong in the request body, not the URL")
    if request.mimetype != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request",
            "send the parameters form-encoded (application/x-www-form-urlencoded)",
        )
    fields = {name: request.form.getlist(name) for name in request.form}
    grant = parse_password_grant(fields)
    runtime = get_runtime()
    client = client_address(
        request.remote_addr,
        request.headers.get("X-Forwarded-For"),
        runtime.settings.login_throttle.trusted_proxy_hops,
    )
    issued, user = runtime.authenticator.login(grant, client)
    web.note(user_id=user.id)
    return web.json_response(
        {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        },
        headers={"Pragma": "no-cache"},
    )


def _me(request: flask.Request) -> flask.Response:
    principal = _authenticate(request, get_runtime())
    return web.json_response(principal.user.profile())


_AUTH = web.Router(
    "auth",
    [
        web.Route("/token", ("POST",), _token, "/token", oauth_errors=True),
        web.Route("/me", ("GET",), _me, "/me"),
    ],
    retry_after=_retry_after,
)


@functions_framework.http
def auth(request: flask.Request) -> flask.Response:
    """`POST /token` (OAuth2 password grant) and `GET /me` (the caller's profile)."""
    return _AUTH(request)


# -- predict -------------------------------------------------------------------------------------


def _predict(request: flask.Request) -> flask.Response:
    runtime = get_runtime()
    principal = _authenticate(request, runtime)
    upload = _image(request, runtime)
    fields = upload.fields
    accept_ood = _flag(_parameter(request, fields, "accept_ood"), "accept_ood")
    record = runtime.inference.predict(
        principal.user_id, upload.image, started=flask.g.started, accept_ood=accept_ood
    )
    _note_inference(record)
    best = request.accept_mimetypes.best_match(["application/json", dicom.DICOM_CONTENT_TYPE])
    if best == dicom.DICOM_CONTENT_TYPE:
        report = dicom_answers.structured_report(as_served(record), upload.dicom)
        return _dicom_response(report, {"X-Inference-Id": record["id"]})
    return web.json_response(as_served(record))


def _dicom_response(data: bytes, headers: dict[str, str]) -> flask.Response:
    """A Part 10 answer, with the same security headers as a PNG one."""
    response = web.png_response(data, headers)
    response.mimetype = dicom.DICOM_CONTENT_TYPE
    return response


_PREDICT = web.Router(
    "predict",
    [web.Route("/", ("POST",), _predict, "/", upload_limit=_upload_limit)],
    retry_after=_retry_after,
)


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    """`POST /`: classify one X-ray; the answer is the stored inference record."""
    return _PREDICT(request)


# -- gradcam -------------------------------------------------------------------------------------


_FORMATS = {"image/png": "png", "application/json": "json", dicom.DICOM_CONTENT_TYPE: "dicom"}


def _answer_format(request: flask.Request, requested_format: str | None) -> str:
    """`png` (the default), `json` or `dicom`: the `format` parameter, else the Accept header."""
    if requested_format is not None:
        if requested_format not in _FORMATS.values():
            raise InvalidParameter("format must be png, json or dicom")
        return requested_format
    best = request.accept_mimetypes.best_match(list(_FORMATS))
    return _FORMATS.get(best or "image/png", "png")


def _gradcam(request: flask.Request) -> flask.Response:
    runtime = get_runtime()
    principal = _authenticate(request, runtime)
    upload = _image(request, runtime)
    image, fields = upload.image, upload.fields
    target_class = _parameter(request, fields, "target_class")
    answer_format = _answer_format(request, _parameter(request, fields, "format"))
    as_json = answer_format == "json"
    # The heatmap only travels in JSON answers; a PNG answer never fetches it from the model.
    with_heatmap = _flag(_parameter(request, fields, "heatmap"), "heatmap") and as_json
    accept_ood = _flag(_parameter(request, fields, "accept_ood"), "accept_ood")
    outcome = runtime.inference.gradcam(
        principal.user_id,
        image,
        target_class,
        started=flask.g.started,
        with_heatmap=with_heatmap,
        accept_ood=accept_ood,
    )
    record, result = outcome.record, outcome.result
    _note_inference(record)
    naming = {
        "X-Inference-Id": record["id"],
        "X-Predicted-Class": record["predicted_class"],
        "X-Target-Class": result.target_class,
        "X-Model-Name": record["model"]["name"],
        "X-Model-Version": str(record["model"]["version"]),
        "X-Model-Run-Id": record["model"]["run_id"],
    }
    if as_json:
        body = as_served(record)
        body["overlay_png_b64"] = base64.b64encode(result.overlay_png).decode("ascii")
        if result.heatmap is not None:
            body["heatmap"] = [[round(float(v), 4) for v in row] for row in result.heatmap]
        return web.json_response(body, headers=naming)
    if answer_format == "dicom":
        capture = dicom_answers.secondary_capture(result.overlay_png, record, upload.dicom)
        return _dicom_response(capture, naming)
    return web.png_response(result.overlay_png, naming)


_GRADCAM = web.Router(
    "gradcam",
    [web.Route("/", ("POST",), _gradcam, "/", upload_limit=_upload_limit)],
    retry_after=_retry_after,
)


@functions_framework.http
def gradcam(request: flask.Request) -> flask.Response:
    """`POST /`: the Grad-CAM overlay of one X-ray (PNG, or JSON when asked), stored."""
    return _GRADCAM(request)


# -- history -------------------------------------------------------------------------------------


def _target_user(request: flask.Request, runtime: Runtime, principal: Principal) -> str:
    user_id = request.args.get("user") or principal.user_id
    try:
        keys.check_user_id(user_id)
    except ValueError:
        raise InvalidParameter("user is not a valid user id") from None
    runtime.authenticator.require_admin_or_self(principal, user_id)
    return user_id


def _list_history(request: flask.Request) -> flask.Response:
    runtime = get_runtime()
    principal = _authenticate(request, runtime)
    user_id = _target_user(request, runtime, principal)
    page_max = runtime.settings.history_page_max
    limit_text = request.args.get("limit")
    try:
        limit = int(limit_text) if limit_text is not None else page_max
    except ValueError:
        raise InvalidParameter("limit is not an integer") from None
    if not 1 <= limit <= page_max:
        raise InvalidParameter(f"limit must be between 1 and {page_max}")
    start_text, stop_text = request.args.get("start_time"), request.args.get("stop_time")
    query = HistoryQuery(
        caller_id=principal.user_id,
        user_id=user_id,
        start=parse_time(start_text, "start_time") if start_text else None,
        stop=parse_time(stop_text, "stop_time") if stop_text else None,
        limit=limit,
        page_token=request.args.get("page_token") or None,
        decision=_decision_filter(request.args.get("decision")),
        study=_study_filter(request.args.get("study"), runtime),
    )
    return web.json_response(runtime.history.page(query).as_dict())


_DECISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _decision_filter(text: str | None) -> str | None:
    """`refer`, or a class name (any model's classes: names, not a fixed list)."""
    if text is None or text == "":
        return None
    if not _DECISION.fullmatch(text):
        raise InvalidParameter("decision must be refer or a class name")
    return text


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _study_filter(text: str | None, runtime: Runtime) -> str | None:
    """A DICOM Study Instance UID, as the records keep it: its keyed hash (never the UID)."""
    if text is None or text == "":
        return None
    if len(text) > 64 or not _UID.fullmatch(text):
        raise InvalidParameter("study must be a DICOM Study Instance UID (digits and dots)")
    return dicom.uid_digest(dicom.uid_key(runtime.settings.secret_key), text)


def _one_record(request: flask.Request, inference_id: str) -> flask.Response:
    runtime = get_runtime()
    principal = _authenticate(request, runtime)
    user_id = _target_user(request, runtime, principal)
    return web.json_response(runtime.history.get(user_id, inference_id))


def _record_gradcam(request: flask.Request, inference_id: str) -> flask.Response:
    runtime = get_runtime()
    principal = _authenticate(request, runtime)
    user_id = _target_user(request, runtime, principal)
    png = runtime.history.gradcam_png(user_id, inference_id)
    return web.png_response(png, {"X-Inference-Id": inference_id})


_HISTORY = web.Router(
    "history",
    [
        web.Route("/", ("GET",), _list_history, "/"),
        web.Route("/<inference_id>", ("GET",), _one_record, "/<id>"),
        web.Route("/<inference_id>/gradcam", ("GET",), _record_gradcam, "/<id>/gradcam"),
    ],
    retry_after=_retry_after,
)


@functions_framework.http
def history(request: flask.Request) -> flask.Response:
    """`GET /` (records in a window, paginated), `GET /<id>` and `GET /<id>/gradcam`."""
    return _HISTORY(request)


# -- legacy: the original system's routes ------------------------------------------------------


def _legacy_index(request: flask.Request) -> flask.Response:
    return web.json_response(original.AVAILABLE)


def _legacy_token(request: flask.Request) -> flask.Response:
    if any(name in request.args for name in ("username", "password")):
        raise InvalidParameter("credentials belong in the request body, not the URL")
    form = original.form_fields(request) if request.mimetype in original.FORM_TYPES else {}
    grant = original.legacy_grant(form)
    runtime = get_runtime()
    client = client_address(
        request.remote_addr,
        request.headers.get("X-Forwarded-For"),
        runtime.settings.login_throttle.trusted_proxy_hops,
    )
    issued, user = runtime.authenticator.login(grant, client)
    web.note(user_id=user.id)
    return web.json_response({"access_token": issued.access_token, "token_type": "Bearer"})


def _legacy_me(request: flask.Request) -> flask.Response:
    principal = _authenticate(request, get_runtime())
    return web.json_response(original.legacy_profile(principal.user.profile()))


def _legacy_image(request: flask.Request, runtime: Runtime) -> ValidatedImage:
    """The original's upload: multipart field `file`, declared exactly `image/png`."""
    if request.mimetype != "multipart/form-data" or "file" not in request.files:
        raise original.LegacyValidationError("body", "file", "missing", "Field required")
    settings = runtime.settings
    upload = web.read_upload(request, settings.max_upload_bytes)
    if upload.declared_type != "image/png":
        raise InvalidParameter("Invalid image type", code="invalid_image_type")
    return validate_image(
        upload.data,
        "image/png",
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
    )


def _legacy_xray(request: flask.Request) -> flask.Response:
    runtime = get_runtime()
    principal = _authenticate(request, runtime)
    image = _legacy_image(request, runtime)
    # The original never refused an image and its clients know no such answer: the legacy
    # routes answer anyway, and the record is flagged.
    record = runtime.inference.predict(
        principal.user_id, image, started=flask.g.started, accept_ood=True
    )
    _note_inference(record)
    return web.json_response(original.legacy_prediction(record))


def _legacy_grad_cam(request: flask.Request) -> flask.Response:
    # Always the PNG, whatever Accept says (the original's client sends application/json).
    runtime = get_runtime()
    principal = _authenticate(request, runtime)
    image = _legacy_image(request, runtime)
    outcome = runtime.inference.gradcam(
        principal.user_id, image, None, started=flask.g.started, with_heatmap=False, accept_ood=True
    )
    record = outcome.record
    _note_inference(record)
    return web.png_response(outcome.result.overlay_png, {"X-Inference-Id": record["id"]})


def _legacy_results(request: flask.Request) -> flask.Response:
    runtime = get_runtime()
    principal = _authenticate(request, runtime)
    start = original.legacy_time(request.args.get("start_time"), "start_time")
    stop = original.legacy_time(request.args.get("stop_time"), "stop_time")
    records = runtime.history.all_records(principal.user_id, start, stop)
    return web.json_response(original.legacy_results_body(records))


_LEGACY = web.Router(
    "legacy",
    [
        web.Route("/", ("GET",), _legacy_index, "/"),
        web.Route("/token", ("POST",), _legacy_token, "/token"),
        web.Route("/user/me", ("GET",), _legacy_me, "/user/me"),
        web.Route("/x-ray", ("POST",), _legacy_xray, "/x-ray", upload_limit=_upload_limit),
        web.Route(
            "/grad_cam", ("POST",), _legacy_grad_cam, "/grad_cam", upload_limit=_upload_limit
        ),
        web.Route("/user/results", ("GET",), _legacy_results, "/user/results"),
    ],
    retry_after=_retry_after,
    render_error=original.legacy_error,
)


@functions_framework.http
def legacy(request: flask.Request) -> flask.Response:
    """The original system's API (`/`, `/token`, `/user/me`, `/x-ray`, `/grad_cam`,
    `/user/results`), answering exactly as the original did (functions.legacy)."""
    return _LEGACY(request)
