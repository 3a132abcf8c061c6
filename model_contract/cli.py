"""Command line of the model registry on the configured store: `python -m model_contract`.

list, show, download (verified against the manifest), publish, promote, rollback and
clear-canary; none imports TensorFlow (exporting a model is `python -m model_export`). Exit
status: 0 done, 1 the operation failed (the message says why), 2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.settings import SettingsError, load_environment
from model_contract.artifact import read_model_info
from model_contract.documents import LABELS
from model_contract.errors import RegistryError
from model_contract.registry import UNCHECKED, ModelRegistry, VersionSummary
from model_contract.settings import RegistrySettings
from storage import StorageError, open_store

__all__ = ["main"]


def _expected_stable(value: str) -> int | None:
    if value.lower() == "none":
        return None
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a version number or 'none'")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xray-registry", description=__doc__)
    parser.add_argument(
        "--url", help="store URL (directory, file:// or s3://); default: STORAGE_URL"
    )
    parser.add_argument("--model", help="model name; default: MODEL_NAME (or PROD_MODEL_NAME)")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("list", help="every version: completeness, labels, run, metrics")
    show = commands.add_parser("show", help="one version's registry entry and manifest (JSON)")
    show.add_argument("version", type=int)
    download = commands.add_parser(
        "download", help="copy a complete version into a new folder, verified file by file"
    )
    download.add_argument("version", type=int)
    download.add_argument("destination", type=Path, help="a folder that does not exist yet")

    publish = commands.add_parser("publish", help="publish an exported SavedModel folder")
    publish.add_argument("saved_model_dir", type=Path)
    publish.add_argument("--run-id", help="training run id (default: the export's run id)")
    publish.add_argument("--metrics", default=None, help="JSON object of metrics, or @file.json")
    publish.add_argument("--dataset-fingerprint", default="")
    publish.add_argument("--parent-version", type=int, default=None)
    publish.add_argument("--preset", default=None, help="default: the export's preset")
    publish.add_argument("--promote", choices=LABELS, default=None, help="label it at once")

    promote = commands.add_parser("promote", help="point stable (default) or canary at a version")
    promote.add_argument("version", type=int)
    promote.add_argument("--label", choices=LABELS, default="stable")
    promote.add_argument(
        "--expect-stable",
        type=_expected_stable,
        default=UNCHECKED,
        metavar="N",
        help="promote only if stable is still version N ('none': no stable yet); otherwise "
        "exit 1 with stable_changed and change nothing",
    )
    commands.add_parser("rollback", help="stable back to the previous stable version")
    commands.add_parser("clear-canary", help="remove the canary label")
    return parser


def _read_metrics(value: str | None, fallback: Mapping[str, Any]) -> dict[str, float]:
    if value is None:
        source: Any = fallback
    else:
        text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
        try:
            source = json.loads(text)
        except ValueError:
            raise ValueError("--metrics is not valid JSON") from None
    if not isinstance(source, Mapping):
        raise ValueError("metrics must be a JSON object of names to numbers")
    return {
        str(name): float(number)
        for name, number in source.items()
        if isinstance(number, int | float) and not isinstance(number, bool)
    }


def _summary_line(summary: VersionSummary) -> str:
    entry = summary.entry
    labels = ",".join(summary.labels) or "-"
    state = "complete" if summary.complete else "INCOMPLETE"
    if entry is None:
        return f"{summary.version:>7}  {state:<10}  {labels:<13}  (not in the registry)"
    f1 = entry.metrics.get("macro_f1")
    f1_text = f"{f1:.4f}" if isinstance(f1, int | float) else "-"
    return (
        f"{summary.version:>7}  {state:<10}  {labels:<13}  {entry.status:<11}  "
        f"{entry.published_at:<20}  {f1_text:>8}  {entry.run_id}"
    )


def _print_registry_state(registry: ModelRegistry) -> None:
    state = registry.load()
    print(
        f"stable: {state.stable}  canary: {state.canary}  previous: {list(state.previous_stable)}"
    )


def _publish(arguments: argparse.Namespace, registry: ModelRegistry) -> int:
    try:
        info = read_model_info(arguments.saved_model_dir)
    except FileNotFoundError:
        info = {}
    training_value = info.get("training")
    training: Mapping[str, Any] = training_value if isinstance(training_value, Mapping) else {}
    run_id = arguments.run_id or info.get("run_id") or ""
    if not run_id:
        raise ValueError("no run id: pass --run-id (the export names none)")
    version = registry.publish(
        arguments.saved_model_dir,
        run_id=run_id,
        metrics=_read_metrics(arguments.metrics, training.get("metrics") or {}),
        dataset_fingerprint=arguments.dataset_fingerprint
        or training.get("dataset_fingerprint", ""),
        parent_version=arguments.parent_version,
        preset=arguments.preset or info.get("preset", ""),
    )
    print(f"published {registry.name} version {version}")
    if arguments.promote:
        registry.promote(version, arguments.promote)
        print(f"promoted version {version} to {arguments.promote}")
        _print_registry_state(registry)
    return 0


def _run(arguments: argparse.Namespace, registry: ModelRegistry) -> int:
    command = arguments.command
    if command == "list":
        summaries = registry.list_versions()
        if not summaries:
            print(f"{registry.name}: no versions in {registry.store.describe()}")
            return 0
        print(
            f"{'version':>7}  {'state':<10}  {'labels':<13}  {'status':<11}  "
            f"{'published_at':<20}  {'macro_f1':>8}  run_id"
        )
        for summary in summaries:
            print(_summary_line(summary))
        _print_registry_state(registry)
    elif command == "show":
        details = registry.show(arguments.version)
        document = {
            "version": details.version,
            "complete": details.complete,
            "labels": list(details.labels),
            "entry": details.entry.to_json() if details.entry else None,
            "manifest": details.manifest.to_json() if details.manifest else None,
        }
        print(json.dumps(document, indent=2, sort_keys=True))
    elif command == "download":
        target = registry.download_version(arguments.version, arguments.destination)
        print(f"downloaded {registry.name} version {arguments.version} to {target} (verified)")
    elif command == "publish":
        return _publish(arguments, registry)
    elif command == "promote":
        registry.promote(
            arguments.version, arguments.label, expected_stable=arguments.expect_stable
        )
        print(f"promoted {registry.name} version {arguments.version} to {arguments.label}")
        _print_registry_state(registry)
    elif command == "rollback":
        state = registry.rollback()
        print(f"rolled back {registry.name}: stable is now version {state.stable}")
        _print_registry_state(registry)
    elif command == "clear-canary":
        registry.clear_canary()
        print(f"cleared the canary of {registry.name}")
        _print_registry_state(registry)
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; `environ` replaces the real environment (tests)."""
    arguments = _parser().parse_args(argv)
    try:
        settings = RegistrySettings.from_env(load_environment() if environ is None else environ)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    model_name = arguments.model or settings.model_name
    try:
        store = open_store(arguments.url or settings.storage.url, settings.storage)
        return _run(arguments, ModelRegistry(store, model_name))
    except RegistryError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 1
    except (StorageError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
