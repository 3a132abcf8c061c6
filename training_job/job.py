"""The training job: retrain from the image database, promote only a measurable winner.

`run_job(settings, options)` runs one job and returns what it did (metrics, the verdict,
artefact keys); `retraining(storage_path, db_storage_path)` is the original system's entry
point. A run discovers the database and fingerprints it; with the fingerprint the stable model
was trained on (and no `force`) it stops there. Otherwise it evaluates the stable model on the
test split, trains a challenger (fine-tuned from the stable model's weights, or from scratch),
exports it and evaluates it the same way through its SavedModel, and promotes it through the
registry only when `training_job.decision` says it wins (DESIGN.md decision 7). Every run
writes its outputs under `output/learning/<run_id>/`, promoted or not.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tempfile
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

from cnn_vit.config import CLASS_NAMES, ModelConfig
from common.logs import json_safe
from common.settings import load_environment
from model_contract.artifact import MODEL_INFO_PATH
from model_contract.documents import VersionEntry
from model_contract.errors import StableChanged
from model_contract.registry import ModelRegistry, StoredExport
from storage import StorageAreas, keys, open_areas
from training_job.decision import Decision, decide
from training_job.discovery import DatasetError, DatasetIndex, ImageRecord, discover_dataset
from training_job.image_cache import ImageCache, LocalImages
from training_job.joblog import JobLog
from training_job.metrics import ClassificationReport, classification_report
from training_job.options import TrainingOptions
from training_job.outputs import (
    CURVES_FILE,
    DATASET_FILE,
    DECISION_FILE,
    HISTORY_FILE,
    LOG_FILE,
    MODEL_FILE,
    RELIABILITY_FILE,
    LearningOutputs,
    confusion_file,
    dataset_csv,
    history_csv,
    report_file,
)
from training_job.settings import TrainingJobSettings
from training_job.strategy import is_chief_task

if TYPE_CHECKING:
    from model_export.export import ComputeDtype, ExportResult
    from training_job.candidate import TrainedCandidate
    from training_job.starting_weights import StartingWeights
    from training_job.strategy import PrecisionPlan, StrategyPlan

__all__ = [
    "DECISION_SCHEMA",
    "JobError",
    "JobResult",
    "Verdict",
    "new_run_id",
    "retraining",
    "run_job",
]

DECISION_SCHEMA = 1
Verdict = Literal["promote", "keep", "unchanged", "failed", "worker"]


class JobError(RuntimeError):
    """The job cannot run as asked (no test images, a stable model that cannot be read...)."""


def new_run_id(moment: datetime | None = None) -> str:
    """`20261127T101500Z-ab12cd`: sorts by start time, unique by its random tail."""
    moment = moment or datetime.now(UTC)
    return f"{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class JobResult:
    """What a run did. `promoted` is True only when a new version became stable."""

    run_id: str
    verdict: Verdict
    promoted: bool
    reason: str
    dry_run: bool = False
    published_version: int | None = None
    stable_version: int | None = None  # the stable version after the run
    metrics: Mapping[str, Any] = field(default_factory=dict)
    artefacts: Mapping[str, str] = field(default_factory=dict)  # name -> key in the root store
    report: str = ""  # where decision.json is (a path or an s3:// URL)


@dataclass
class _Run:
    """State of one run, filled in as its steps complete."""

    run_id: str
    settings: TrainingJobSettings
    options: TrainingOptions
    log: JobLog
    areas: StorageAreas
    registry: ModelRegistry
    outputs: LearningOutputs
    config: ModelConfig
    started_at: str
    dataset: DatasetIndex | None = None
    stable: VersionEntry | None = None
    unreadable: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    is_chief: bool = True
    # The temperature fitted on the validation split and what it changed (calibration.py).
    temperature: float = 1.0
    calibration: dict[str, Any] = field(default_factory=dict)
    # The confidence below which answers are referred, chosen on the validation split.
    refer_threshold: float = 0.0
    abstention: dict[str, Any] = field(default_factory=dict)
    # The out-of-distribution statistics fitted on the training split (cnn_vit/ood.py).
    ood: Any = None
    ood_report: dict[str, Any] = field(default_factory=dict)
    test_ood_reasons: dict[str, Any] = field(default_factory=dict)
    # Grad-CAM against the test split's lesion masks, per evaluated role.
    explanations: dict[str, Any] = field(default_factory=dict)
    # The test split's probabilities as each evaluated SavedModel answered them.
    test_probabilities: dict[str, Any] = field(default_factory=dict)


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the run ------------------------------------------------------------------------------------


def run_job(
    settings: TrainingJobSettings,
    options: TrainingOptions | None = None,
    *,
    stream: TextIO | None = None,
    areas: StorageAreas | None = None,
) -> JobResult:
    """Run the training job once (see the module docstring); its log lines go to `stream`
    (default stdout). Raises on failure, after writing the failure into the run's decision
    record and log where the store allows. `areas` replaces the stores the settings name
    (tests pass wrapped stores to act at the storage seam)."""
    options = options or TrainingOptions()
    run_id = options.run_id or new_run_id()
    log = JobLog(run_id, stream)
    config = options.model
    areas = areas or open_areas(settings.storage)
    run = _Run(
        run_id=run_id,
        settings=settings,
        options=options,
        log=log,
        areas=areas,
        registry=ModelRegistry(areas.root, settings.model_name),
        outputs=LearningOutputs(areas.root, run_id),
        config=config,
        started_at=_utc_now(),
        # Under MultiWorkerMirroredStrategy every worker runs the job; only the chief writes.
        is_chief=is_chief_task(settings.tf_config),
    )
    log.event(
        "job_started",
        model_name=settings.model_name,
        preset=config.name,
        stores=areas.describe(),
        options=options.to_json(),
    )
    try:
        return _run(run)
    except BaseException as exc:
        _record_failure(run, exc)
        raise


def _run(run: _Run) -> JobResult:
    options, log = run.options, run.log
    run.dataset = discover_dataset(run.areas.db, split_seed=options.split_seed)
    log.event("data_discovered", **run.dataset.summary())

    registry_state = run.registry.load()
    if registry_state.stable is not None:
        run.stable = registry_state.versions.get(registry_state.stable)
    stable = run.stable
    log.event(
        "stable_model",
        version=stable.version if stable else None,
        stable_run_id=stable.run_id if stable else None,
        dataset_fingerprint=stable.dataset_fingerprint if stable else None,
    )
    if stable is not None and stable.dataset_fingerprint == run.dataset.fingerprint:
        if not options.force:
            return _unchanged(run, stable)
        log.event("forced", reason="the data is unchanged, but the run was forced")

    # TensorFlow from here on: a run with nothing to do never pays for its import.
    from training_job.pipeline import find_unreadable
    from training_job.starting_weights import load_starting_weights
    from training_job.strategy import (
        chief_text,
        create_strategy,
        plan_precision,
        plan_strategy,
        visible_gpus,
    )

    gpus = visible_gpus()
    strategy_plan = plan_strategy(
        options.strategy, gpu_count=len(gpus), tf_config=run.settings.tf_config
    )
    precision = plan_precision(options.precision, gpus)
    log.event(
        "strategy", strategy=strategy_plan.to_json(), precision=precision.to_json(), gpus=len(gpus)
    )
    # Before any other TensorFlow op runs (the image check below decodes with tf.data):
    # MultiWorkerMirroredStrategy configures the collectives when the runtime starts.
    strategy = create_strategy(strategy_plan, options.collective_timeout_seconds)
    if strategy_plan.kind == "multi-worker" and options.run_id is None:
        # Each worker drew its own id; the chief's names the run (and its folder) on all.
        tentative = run.run_id
        run.run_id = log.run_id = chief_text(strategy, run.run_id, is_chief=run.is_chief)
        run.outputs = LearningOutputs(run.areas.root, run.run_id)
        log.event("run_id_agreed", tentative=tentative)

    local = _prepare_images(run, find_unreadable)
    splits = _usable_splits(run, local)

    with tempfile.TemporaryDirectory(prefix=f"training-{run.run_id}-") as scratch:
        workdir = Path(scratch)
        stable_report = _evaluate_stable(run, splits["test"], workdir) if run.is_chief else None
        starting = load_starting_weights(
            run.areas.root, stable, run.config, workdir, from_scratch=options.from_scratch
        )
        log.event(
            "starting_weights",
            source=starting.source,
            reason=starting.reason,
            parent_version=starting.parent_version,
        )
        candidate = _train(run, splits, starting, (strategy_plan, strategy), precision)
        if not run.is_chief:
            reason = "not the chief worker: the chief evaluates, decides and writes the outputs"
            log.event("worker_finished", reason=reason)
            return JobResult(run.run_id, "worker", False, reason)
        return _evaluate_and_decide(run, splits, candidate, starting, stable_report, workdir)


def _unchanged(run: _Run, stable: VersionEntry) -> JobResult:
    reason = (
        f"the image database is unchanged since stable version {stable.version} was trained "
        f"(fingerprint {stable.dataset_fingerprint}): nothing to do"
    )
    run.log.event("unchanged", reason=reason, stable_version=stable.version)
    _write_decision(run, "unchanged", reason, decision=None, reports={}, published=None)
    return _finish(run, "unchanged", reason, stable_version=stable.version)


def _prepare_images(run: _Run, find_unreadable: Callable[[list[str]], list[int]]) -> LocalImages:
    assert run.dataset is not None
    cache = ImageCache(run.settings.cache_dir, run.areas.db)
    local = cache.synchronise(run.dataset.records)
    run.cache = local.summary.as_dict()
    run.log.event("data_cached", **run.cache)
    run.unreadable = local.unreadable(run.dataset.records, find_unreadable)
    if run.unreadable:
        run.log.event(
            "unreadable_images",
            level="warning",
            count=len(run.unreadable),
            skipped=run.unreadable[:20],
            more=max(0, len(run.unreadable) - 20),
        )
    return local


@dataclass(frozen=True)
class _Split:
    records: list[ImageRecord]
    paths: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.records)


def _usable_splits(run: _Run, local: LocalImages) -> dict[str, _Split]:
    assert run.dataset is not None
    skipped = set(run.unreadable)
    splits: dict[str, _Split] = {}
    for name in ("train", "val", "test"):
        records = [r for r in run.dataset.split(name) if r.key not in skipped]
        splits[name] = _Split(
            records=records,
            paths=[str(local.path(record.key)) for record in records],
            labels=[record.label for record in records],
        )
    if not splits["train"]:
        raise DatasetError(f"no readable training images under {run.dataset.source}")
    if not splits["test"]:
        raise DatasetError(f"no readable test images under {run.dataset.source}")
    sizes = {name: len(split) for name, split in splits.items()}
    run.log.event("splits", images=sizes, unreadable=len(skipped))
    return splits


def _train(
    run: _Run,
    splits: Mapping[str, _Split],
    starting: StartingWeights,
    strategy: tuple[StrategyPlan, Any],
    precision: PrecisionPlan,
) -> TrainedCandidate:
    from training_job.candidate import train_candidate

    options = run.options
    learning_rate = options.learning_rate_for(fine_tuning=starting.fine_tuning)
    run.log.event(
        "training_started",
        preset=run.config.name,
        image_size=run.config.image_size,
        train_images=len(splits["train"]),
        val_images=len(splits["val"]),
        learning_rate=learning_rate,
        batch_size=options.batch_size,
        max_epochs=options.epochs,
    )

    def on_epoch(record: Any) -> None:
        run.log.event("epoch", epochs=options.epochs, **record.as_row())

    candidate = train_candidate(
        run.config,
        (splits["train"].paths, splits["train"].labels),
        (splits["val"].paths, splits["val"].labels),
        options,
        strategy=strategy,
        precision=precision,
        starting=starting,
        cache_folder=run.settings.cache_dir / "tfdata" / run.run_id,
        on_epoch=on_epoch,
    )
    result = candidate.result
    run.training = {
        "preset": run.config.name,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "monitor": result.monitor,
        "best_value": result.best_value,
        "stopped_early": result.stopped_early,
        "seconds": result.seconds,
        "replicas": result.replicas,
        "strategy": strategy[0].to_json(),
        "precision": precision.to_json(),
        "starting_weights": {"source": starting.source, "reason": starting.reason},
        # The same on every worker of a multi-worker run (they all end with the same weights).
        "weights_sha256": _weights_digest(candidate.model),
        "hyperparameters": {**options.hyperparameters(), "learning_rate": learning_rate},
    }
    run.log.event(
        "training_finished", **{k: v for k, v in run.training.items() if k != "hyperparameters"}
    )
    return candidate


def _weights_digest(model: Any) -> str:
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(weights.astype("float32").tobytes())
    return digest.hexdigest()


def _evaluate(
    run: _Run, role: str, saved_model_dir: Path, test: _Split
) -> tuple[ClassificationReport, dict[str, Any]]:
    from training_job.evaluation import predict_saved_model

    predictions = predict_saved_model(saved_model_dir, test.paths, batch_size=32)
    if predictions.class_names != CLASS_NAMES:
        raise JobError(
            f"the {role} model answers with classes {list(predictions.class_names)}, "
            f"not {list(CLASS_NAMES)}"
        )
    report = classification_report(test.labels, predictions.probabilities, CLASS_NAMES)
    run.test_probabilities[role] = predictions.probabilities
    run.test_ood_reasons[role] = predictions.ood_reasons
    run.log.event(
        "evaluated",
        role=role,
        model=dict(predictions.identity),
        images=report.images,
        macro_f1=report.macro_f1,
        accuracy=report.accuracy,
        per_class_f1=report.per_class_f1(),
    )
    return report, dict(predictions.identity)


def _evaluate_stable(
    run: _Run, test: _Split, workdir: Path
) -> tuple[ClassificationReport, dict[str, Any]] | None:
    if run.stable is None:
        return None
    target = workdir / f"stable-{run.stable.version}"
    try:
        run.registry.download_version(run.stable.version, target)
    except Exception as exc:
        raise JobError(
            f"cannot read stable version {run.stable.version} to compare with: {exc}"
        ) from exc
    return _evaluate(run, "stable", target, test)


def _save_and_export(
    run: _Run,
    candidate: TrainedCandidate,
    starting: StartingWeights,
    splits: Mapping[str, _Split],
    workdir: Path,
) -> tuple[Path, Path, ExportResult]:
    """The candidate saved as a Keras file and exported as the SavedModel that would be served."""
    from model_export.export import export_saved_model

    options, log = run.options, run.log
    assert run.dataset is not None
    model_path = workdir / MODEL_FILE
    candidate.model.save(model_path)
    export_dir = workdir / "candidate"
    training_metadata = {
        "run_id": run.run_id,
        "dataset_fingerprint": run.dataset.fingerprint,
        "parent_version": starting.parent_version if starting.fine_tuning else None,
        "starting_weights": starting.source,
        "preset": run.config.name,
        "epochs_run": candidate.result.epochs_run,
        "best_epoch": candidate.result.best_epoch,
    }
    warmup = [Path(path).read_bytes() for path in splits["test"].paths[:1]]
    exported = export_saved_model(
        candidate.model,
        run.config,
        export_dir,
        model_name=run.settings.model_name,
        run_id=run.run_id,
        compute_dtype=cast("ComputeDtype", options.compute_dtype),
        gradcam_xla=options.gradcam_xla,
        training_metadata=training_metadata,
        warmup_images=warmup,
        temperature=run.temperature,
        calibration=run.calibration,
        refer_threshold=run.refer_threshold,
        abstention=run.abstention,
        ood=run.ood,
        ood_report=run.ood_report,
    )
    log.event("exported", compute_dtype=options.compute_dtype, gradcam_xla=options.gradcam_xla)
    return model_path, export_dir, exported


def _evaluate_and_decide(
    run: _Run,
    splits: Mapping[str, _Split],
    candidate: TrainedCandidate,
    starting: StartingWeights,
    stable_evaluation: tuple[ClassificationReport, dict[str, Any]] | None,
    workdir: Path,
) -> JobResult:
    options, log = run.options, run.log
    _fit_calibration(run, candidate, splits["val"])
    _fit_ood(run, candidate, splits)
    model_path, export_dir, exported = _save_and_export(run, candidate, starting, splits, workdir)
    candidate_report, candidate_identity = _evaluate(run, "candidate", export_dir, splits["test"])
    calibration_metrics = {
        **_measure_test_calibration(run, splits["test"]),
        **_measure_ood(run, export_dir, splits["test"]),
    }

    stable_report = stable_evaluation[0] if stable_evaluation else None
    stable_label = f"stable version {run.stable.version}" if run.stable else "stable"
    explanations = {"candidate": _measure_explanations(run, export_dir, splits["test"])}
    stable_dir = workdir / f"stable-{run.stable.version}" if run.stable else None
    if stable_dir is not None and stable_dir.is_dir():
        explanations["stable"] = _measure_explanations(run, stable_dir, splits["test"])
    pointing = None
    ours, theirs = explanations["candidate"], explanations.get("stable")
    if ours is not None and theirs is not None:
        pointing = (ours["pointing_game"], theirs["pointing_game"])
    run.explanations = explanations
    decision = decide(
        candidate_report,
        stable_report,
        options.policy(),
        stable_label=stable_label,
        pointing_game=pointing,
    )
    log.event(
        "decided",
        verdict=decision.verdict,
        reason=decision.reason,
        dry_run=options.dry_run,
        checks=[check.to_json() for check in decision.checks],
    )

    # The model info carries the numbers too, so `python -m model_contract publish` of the
    # saved candidate registers the same metrics as this job would.
    _add_metrics_to_model_info(exported, {**candidate_report.metrics(), **calibration_metrics})
    reports = {"candidate": (candidate_report, candidate_identity)}
    if stable_evaluation is not None:
        reports["stable"] = stable_evaluation
    _write_outputs(run, candidate, reports, model_path, export_dir)

    published: int | None = None
    promoted = False
    stable_after = run.stable.version if run.stable else None
    verdict: Verdict = decision.verdict
    reason = decision.reason
    if decision.promote and options.dry_run:
        reason = f"dry run, nothing published: {decision.reason}"
    elif decision.promote:
        outcome = _publish_and_promote(
            run, {**candidate_report.metrics(), **calibration_metrics}, decision, starting
        )
        published, promoted, reason = outcome.published, outcome.promoted, outcome.reason
        verdict = "promote" if promoted else "keep"
        stable_after = outcome.stable_after
    _write_decision(
        run,
        verdict,
        reason,
        decision=decision,
        reports=reports,
        published=published,
        promoted=promoted,
    )
    metrics = {
        "candidate": candidate_report.metrics(),
        "stable": stable_report.metrics() if stable_report else None,
    }
    return _finish(
        run,
        verdict,
        reason,
        promoted=promoted,
        published_version=published,
        stable_version=stable_after,
        metrics=metrics,
    )


def _fit_calibration(run: _Run, candidate: TrainedCandidate, val: _Split) -> None:
    """Fit the temperature on the validation split's probabilities from the trained network
    (the exported graph applies it; calibration.py says why temperature scaling)."""
    from training_job.calibration import apply_temperature, at_range_end, fit_temperature, measure

    minimum = run.options.calibration_min_images
    if len(val) < minimum:
        run.calibration = {
            "fitted_on": {"split": "val", "images": len(val)},
            "skipped": f"{len(val)} validation images, fewer than the {minimum} a fit needs",
        }
        run.log.event("calibration_skipped", reason=run.calibration["skipped"])
        run.abstention = {"target_accuracy": run.options.refer_target_accuracy}
        run.abstention["skipped"] = run.calibration["skipped"] + ": answers are never referred"
        return
    probabilities = _network_probabilities(run, candidate, val)
    temperature = fit_temperature(probabilities, val.labels)
    before = measure(probabilities, val.labels, CLASS_NAMES)
    after = measure(apply_temperature(probabilities, temperature), val.labels, CLASS_NAMES)
    run.calibration = {
        "fitted_on": {"split": "val", "images": len(val)},
        "validation": {"before": before.to_json(), "after": after.to_json()},
    }
    if at_range_end(temperature):
        run.calibration["fitted_temperature"] = temperature
        run.calibration["skipped"] = (
            f"the fit ran to the end of its range (T = {temperature:.3g}): {len(val)} "
            "validation images cannot pin the temperature down"
        )
        run.log.event("calibration_skipped", reason=run.calibration["skipped"])
    else:
        run.temperature = temperature
        run.log.event(
            "calibrated",
            temperature=round(temperature, 4),
            val_images=len(val),
            val_ece_before=round(before.ece, 4),
            val_ece_after=round(after.ece, 4),
            val_nll_before=round(before.nll, 4),
            val_nll_after=round(after.nll, 4),
        )
    _choose_refer_threshold(run, apply_temperature(probabilities, run.temperature), val)


def _choose_refer_threshold(run: _Run, served: Any, val: _Split) -> None:
    """The confidence below which answers are referred: the lowest at which the validation
    answers kept (as the model will serve them) reach the target accuracy."""
    from training_job.calibration import refer_threshold

    target = run.options.refer_target_accuracy
    chosen = refer_threshold(served, val.labels, target)
    run.refer_threshold = chosen.threshold
    run.abstention = {"target_accuracy": target, "validation": chosen.to_json()}
    if not chosen.reached:
        run.abstention["note"] = (
            f"no threshold reaches {target:.0%} accuracy on the validation split: every answer "
            "below certainty is referred"
        )
    run.log.event(
        "refer_threshold_chosen",
        threshold=round(chosen.threshold, 4),
        target_accuracy=target,
        val_coverage=round(chosen.coverage, 4),
        val_accuracy_kept=None if chosen.accuracy is None else round(chosen.accuracy, 4),
        reached=chosen.reached,
    )


def _fit_ood(run: _Run, candidate: TrainedCandidate, splits: Mapping[str, _Split]) -> None:
    """Fit the out-of-distribution statistics on the training split's encoder statistics and
    their threshold on cross-fitted and validation scores (training_job/ood.py)."""
    train, val = splits["train"], splits["val"]
    if len(train) < 10:
        run.ood_report = {"skipped": f"{len(train)} training images: too few to fit on"}
        run.log.event("ood_skipped", reason=run.ood_report["skipped"])
        return
    from training_job.ood import SHRINKAGE, THRESHOLD_QUANTILE, fit_ood

    train_features = _encoder_statistics(run, candidate, train)
    val_features = _encoder_statistics(run, candidate, val) if len(val) else None
    import numpy as np

    held_out = val_features if val_features is not None else np.zeros((0, train_features.shape[1]))
    run.ood = fit_ood(train_features, held_out)
    run.ood_report = {
        "method": "mahalanobis on the encoder's channel statistics, one shrunk Gaussian",
        "fitted_on": {"split": "train", "images": len(train)},
        "threshold_from": {
            "train_cross_fitted": len(train),
            "val": len(val),
            "quantile": THRESHOLD_QUANTILE,
        },
        "shrinkage": SHRINKAGE,
    }
    run.log.event(
        "ood_fitted",
        features=int(train_features.shape[1]),
        threshold=round(run.ood.threshold, 3),
        train_images=len(train),
        val_images=len(val),
    )


def _encoder_statistics(run: _Run, candidate: TrainedCandidate, split: _Split) -> Any:
    """The encoder statistics (cnn_vit/ood.py) of `split`'s films, in order."""
    import numpy as np

    from cnn_vit.ood import encoder_statistics_model, statistics_from_outputs

    model = encoder_statistics_model(candidate.model, with_probabilities=False)
    rows = []
    for images in _evaluation_batches(run, split):
        maps = model(images, training=False)
        rows.append(statistics_from_outputs(maps if isinstance(maps, list) else [maps]).numpy())
    return np.concatenate(rows, axis=0).astype(np.float64)


