"""Where training starts: the stable model's weights to fine-tune from, or why a run starts from
scratch."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnn_vit.config import get_preset
from cnn_vit.model import build_model
from model_contract.documents import VersionEntry
from storage import LocalStore, keys
from training_job.outputs import MODEL_FILE
from training_job.starting_weights import load_starting_weights

SMALL = get_preset("small")


def _entry(preset: str = "small", run_id: str = "20260101T000000Z-abcdef") -> VersionEntry:
    return VersionEntry(
        version=3,
        run_id=run_id,
        parent_version=2,
        published_at="2026-01-01T00:00:00Z",
        preset=preset,
    )


@pytest.mark.parametrize(
    ("stable", "from_scratch", "reason_part"),
    [
        (None, False, "no stable model"),
        (_entry(), True, "from scratch"),
        (_entry(preset="seed"), False, "preset 'seed'"),
        (_entry(), False, "no Keras model file"),
    ],
)
def test_load_starting_weights_reasons_to_start_from_scratch(
    tmp_path: Path, stable: VersionEntry | None, from_scratch: bool, reason_part: str
) -> None:
    starting = load_starting_weights(
        LocalStore(tmp_path / "store"), stable, SMALL, tmp_path, from_scratch=from_scratch
    )

    assert starting.source == "scratch"
    assert not starting.fine_tuning
    assert reason_part in starting.reason
    assert starting.parent_version == (stable.version if stable else None)


def test_load_starting_weights_says_which_model_file_is_missing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")

    no_run = load_starting_weights(store, _entry(run_id=""), SMALL, tmp_path, from_scratch=False)
    missing = load_starting_weights(store, _entry(), SMALL, tmp_path, from_scratch=False)

    assert no_run.reason == (
        "stable version 3 has no Keras model file (its registry entry names no run)"
    )
    assert missing.reason == (
        "stable version 3 has no Keras model file "
        "(output/learning/20260101T000000Z-abcdef/model.keras)"
    )
    assert not (tmp_path / "stable-model.keras").exists()


def test_load_starting_weights_fine_tunes_from_the_stable_model_file(tmp_path: Path) -> None:
    model = build_model(SMALL)
    model.save(tmp_path / "saved.keras")
    store = LocalStore(tmp_path / "store")
    store.upload_file(tmp_path / "saved.keras", keys.learning_file(_entry().run_id, MODEL_FILE))
    workdir = tmp_path / "work"
    workdir.mkdir()

    starting = load_starting_weights(store, _entry(), SMALL, workdir, from_scratch=False)

    assert starting.source == "stable"
    assert starting.fine_tuning
    assert starting.parent_version == 3
    assert starting.reason == "fine-tuning from stable version 3 (run 20260101T000000Z-abcdef)"
    assert starting.weights is not None
    assert [w.tolist() for w in starting.weights] == [w.tolist() for w in model.get_weights()]
