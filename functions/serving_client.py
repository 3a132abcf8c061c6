"""The REST client for the model server (TF Serving or the local stand-in; it cannot tell which).

It speaks exactly `docs/CONTRACTS.md`: `POST {TF_SERVING_URL}/v1/models/{name}[/labels/{label}|
/versions/{v}]:predict` in row format with `{"b64": ...}` image bytes, for the `serving_default`,
`gradcam_overlay` and `gradcam` signatures, and reads the class names, probabilities and model
identity from every answer. Connections are pooled and kept alive (urllib3). Connection failures
and 503s (and TF Serving's 400 for a version label no version holds yet) are retried with
full-jitter backoff inside one total deadline; what is left is mapped to the caller's status:
unreachable or not loaded (model, version or label) 503 (with Retry-After), timed out 504, error
or malformed answer 502. The upstream URL and message never reach the caller.

Fail fast (`functions.breaker`): every attempt asks the endpoint's circuit breaker first and
reports whether the server was healthy (unreachable, 503, 404 not loaded, 429, 5xx and timeouts
are failures; an answer, even a refusal of the request, is a success). While the breaker is
open a call is answered 503 at once, with no upstream call and a Retry-After until the next
probe. A bulkhead bounds the calls in flight per process (`TF_SERVING_MAX_IN_FLIGHT`), so a
hanging model server cannot hold every request thread.

Grad-CAM asks for `gradcam_overlay` (no heatmap in the answer: REST has no output filter, and an
S x S float heatmap written, sent and parsed as JSON text costs more than computing it) unless
the caller wants the heatmap. Versions exported before that signature existed answer 400 naming
it; the client then calls `gradcam` and remembers the version for a while (`_OverlaySupport`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import random
import re
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProtocolError, ReadTimeoutError

from common.logs import log_event
from functions import tracing
from functions.breaker import Bulkhead, BulkheadFull, CircuitBreaker, CircuitOpen, Permit
from functions.errors import BadGateway, InvalidImage, ModelTimeout, ModelUnavailable
from functions.settings import ServingSettings
from model_contract.artifact import (
    CLASS_INDEX_OUTPUT,
    CLASS_NAME_OUTPUT,
    CLASS_NAMES_OUTPUT,
    GRADCAM_OVERLAY_SIGNATURE,
    GRADCAM_SIGNATURE,
    HEATMAP_OUTPUT,
    IMAGE_BYTES_INPUT,
    MODEL_NAME_OUTPUT,
    MODEL_RUN_ID_OUTPUT,
    MODEL_VERSION_OUTPUT,
    OOD_REASON_OUTPUT,
    OOD_REASONS,
    OOD_SCORE_OUTPUT,
    OVERLAY_PNG_OUTPUT,
    PREDICTED_CLASS,
    PROBABILITIES_OUTPUT,
    REFER_THRESHOLD_OUTPUT,
    SERVING_SIGNATURE,
    TARGET_CLASS_INDEX_OUTPUT,
    TARGET_CLASS_INPUT,
)
from model_contract.identity import ModelIdentity

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["GradcamAnswer", "Prediction", "ServingClient"]

logger = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A PNG's first chunk: length 13, type IHDR, then width and height (big-endian).
_PNG_IHDR = b"\x00\x00\x00\x0dIHDR"
_PROBABILITY_SLACK = 1e-4
# TF Serving's 400 for a label assigned to no loaded version (reference/tfserving.md).
_UNASSIGNED_LABEL = "Unrecognized servable version label"
# TensorFlow's own messages (2.21) when the model's in-graph decoder cannot read the image bytes:
# the caller's image, not the model, is at fault. Matched exactly, not by loose words.
_UNDECODABLE_IMAGE = re.compile(
    r"Invalid PNG data, size \d+"
    r"|Invalid PNG\. Failed to initialize decoder\."
    r"|Invalid PNG header, data size \d+"
    r"|jpeg::Uncompress failed\. Invalid JPEG data or crop window\."
    r"|Unknown image file format\. One of [A-Z][A-Za-z ,]* required\."
)
# Upstream error texts may echo request fragments; long base64 runs are cut before logging.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{40,}")
_BACKOFF_BASE_SECONDS = 0.05
_BACKOFF_CAP_SECONDS = 1.0
# How many model versions known to lack `gradcam_overlay` are remembered, and for how long. The
# limit only matters for a process that outlives many old versions; the time heals a wrong guess
# (see `_OverlaySupport`) at the cost of one refused call per old version per period.
_LACKING_VERSIONS_MAX = 64
_LACKING_VERSION_SECONDS = 600.0


class _MalformedAnswer(ValueError):
    """The model server's 200 answer does not follow the contract."""


