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

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.logs import log_event
from functions.errors import InvalidParameter, NotAChestXray
from functions.images import ValidatedImage
from functions.records import RECORD_SCHEMA, iso_time
from functions.serving_client import GradcamAnswer, Prediction, ServingClient
from storage import PreconditionFailed, StorageError, Store, keys

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
    ) -> None:
        self._store = store
        self._client = client
        self._clock = clock
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
        model_started = time.perf_counter()
        (prediction,) = self._client.predict([image.data])
        model_ms = (time.perf_counter() - model_started) * 1000
        self._class_names = prediction.class_names
        record = self._record("predict", user_id, moment, image, prediction, model_ms, started)
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
        model_started = time.perf_counter()
        result = self._explain(image.data, target_class, with_heatmap)
        model_ms = (time.perf_counter() - model_started) * 1000
        record = self._record(
            "gradcam", user_id, moment, image, result.prediction, model_ms, started
        )
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

    # -- helpers -------------------------------------------------------------------------------

    def _explain(self, image: bytes, target_class: str | None, with_heatmap: bool) -> GradcamAnswer:
        known = self._class_names
        if target_class is not None and known is not None and target_class not in known:
            raise _unknown_class(target_class, known)
        index = known.index(target_class) if target_class is not None and known else None
        result = self._client.gradcam(image, index, with_heatmap=with_heatmap)
        names = self._class_names = result.prediction.class_names
        if target_class is None or result.target_class == target_class:
            return result
        # The first call in this process (it asked for the predicted class, which taught the
        # class list), or the model's class list changed since: ask again by the right index.
        if target_class not in names:
            raise _unknown_class(target_class, names)
        return self._client.gradcam(image, names.index(target_class), with_heatmap=with_heatmap)

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


def _unknown_class(name: str, valid: tuple[str, ...]) -> InvalidParameter:
    return InvalidParameter(
        f"unknown target_class; valid classes: {', '.join(valid)}",
        code="unknown_class",
        details={"valid_classes": list(valid)},
    )