def _evaluation_batches(run: _Run, split: _Split) -> Any:
    """`split`'s films preprocessed as the model sees them, in order, in batches (eager forward
    passes on the chief alone: no collective op, so other workers need not take part)."""
    from training_job.pipeline import make_dataset

    return make_dataset(
        split.paths,
        None,
        run.config.image_size,
        run.options.batch_size,
        training=False,
        cache=False,
    )


_EXPLAINED_PER_CLASS = 40  # masked test films explained per class, at most
_MASK_DILATION = 3  # pixels at the model's input size: a peak next to the lesion counts


def _measure_explanations(run: _Run, saved_model_dir: Path, test: _Split) -> dict[str, Any] | None:
    """Grad-CAM of the true class on masked test films, through the SavedModel's `gradcam`
    signature: the pointing game (the heat's peak on the dilated lesion mask) and the share of
    heat inside the mask, per class and their mean over the classes measured; None without
    masks."""
    import numpy as np
    from PIL import Image, ImageFilter

    assert run.dataset is not None
    chosen: dict[int, list[int]] = {}
    for index, record in enumerate(test.records):
        if record.key in run.dataset.masks:
            picked = chosen.setdefault(record.label, [])
            if len(picked) < _EXPLAINED_PER_CLASS:
                picked.append(index)
    if not chosen:
        return None
    import tensorflow as tf

    from model_contract.artifact import GRADCAM_SIGNATURE, HEATMAP_OUTPUT

    signature = tf.saved_model.load(str(saved_model_dir)).signatures[GRADCAM_SIGNATURE]
    size = run.config.image_size
    per_class: dict[str, dict[str, Any]] = {}
    for label, indices in sorted(chosen.items()):
        hits, shares = 0, []
        for start in range(0, len(indices), 16):
            batch = indices[start : start + 16]
            images = [Path(test.paths[i]).read_bytes() for i in batch]
            answer = signature(
                image_bytes=tf.constant(images), target_class=tf.constant([label] * len(batch))
            )
            for heat, i in zip(answer[HEATMAP_OUTPUT].numpy(), batch, strict=True):
                mask_key = run.dataset.masks[test.records[i].key]
                with Image.open(io.BytesIO(run.areas.db.get_bytes(mask_key))) as raw:
                    mask = np.asarray(raw.convert("L")) > 127
                height, width = mask.shape
                side = min(height, width)
                top, left = (height - side) // 2, (width - side) // 2
                square = Image.fromarray(
                    mask[top : top + side, left : left + side].astype(np.float32), mode="F"
                ).resize((size, size), Image.Resampling.BILINEAR)
                lesion = np.asarray(square) > 0.5
                dilated = (
                    np.asarray(
                        Image.fromarray(lesion.astype(np.uint8) * 255).filter(
                            ImageFilter.MaxFilter(2 * _MASK_DILATION + 1)
                        )
                    )
                    > 0
                )
                peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
                hits += bool(dilated[peak])
                total = float(heat.sum())
                shares.append(float(heat[lesion].sum()) / total if total > 0 else 0.0)
        per_class[CLASS_NAMES[label]] = {
            "films": len(indices),
            "pointing_game": hits / len(indices),
            "heat_share_in_mask": float(np.mean(shares)),
        }
    pointing_game = float(np.mean([v["pointing_game"] for v in per_class.values()]))
    heat_share = float(np.mean([v["heat_share_in_mask"] for v in per_class.values()]))
    result: dict[str, Any] = {
        "target": "the true class",
        "mask_dilation_pixels": _MASK_DILATION,
        "per_class": per_class,
        "pointing_game": pointing_game,
        "heat_share_in_mask": heat_share,
    }
    run.log.event(
        "explanations_measured",
        model=saved_model_dir.name,
        pointing_game=round(pointing_game, 4),
        heat_share_in_mask=round(heat_share, 4),
        per_class={name: round(v["pointing_game"], 4) for name, v in per_class.items()},
    )
    return result


