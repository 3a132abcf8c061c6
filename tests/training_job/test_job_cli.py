"""Runs that never train: the job's command line and the original system's `retraining` entry
point (exit statuses, the JSON log on stdout, the report's location, locations from arguments,
no TensorFlow import when there is nothing to do), and a non-chief worker. Runs that train live
in test_job.py."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_contract.documents import RegistryDocument, VersionEntry
from storage import LocalStore, StorageSettings, Store, keys
from synthetic.xrays import write_covid_qu_ex_to_store
from training_job.cli import main
from training_job.discovery import discover_dataset
from training_job.job import run_job
from training_job.settings import TrainingJobSettings

REPOSITORY = Path(__file__).resolve().parents[2]


def _store_with_stable_model_trained_on_its_data(folder: Path, db: Path | None = None) -> Store:
    """A store whose stable version was trained on exactly the database it holds (or `db`)."""
    store = LocalStore(folder)
    database = LocalStore(db) if db else store.child(keys.DB_AREA)
    write_covid_qu_ex_to_store(database, "b1", {"train": 1, "test": 1})
    entry = VersionEntry(
        version=1,
        run_id="20260101T000000Z-abcdef",
        parent_version=None,
        published_at="2026-01-01T00:00:00Z",
        metrics={"macro_f1": 0.9},
        dataset_fingerprint=discover_dataset(database).fingerprint,
        preset="small",
    )
    registry = RegistryDocument(name="cnn_vit", stable=1, versions={1: entry})
    store.put_json(keys.model_registry("cnn_vit"), registry.to_json())
    return store


def _environment(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"TRAINING_CACHE_DIR": str(tmp_path / "cache"), **values}


def test_python_m_training_job_unchanged_data_exits_0_and_says_where_the_report_is(
    tmp_path: Path,
) -> None:
    _store_with_stable_model_trained_on_its_data(tmp_path / "store")
    environment = dict(
        os.environ,
        PYTHONPATH=str(REPOSITORY),
        STORAGE_URL=str(tmp_path / "store"),
        TRAINING_CACHE_DIR=str(tmp_path / "cache"),
    )

    completed = subprocess.run(
        [sys.executable, "-m", "training_job", "--preset", "small", "--strategy", "auto"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert events[0]["event"] == "job_started"
    assert events[-1]["event"] == "job_finished"
    assert events[-1]["verdict"] == "unchanged"
    report = completed.stderr.strip().splitlines()[-1].removeprefix("report: ")
    assert Path(report).is_file()
    assert json.loads(Path(report).read_text())["verdict"] == "unchanged"


def test_main_unchanged_data_never_imports_tensorflow(tmp_path: Path) -> None:
    _store_with_stable_model_trained_on_its_data(tmp_path / "store")
    script = (
        "import sys\n"
        "from training_job.cli import main\n"
        f"code = main(['--storage', {str(tmp_path / 'store')!r}], "
        f"{{'TRAINING_CACHE_DIR': {str(tmp_path / 'cache')!r}}})\n"
        "print('tensorflow' in sys.modules, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY,
        env=dict(os.environ, PYTHONPATH=str(REPOSITORY)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.splitlines()[-1] == "False"


def test_main_database_argument_overrides_the_environment(tmp_path: Path) -> None:
    store = _store_with_stable_model_trained_on_its_data(tmp_path / "store", db=tmp_path / "db")
    out, err = io.StringIO(), io.StringIO()

    code = main(
        ["--storage", str(tmp_path / "store"), "--db", str(tmp_path / "db")],
        _environment(tmp_path, STORAGE_URL=str(tmp_path / "elsewhere")),
        stdout=out,
        stderr=err,
    )

    assert code == 0, err.getvalue()
    assert json.loads(out.getvalue().splitlines()[-1])["verdict"] == "unchanged"
    assert any(True for _ in store.list(keys.LEARNING_AREA))
    assert not (tmp_path / "elsewhere").exists()


def test_main_bad_settings_exit_2_listing_every_problem(tmp_path: Path) -> None:
    err = io.StringIO()

    code = main([], {"TRAINING_PRESET": "huge", "MODEL_NAME": "a/b"}, stderr=err)

    assert code == 2
    assert "TRAINING_PRESET" in err.getvalue()
    assert "MODEL_NAME" in err.getvalue()


@pytest.mark.parametrize(
    "argv",
    [["--epochs", "0"], ["--promotion-margin", "2"], ["--run-id", "../x"]],
)
def test_main_bad_options_exit_2(tmp_path: Path, argv: list[str]) -> None:
    err = io.StringIO()

    code = main(argv, _environment(tmp_path, STORAGE_URL=str(tmp_path / "store")), stderr=err)

    assert code == 2
    assert err.getvalue().startswith("error:")


def test_main_run_that_fails_exits_1_and_logs_the_failure(tmp_path: Path) -> None:
    LocalStore(tmp_path / "store").put("input/db/empty/notes.txt", b"no images")
    out, err = io.StringIO(), io.StringIO()

    code = main(
        ["--run-id", "failing-run"],
        _environment(tmp_path, STORAGE_URL=str(tmp_path / "store")),
        stdout=out,
        stderr=err,
    )

    assert code == 1
    failure = json.loads(out.getvalue().splitlines()[-1])
    assert (failure["event"], failure["error"]) == ("job_failed", "DatasetError")
    decision = LocalStore(tmp_path / "store").get_json(
        keys.learning_file("failing-run", "decision.json")
    )
    assert decision["verdict"] == "failed"
    assert "training job failed" in err.getvalue()


def test_retraining_original_signature_locations_from_arguments(tmp_path: Path) -> None:
    store = _store_with_stable_model_trained_on_its_data(tmp_path / "store", db=tmp_path / "db")
    # A fresh interpreter: pytest registers tests/training_job as `training_job` in this one.
    script = (
        "import training_job\n"
        f"print(training_job.retraining({str(tmp_path / 'store')!r}, {str(tmp_path / 'db')!r}))\n"
    )
    environment = dict(
        os.environ,
        PYTHONPATH=str(REPOSITORY),
        STORAGE_URL=str(tmp_path / "elsewhere"),
        TRAINING_CACHE_DIR=str(tmp_path / "cache"),
    )

    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # no .env of the repository
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "False"
    (decision_key,) = [
        key for key in store.list_keys(keys.LEARNING_AREA) if key.endswith("decision.json")
    ]
    assert store.get_json(decision_key)["verdict"] == "unchanged"
    assert not (tmp_path / "elsewhere").exists()


def test_run_job_non_chief_worker_with_unchanged_data_writes_nothing(tmp_path: Path) -> None:
    store = _store_with_stable_model_trained_on_its_data(tmp_path / "store")
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    settings = TrainingJobSettings(
        storage=StorageSettings(url=str(tmp_path / "store")),
        cache_dir=tmp_path / "cache",
        tf_config=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}),
    )

    result = run_job(settings, stream=io.StringIO())

    assert result.verdict == "unchanged"
    assert store.list_keys(keys.LEARNING_AREA) == []
