"""The pieces of `make run` that do not need the whole stack (the e2e tests start the rest)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

from devstack.processes import port_is_free
from devstack.run import StackOptions, _progress_line, prepare_environment


def test_prepare_environment_local_defaults_and_persistent_secret(tmp_path: Path) -> None:
    options = StackOptions(root=tmp_path)
    first = prepare_environment(options, {}, None)
    assert first["ENVIRONMENT"] == "local"
    assert first["STORAGE_URL"] == str((tmp_path / "store").resolve())
    assert first["MODEL_BASE_PATH"] == str(tmp_path / ".run" / "models")
    assert first["TF_SERVING_URL"] == "http://127.0.0.1:8501"
    assert len(first["SECRET_KEY"]) >= 32
    key_file = tmp_path / ".run" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = prepare_environment(options, {}, None)
    assert second["SECRET_KEY"] == first["SECRET_KEY"]


def test_prepare_environment_keeps_what_the_user_set(tmp_path: Path) -> None:
    options = StackOptions(root=tmp_path, api_port=9090)
    env = prepare_environment(
        options,
        {"SECRET_KEY": "x" * 40, "STORAGE_PATH": "data", "PROD_MODEL_NAME": "legacy"},
        None,
    )
    assert env["SECRET_KEY"] == "x" * 40
    assert env["STORAGE_URL"] == str((tmp_path / "data").resolve())
    assert env["MODEL_NAME"] == "legacy"
    assert env["API_PORT"] == "9090"
    assert not (tmp_path / ".run" / "secret_key").exists()


def test_prepare_environment_s3_points_everything_at_the_emulator(tmp_path: Path) -> None:
    env = prepare_environment(
        StackOptions(root=tmp_path, s3=True), {"STORAGE_PATH": "./old"}, "http://127.0.0.1:5"
    )
    assert env["STORAGE_URL"] == "s3://xray-local"
    assert env["S3_ENDPOINT_URL"] == "http://127.0.0.1:5"
    assert "STORAGE_PATH" not in env
    assert env["AWS_ACCESS_KEY_ID"]


def test_progress_line_turns_job_events_into_readable_lines() -> None:
    epoch = _progress_line(
        {
            "event": "epoch",
            "epoch": 3,
            "epochs": 15,
            "loss": 0.5,
            "accuracy": 0.8,
            "val_accuracy": 0.9,
            "images_per_second": 400.4,
        }
    )
    assert epoch == (
        "epoch 3/15: loss 0.500, accuracy 0.800, validation accuracy 0.900, 400 images/s"
    )
    assert _progress_line({"event": "promoted", "version": 2}) == "promoted version 2"
    assert _progress_line({"event": "data_cached", "files": 3}) is None


def test_port_is_free_sees_a_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)