def _grey_films(split: _Split, count: int) -> list[Any]:
    """The first `count` films of `split` as grey uint8 arrays (to turn and cut)."""
    import numpy as np
    from PIL import Image

    films = []
    for path in split.paths[:count]:
        with Image.open(path) as image:
            films.append(np.asarray(image.convert("L"), np.uint8))
    return films


def _measure_ood(run: _Run, export_dir: Path, test: _Split) -> dict[str, float]:
    """The exported model's refusals: on the held-out test films (false refusals) and on
    images that are not chest films (synthetic/not_chest.py); flat numbers for the registry."""
    if run.ood is None:
        return {}
    from collections import Counter

    from training_job.evaluation import predict_saved_model
    from training_job.not_chest import not_chest_images

    reasons = run.test_ood_reasons.get("candidate") or ()
    refused = [reason for reason in reasons if reason]
    run.ood_report["test"] = {
        "images": len(reasons),
        "false_refusals": len(refused),
        "false_refusal_rate": len(refused) / max(1, len(reasons)),
        "reasons": dict(Counter(refused)),
    }
    metrics = {"ood_false_refusal_rate": run.ood_report["test"]["false_refusal_rate"]}
    per_kind = run.options.ood_check_per_kind
    if per_kind:
        images = list(not_chest_images(per_kind, run.options.seed, _grey_films(test, per_kind)))
        answered = predict_saved_model(export_dir, [], encoded=[data for _, data in images])
        outcome = answered.ood_reasons or ("",) * len(images)
        kinds: dict[str, dict[str, Any]] = {}
        for (kind, _), reason in zip(images, outcome, strict=True):
            entry = kinds.setdefault(kind, {"images": 0, "refused": 0, "reasons": Counter()})
            entry["images"] += 1
            entry["refused"] += bool(reason)
            if reason:
                entry["reasons"][reason] += 1
        total_refused = sum(entry["refused"] for entry in kinds.values())
        run.ood_report["not_chest"] = {
            "images": len(images),
            "refused": total_refused,
            "refusal_rate": total_refused / len(images),
            "per_kind": {
                kind: {**entry, "reasons": dict(entry["reasons"])} for kind, entry in kinds.items()
            },
        }
        metrics["ood_refusal_rate"] = total_refused / len(images)
    run.log.event(
        "ood_measured",
        test_false_refusal_rate=round(metrics["ood_false_refusal_rate"], 4),
        not_chest_refusal_rate=(
            round(metrics["ood_refusal_rate"], 4) if "ood_refusal_rate" in metrics else None
        ),
    )
    return metrics


