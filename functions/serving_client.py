"""The REST client for the model server (TF Serving or the local stand-in; it cannot tell which).

It speaks exactly `docs/CONTRACTS.md`: `POST {TF_SERVING_URL}/v1/models/{name}[/labels/{label}|
/versions/{v}]:predict` in row format with `{"b64": ...}` image bytes, for the `serving_default`
and `gradcam` signatures, and reads the class names, probabilities and model identity from every
answer. Connections are pooled and kept alive (urllib3). Connection failures and 503s are retried
with full-jitter backoff inside one total deadline; what is left is mapped to the caller's
status: unreachable or not loaded 503 (with Retry-After), timed out 504, error or malformed answer
502. The upstream URL and message never reach the caller.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProtocolError, ReadTimeoutError

from functions.errors import BadGateway, ModelTimeout, ModelUnavailable
from functions.settings import ServingSettings

__all__ = ["GradcamResult", "ModelIdentity", "Prediction", "ServingClient"]

logger = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PROBABILITY_SLACK = 1e-4
# Upstream error texts may echo request fragments; long base64 runs are cut before logging.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{40,}")
_BACKOFF_BASE_SECONDS = 0.05
_BACKOFF_CAP_SECONDS = 1.0


class _MalformedAnswer(ValueError):
    """The model server's 200 answer does not follow the contract."""


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: int
    run_id: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "run_id": self.run_id}


@dataclass(frozen=True)
class Prediction:
    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    class_index: int
    model: ModelIdentity

    @property
    def class_name(self) -> str:
        return self.class_names[self.class_index]

    def probabilities_by_class(self) -> dict[str, float]:
        return dict(zip(self.class_names, self.probabilities, strict=True))


@dataclass(frozen=True)
class GradcamResult:
    prediction: Prediction
    target_class_index: int
    overlay_png: bytes
    heatmap: npt.NDArray[np.float32]  # [S, S] in [0, 1]

    @property
    def target_class(self) -> str:
        return self.prediction.class_names[self.target_class_index]


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

    @property
    def settings(self) -> ServingSettings:
        return self._settings

    def close(self) -> None:
        self._pool.clear()

    def predict(self, images: Sequence[bytes]) -> list[Prediction]:
        """One prediction per image, in order (`serving_default`)."""
        if not images:
            return []
        payload = {
            "signature_name": "serving_default",
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
        }
        rows = self._rows(self._call(payload), len(images))
        try:
            return [_prediction(row) for row in rows]
        except (_MalformedAnswer, KeyError, TypeError, ValueError) as exc:
            raise self._malformed(exc) from None

    def gradcam(self, image: bytes, target_class_index: int | None = None) -> GradcamResult:
        """Grad-CAM for one image, for the predicted class (None) or the given class index."""
        payload = {
            "signature_name": "gradcam",
            "instances": [
                {
                    "image_bytes": {"b64": base64.b64encode(image).decode("ascii")},
                    "target_class": -1 if target_class_index is None else int(target_class_index),
                }
            ],
        }
        (row,) = self._rows(self._call(payload), 1)
        try:
            return _gradcam(row, target_class_index)
        except (_MalformedAnswer, KeyError, TypeError, ValueError) as exc:
            raise self._malformed(exc) from None

    # -- transport -----------------------------------------------------------------------------

    def _call(self, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload).encode("utf-8")
        settings = self._settings
        deadline = self._clock() + settings.deadline
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ModelTimeout()
            timeout = urllib3.Timeout(
                connect=min(settings.connect_timeout, remaining),
                read=min(settings.read_timeout, remaining),
            )
            try:
                response = self._pool.request(
                    "POST",
                    self._url,
                    body=body,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                    timeout=timeout,
                    retries=False,
                    redirect=False,
                )
            except ReadTimeoutError:
                # Not retried: the server may still be working on it, and the deadline is
                # better spent answering than queueing a second copy.
                raise ModelTimeout() from None
            except (ConnectTimeoutError, ProtocolError) as exc:
                # Refused, reset, or a kept-alive connection the server had closed.
                if self._may_retry(attempt, deadline):
                    continue
                logger.warning("model server unreachable: %s", type(exc).__name__)
                raise self._unavailable() from None
            except HTTPError as exc:
                logger.warning("model server call failed: %s", type(exc).__name__)
                raise self._unavailable() from None
            status = response.status
            if status == 200:
                try:
                    return json.loads(response.data, parse_constant=_refuse_constant)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise self._malformed(exc) from None
            if status == 503 and self._may_retry(attempt, deadline):
                continue
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
        return ModelUnavailable(retry_after=self._settings.retry_after_seconds)

    def _error_for(self, status: int, data: bytes) -> Exception:
        logger.warning(
            "model server answered %d: %s", status, _BASE64_RUN.sub("<…>", _error_text(data))
        )
        if status in (404, 429, 503):
            # 404: the model or label is not loaded (yet, or during a version swap gap);
            # 429: overloaded. Both are worth retrying later, not the caller's fault.
            return self._unavailable()
        if status == 504:
            return ModelTimeout()
        return BadGateway()

    def _malformed(self, exc: Exception) -> BadGateway:
        logger.warning("model server answer does not follow the contract: %s", exc)
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


