"""Drift of live traffic, per day and model version, from the inference records.

For each model version that answered on the day: the class mix, the decision mix (answered,
`refer` = abstention, `not_a_chest_xray` = refusal), the confidence and simple input statistics
(width, height, size in bytes, and the grey-level mean and standard deviation the functions
record as `input.stats`; older records lack them and count only where they have them). Each
feature is compared, by population stability index (`monitoring.stats`), with two references:

- `training`: the data the version was trained on. Its run's `dataset.csv` (under
  `output/learning/<run_id>/`, the run named by the records' `model.run_id` or the registry)
  gives the class mix of its training split; a fixed sample of those images (the first N by
  SHA-256 of their key, so every computation picks the same ones) gives the input statistics,
  measured with the functions' own `image_statistics`. Computed once per run and kept as
  `output/monitoring/reference/<run_id>.json`. Confidence and decisions have no training
  reference.
- `previous_weeks`: the records of the `weeks` weeks before the day, of the same version when
  it has enough of them, else of every version (a new version is compared with what the users
  sent before it).

A feature with fewer than `min_records` values on a side is not scored (`too_few`). The day's
`summary.json` and one PNG per version go to `output/monitoring/<day>/`. Drift is detected when
any PSI passes the threshold; the command then exits 3, and the Prometheus textfile says so.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from PIL import Image

from common.textfile import label_value, write_textfile
from functions.images import image_statistics
from functions.records import iso_time
from model_contract.registry import ModelRegistry
from monitoring.records import (
    REFER,
    REFUSED,
    confidence,
    decision,
    model_version,
    number,
    read_records,
)
from monitoring.stats import categorical_psi, numeric_psi, rate, shares, summary
from storage import ObjectNotFound, PreconditionFailed, Store, keys

__all__ = [
    "DATASET_FILE",
    "DriftOptions",
    "DriftOutcome",
    "metrics_text",
    "run_drift",
    "training_reference",
    "write_textfile",
]

# The training job's record of the data a run saw (training_job.outputs.DATASET_FILE; a test
# holds the two names together: the job is TensorFlow-heavy and not importable from here).
DATASET_FILE = "dataset.csv"
SUMMARY_FILE = "summary.json"
REFERENCE_SCHEMA = 1
TRAINING = "training"
PREVIOUS_WEEKS = "previous_weeks"
ANSWERED = "answered"
_OUTCOMES = (ANSWERED, REFER, REFUSED)
# Which training split stands for "the training data" (all readable rows when it has none).
_TRAIN_SPLIT = "train"
_READ_THREADS = 8
_INPUT_FEATURES: dict[str, tuple[str, ...]] = {
    "width": ("input", "width"),
    "height": ("input", "height"),
    "size_bytes": ("input", "size_bytes"),
    "grey_mean": ("input", "stats", "mean"),
    "grey_std": ("input", "stats", "std"),
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DriftOptions:
    day: date
    weeks: int = 4
    threshold: float = 0.2
    min_records: int = 50
    reference_images: int = 300
    plots: bool = True


@dataclass
class DriftOutcome:
    drift_detected: bool
    message: str
    summary: dict[str, Any] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)


# -- features -----------------------------------------------------------------------------------


def _categorical(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    outcomes = []
    for record in records:
        value = decision(record)
        outcomes.append(value if value in (REFER, REFUSED) else ANSWERED)
    return {
        "class": [str(record.get("predicted_class")) for record in records],
        "decision": outcomes,
    }


def _numeric(records: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {
        "confidence": [v for r in records if (v := confidence(r)) is not None]
    }
    for name, path in _INPUT_FEATURES.items():
        found[name] = [v for r in records if (v := number(r, *path)) is not None]
    return found


def _describe(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    categorical, numeric = _categorical(records), _numeric(records)
    outcomes = categorical["decision"]
    return {
        "records": len(records),
        "class_mix": shares(categorical["class"]),
        "decision_mix": shares(outcomes, _OUTCOMES),
        "refusal_rate": rate(outcomes.count(REFUSED), len(outcomes)),
        "abstention_rate": rate(outcomes.count(REFER), len(outcomes)),
        "numbers": {name: summary(values) for name, values in numeric.items()},
    }


# -- the training data's reference --------------------------------------------------------------


def _image_facts(db: Store, key: str) -> dict[str, float] | None:
    try:
        data = db.get_bytes(key)
        facts = dict(image_statistics(data))
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
    except (ObjectNotFound, OSError, ValueError):
        return None
    return {
        "width": float(width),
        "height": float(height),
        "size_bytes": float(len(data)),
        "grey_mean": facts["mean"],
        "grey_std": facts["std"],
    }


def training_reference(
    root: Store,
    db: Store,
    run_id: str,
    *,
    images: int = 300,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any] | None:
    """The training data of run `run_id` summarised (cached in the store); None without a
    `dataset.csv` for the run."""
    cache_key = keys.monitoring_reference(run_id)
    try:
        cached = root.get_json(cache_key)
        if isinstance(cached, dict) and cached.get("schema") == REFERENCE_SCHEMA:
            return cached
    except (ObjectNotFound, ValueError):
        pass
    try:
        text = root.get_bytes(keys.learning_file(run_id, DATASET_FILE)).decode("utf-8")
    except ObjectNotFound:
        return None
    rows = [row for row in csv.DictReader(io.StringIO(text)) if row.get("readable") == "True"]
    train = [row for row in rows if row.get("split") == _TRAIN_SPLIT] or rows
    sample = sorted(
        (row["key"] for row in train if row.get("key")),
        key=lambda key: hashlib.sha256(key.encode("utf-8")).hexdigest(),
    )[: max(0, images)]
    with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="reference") as pool:
        measured = [facts for facts in pool.map(lambda k: _image_facts(db, k), sample) if facts]
    document = {
        "schema": REFERENCE_SCHEMA,
        "run_id": run_id,
        "created_at": iso_time(clock()),
        "dataset": keys.learning_file(run_id, DATASET_FILE),
        "split": _TRAIN_SPLIT if train is not rows else "all",
        "images": len(train),
        "class_counts": dict(sorted(Counter(row.get("class", "") for row in train).items())),
        "sample": {"asked": len(sample), "measured": len(measured), "order": "sha256 of key"},
        "values": {name: [facts[name] for facts in measured] for name in _INPUT_FEATURES},
    }
    with contextlib.suppress(PreconditionFailed):  # create-only: a concurrent run wrote it
        root.put_json(cache_key, document, if_none_match=True)
    return document


# -- scoring ------------------------------------------------------------------------------------


def _score(
    categorical: Mapping[str, Sequence[str]],
    numeric: Mapping[str, Sequence[float]],
    reference_categorical: Mapping[str, Mapping[str, float]],
    reference_numeric: Mapping[str, Sequence[float]],
    reference_counts: Mapping[str, int],
    options: DriftOptions,
) -> dict[str, Any]:
    """PSI of every feature both sides have enough values of."""
    psi: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for name, values in categorical.items():
        if name not in reference_categorical:
            continue
        if len(values) < options.min_records or reference_counts.get(name, 0) < options.min_records:
            psi[name], notes[name] = None, "too_few"
            continue
        psi[name] = categorical_psi(reference_categorical[name], shares(values))
    for name, number_values in numeric.items():
        if name not in reference_numeric:
            continue
        reference = reference_numeric[name]
        if len(number_values) < options.min_records or len(reference) < options.min_records:
            psi[name], notes[name] = None, "too_few"
            continue
        psi[name], _ = numeric_psi(reference, number_values)
    drifted = sorted(
        name for name, value in psi.items() if value is not None and value > options.threshold
    )
    return {"psi": psi, "not_scored": notes, "drifted": drifted}


def _version_run_id(records: Sequence[Mapping[str, Any]], registry: ModelRegistry) -> str | None:
    run_ids = Counter(
        str(model.get("run_id"))
        for record in records
        if isinstance(model := record.get("model"), Mapping) and model.get("run_id")
    )
    if run_ids:
        return run_ids.most_common(1)[0][0]
    version = model_version(records[0]) if records else None
    entry = registry.load().versions.get(version) if version is not None else None
    return entry.run_id if entry is not None and entry.run_id else None


@dataclass
class _Version:
    version: int
    today: list[dict[str, Any]]
    previous: list[dict[str, Any]]
    previous_scope: str
    reference: dict[str, Any] | None
    run_id: str | None
    report: dict[str, Any] = field(default_factory=dict)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1) - timedelta(microseconds=1)


def run_drift(
    root: Store,
    db: Store,
    model_name: str,
    options: DriftOptions,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DriftOutcome:
    """Score the day's records of every version against both references; write the summary
    and plots under `output/monitoring/<day>/`."""
    start, stop = _day_bounds(options.day)
    found = read_records(root, start, stop, model_name=model_name)
    history_start = start - timedelta(weeks=options.weeks)
    history = read_records(
        root, history_start, start - timedelta(microseconds=1), model_name=model_name
    )
    registry = ModelRegistry(root, model_name)
    by_version: dict[int, list[dict[str, Any]]] = {}
    for record in found.records:
        version = model_version(record)
        if version is not None:
            by_version.setdefault(version, []).append(record)
    versions = []
    for version, today in sorted(by_version.items()):
        same = [record for record in history.records if model_version(record) == version]
        scope = "same_version" if len(same) >= options.min_records else "all_versions"
        run_id = _version_run_id(today, registry)
        reference = (
            training_reference(root, db, run_id, images=options.reference_images, clock=clock)
            if run_id
            else None
        )
        versions.append(
            _Version(
                version=version,
                today=today,
                previous=same if scope == "same_version" else history.records,
                previous_scope=scope,
                reference=reference,
                run_id=run_id,
            )
        )
    for entry in versions:
        entry.report = _version_report(entry, options)
    drift = any(entry.report["drift_detected"] for entry in versions)
    document: dict[str, Any] = {
        "schema": 1,
        "model": model_name,
        "day": options.day.isoformat(),
        "created_at": iso_time(clock()),
        "window": {"start": iso_time(start), "stop": iso_time(stop)},
        "previous_weeks": {
            "weeks": options.weeks,
            "start": iso_time(history_start),
            "records": len(history.records),
        },
        "threshold": options.threshold,
        "min_records": options.min_records,
        "psi": {
            "formula": "sum_i (a_i - e_i) * ln(a_i / e_i), shares under EPSILON taken as 1e-4",
            "reading": "< 0.1 no significant change; 0.1-0.25 moderate; > 0.25 significant",
        },
        "records": {
            "read": len(found.records),
            "users": found.users,
            "skipped": dict(sorted(found.skipped.items())),
        },
        "versions": {str(entry.version): entry.report for entry in versions},
        "drift_detected": drift,
    }
    written = _write_plots(root, options, versions, model_name)
    document["plots"] = list(written)
    summary_key = keys.monitoring_day_file(options.day, SUMMARY_FILE)
    root.put_json(summary_key, document)
    if not versions:
        message = f"no records of {model_name} on {options.day}"
    elif drift:
        message = "drift detected: " + "; ".join(
            f"version {entry.version} vs {reference}: {', '.join(result['drifted'])}"
            for entry in versions
            for reference, result in entry.report["references"].items()
            if result.get("drifted")
        )
    else:
        message = f"no drift on {options.day} (threshold {options.threshold})"
    return DriftOutcome(drift, message, document, [summary_key, *written])


def _version_report(entry: _Version, options: DriftOptions) -> dict[str, Any]:
    categorical, numeric = _categorical(entry.today), _numeric(entry.today)
    previous_categorical, previous_numeric = _categorical(entry.previous), _numeric(entry.previous)
    previous = _score(
        categorical,
        numeric,
        {name: shares(values) for name, values in previous_categorical.items()},
        previous_numeric,
        {name: len(values) for name, values in previous_categorical.items()},
        options,
    )
    previous.update(
        status="ok" if len(entry.previous) >= options.min_records else "too_few",
        scope=entry.previous_scope,
        records=len(entry.previous),
    )
    references: dict[str, Any] = {PREVIOUS_WEEKS: previous}
    if entry.reference is None:
        references[TRAINING] = {
            "status": "unavailable",
            "run_id": entry.run_id,
            "psi": {},
            "drifted": [],
            "detail": "no dataset.csv for the run" if entry.run_id else "no run id",
        }
    else:
        class_counts = entry.reference.get("class_counts") or {}
        total = sum(class_counts.values())
        training = _score(
            {"class": categorical["class"]},
            {name: numeric[name] for name in _INPUT_FEATURES},
            {"class": {name: count / total for name, count in class_counts.items()}}
            if total
            else {},
            entry.reference.get("values") or {},
            {"class": total},
            options,
        )
        training.update(
            status="ok",
            run_id=entry.run_id,
            images=entry.reference.get("images"),
            sampled=(entry.reference.get("sample") or {}).get("measured"),
            class_mix={name: count / total for name, count in class_counts.items()}
            if total
            else {},
        )
        references[TRAINING] = training
    too_few_today = len(entry.today) < options.min_records
    return {
        "model_version": entry.version,
        "run_id": entry.run_id,
        **_describe(entry.today),
        "status": "too_few" if too_few_today else "ok",
        "references": references,
        "drift_detected": any(result.get("drifted") for result in references.values()),
    }


def _write_plots(
    root: Store, options: DriftOptions, versions: Sequence[_Version], model_name: str
) -> list[str]:
    if not versions or not options.plots:
        return []
    from monitoring import plots

    written = []
    for entry in versions:
        today_label = f"{options.day} (n={len(entry.today)})"
        scope = entry.previous_scope.replace("_", " ")
        previous_label = f"previous {options.weeks} weeks ({scope})"
        categorical = {
            "class mix": {
                today_label: shares(_categorical(entry.today)["class"]),
                previous_label: shares(_categorical(entry.previous)["class"]),
            },
            "decisions (refer = abstention, not_a_chest_xray = refusal)": {
                today_label: shares(_categorical(entry.today)["decision"], _OUTCOMES),
                previous_label: shares(_categorical(entry.previous)["decision"], _OUTCOMES),
            },
        }
        training = entry.report["references"][TRAINING]
        if training.get("class_mix"):
            categorical["class mix"][f"training (run {entry.run_id})"] = training["class_mix"]
        today_numeric, previous_numeric = _numeric(entry.today), _numeric(entry.previous)
        reference_values = (entry.reference or {}).get("values") or {}
        numeric: dict[str, dict[str, list[float]]] = {}
        for name in today_numeric:
            series = {"day": today_numeric[name], "previous weeks": previous_numeric[name]}
            if reference_values.get(name):
                series["training sample"] = list(reference_values[name])
            numeric[name] = series
        psi = {
            reference: result.get("psi", {})
            for reference, result in entry.report["references"].items()
        }
        data = plots.drift_figure(
            title=f"{model_name} version {entry.version} on {options.day}: drift",
            categorical=categorical,
            numeric=numeric,
            psi=psi,
            threshold=options.threshold,
        )
        key = keys.monitoring_day_file(options.day, f"version-{entry.version}.png")
        root.put(key, data, content_type="image/png")
        written.append(key)
    return written


# -- the metric -----------------------------------------------------------------------------------


def _label(value: object) -> str:
    return f'"{label_value(value)}"'


def metrics_text(outcome: DriftOutcome, *, now: datetime | None = None) -> str:
    """The outcome in Prometheus's text exposition format (for node-exporter's textfile
    collector): PSI per feature, version and reference; whether drift was detected."""
    lines = [
        "# HELP xray_monitoring_drift_psi Population stability index of a feature of the day's "
        "records against a reference.",
        "# TYPE xray_monitoring_drift_psi gauge",
    ]
    versions = outcome.summary.get("versions", {})
    for version, report in versions.items():
        for reference, result in report.get("references", {}).items():
            for feature, value in sorted(result.get("psi", {}).items()):
                if value is None:
                    continue
                labels = (
                    f"feature={_label(feature)},model_version={_label(version)},"
                    f"reference={_label(reference)}"
                )
                lines.append(f"xray_monitoring_drift_psi{{{labels}}} {value}")
    lines += [
        "# HELP xray_monitoring_drift_records Records of the day per model version.",
        "# TYPE xray_monitoring_drift_records gauge",
        *(
            f"xray_monitoring_drift_records{{model_version={_label(version)}}} "
            f"{report.get('records', 0)}"
            for version, report in versions.items()
        ),
        "# HELP xray_monitoring_drift_detected 1 when any PSI passed the threshold.",
        "# TYPE xray_monitoring_drift_detected gauge",
        f"xray_monitoring_drift_detected {int(outcome.drift_detected)}",
        "# HELP xray_monitoring_drift_last_run_timestamp_seconds When the drift job last ran.",
        "# TYPE xray_monitoring_drift_last_run_timestamp_seconds gauge",
        f"xray_monitoring_drift_last_run_timestamp_seconds "
        f"{(now or datetime.now(UTC)).timestamp():.3f}",
    ]
    return "\n".join(lines) + "\n"