def _network_probabilities(run: _Run, candidate: TrainedCandidate, split: _Split) -> Any:
    """The trained network's probabilities for `split`, in order."""
    import numpy as np

    rows = [
        np.asarray(candidate.model(images, training=False), np.float32)
        for images in _evaluation_batches(run, split)
    ]
    return np.concatenate(rows, axis=0)


def _measure_test_calibration(run: _Run, test: _Split) -> dict[str, float]:
    """ECE and Brier on the held-out test split before and after the temperature (the
    SavedModel answered calibrated; dividing its log-probabilities by 1/T undoes it), the
    reliability diagram data for the report; returns the flat numbers for the registry."""
    from training_job.calibration import apply_temperature, measure, reliability_bins, selective

    calibrated = run.test_probabilities["candidate"]
    raw = apply_temperature(calibrated, 1.0 / run.temperature)
    before = measure(raw, test.labels, CLASS_NAMES)
    after = measure(calibrated, test.labels, CLASS_NAMES)
    run.calibration["temperature"] = run.temperature
    run.calibration["test"] = {"before": before.to_json(), "after": after.to_json()}
    run.calibration["bins"] = {
        "before": reliability_bins(raw, test.labels),
        "after": reliability_bins(calibrated, test.labels),
    }
    run.log.event(
        "calibration_measured",
        split="test",
        temperature=round(run.temperature, 4),
        ece_before=round(before.ece, 4),
        ece_after=round(after.ece, 4),
        brier_before=round(before.brier, 4),
        brier_after=round(after.brier, 4),
    )
    kept = selective(
        calibrated, test.labels, run.refer_threshold, run.options.refer_target_accuracy
    )
    run.abstention["test"] = kept.to_json()
    run.log.event(
        "abstention_measured",
        split="test",
        threshold=round(run.refer_threshold, 4),
        coverage=round(kept.coverage, 4),
        accuracy_kept=None if kept.accuracy is None else round(kept.accuracy, 4),
        accuracy_referred=None
        if kept.referred_accuracy is None
        else round(kept.referred_accuracy, 4),
    )
    metrics = {"refer_threshold": run.refer_threshold, "coverage": kept.coverage}
    if kept.accuracy is not None:
        metrics["selective_accuracy"] = kept.accuracy
    return {
        **metrics,
        "temperature": run.temperature,
        "ece": after.ece,
        "ece_uncalibrated": before.ece,
        "brier": after.brier,
        "brier_uncalibrated": before.brier,
    }