class _OverlaySignatureMissing(BadGateway):
    """The version that answered has no `gradcam_overlay` signature (exported before it).

    A BadGateway, so that anywhere it is not handled it is answered as any other upstream 400.
    """


@dataclass(frozen=True)
class Prediction:
    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    class_index: int
    model: ModelIdentity
    # The model's confidence below which to refer; None from versions exported before it.
    refer_threshold: float | None = None
    # Why the model says the input is not a chest film ("" when it is one); None from versions
    # exported before the check. `ood_score`: the feature distance over its threshold.
    ood_reason: str | None = None
    ood_score: float | None = None

    @property
    def confidence(self) -> float:
        """The predicted class's probability."""
        return self.probabilities[self.class_index]

    @property
    def class_name(self) -> str:
        return self.class_names[self.class_index]

    def probabilities_by_class(self) -> dict[str, float]:
        return dict(zip(self.class_names, self.probabilities, strict=True))


@dataclass(frozen=True)
class GradcamAnswer:
    prediction: Prediction
    target_class_index: int
    overlay_png: bytes
    overlay_size: int  # the square overlay's side in pixels, read from its PNG header
    # [S, S] in [0, 1] at the model's input size; None unless asked for (`with_heatmap`).
    heatmap: npt.NDArray[np.float32] | None = None

    @property
    def target_class(self) -> str:
        return self.prediction.class_names[self.target_class_index]


