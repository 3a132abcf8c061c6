"""Command line of the training job: `python -m training_job [options]`.

Where the store and the database are comes from the environment (`STORAGE_URL`, `DB_STORAGE_PATH`
..., see `training_job.settings`), or from `--storage`/`--db`; everything about the run is an
option. stdout carries one JSON line per lifecycle step; the last human line, on stderr, says
where the run's decision record is. Exit status: 0 when a model was kept or promoted (or the
data was unchanged), 1 when the run failed, 2 for bad settings or arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from storage import SettingsError, load_environment
from training_job.config import PRESETS
from training_job.decision import PromotionPolicy
from training_job.job import JobOptions, run_job
from training_job.settings import TrainingJobSettings
from training_job.strategy import PRECISIONS, STRATEGIES

__all__ = ["main", "options_from_arguments", "parser"]

_DEFAULT_POLICY = PromotionPolicy()


def parser() -> argparse.ArgumentParser:
    build = argparse.ArgumentParser(
        prog="python -m training_job",
        description="Retrain the CNN-ViT from the image database; promote it only if it wins.",
    )
    where = build.add_argument_group("where")
    where.add_argument("--storage", help="store root: folder or s3:// URL (default STORAGE_URL)")
    where.add_argument(
        "--db", help="image database: folder or s3:// URL (default <storage>/input/db)"
    )

    model = build.add_argument_group("model and training")
    model.add_argument(
        "--preset", choices=sorted(PRESETS), help="model preset (default TRAINING_PRESET, small)"
    )
    model.add_argument("--epochs", type=int, default=100, help="maximum epochs (default 100)")
    model.add_argument("--batch-size", type=int, default=32, help="global batch (default 32)")
    model.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="AdamW learning rate (default 1e-3, half that when fine-tuning)",
    )
    model.add_argument("--weight-decay", type=float, default=1e-4)
    model.add_argument("--label-smoothing", type=float, default=0.1)
    model.add_argument("--patience", type=int, default=5, help="early stopping patience")
    model.add_argument("--min-delta", type=float, default=0.005, help="early stopping min delta")
    model.add_argument(
        "--from-scratch",
        action="store_true",
        help="do not fine-tune from the stable model's weights",
    )
    model.add_argument("--seed", type=int, default=0, help="training seed")
    model.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of the split of batches that come without split folders",
    )
    model.add_argument("--run-id", help="run id (default: UTC time and a random tail)")

    promotion = build.add_argument_group("promotion")
    promotion.add_argument(
        "--promotion-margin",
        type=float,
        default=_DEFAULT_POLICY.margin,
        help="macro-F1 gain over the stable model needed to promote (default %(default)s)",
    )
    promotion.add_argument(
        "--per-class-tolerance",
        type=float,
        default=_DEFAULT_POLICY.per_class_tolerance,
        help="largest per-class F1 drop allowed (default %(default)s)",
    )
    promotion.add_argument(
        "--min-macro-f1",
        type=float,
        default=_DEFAULT_POLICY.min_macro_f1,
        help="macro-F1 a first model must reach (default %(default)s)",
    )
    promotion.add_argument(
        "--dry-run",
        action="store_true",
        help="train, evaluate and write the outputs, but publish and promote nothing",
    )
    promotion.add_argument(
        "--force", action="store_true", help="train even when the data is unchanged"
    )

    engine = build.add_argument_group("engine")
    engine.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="tf.distribute strategy (auto: multi-worker with TF_CONFIG, mirrored with "
        "several GPUs, else default)",
    )
    engine.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="training precision (auto: mixed_bfloat16 on GPUs that have it, else float32)",
    )
    engine.add_argument(
        "--compute-dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype of the exported model (weights stay float32)",
    )
    return build


def options_from_arguments(arguments: argparse.Namespace) -> JobOptions:
    """The JobOptions the parsed arguments ask for."""
    return JobOptions(
        preset=arguments.preset,
        epochs=arguments.epochs,
        batch_size=arguments.batch_size,
        learning_rate=arguments.learning_rate,
        weight_decay=arguments.weight_decay,
        label_smoothing=arguments.label_smoothing,
        patience=arguments.patience,
        min_delta=arguments.min_delta,
        from_scratch=arguments.from_scratch,
        promotion_margin=arguments.promotion_margin,
        per_class_tolerance=arguments.per_class_tolerance,
        min_macro_f1=arguments.min_macro_f1,
        dry_run=arguments.dry_run,
        force=arguments.force,
        strategy=arguments.strategy,
        precision=arguments.precision,
        compute_dtype=arguments.compute_dtype,
        seed=arguments.seed,
        split_seed=arguments.split_seed,
        run_id=arguments.run_id,
    )


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the job once; `environ` replaces the real environment and `.env` (tests)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    arguments = parser().parse_args(argv)
    try:
        settings = TrainingJobSettings.from_env(
            load_environment() if environ is None else environ
        ).with_locations(arguments.storage, arguments.db)
    except SettingsError as exc:
        print(exc, file=err)
        return 2
    try:
        options = options_from_arguments(arguments)
    except ValueError as exc:
        print(f"error: {exc}", file=err)
        return 2
    try:
        result = run_job(settings, options, stream=out)
    except Exception as exc:
        # The log already holds the failure (job_failed); this line is for the person watching.
        print(f"training job failed: {type(exc).__name__}: {exc}", file=err)
        return 1
    print(f"{result.verdict}: {result.reason}", file=err)
    if result.report:  # a non-chief worker writes no report
        print(f"report: {result.report}", file=err)
    return 0
