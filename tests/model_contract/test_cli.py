"""`python -m model_contract`: registry commands on both backends, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_contract.cli import main
from storage import StorageSettings
from tests.model_contract.helpers import write_fake_saved_model

REPOSITORY = Path(__file__).resolve().parents[2]


def _environ(settings: StorageSettings) -> dict[str, str]:
    environ = {"STORAGE_URL": settings.url, "MODEL_NAME": "cnn_vit"}
    if settings.s3_endpoint_url:
        environ.update(S3_ENDPOINT_URL=settings.s3_endpoint_url, AWS_REGION="us-east-1")
    return environ


def test_cli_publish_promote_rollback_round_trip(
    storage_settings: StorageSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = _environ(storage_settings)
    source = write_fake_saved_model(tmp_path / "export")
    metrics = json.dumps({"macro_f1": 0.91})

    first = ["publish", str(source), "--run-id", "run-1", "--metrics", metrics, "--preset", "small"]
    assert main([*first, "--promote", "stable"], environ) == 0
    second = ["publish", str(source), "--run-id", "run-2", "--parent-version", "1"]
    assert main(second, environ) == 0
    assert main(["promote", "2"], environ) == 0
    assert main(["promote", "1", "--label", "canary"], environ) == 0
    assert main(["clear-canary"], environ) == 0
    capsys.readouterr()

    assert main(["show", "2"], environ) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["labels"] == ["stable"]
    assert shown["entry"]["parent_version"] == 1
    assert shown["entry"]["run_id"] == "run-2"
    assert shown["complete"] is True

    assert main(["rollback"], environ) == 0
    assert "stable is now version 1" in capsys.readouterr().out
    assert main(["list"], environ) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:3]]
    assert [row[0] for row in rows] == ["1", "2"]
    assert rows[0][2] == "stable"
    assert "0.9100" in rows[0]


def test_cli_promote_expect_stable_refuses_when_stable_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"STORAGE_URL": str(tmp_path / "store")}
    source = write_fake_saved_model(tmp_path / "export")
    for run_id in ("run-1", "run-2", "run-3"):
        assert main(["publish", str(source), "--run-id", run_id], environ) == 0
    assert main(["promote", "1", "--expect-stable", "none"], environ) == 0
    assert main(["promote", "3"], environ) == 0  # someone else's promotion
    capsys.readouterr()

    assert main(["promote", "2", "--expect-stable", "1"], environ) == 1
    assert "stable_changed" in capsys.readouterr().err
    assert main(["promote", "2", "--expect-stable", "3"], environ) == 0
    capsys.readouterr()
    assert main(["show", "2"], environ) == 0
    assert json.loads(capsys.readouterr().out)["labels"] == ["stable"]


def test_cli_promote_expect_stable_rejects_a_non_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["promote", "2", "--expect-stable", "latest"], {"STORAGE_URL": str(tmp_path)})
    assert caught.value.code == 2


def test_cli_rollback_without_previous_stable_exits_one_with_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"STORAGE_URL": str(tmp_path / "store")}
    assert main(["rollback"], environ) == 1
    assert "nothing_to_roll_back" in capsys.readouterr().err


def test_cli_promote_unknown_version_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["promote", "4"], {"STORAGE_URL": str(tmp_path / "store")}) == 1
    assert "version_not_found" in capsys.readouterr().err


def test_cli_publish_without_run_id_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_fake_saved_model(tmp_path / "export")
    assert main(["publish", str(source)], {"STORAGE_URL": str(tmp_path / "store")}) == 1
    assert "run id" in capsys.readouterr().err


def test_cli_invalid_model_name_setting_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"STORAGE_URL": str(tmp_path / "store"), "PROD_MODEL_NAME": "../escape"}
    assert main(["list"], environ) == 2
    assert "MODEL_NAME" in capsys.readouterr().err


def test_cli_module_lists_versions_without_importing_tensorflow(tmp_path: Path) -> None:
    store = tmp_path / "store"
    environ = {**os.environ, "STORAGE_URL": str(store), "PROD_MODEL_NAME": "legacy_name"}
    assert (
        main(["publish", str(write_fake_saved_model(tmp_path / "m")), "--run-id", "r"], environ)
        == 0
    )
    probe = (
        "import sys, runpy; sys.argv = ['model_contract', 'list'];\n"
        "try:\n    runpy.run_module('model_contract', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert 'tensorflow' not in sys.modules, 'registry CLI imported tensorflow'\n"
        "    raise\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPOSITORY,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert (store / "input/model/legacy_name/1/manifest.json").is_file()  # the alias was read
    assert completed.stdout.splitlines()[1].split()[:2] == ["1", "complete"]
