"""Command line of the training job: `python -m training_job [options]`.

Where the store and the database are comes from the environment (`STORAGE_URL`, `DB_STORAGE_PATH`
..., see `training_job.settings`), or from `--storage`/`--db`; everything about the run is a
`TrainingOptions` field, given as an option here or as its `TRAINING_<NAME>` variable (the
command line wins). stdout carries one JSON line per lifecycle step; the last human line, on
stderr, says where the run's decision record is. Exit status: 0 when a model was kept or
promoted (or the data was unchanged), 1 when the run failed, 2 for bad settings or arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

from common.settings import SettingsError, load_environment
from training_job.job import JobResult, run_job
from training_job.options import TrainingOptions, add_option_arguments
from training_job.run_metrics import RunMetricsSettings, render, write_textfile
from training_job.settings import TrainingJobSettings

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    build = argparse.ArgumentParser(
        prog="xray-train",
        description="Retrain the CNN-ViT from the image database; promote it only if it wins.",
    )
    where = build.add_argument_group("where")
    where.add_argument("--storage", help="store root: folder or s3:// URL (default STORAGE_URL)")
    where.add_argument(
        "--db", help="image database: folder or s3:// URL (default <storage>/input/db)"
    )
    add_option_arguments(build)
    return build


def _write_run_metrics(
    settings: RunMetricsSettings,
    model_name: str,
    started: float,
    result: JobResult | None,
    err: TextIO,
) -> None:
    """The run's outcome for Prometheus (METRICS_TEXTFILE), if asked; never fails the run."""
    if settings.textfile is None:
        return
    text = render(
        model_name,
        verdict=result.verdict if result is not None else "failed",
        started=started,
        finished=time.time(),
        promoted=bool(result and result.promoted),
        stable_version=result.stable_version if result is not None else None,
        published_version=result.published_version if result is not None else None,
        metrics=result.metrics if result is not None else None,
    )
    try:
        write_textfile(settings.textfile, text)
    except OSError as exc:
        print(f"cannot write the metrics file {settings.textfile}: {exc}", file=err)


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
    environment = load_environment() if environ is None else environ
    # Both are read before either is reported, so one start lists every bad value.
    problems: list[str] = []
    try:
        settings = TrainingJobSettings.from_env(environment).with_locations(
            arguments.storage, arguments.db
        )
    except SettingsError as exc:
        problems.append(str(exc))
    try:
        options = TrainingOptions.from_sources(arguments, environment)
    except SettingsError as exc:
        problems.append(str(exc))
    except ValueError as exc:
        problems.append(f"error: {exc}")
    try:
        run_metrics = RunMetricsSettings.from_env(environment)
    except SettingsError as exc:
        problems.append(str(exc))
    if problems:
        print("\n".join(problems), file=err)
        return 2
    started = time.time()
    try:
        result = run_job(settings, options, stream=out)
    except Exception as exc:
        # The log already holds the failure (job_failed); this line is for the person watching.
        print(f"training job failed: {type(exc).__name__}: {exc}", file=err)
        _write_run_metrics(run_metrics, settings.model_name, started, None, err)
        return 1
    _write_run_metrics(run_metrics, settings.model_name, started, result, err)
    print(f"{result.verdict}: {result.reason}", file=err)
    if result.report:  # a non-chief worker writes no report
        print(f"report: {result.report}", file=err)
    return 0
