"""Monitoring on the configured store: `xray-monitor compare|drift` (or `python -m monitoring`).

compare: stable vs canary on the records of a window (routed traffic and shadow answers), a
JSON report and PNG plots under output/monitoring/compare/<time>/; with --promote, the canary
becomes stable only when every threshold given is met and the registry still names the
versions compared. Exit status: 0 compared (thresholds met; promoted when asked), 3 thresholds
not met, 4 the registry changed since (stable or canary is not the one compared; nothing
promoted), 5 no data to compare.

drift: per model version, the day's records against the training data and the previous weeks
(population stability index per feature), summary.json and plots under
output/monitoring/<day>/. Exit status: 0 no drift (or no records that day), 3 drift detected.

Both: 1 the run failed (storage, registry), 2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from common.settings import SettingsError, load_environment
from model_contract.errors import RegistryError
from model_contract.settings import RegistrySettings
from monitoring.compare import CompareStatus, Thresholds, run_compare
from monitoring.drift import DriftOptions, metrics_text, run_drift, write_textfile
from storage import StorageError, Store, open_areas

__all__ = [
    "EXIT_DRIFT",
    "EXIT_FAILED",
    "EXIT_NO_DATA",
    "EXIT_OK",
    "EXIT_REGISTRY_CHANGED",
    "EXIT_THRESHOLDS_NOT_MET",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_THRESHOLDS_NOT_MET = 3
EXIT_DRIFT = 3
EXIT_REGISTRY_CHANGED = 4
EXIT_NO_DATA = 5
_COMPARE_EXIT = {
    CompareStatus.OK: EXIT_OK,
    CompareStatus.THRESHOLDS_NOT_MET: EXIT_THRESHOLDS_NOT_MET,
    CompareStatus.REGISTRY_CHANGED: EXIT_REGISTRY_CHANGED,
    CompareStatus.NO_DATA: EXIT_NO_DATA,
}


def _time(text: str) -> datetime:
    """ISO 8601 date or date-time; naive means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def _share(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="store URL (directory, file:// or s3://); default: STORAGE_URL"
    )
    common.add_argument("--model", help="model name; default: MODEL_NAME (or PROD_MODEL_NAME)")
    common.add_argument("--no-plots", action="store_true", help="write the JSON only")
    parser = argparse.ArgumentParser(
        prog="xray-monitor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser(
        "compare", parents=[common], help="stable vs canary on live traffic; --promote"
    )
    window = compare.add_mutually_exclusive_group(required=True)
    window.add_argument("--since", type=_time, help="window start (ISO 8601; naive is UTC)")
    window.add_argument("--days", type=_count, help="window: the last N days")
    compare.add_argument("--until", type=_time, help="window end (default: now)")
    compare.add_argument("--stable-version", type=_count, help="default: the registry's stable")
    compare.add_argument("--canary-version", type=_count, help="default: the registry's canary")
    compare.add_argument(
        "--min-samples",
        type=_count,
        default=30,
        help="answers each side needs (default 30)",
    )
    compare.add_argument(
        "--min-agreement", type=_share, help="shadow answers: least share of same classes"
    )
    compare.add_argument(
        "--max-error-rate-increase",
        type=_share,
        help="most canary error rate (fallbacks, failed or late shadows) above stable's",
    )
    compare.add_argument(
        "--max-latency-p95-ratio",
        type=_non_negative,
        help="most canary/stable ratio of p95 model latency",
    )
    compare.add_argument(
        "--max-refusal-rate-increase", type=_share, help="most not_a_chest_xray rate increase"
    )
    compare.add_argument("--max-refer-rate-increase", type=_share, help="most refer rate increase")
    compare.add_argument(
        "--promote",
        action="store_true",
        help="promote the canary to stable when every threshold is met and stable is unchanged",
    )

    drift = commands.add_parser(
        "drift", parents=[common], help="a day's records against training data and past weeks"
    )
    drift.add_argument("--day", type=_day, help="the day (UTC) to score; default: yesterday")
    drift.add_argument("--weeks", type=_count, default=4, help="previous weeks (default 4)")
    drift.add_argument(
        "--threshold", type=_non_negative, default=0.2, help="PSI above which drift is reported"
    )
    drift.add_argument(
        "--min-records",
        type=_count,
        default=50,
        help="values a feature needs on each side to be scored (default 50)",
    )
    drift.add_argument(
        "--reference-images",
        type=_count,
        default=300,
        help="training images sampled for the input statistics (default 300)",
    )
    drift.add_argument(
        "--metrics-textfile",
        type=Path,
        help="also write the PSI and the verdict here, in Prometheus's text format (atomically)",
    )
    return parser


