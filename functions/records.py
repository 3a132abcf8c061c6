"""The inference record: one JSON object per inference, as stored and as `/history` serves it.

The predict and Grad-CAM cores write records for what the model answered; the migration writes
them for the original system's `history.csv` rows (`migrated_record`), so the new and the
original routes show old and new inferences alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from storage import keys

__all__ = ["LEGACY_MODEL", "RECORD_SCHEMA", "as_served", "iso_time", "migrated_record"]

RECORD_SCHEMA = 1
# The model a migrated record names: the original system's, unknown beyond that.
LEGACY_MODEL: Mapping[str, object] = {"name": "legacy", "version": 0, "run_id": ""}


# Kept in the store for the operators (the monitoring's comparison reads them), never served
# to a caller: `shadow` is the canary's answer to the caller's image, which is not their answer.
_OPERATOR_ONLY = ("shadow",)


def as_served(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record as a caller sees it: without the operator-only fields."""
    return {name: value for name, value in record.items() if name not in _OPERATOR_ONLY}


def iso_time(moment: datetime) -> str:
    """UTC, microseconds, `Z` suffix: the one time format of records and answers."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def migrated_record(
    *,
    inference_id: str,
    user_id: str,
    class_names: Sequence[str],
    probabilities: Mapping[str, float],
    source: str,
    line: int,
) -> dict[str, Any]:
    """The record of one row of the original's history: what it predicted, and from where."""
    index = max(range(len(class_names)), key=lambda i: probabilities[class_names[i]])
    return {
        "schema": RECORD_SCHEMA,
        "id": inference_id,
        "kind": "predict",
        "user_id": user_id,
        "created_at": iso_time(keys.inference_id_time(inference_id)),
        "model": dict(LEGACY_MODEL),
        "predicted_class": class_names[index],
        "class_index": index,
        "class_names": list(class_names),
        "probabilities": {name: float(probabilities[name]) for name in class_names},
        "migrated": {"source": source, "line": line},
    }
