"""A run's learning outputs under `output/learning/<run_id>/`: their names and their writer.

Every run leaves its per-epoch history, the dataset it saw, the reports and confusion matrices
of both models, the training curves, the Keras model file (the next run fine-tunes from it), the
candidate SavedModel, the decision record and its own log. No TensorFlow here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.logs import json_safe
from storage import Store, keys, upload_folder
from training_job.discovery import ImageRecord

__all__ = [
    "CURVES_FILE",
    "DATASET_FILE",
    "DECISION_FILE",
    "HISTORY_FILE",
    "LOG_FILE",
    "MODEL_FILE",
    "RELIABILITY_FILE",
    "LearningOutputs",
    "confusion_file",
    "dataset_csv",
    "history_csv",
    "report_file",
]

HISTORY_FILE = "history.csv"
DATASET_FILE = "dataset.csv"
DECISION_FILE = "decision.json"
LOG_FILE = "job.log"
CURVES_FILE = "training_curves.png"
RELIABILITY_FILE = "reliability_diagram.png"
# The Keras model file of every run: the next run fine-tunes from the stable version's.
MODEL_FILE = "model.keras"


def report_file(role: str) -> str:
    """`report_candidate.json`, `report_stable.json`."""
    return f"report_{role}.json"


def confusion_file(role: str) -> str:
    return f"confusion_matrix_{role}.png"


def history_csv(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> bytes:
    """One row per epoch, columns `fields` (train.HISTORY_FIELDS)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: row.get(name) for name in fields})
    return buffer.getvalue().encode("utf-8")


def dataset_csv(records: Iterable[ImageRecord], unreadable: Iterable[str]) -> bytes:
    """Every image the run saw: its key, batch, split (and whether given), class, version tag,
    and whether it could be read. Enough to rebuild the run's exact splits."""
    skipped = set(unreadable)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["key", "batch", "split", "split_given", "class", "etag", "readable"])
    for record in records:
        writer.writerow(
            [
                record.key,
                record.batch,
                record.split,
                record.split_given,
                record.class_name,
                record.etag,
                record.key not in skipped,
            ]
        )
    return buffer.getvalue().encode("utf-8")


class LearningOutputs:
    """Writes one run's files into the root store and remembers their keys."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = keys.check_run_id(run_id)
        self.artefacts: dict[str, str] = {}

    @property
    def prefix(self) -> str:
        return keys.learning_run_prefix(self.run_id)

    def key(self, name: str) -> str:
        return keys.learning_file(self.run_id, name)

    def location(self, name: str) -> str:
        """Where a file is, for people: a path or an s3:// URL."""
        base = self.store.describe()
        return base + self.key(name) if base.endswith("/") else f"{base}/{self.key(name)}"

    def put(self, name: str, data: bytes, content_type: str) -> str:
        key = self.key(name)
        self.store.put(key, data, content_type=content_type)
        self.artefacts[name] = key
        return key

    def put_json(self, name: str, document: Any) -> str:
        key = self.key(name)
        self.store.put_json(key, json_safe(document))
        self.artefacts[name] = key
        return key

    def put_folder(self, name: str, folder: Path) -> str:
        """Upload a folder (the candidate SavedModel) under the run's candidate prefix."""
        prefix = keys.learning_candidate_prefix(self.run_id)
        upload_folder(self.store, folder, prefix)
        self.artefacts[name] = prefix
        return prefix