def _compare(arguments: argparse.Namespace, root: Store, model_name: str, now: datetime) -> int:
    thresholds = Thresholds(
        min_agreement=arguments.min_agreement,
        max_error_rate_increase=arguments.max_error_rate_increase,
        max_latency_p95_ratio=arguments.max_latency_p95_ratio,
        max_refusal_rate_increase=arguments.max_refusal_rate_increase,
        max_refer_rate_increase=arguments.max_refer_rate_increase,
        min_samples=arguments.min_samples,
    )
    stop = arguments.until or now
    start = arguments.since or stop - timedelta(days=arguments.days)
    if start >= stop:
        print("error: the window starts after it ends", file=sys.stderr)
        return EXIT_USAGE
    outcome = run_compare(
        root,
        model_name,
        start,
        stop,
        thresholds,
        promote=arguments.promote,
        stable_version=arguments.stable_version,
        canary_version=arguments.canary_version,
        plots=not arguments.no_plots,
        clock=lambda: now,
    )
    report = outcome.report
    if report:
        shown = {
            "stable_version": report["stable_version"],
            "canary_version": report["canary_version"],
            "canary_samples": report["canary"]["samples"],
            "stable_samples": report["stable"]["samples"],
            "shadow_agreement": report["shadow"]["agreement_rate"],
            "canary_error_rate": report["canary"]["error_rate"],
            "checks": {check["name"]: check["passed"] for check in report["checks"]},
        }
        print(json.dumps(shown, indent=2))
    for key in outcome.written:
        print(f"wrote {key}")
    print(outcome.message, file=sys.stderr if outcome.status != CompareStatus.OK else sys.stdout)
    return _COMPARE_EXIT[outcome.status]


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Run one command; `environ` replaces the real environment, `clock` the time (tests)."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command == "compare" and arguments.promote:
        thresholds = (
            arguments.min_agreement,
            arguments.max_error_rate_increase,
            arguments.max_latency_p95_ratio,
            arguments.max_refusal_rate_increase,
            arguments.max_refer_rate_increase,
        )
        if all(value is None for value in thresholds):
            print("error: --promote needs at least one threshold", file=sys.stderr)
            return EXIT_USAGE
    try:
        settings = RegistrySettings.from_env(load_environment() if environ is None else environ)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    storage = settings.storage
    if arguments.url:
        storage = dataclasses.replace(storage, url=arguments.url)
    model_name = arguments.model or settings.model_name
    now = clock()
    try:
        areas = open_areas(storage)
        if arguments.command == "compare":
            return _compare(arguments, areas.root, model_name, now)
        options = DriftOptions(
            day=arguments.day or (now - timedelta(days=1)).date(),
            weeks=arguments.weeks,
            threshold=arguments.threshold,
            min_records=arguments.min_records,
            reference_images=arguments.reference_images,
            plots=not arguments.no_plots,
        )
        outcome = run_drift(areas.root, areas.db, model_name, options, clock=lambda: now)
        if arguments.metrics_textfile is not None:
            write_textfile(arguments.metrics_textfile, metrics_text(outcome, now=now))
    except RegistryError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (StorageError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for key in outcome.written:
        print(f"wrote {key}")
    print(outcome.message)
    return EXIT_DRIFT if outcome.drift_detected else EXIT_OK