def _add_metrics_to_model_info(exported: ExportResult, metrics: Mapping[str, float]) -> None:
    """Rewrite the export's model info with the candidate's metrics under `training`."""
    info = dict(exported.model_info)
    info["training"] = {**info.get("training", {}), "metrics": dict(metrics)}
    path = exported.export_dir / MODEL_INFO_PATH
    path.write_text(json.dumps(json_safe(info), indent=2, sort_keys=True), encoding="utf-8")


@dataclass(frozen=True)
class _Promotion:
    published: int | None  # the version published, promoted or not
    promoted: bool
    reason: str
    stable_after: int | None  # the stable version as the run leaves it


def _stale(run: _Run, compared: int | None, current: int | None, published: int | None) -> str:
    """Say (in the log too) why a winner is not promoted: stable changed during the run."""
    reason = (
        f"not promoted: the stable version changed from {compared} to {current} during this "
        "run, so the comparison no longer holds (a stale comparison)"
    )
    if published is not None:
        reason += f"; version {published} stays published, unlabelled"
    run.log.event(
        "stale_comparison",
        level="warning",
        reason=reason,
        compared_stable=compared,
        current_stable=current,
        published_version=published,
    )
    return reason


def _publish_and_promote(
    run: _Run,
    metrics: Mapping[str, float],
    decision: Decision,
    starting: StartingWeights,
) -> _Promotion:
    assert run.dataset is not None
    compared = run.stable.version if run.stable else None
    current = run.registry.load().stable
    if current != compared:
        # Someone promoted or rolled back while this run trained: do not even publish.
        return _Promotion(None, False, _stale(run, compared, current, None), current)
    # The candidate is already in the store (the learning outputs): copied server-side,
    # not uploaded a second time.
    version = run.registry.publish(
        StoredExport(keys.learning_candidate_prefix(run.run_id)),
        run_id=run.run_id,
        metrics=dict(metrics),
        dataset_fingerprint=run.dataset.fingerprint,
        parent_version=compared,
        preset=run.config.name,
        extra={
            "learning_outputs": keys.learning_run_prefix(run.run_id),
            "starting_weights": starting.source,
        },
    )
    run.log.event("published", version=version)
    try:
        # Conditional on the stable this run compared against, checked in the registry's own
        # conditional write: a promotion or rollback during the upload is never overridden.
        run.registry.promote(version, "stable", expected_stable=compared)
    except StableChanged as exc:
        return _Promotion(version, False, _stale(run, compared, exc.current, version), exc.current)
    run.log.event("promoted", version=version, previous_stable=compared)
    return _Promotion(version, True, f"promoted as version {version}: {decision.reason}", version)