class _OverlaySupport:
    """Which model versions lack the `gradcam_overlay` signature; thread-safe and bounded.

    A refusal names no version, so the version that answered the fallback `gradcam` call stands
    for the one that refused, and every answer updates the version believed to be serving. A
    request whose believed version is known to lack the signature goes straight to `gradcam`;
    a new version is tried with `gradcam_overlay` again. The guess is wrong only if versions
    change between the refusal and the fallback (a swap, or replicas of a fleet mid-rollout
    serving different versions); entries therefore expire, so a version wrongly remembered is
    asked for the overlay again after `_LACKING_VERSION_SECONDS` instead of never.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_versions: int = _LACKING_VERSIONS_MAX,
        remember_seconds: float = _LACKING_VERSION_SECONDS,
    ) -> None:
        self._clock = clock
        self._max_versions = max_versions
        self._remember_seconds = remember_seconds
        self._lock = threading.Lock()
        self._serving_version: int | None = None
        self._lacking: OrderedDict[int, float] = OrderedDict()  # version -> when learnt

    def note_answer(self, version: int) -> None:
        """An answer came from `version`: the next request probably goes to it too."""
        with self._lock:
            self._serving_version = version

    def overlay_expected(self) -> bool:
        """Whether the version believed to be serving may have `gradcam_overlay`."""
        with self._lock:
            version = self._serving_version
            if version is None or version not in self._lacking:
                return True
            if self._clock() - self._lacking[version] >= self._remember_seconds:
                del self._lacking[version]
                return True
            return False

    def remember_lacking(self, version: int) -> None:
        with self._lock:
            self._lacking[version] = self._clock()
            self._lacking.move_to_end(version)
            while len(self._lacking) > self._max_versions:
                self._lacking.popitem(last=False)

    def lacking_versions(self) -> list[int]:
        """The versions remembered now (oldest first), for logs and tests."""
        with self._lock:
            return list(self._lacking)


class ServingClient:
    """One per process: holds the connection pool; safe to share between threads."""

    def __init__(
        self,
        settings: ServingSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=settings.pool_size, block=False, retries=False
        )
        self._url = _predict_url(settings)
        self._overlay_support = _OverlaySupport(clock)
        endpoint = _endpoint_name(settings)
        self._endpoint = endpoint
        self._breaker = CircuitBreaker(endpoint, settings.breaker, clock=clock)
        self._bulkhead = Bulkhead(endpoint, settings.breaker.max_in_flight)

    def health(self) -> dict[str, Any]:
        """The endpoint's circuit breaker and bulkhead, as numbers."""
        return {"breaker": self._breaker.stats(), "bulkhead": self._bulkhead.stats()}

    def predict(self, images: Sequence[bytes]) -> list[Prediction]:
        """One prediction per image, in order (`serving_default`)."""
        if not images:
            return []
        payload = {
            "signature_name": SERVING_SIGNATURE,
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
        }
        rows = self._rows(self._call(payload), len(images))
        try:
            predictions = [_prediction(row) for row in rows]
        except (_MalformedAnswer, KeyError, TypeError, ValueError) as exc:
            raise self._malformed(exc) from None
        self._overlay_support.note_answer(predictions[-1].model.version)
        return predictions

    def gradcam(
        self, image: bytes, target_class_index: int | None = None, *, with_heatmap: bool = False
    ) -> GradcamAnswer:
        """Grad-CAM for one image, for the predicted class (None) or the given class index.

        The heatmap is fetched (`gradcam` signature) only `with_heatmap`; otherwise the answer
        comes from `gradcam_overlay`, or from `gradcam` on versions exported without it.
        """
        if with_heatmap:
            return self._gradcam_call(GRADCAM_SIGNATURE, image, target_class_index, True)
        if self._overlay_support.overlay_expected():
            try:
                return self._gradcam_call(
                    GRADCAM_OVERLAY_SIGNATURE, image, target_class_index, False
                )
            except _OverlaySignatureMissing:
                result = self._gradcam_call(GRADCAM_SIGNATURE, image, target_class_index, False)
                version = result.prediction.model.version
                self._overlay_support.remember_lacking(version)
                log_event(
                    logger,
                    "overlay_signature_missing",
                    message=f"model version {version} has no {GRADCAM_OVERLAY_SIGNATURE} "
                    f"signature (exported before it): calling {GRADCAM_SIGNATURE} for it",
                    model_version=version,
                )
                return result
        return self._gradcam_call(GRADCAM_SIGNATURE, image, target_class_index, False)

    def overlay_lacking_versions(self) -> list[int]:
        """Model versions remembered as lacking `gradcam_overlay` (oldest first)."""
        return self._overlay_support.lacking_versions()

    def _gradcam_call(
        self, signature: str, image: bytes, target_class_index: int | None, with_heatmap: bool
    ) -> GradcamAnswer:
        payload = {
            "signature_name": signature,
            "instances": [
                {
                    IMAGE_BYTES_INPUT: {"b64": base64.b64encode(image).decode("ascii")},
                    TARGET_CLASS_INPUT: PREDICTED_CLASS
                    if target_class_index is None
                    else int(target_class_index),
                }
            ],
        }
        (row,) = self._rows(self._call(payload), 1)
        try:
            result = _gradcam(row, target_class_index, with_heatmap=with_heatmap)
        except (_MalformedAnswer, KeyError, TypeError, ValueError) as exc:
            raise self._malformed(exc) from None
        self._overlay_support.note_answer(result.prediction.model.version)
        return result

    # -- transport -----------------------------------------------------------------------------

    def _call(self, payload: dict[str, Any]) -> Any:
        try:
            with self._bulkhead:
                return self._call_with_retries(payload)
        except BulkheadFull:
            log_event(
                logger,
                "model_calls_saturated",
                logging.WARNING,
                f"{self._bulkhead.limit} calls to the model server are in flight already",
                limit=self._bulkhead.limit,
            )
            raise ModelUnavailable(
                "too many calls to the model server are in flight; retry later", retry_after=1
            ) from None

    def _permit(self) -> Permit:
        try:
            return self._breaker.allow()
        except CircuitOpen as exc:
            raise ModelUnavailable(retry_after=exc.retry_after) from None

    def _call_with_retries(self, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload).encode("utf-8")
        settings = self._settings
        deadline = self._clock() + settings.deadline
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ModelTimeout()
            permit = self._permit()
            timeout = urllib3.Timeout(
                connect=min(settings.connect_timeout, remaining),
                read=min(settings.read_timeout, remaining),
            )
            try:
                # Tracing and metrics (functions/tracing.py): a CLIENT span per attempt, its
                # `traceparent` sent along, the attempt's duration and outcome counted.
                with tracing.model_call(self._endpoint, self._url, attempt) as call:
                    response = self._pool.request(
                        "POST",
                        self._url,
                        body=body,
                        headers={
                            "Content-Type": "application/json",
                            "Accept": "application/json",
                            **call.headers,
                        },
                        timeout=timeout,
                        retries=False,
                        redirect=False,
                    )
                    call.answered(response.status)
            except ReadTimeoutError:
                # Not retried: the server may still be working on it, and the deadline is
                # better spent answering than queueing a second copy.
                permit.failure("read timeout")
                raise ModelTimeout() from None
            except (ConnectTimeoutError, ProtocolError) as exc:
                # Refused, reset, or a kept-alive connection the server had closed.
                permit.failure(type(exc).__name__)
                if self._may_retry(attempt, deadline):
                    continue
                log_event(
                    logger,
                    "model_unreachable",
                    logging.WARNING,
                    "model server unreachable",
                    reason=type(exc).__name__,
                )
                raise self._unavailable() from None
            except HTTPError as exc:
                permit.failure(type(exc).__name__)
                log_event(
                    logger,
                    "model_call_failed",
                    logging.WARNING,
                    "model server call failed",
                    reason=type(exc).__name__,
                )
                raise self._unavailable() from None
            except BaseException:
                permit.release()
                raise
            status = response.status
            if _server_unhealthy(status, response.data):
                permit.failure(f"HTTP {status}")
            else:
                permit.success()
            if status == 200:
                try:
                    return json.loads(response.data, parse_constant=_refuse_constant)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise self._malformed(exc) from None
            if _is_unavailable(status, response.data) and self._may_retry(attempt, deadline):
                continue
            if (
                status == 400
                and payload.get("signature_name") == GRADCAM_OVERLAY_SIGNATURE
                and _names_missing_overlay_signature(response.data)
            ):
                raise _OverlaySignatureMissing()
            raise self._error_for(status, response.data)

    def _may_retry(self, attempt: int, deadline: float) -> bool:
        if attempt >= self._settings.max_attempts:
            return False
        pause = random.uniform(  # noqa: S311 - jitter, not security
            0, min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        )
        if self._clock() + pause >= deadline:
            return False
        self._sleep(pause)
        return True

    def _unavailable(self) -> ModelUnavailable:
        # An open breaker knows when the next call may go through; otherwise the setting.
        retry_after = self._settings.retry_after_seconds
        if self._breaker.state != "closed":
            retry_after = self._breaker.retry_after()
        return ModelUnavailable(retry_after=retry_after)

    def _error_for(self, status: int, data: bytes) -> Exception:
        log_event(
            logger,
            "model_error_answer",
            logging.WARNING,
            f"model server answered {status}",
            status=status,
            reason=_BASE64_RUN.sub("<…>", _error_text(data)),
        )
        if status in (404, 429) or _is_unavailable(status, data):
            # 404: the model or version is not loaded (yet, or during a version swap gap);
            # 429: overloaded; 400 naming the label: the label is not assigned yet. All are
            # worth retrying later, and none is the caller's fault.
            return self._unavailable()
        if status == 504:
            return ModelTimeout()
        if status == 400 and _UNDECODABLE_IMAGE.search(_error_text(data)):
            return InvalidImage("the model cannot decode the image")
        return BadGateway()

    def _malformed(self, exc: Exception) -> BadGateway:
        log_event(
            logger,
            "model_bad_response",
            logging.WARNING,
            "model server answer does not follow the contract",
            reason=str(exc),
        )
        return BadGateway("the model server's answer was not valid", code="model_bad_response")

    def _rows(self, payload: Any, expected: int) -> list[dict[str, Any]]:
        rows = payload.get("predictions") if isinstance(payload, dict) else None
        if (
            not isinstance(rows, list)
            or len(rows) != expected
            or not all(isinstance(row, dict) for row in rows)
        ):
            raise self._malformed(_MalformedAnswer("predictions is not one object per image"))
        return rows


