"""`python -m storage`: the same commands on a local folder and a bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import StorageSettings, open_store
from storage.cli import main


@pytest.fixture
def cli_env(
    storage_settings: StorageSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> StorageSettings:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("STORAGE_URL", storage_settings.url)
    if storage_settings.s3_endpoint_url:
        monkeypatch.setenv("S3_ENDPOINT_URL", storage_settings.s3_endpoint_url)
    return storage_settings


def test_cli_init_upload_list_download_round_trip(
    cli_env: StorageSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "batch"
    (source / "Train" / "Normal" / "images").mkdir(parents=True)
    (source / "Train" / "Normal" / "images" / "a.png").write_bytes(b"png-a")
    (source / "Test" / "COVID-19").mkdir(parents=True)
    (source / "Test" / "COVID-19" / "b.png").write_bytes(b"png-b")

    assert main(["init"]) == 0
    assert main(["upload", str(source), "input/db/batch1"]) == 0
    capsys.readouterr()
    assert main(["ls", "input/db/"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == [
        "input/db/batch1/Test/COVID-19/b.png",
        "input/db/batch1/Train/Normal/images/a.png",
    ]
    assert main(["download", "input/db/batch1/", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "Train" / "Normal" / "images" / "a.png").read_bytes() == b"png-a"

    assert main(["cat", "input/db/batch1/Test/COVID-19/b.png"]) == 0
    assert main(["rm", "-r", "input/db/batch1/"]) == 0
    assert open_store(cli_env.url, cli_env).list_keys("input/db/") == []


def test_cli_missing_object_exits_non_zero_with_message(
    cli_env: StorageSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["init"])
    assert main(["cat", "input/nothing"]) == 1
    assert "no object" in capsys.readouterr().err


def test_cli_bad_settings_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("S3_MAX_ATTEMPTS", "zero")
    assert main(["ls"]) == 2