# -- outputs ------------------------------------------------------------------------------------


def _model_title(role: str, identity: Mapping[str, Any]) -> str:
    version = identity.get("version")
    name = f"version {version}" if version else "not published"
    return f"{role} model ({name}, run {identity.get('run_id') or '?'})"


def _write_outputs(
    run: _Run,
    candidate: TrainedCandidate,
    reports: Mapping[str, tuple[ClassificationReport, dict[str, Any]]],
    model_path: Path,
    export_dir: Path,
) -> None:
    from training_job.plots import (
        plot_confusion_matrix,
        plot_reliability_diagram,
        plot_training_curves,
    )
    from training_job.training_loop import HISTORY_FIELDS

    assert run.dataset is not None
    outputs, result = run.outputs, candidate.result
    outputs.put(HISTORY_FILE, history_csv(result.history_rows(), HISTORY_FIELDS), "text/csv")
    outputs.put(DATASET_FILE, dataset_csv(run.dataset.records, run.unreadable), "text/csv")
    outputs.put(
        CURVES_FILE,
        plot_training_curves(
            result.history_rows(),
            title=(
                f"{run.settings.model_name} run {run.run_id} (preset {run.config.name}): "
                f"best epoch {result.best_epoch} of {result.epochs_run}"
            ),
            best_epoch=result.best_epoch,
        ),
        "image/png",
    )
    for role, (report, identity) in reports.items():
        document = {
            "schema": DECISION_SCHEMA,
            "role": role,
            "model": identity,
            "split": "test",
            "run_id": run.run_id,
            **report.to_json(),
        }
        if role == "candidate":
            document["calibration"] = {
                key: value for key, value in run.calibration.items() if key != "bins"
            }
            document["abstention"] = dict(run.abstention)
            document["ood"] = dict(run.ood_report)
        document["explanations"] = run.explanations.get(role)
        outputs.put_json(report_file(role), document)
        outputs.put(
            confusion_file(role),
            plot_confusion_matrix(
                report.confusion_matrix,
                report.classes,
                title=(
                    f"{_model_title(role.capitalize(), identity)}\n"
                    f"macro-F1 {report.macro_f1:.3f}, accuracy {report.accuracy:.3f}, "
                    f"{report.images} test images"
                ),
            ),
            "image/png",
        )
    bins = run.calibration.get("bins")
    if bins is not None:
        test = run.calibration["test"]
        outputs.put(
            RELIABILITY_FILE,
            plot_reliability_diagram(
                bins["before"],
                bins["after"],
                ece_before=test["before"]["ece"],
                ece_after=test["after"]["ece"],
                temperature=run.temperature,
                title=(
                    f"{_model_title('Candidate', reports['candidate'][1])}\n"
                    f"reliability on {test['after']['images']} test images"
                ),
            ),
            "image/png",
        )
    outputs.put(MODEL_FILE, model_path.read_bytes(), "application/octet-stream")
    outputs.put_folder("candidate", export_dir)
    run.log.event("outputs_written", prefix=outputs.prefix, files=sorted(outputs.artefacts))