def _predict_url(settings: ServingSettings) -> str:
    path = f"/v1/models/{quote(settings.model_name, safe='')}"
    if settings.model_version is not None:
        path += f"/versions/{settings.model_version}"
    elif settings.model_label:
        path += f"/labels/{quote(settings.model_label, safe='')}"
    return settings.url + path + ":predict"


def _endpoint_name(settings: ServingSettings) -> str:
    if settings.model_version is not None:
        return f"{settings.model_name}/versions/{settings.model_version}"
    if settings.model_label:
        return f"{settings.model_name}/labels/{settings.model_label}"
    return settings.model_name


def _server_unhealthy(status: int, data: bytes) -> bool:
    """Whether an answer counts against the model server's health: unavailable (503, a label
    no version holds), not loaded (404), overloaded (429) or a server error (5xx). A 400 about
    the request proves the server alive."""
    return status in (404, 429) or status >= 500 or _is_unavailable(status, data)


def _refuse_constant(name: str) -> float:
    # TF Serving writes NaN/Infinity as bare tokens; no valid answer contains them.
    raise _MalformedAnswer(f"non-finite number {name}")


def _error_text(data: bytes) -> str:
    try:
        message = json.loads(data).get("error", "")
    except (ValueError, AttributeError):
        message = data[:200].decode("utf-8", "replace")
    return str(message)[:200]


