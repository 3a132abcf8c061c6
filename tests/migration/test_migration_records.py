"""The migration's lean steps on a generated original tree, on a folder and on moto's S3: the
users file kept, every well-formed `history.csv` row one record (re-labelled, named `legacy`),
malformed rows reported by line and skipped, Grad-CAM images kept and listed; a dry run writes
nothing; a second run imports nothing twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.history import HistoryService
from migration.cli import main, run
from model_contract.settings import RegistrySettings
from storage import LocalStore, StorageSettings, Store, keys, open_areas, open_store
from tests.migration.original_tree import OriginalTree, history_csv, write_original_tree

ROWS = 2000


def _count(store: Store, prefix: str) -> int:
    return sum(1 for info in store.list(prefix) if info.key.endswith(".json"))


@pytest.fixture
def original(tmp_path: Any) -> tuple[str, OriginalTree]:
    source = LocalStore(tmp_path / "original" / "storage")
    return str(tmp_path / "original" / "storage"), write_original_tree(source, ROWS)


def _settings(storage_settings: StorageSettings) -> RegistrySettings:
    return RegistrySettings(storage=storage_settings, model_name="cnn_vit")


def test_migration_records_on_each_backend_then_nothing_twice(
    storage_settings: StorageSettings, original: tuple[str, OriginalTree]
) -> None:
    source_url, tree = original
    settings = _settings(storage_settings)
    areas = open_areas(storage_settings)

    report = run(source_url, settings, weights=False)

    users, history, images = (report.steps[name] for name in ("users", "history", "gradcam_images"))
    assert users.counts == {"written": 1}
    assert areas.auth.get_bytes(keys.USERS_FILE) == tree.users_csv
    assert history.counts["written"] == ROWS
    assert history.counts["rows_skipped"] == len(tree.malformed_lines)
    reported = [int(problem.split(":")[0].removeprefix("line ")) for problem in history.problems]
    assert reported == tree.malformed_lines
    assert _count(areas.root, keys.INFERENCE_AREA) == ROWS
    assert images.counts == {"written": 3}
    assert sorted(images.items) == sorted(tree.gradcam_files)
    for path in tree.gradcam_files:
        assert areas.root.exists(keys.legacy_gradcam_copy(path.rsplit("/", 1)[-1]))

    again = run(source_url, settings, weights=False)

    assert again.steps["users"].counts == {"already_there": 1}
    assert again.steps["history"].counts["already_there"] == ROWS
    assert "written" not in again.steps["history"].counts
    assert again.steps["gradcam_images"].counts == {"already_there": 3}
    assert _count(areas.root, keys.INFERENCE_AREA) == ROWS


def test_migrated_records_are_relabelled_and_listed_by_history(
    tmp_path: Any, original: tuple[str, OriginalTree]
) -> None:
    source_url, _ = original
    settings = _settings(StorageSettings(url=str(tmp_path / "store")))
    run(source_url, settings, weights=False)
    root = open_store(str(tmp_path / "store"))
    history = HistoryService(root, "k" * 40)

    records = history.all_records("0", None, None)  # alice's: every third row

    assert records is not None
    assert len(records) == len(range(0, ROWS, 3))
    data, _ = history_csv(ROWS)
    first_row = data.decode().splitlines()[1].split(";")
    first = records[0]
    assert first["model"] == {"name": "legacy", "version": 0, "run_id": ""}
    assert first["created_at"].startswith(first_row[1].replace(" ", "T")[:19])
    # The original's `covid` column held P(normal), `no-covid` P(covid), `normal` P(no-covid).
    assert first["probabilities"] == pytest.approx(
        {
            "normal": float(first_row[2]),
            "covid": float(first_row[3]),
            "no-covid": float(first_row[4]),
        }
    )
    assert first["predicted_class"] == max(first["probabilities"], key=first["probabilities"].get)
    assert first["migrated"] == {"source": keys.LEGACY_HISTORY_FILE, "line": 2}
    assert [record["created_at"] for record in records] == sorted(
        record["created_at"] for record in records
    )
    window = history.all_records(
        "0", datetime(2024, 1, 31, 9, 0, tzinfo=UTC), datetime(2024, 1, 31, 9, 2, tzinfo=UTC)
    )
    assert window is not None
    assert 0 < len(window) < len(records)
    assert all(
        datetime(2024, 1, 31, 9, 0, tzinfo=UTC)
        <= datetime.fromisoformat(record["created_at"].replace("Z", "+00:00"))
        <= datetime(2024, 1, 31, 9, 0, tzinfo=UTC) + timedelta(minutes=2)
        for record in window
    )


def test_migration_dry_run_writes_nothing_and_says_what_it_would(
    tmp_path: Any, original: tuple[str, OriginalTree]
) -> None:
    source_url, tree = original
    settings = _settings(StorageSettings(url=str(tmp_path / "store")))

    report = run(source_url, settings, dry_run=True, weights=False)

    assert report.steps["history"].counts["to_write"] == ROWS
    assert report.steps["users"].counts == {"to_write": 1}
    assert report.steps["gradcam_images"].counts == {"to_write": 3}
    assert not any(True for _ in open_store(str(tmp_path / "store")).list(""))
    assert len(report.steps["history"].problems) == len(tree.malformed_lines)


def test_migration_keeps_a_different_users_file_of_the_destination(
    tmp_path: Any, original: tuple[str, OriginalTree]
) -> None:
    source_url, _ = original
    store = LocalStore(tmp_path / "store")
    store.put("input/db_auth/authentication.csv", b"id;email;role;hashed_password;disabled\n")
    settings = _settings(StorageSettings(url=str(tmp_path / "store")))

    report = run(source_url, settings, weights=False)

    assert report.steps["users"].counts == {"kept_destination": 1}
    assert report.steps["users"].problems
    assert store.get_bytes("input/db_auth/authentication.csv").count(b"\n") == 1


def test_migration_cli_prints_the_report_and_exits_0(
    tmp_path: Any, original: tuple[str, OriginalTree], capsys: pytest.CaptureFixture[str]
) -> None:
    source_url, _ = original
    environ = {"STORAGE_URL": str(tmp_path / "store")}

    code = main([source_url, "--skip-weights", "--json"], environ)

    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"]["history"]["counts"]["written"] == ROWS
    assert main([str(tmp_path / "missing"), "--skip-weights"], environ) == 0  # nothing found
    assert main([source_url], {"STORAGE_URL": "gs://nope"}) == 2