def _write_decision(
    run: _Run,
    verdict: Verdict,
    reason: str,
    *,
    decision: Decision | None,
    reports: Mapping[str, tuple[ClassificationReport, dict[str, Any]]],
    published: int | None,
    promoted: bool = False,
    error: Mapping[str, Any] | None = None,
) -> None:
    if not run.is_chief:
        return
    dataset = run.dataset
    compared = {
        role: {
            "model": identity,
            "macro_f1": report.macro_f1,
            "accuracy": report.accuracy,
            "per_class_f1": report.per_class_f1(),
            "report": run.outputs.key(report_file(role)),
        }
        for role, (report, identity) in reports.items()
    }
    document: dict[str, Any] = {
        "schema": DECISION_SCHEMA,
        "run_id": run.run_id,
        "model_name": run.settings.model_name,
        "started_at": run.started_at,
        "finished_at": _utc_now(),
        "verdict": verdict,
        "promoted": promoted,
        "dry_run": run.options.dry_run,
        "reason": reason,
        "published_version": published,
        "stable_version_compared": run.stable.version if run.stable else None,
        "compared": compared,
        "test_images": next(iter(reports.values()))[0].images if reports else None,
        "rules": run.options.policy().to_json(),
        "checks": [check.to_json() for check in decision.checks] if decision else [],
        "options": run.options.to_json(),
        "dataset": {
            **(dataset.summary() if dataset else {}),
            "unreadable_count": len(run.unreadable),
            "unreadable": run.unreadable,
            "cache": run.cache,
        },
        "training": run.training,
    }
    if error is not None:
        document["error"] = dict(error)
    # Both are written next: the decision now, the log as the run ends.
    run.outputs.artefacts[DECISION_FILE] = run.outputs.key(DECISION_FILE)
    run.outputs.artefacts[LOG_FILE] = run.outputs.key(LOG_FILE)
    document["artefacts"] = dict(run.outputs.artefacts)
    run.outputs.put_json(DECISION_FILE, document)