def _is_unavailable(status: int, data: bytes) -> bool:
    """503, or TF Serving's 400 for a version label no version holds yet (the first model sync,
    a version that failed to load): the model is not available under that label, for now."""
    if status == 503:
        return True
    return status == 400 and _UNASSIGNED_LABEL in _error_text(data)


def _names_missing_overlay_signature(data: bytes) -> bool:
    # TF Serving: `Serving signature name: "gradcam_overlay" not found in signature def`.
    text = _error_text(data)
    return f'"{GRADCAM_OVERLAY_SIGNATURE}"' in text and "not found" in text


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _MalformedAnswer(f"{what} is not an integer")
    return value


def _string(value: Any, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise _MalformedAnswer(f"{what} is not a string")
    return value


def _prediction(row: dict[str, Any]) -> Prediction:
    names = row[CLASS_NAMES_OUTPUT]
    if not isinstance(names, list) or len(names) < 2:
        raise _MalformedAnswer("class_names is not a list of classes")
    class_names = tuple(_string(name, "a class name") for name in names)
    if len(set(class_names)) != len(class_names):
        raise _MalformedAnswer("class_names repeats a name")
    values = row[PROBABILITIES_OUTPUT]
    if not isinstance(values, list) or len(values) != len(class_names):
        raise _MalformedAnswer("probabilities do not match class_names")
    probabilities: list[float] = []
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _MalformedAnswer("a probability is not a finite number")
        if not -_PROBABILITY_SLACK <= value <= 1 + _PROBABILITY_SLACK:
            raise _MalformedAnswer("a probability is outside [0, 1]")
        probabilities.append(min(1.0, max(0.0, float(value))))
    if abs(sum(probabilities) - 1.0) > 1e-3:
        raise _MalformedAnswer("probabilities do not sum to 1")
    class_index = _integer(row[CLASS_INDEX_OUTPUT], CLASS_INDEX_OUTPUT)
    if not 0 <= class_index < len(class_names):
        raise _MalformedAnswer("class_index is out of range")
    if row.get(CLASS_NAME_OUTPUT, class_names[class_index]) != class_names[class_index]:
        raise _MalformedAnswer("class_name does not match class_index")
    version = _integer(row[MODEL_VERSION_OUTPUT], MODEL_VERSION_OUTPUT)
    if version < 0:
        raise _MalformedAnswer("model_version is negative")
    try:
        identity = ModelIdentity(
            name=_string(row[MODEL_NAME_OUTPUT], MODEL_NAME_OUTPUT),
            version=version,
            run_id=_string(row[MODEL_RUN_ID_OUTPUT], MODEL_RUN_ID_OUTPUT, allow_empty=True),
        )
    except ValueError as exc:
        raise _MalformedAnswer(f"the model identity is not valid: {exc}") from None
    reason, score = _ood(row)
    return Prediction(
        class_names,
        tuple(probabilities),
        class_index,
        identity,
        _refer_threshold(row),
        reason,
        score,
    )


def _ood(row: dict[str, Any]) -> tuple[str | None, float | None]:
    if OOD_REASON_OUTPUT not in row:
        return None, None  # a version exported before the check
    reason = row[OOD_REASON_OUTPUT]
    if not isinstance(reason, str) or (reason and reason not in OOD_REASONS):
        raise _MalformedAnswer("ood_reason is not one of the known reasons")
    score = row.get(OOD_SCORE_OUTPUT, 0.0)
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise _MalformedAnswer("ood_score is not a finite number")
    return reason, float(score)


def _refer_threshold(row: dict[str, Any]) -> float | None:
    if REFER_THRESHOLD_OUTPUT not in row:
        return None  # a version exported before abstention
    value = row[REFER_THRESHOLD_OUTPUT]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _MalformedAnswer("refer_threshold is not a finite number")
    if not 0 <= value <= 1:
        raise _MalformedAnswer("refer_threshold is outside [0, 1]")
    return float(value)


def _png_square_side(png: bytes) -> int:
    if not png.startswith(_PNG_MAGIC) or png[8:16] != _PNG_IHDR or len(png) < 24:
        raise _MalformedAnswer("overlay_png_bytes is not a PNG")
    width, height = struct.unpack(">II", png[16:24])
    if width != height or width < 1:
        raise _MalformedAnswer("overlay_png_bytes is not a square image")
    return int(width)


def _heatmap(value: Any) -> npt.NDArray[np.float32]:
    import numpy as np  # only a heatmap answer needs it: not on a cold start's path

    heatmap = np.asarray(value, dtype=np.float32)
    if heatmap.ndim != 2 or heatmap.shape[0] != heatmap.shape[1] or heatmap.shape[0] < 1:
        raise _MalformedAnswer("heatmap is not a square map")
    if not np.all(np.isfinite(heatmap)) or heatmap.min() < 0 - 1e-4 or heatmap.max() > 1 + 1e-4:
        raise _MalformedAnswer("heatmap values are outside [0, 1]")
    return np.clip(heatmap, 0.0, 1.0)


def _gradcam(
    row: dict[str, Any], requested_index: int | None, *, with_heatmap: bool
) -> GradcamAnswer:
    """Read a `gradcam` or `gradcam_overlay` row; the heatmap is read only `with_heatmap`."""
    prediction = _prediction(row)
    target = _integer(row[TARGET_CLASS_INDEX_OUTPUT], TARGET_CLASS_INDEX_OUTPUT)
    if not 0 <= target < len(prediction.class_names):
        raise _MalformedAnswer("target_class_index is out of range")
    if requested_index is not None and target != requested_index:
        raise _MalformedAnswer("target_class_index is not the class asked for")
    overlay = row[OVERLAY_PNG_OUTPUT]
    if not isinstance(overlay, dict) or set(overlay) != {"b64"}:
        raise _MalformedAnswer("overlay_png_bytes is not a b64 object")
    try:
        png = base64.b64decode(_string(overlay["b64"], "overlay"), validate=True)
    except binascii.Error:
        raise _MalformedAnswer("overlay_png_bytes is not base64") from None
    side = _png_square_side(png)
    heatmap = _heatmap(row[HEATMAP_OUTPUT]) if with_heatmap else None
    return GradcamAnswer(prediction, target, png, side, heatmap)
