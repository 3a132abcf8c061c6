"""`python -m model_export export` then `python -m model_contract publish`: a saved .keras model
to a published version, the run id and preset taken from the export's model info."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_contract.artifact import read_model_info
from model_contract.cli import main as registry_main
from model_contract.identity import IDENTITY_ASSET_PATH, ModelIdentity
from model_export.cli import main
from storage import LocalStore, keys
from tests.trained_models import Trained


def test_cli_export_then_publish_uses_the_exports_run_and_preset(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keras_file = tmp_path / "model.keras"
    trained.model.save(keras_file)
    export_dir = tmp_path / "export"
    environ = {"STORAGE_URL": str(tmp_path / "store"), "MODEL_NAME": "cli_model"}

    exported = main(
        [
            "export",
            str(keras_file),
            str(export_dir),
            "--run-id",
            "run-cli",
            "--compute-dtype",
            "bfloat16",
            "--overlay-size",
            "320",
            "--no-gradcam-xla",
        ],
        environ,
    )
    published = registry_main(["publish", str(export_dir), "--promote", "canary"], environ)

    assert (exported, published) == (0, 0)
    info = read_model_info(export_dir)
    assert (info["preset"], info["compute_dtype"], info["model_name"]) == (
        "small",
        "bfloat16",
        "cli_model",
    )
    assert info["overlay_size"] == 320
    assert info["gradcam_xla"] is False
    out = capsys.readouterr().out
    assert "Grad-CAM XLA off" in out
    store = LocalStore(tmp_path / "store")
    stamped = store.get_bytes(keys.model_version_prefix("cli_model", 1) + IDENTITY_ASSET_PATH)
    assert ModelIdentity.from_text(stamped.decode()) == ModelIdentity("cli_model", 1, "run-cli")
    registry = store.get_json(keys.model_registry("cli_model"))
    assert registry["canary"] == 1
    assert registry["versions"]["1"]["preset"] == "small"
    assert "published cli_model version 1" in out


def test_cli_export_missing_file_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"STORAGE_URL": str(tmp_path / "store")}
    code = main(["export", str(tmp_path / "absent.keras"), str(tmp_path / "out")], environ)
    assert code == 1
    assert "error" in capsys.readouterr().err