def _finish(
    run: _Run,
    verdict: Verdict,
    reason: str,
    *,
    promoted: bool = False,
    published_version: int | None = None,
    stable_version: int | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> JobResult:
    report = run.outputs.location(DECISION_FILE)
    run.log.event(
        "job_finished",
        verdict=verdict,
        promoted=promoted,
        dry_run=run.options.dry_run,
        published_version=published_version,
        stable_version=stable_version,
        report=report,
    )
    _write_log(run)
    return JobResult(
        run_id=run.run_id,
        verdict=verdict,
        promoted=promoted,
        reason=reason,
        dry_run=run.options.dry_run,
        published_version=published_version,
        stable_version=stable_version,
        metrics=metrics or {},
        artefacts=dict(run.outputs.artefacts),
        report=report,
    )


def _write_log(run: _Run) -> None:
    if run.is_chief:
        run.outputs.put(LOG_FILE, run.log.text().encode("utf-8"), "text/plain; charset=utf-8")


def _record_failure(run: _Run, exc: BaseException) -> None:
    """Say why the run failed, in the log and (where the store allows) in its outputs."""
    error = {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": traceback.format_exception(exc)[-3:],
    }
    run.log.event("job_failed", level="error", error=type(exc).__name__, message=str(exc))
    try:
        _write_decision(
            run,
            "failed",
            f"the run failed: {error['type']}: {error['message']}",
            decision=None,
            reports={},
            published=None,
            error=error,
        )
        _write_log(run)
    except Exception as secondary:  # the store itself may be what failed
        run.log.event(
            "failure_not_recorded",
            level="error",
            error=type(secondary).__name__,
            message=str(secondary),
        )


# -- the original system's entry point ----------------------------------------------------------


def retraining(storage_path: str | None = None, db_storage_path: str | None = None) -> bool:
    """Retrain from the image database and return whether a new model was promoted.

    `storage_path`: the store's root (a folder or `s3://bucket[/prefix]`; default `STORAGE_URL`
    or `STORAGE_PATH`); `db_storage_path`: the image database (default `DB_STORAGE_PATH`, else
    `<storage>/input/db`). Other settings and the options (`TRAINING_<NAME>`) come from the
    environment.
    """
    environment = load_environment()
    settings = TrainingJobSettings.from_env(environment)
    settings = settings.with_locations(storage_path, db_storage_path)
    return run_job(settings, TrainingOptions.from_sources(environ=environment)).promoted
