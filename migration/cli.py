"""`python -m migration SOURCE [--dry-run] [--promote]`: an original system's storage tree into the
configured store.

SOURCE is the original's storage folder (its `STORAGE_PATH`) or an `s3://bucket[/prefix]`; the
destination is this system's store (`STORAGE_URL` ..., the original's names work too), and
`MODEL_NAME` (or the original `PROD_MODEL_NAME`) names the model the weights are published as.
Every step is idempotent: run it again after a failure, or after the original wrote more. Exit
status: 0 done (problems such as malformed history rows are reported, not fatal), 1 a step
failed, 2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence

from common.settings import SettingsError, load_environment
from migration.records import copy_gradcam_images, copy_users_file, migrate_history
from migration.report import MigrationReport
from model_contract.registry import ModelRegistry
from model_contract.settings import RegistrySettings
from storage import StorageError, keys, open_areas, open_store

__all__ = ["main", "run"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xray-migrate", description=__doc__)
    parser.add_argument("source", help="the original's storage folder, or s3://bucket[/prefix]")
    parser.add_argument("--dry-run", action="store_true", help="report what would be done")
    parser.add_argument(
        "--promote", action="store_true", help="make the imported weights the stable version"
    )
    parser.add_argument(
        "--skip-weights", action="store_true", help="leave the .hdf5 weights (no TensorFlow)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def run(
    source_url: str,
    settings: RegistrySettings,
    *,
    dry_run: bool = False,
    promote: bool = False,
    weights: bool = True,
) -> MigrationReport:
    """Migrate `source_url` into the store `settings` name; the report of every step."""
    source = open_store(source_url, settings.storage)
    areas = open_areas(settings.storage)
    report = MigrationReport(source.describe(), areas.root.describe(), dry_run)
    copy_users_file(source.child(keys.AUTH_AREA), areas.auth, report.step("users"), dry_run=dry_run)
    migrate_history(source, areas.root, report.step("history"), dry_run=dry_run)
    copy_gradcam_images(source, areas.root, report.step("gradcam_images"), dry_run=dry_run)
    if weights:
        from migration.weights import migrate_weights  # TensorFlow: only for this step

        migrate_weights(
            source,
            ModelRegistry(areas.root, settings.model_name),
            areas.db,
            report.step("weights"),
            dry_run=dry_run,
            promote=promote,
        )
    return report


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the migration once; `environ` replaces the real environment and `.env` (tests)."""
    arguments = _parser().parse_args(argv)
    try:
        settings = RegistrySettings.from_env(load_environment() if environ is None else environ)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        report = run(
            arguments.source,
            settings,
            dry_run=arguments.dry_run,
            promote=arguments.promote,
            weights=not arguments.skip_weights,
        )
    except (StorageError, ValueError, OSError) as exc:
        print(f"migration failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json(), indent=2) if arguments.json else report.text())
    return 0
