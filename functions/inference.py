"""Prediction and Grad-CAM core: call the model, then record the inference before answering.

Each inference is its own create-only object (`keys.inference_record`), written before the answer
leaves: if it cannot be stored the caller gets 503, never an unrecorded answer; if the model call
fails nothing is stored. A Grad-CAM overlay is written first and its record second; if the record
fails the overlay is deleted, so no image exists without its record.

Both writes are create-only under a fresh random id, so a write the storage client retried after
a lost response (it succeeded, the answer did not arrive, the retry finds the object) is
recognised as our own by its content and counts as written: no duplicate, no false 503.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from common.logs import log_event
from functions.errors import (
    ApiError,
    BadGateway,
    InvalidParameter,
    ModelTimeout,
    ModelUnavailable,
    NotAChestXray,
)
from functions.images import ValidatedImage, image_statistics
from functions.records import RECORD_SCHEMA, iso_time
from functions.serving_client import GradcamAnswer, Prediction, ServingClient
from functions.traffic import CANARY_LABEL, STABLE_LABEL, TrafficSettings, in_canary
from storage import PreconditionFailed, StorageError, Store, keys

_T = TypeVar("_T")
# A canary that fails for one of these (its server's fault, not the image's) is replaced by the
# stable model for that request: the caller gets an answer, the record says what happened.
_CANARY_FAULTS = (ModelUnavailable, ModelTimeout, BadGateway)

__all__ = ["GradcamOutcome", "InferenceService"]

logger = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class GradcamOutcome:
    record: dict[str, Any]
    result: GradcamAnswer


class InferenceService:
    def __init__(
        self,
        store: Store,
        client: ServingClient,
        *,
        clock: Callable[[], datetime] = _utc_now,
        refer_below: float | None = None,
        canary: ServingClient | None = None,
        traffic: TrafficSettings | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._clock = clock
        # The client of the `canary` label (CANARY_PERCENT, SHADOW); None: stable only.
        self._canary = canary
        self._traffic = traffic or TrafficSettings()
        # Image statistics and shadow calls run beside the model call. Two pools: statistics
        # are short and always wanted; shadow calls may hang on a sick canary and must never
        # hold up the statistics of the next request.
        self._side_work = ThreadPoolExecutor(max_workers=4, thread_name_prefix="image-stats")
        self._shadow_pool = (
            ThreadPoolExecutor(
                max_workers=self._traffic.shadow_max_in_flight, thread_name_prefix="shadow"
            )
            if canary is not None and self._traffic.shadow == CANARY_LABEL
            else None
        )
        self._shadow_slots = threading.BoundedSemaphore(self._traffic.shadow_max_in_flight)
        # The deployment's refer threshold (REFER_BELOW); None: each model version's own.
        self._refer_below = refer_below
        # The model's class list, learnt from its answers (functions never import it): lets a
        # Grad-CAM target given by name be resolved before the call.
        # Replaced whole (one attribute assignment, atomic), never mutated: no lock needed.
        self._class_names: tuple[str, ...] | None = None

    def predict(
        self, user_id: str, image: ValidatedImage, started: float, *, accept_ood: bool = False
    ) -> dict[str, Any]:
        """Predict one image and store its record; returns the record (also the answer).

        An image the model says is not a chest film is refused (NotAChestXray, its record
        stored saying so) unless `accept_ood`, which answers anyway, flagged.
        """
        moment = self._clock()
        label = self._label_for(user_id)
        stats = self._side_work.submit(_statistics, image.data)
        shadow = self._start_shadow(label, image.data)
        model_started = time.perf_counter()
        prediction, routing = self._on_label(label, lambda client: client.predict([image.data])[0])
        model_ms = (time.perf_counter() - model_started) * 1000
        self._class_names = prediction.class_names
        record = self._record("predict", user_id, moment, image, prediction, model_ms, started)
        self._complete(record, routing, stats, shadow)
        self._refuse_if_not_a_chest_film(user_id, record, prediction, accept_ood)
        self._write_record(user_id, record)
        return record

    def gradcam(
        self,
        user_id: str,
        image: ValidatedImage,
        target_class: str | None,
        started: float,
        *,
        with_heatmap: bool = False,
        accept_ood: bool = False,
    ) -> GradcamOutcome:
        """Grad-CAM for the predicted class or the named one; stores the overlay and a record.

        The heatmap is fetched from the model only `with_heatmap` (it costs the model server
        more to write as JSON than to compute); the overlay is always there.
        """
        moment = self._clock()
        label = self._label_for(user_id)
        stats = self._side_work.submit(_statistics, image.data)
        shadow = self._start_shadow(label, image.data)
        model_started = time.perf_counter()
        result, routing = self._on_label(
            label, lambda client: self._explain(client, image.data, target_class, with_heatmap)
        )
        model_ms = (time.perf_counter() - model_started) * 1000
        record = self._record(
            "gradcam", user_id, moment, image, result.prediction, model_ms, started
        )
        self._complete(record, routing, stats, shadow)
        # Refused: the record says so and no overlay is stored.
        self._refuse_if_not_a_chest_film(user_id, record, result.prediction, accept_ood)
        facts: dict[str, Any] = {
            "target_class": result.target_class,
            "target_class_index": result.target_class_index,
            "overlay_size_bytes": len(result.overlay_png),
            "overlay_size": result.overlay_size,
        }
        if result.heatmap is not None:
            facts["heatmap_size"] = int(result.heatmap.shape[0])
        record["gradcam"] = facts
        image_key = keys.gradcam_image(user_id, record["id"])
        self._create_once(image_key, result.overlay_png, "image/png")
        try:
            self._write_record(user_id, record)
        except StorageError:
            try:
                self._store.delete(image_key)
            except StorageError:
                log_event(
                    logger,
                    "gradcam_orphaned",
                    logging.ERROR,
                    "a Grad-CAM overlay is left without its record",
                    inference_id=record["id"],
                )
            raise
        return GradcamOutcome(record=record, result=result)

    # -- traffic: stable, canary, shadow ------------------------------------------------------

    def _label_for(self, user_id: str) -> str:
        if self._canary is not None and in_canary(user_id, self._traffic.canary_percent):
            return CANARY_LABEL
        return STABLE_LABEL

    def _on_label(
        self, label: str, call: Callable[[ServingClient], _T]
    ) -> tuple[_T, dict[str, Any]]:
        """`call` on the label's client; a canary failing on its server's side is replaced by
        the stable model (the record says so: `canary_fallback`)."""
        if label != CANARY_LABEL or self._canary is None:
            return call(self._client), {"routed_to": STABLE_LABEL}
        try:
            return call(self._canary), {"routed_to": CANARY_LABEL}
        except _CANARY_FAULTS as exc:
            log_event(
                logger,
                "canary_fallback",
                logging.WARNING,
                f"the canary failed ({exc.code}): the stable model answers instead",
                error=exc.code,
            )
            routing = {"routed_to": STABLE_LABEL, "canary_fallback": {"error": exc.code}}
            return call(self._client), routing

    def _start_shadow(self, label: str, image: bytes) -> Future[dict[str, Any]] | None:
        """Ask the canary the same question, on the side, when in shadow mode."""
        pool, canary = self._shadow_pool, self._canary
        if pool is None or canary is None or label != STABLE_LABEL:
            return None
        if not self._shadow_slots.acquire(blocking=False):
            future: Future[dict[str, Any]] = Future()
            future.set_result({"label": CANARY_LABEL, "status": "skipped", "reason": "busy"})
            return future

        def ask() -> dict[str, Any]:
            started = time.perf_counter()
            try:
                (answer,) = canary.predict([image])
            except ApiError as exc:
                return {
                    "label": CANARY_LABEL,
                    "status": "error",
                    "error": exc.code,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            finally:
                self._shadow_slots.release()
            return {
                "label": CANARY_LABEL,
                "status": "ok",
                "model": answer.model.to_json(),
                "predicted_class": answer.class_name,
                "probabilities": answer.probabilities_by_class(),
                "confidence": answer.confidence,
                "decision": self._decision(answer)["decision"],
                **({"ood_reason": answer.ood_reason} if answer.ood_reason else {}),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }

        try:
            # In the request's context (its trace span is the shadow call's parent).
            return pool.submit(contextvars.copy_context().run, ask)
        except RuntimeError:  # the pool is shut down (process ending)
            self._shadow_slots.release()
            return None

    def _complete(
        self,
        record: dict[str, Any],
        routing: dict[str, Any],
        stats: Future[dict[str, float] | None],
        shadow: Future[dict[str, Any]] | None,
    ) -> None:
        """Add the routing, the image statistics and the shadow answer to a record."""
        record.update(routing)
        measured = stats.result()
        if measured is not None:
            record["input"]["stats"] = measured
        if shadow is not None:
            budget = self._traffic.shadow_budget_ms
            try:
                record["shadow"] = shadow.result(timeout=budget / 1000)
            except FutureTimeout:
                record["shadow"] = {"label": CANARY_LABEL, "status": "late", "budget_ms": budget}
            except Exception as exc:  # a shadow never fails the caller's answer
                log_event(logger, "shadow_failed", logging.ERROR, f"shadow call failed: {exc!r}")
                record["shadow"] = {"label": CANARY_LABEL, "status": "error", "error": "internal"}

    # -- helpers -------------------------------------------------------------------------------

    def _explain(
        self, client: ServingClient, image: bytes, target_class: str | None, with_heatmap: bool
    ) -> GradcamAnswer:
        known = self._class_names
        if target_class is not None and known is not None and target_class not in known:
            raise _unknown_class(target_class, known)
        index = known.index(target_class) if target_class is not None and known else None
        result = client.gradcam(image, index, with_heatmap=with_heatmap)
        names = self._class_names = result.prediction.class_names
        if target_class is None or result.target_class == target_class:
            return result
        # The first call in this process (it asked for the predicted class, which taught the
        # class list), or the model's class list changed since: ask again by the right index.
        if target_class not in names:
            raise _unknown_class(target_class, names)
        return client.gradcam(image, names.index(target_class), with_heatmap=with_heatmap)

    def _record(
        self,
        kind: str,
        user_id: str,
        moment: datetime,
        image: ValidatedImage,
        prediction: Prediction,
        model_ms: float,
        started: float,
    ) -> dict[str, Any]:
        inference_id = keys.new_inference_id(moment)
        return {
            "schema": RECORD_SCHEMA,
            "id": inference_id,
            "kind": kind,
            "user_id": user_id,
            "created_at": iso_time(keys.inference_id_time(inference_id)),
            "model": prediction.model.to_json(),
            "predicted_class": prediction.class_name,
            "class_index": prediction.class_index,
            "class_names": list(prediction.class_names),
            "probabilities": prediction.probabilities_by_class(),
            **self._decision(prediction),
            "input": image.describe(),
            "latency_ms": {
                "model": round(model_ms, 3),
                # Up to the record write: the latency the caller sees, less the write itself.
                "total": round((time.perf_counter() - started) * 1000, 3),
            },
        }

    def _refuse_if_not_a_chest_film(
        self, user_id: str, record: dict[str, Any], prediction: Prediction, accept_ood: bool
    ) -> None:
        reason = prediction.ood_reason
        facts: dict[str, Any]
        if reason is None:
            facts = {
                "checked": False,
                "note": f"model version {prediction.model.version} does not check whether "
                "an image is a chest film (exported before the check)",
            }
        else:
            facts = {"checked": True, "reason": reason, "score": prediction.ood_score}
            if reason:
                facts["accepted"] = accept_ood
        record["ood"] = facts
        if not reason or accept_ood:
            return
        record["decision"] = NotAChestXray.code
        self._write_record(user_id, record)
        raise NotAChestXray(
            f"{_OOD_MESSAGES.get(reason, _OOD_MESSAGES['features'])}; an expert can ask for "
            "the classification anyway with accept_ood=true",
            details={"inference_id": record["id"], "reason": reason},
        )

    def _decision(self, prediction: Prediction) -> dict[str, Any]:
        """`decision`: the class, or `refer` when the answer's confidence is below the
        threshold (the deployment's, else the model's), and what it was decided on."""
        confidence = prediction.confidence
        basis: dict[str, Any] = {"confidence": confidence}
        if self._refer_below is not None:
            threshold: float | None = self._refer_below
            basis.update(threshold=threshold, source="deployment")
        elif prediction.refer_threshold is not None:
            threshold = prediction.refer_threshold
            basis.update(threshold=threshold, source="model")
        else:
            threshold = None
            basis.update(
                threshold=None,
                source="none",
                note=f"model version {prediction.model.version} has no refer threshold (exported "
                "before abstention): its answers are never referred unless REFER_BELOW is set",
            )
        refer = threshold is not None and confidence < threshold
        return {"decision": "refer" if refer else prediction.class_name, "abstention": basis}

    def _create_once(self, key: str, data: bytes, content_type: str) -> None:
        """Create `key`; an object already there with the same bytes is our own earlier write."""
        try:
            self._store.put(key, data, content_type=content_type, if_none_match=True)
        except PreconditionFailed:
            # 128 random bits in the id: only a retried write of ours can have created it.
            if self._store.get_bytes(key) != data:
                raise
            log_event(
                logger,
                "retried_write_found",
                message="a retried write had already stored its object",
                object=key.rsplit("/", 1)[-1],
            )

    def _write_record(self, user_id: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
        self._create_once(keys.inference_record(user_id, record["id"]), data, "application/json")


_OOD_MESSAGES = {
    "colour": "this looks like a colour photograph, not an X-ray (X-rays are grey)",
    "nearly_constant": "this image is nearly blank: there is nothing to read",
    "aspect_ratio": "this image is far from square (over 2:1), unlike a frontal chest film",
    "features": "this does not look like a frontal chest X-ray of the kind the model was "
    "trained on",
}


def _statistics(data: bytes) -> dict[str, float] | None:
    try:
        return image_statistics(data)
    except (OSError, ValueError) as exc:  # validated already: should not happen
        log_event(logger, "image_statistics_failed", logging.WARNING, str(exc))
        return None


def _unknown_class(name: str, valid: tuple[str, ...]) -> InvalidParameter:
    return InvalidParameter(
        f"unknown target_class; valid classes: {', '.join(valid)}",
        code="unknown_class",
        details={"valid_classes": list(valid)},
    )