def _refuse_constant(name: str) -> float:
    # TF Serving writes NaN/Infinity as bare tokens; no valid answer contains them.
    raise _MalformedAnswer(f"non-finite number {name}")


def _error_text(data: bytes) -> str:
    try:
        message = json.loads(data).get("error", "")
    except (ValueError, AttributeError):
        message = data[:200].decode("utf-8", "replace")
    return str(message)[:200]


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _MalformedAnswer(f"{what} is not an integer")
    return value


def _string(value: Any, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise _MalformedAnswer(f"{what} is not a string")
    return value


def _prediction(row: dict[str, Any]) -> Prediction:
    names = row["class_names"]
    if not isinstance(names, list) or len(names) < 2:
        raise _MalformedAnswer("class_names is not a list of classes")
    class_names = tuple(_string(name, "a class name") for name in names)
    if len(set(class_names)) != len(class_names):
        raise _MalformedAnswer("class_names repeats a name")
    values = row["probabilities"]
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
    class_index = _integer(row["class_index"], "class_index")
    if not 0 <= class_index < len(class_names):
        raise _MalformedAnswer("class_index is out of range")
    if row.get("class_name", class_names[class_index]) != class_names[class_index]:
        raise _MalformedAnswer("class_name does not match class_index")
    version = _integer(row["model_version"], "model_version")
    if version < 0:
        raise _MalformedAnswer("model_version is negative")
    identity = ModelIdentity(
        name=_string(row["model_name"], "model_name"),
        version=version,
        run_id=_string(row["model_run_id"], "model_run_id", allow_empty=True),
    )
    return Prediction(class_names, tuple(probabilities), class_index, identity)


def _gradcam(row: dict[str, Any], requested_index: int | None) -> GradcamResult:
    prediction = _prediction(row)
    target = _integer(row["target_class_index"], "target_class_index")
    if not 0 <= target < len(prediction.class_names):
        raise _MalformedAnswer("target_class_index is out of range")
    if requested_index is not None and target != requested_index:
        raise _MalformedAnswer("target_class_index is not the class asked for")
    overlay = row["overlay_png_bytes"]
    if not isinstance(overlay, dict) or set(overlay) != {"b64"}:
        raise _MalformedAnswer("overlay_png_bytes is not a b64 object")
    try:
        png = base64.b64decode(_string(overlay["b64"], "overlay"), validate=True)
    except binascii.Error:
        raise _MalformedAnswer("overlay_png_bytes is not base64") from None
    if not png.startswith(_PNG_MAGIC):
        raise _MalformedAnswer("overlay_png_bytes is not a PNG")
    heatmap = np.asarray(row["heatmap"], dtype=np.float32)
    if heatmap.ndim != 2 or heatmap.shape[0] != heatmap.shape[1] or heatmap.shape[0] < 1:
        raise _MalformedAnswer("heatmap is not a square map")
    if not np.all(np.isfinite(heatmap)) or heatmap.min() < 0 - 1e-4 or heatmap.max() > 1 + 1e-4:
        raise _MalformedAnswer("heatmap values are outside [0, 1]")
    return GradcamResult(prediction, target, png, np.clip(heatmap, 0.0, 1.0))
