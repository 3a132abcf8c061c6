"""The training job's settings: names of the original system, defaults, every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import SettingsError
from training_job.settings import TrainingJobSettings


def test_training_job_settings_defaults() -> None:
    settings = TrainingJobSettings.from_env({"HOME": "/home/app"})

    assert settings.model_name == "cnn_vit"
    assert settings.storage.url == "./store"
    assert settings.cache_dir == Path("/home/app/.cache/xray-training")
    assert settings.tf_config is None


def test_training_job_settings_original_names_and_overrides() -> None:
    settings = TrainingJobSettings.from_env(
        {
            "STORAGE_PATH": "s3://bucket/root",
            "DB_STORAGE_PATH": "s3://other/db",
            "PROD_MODEL_NAME": "xray_model",
            "TRAINING_CACHE_DIR": "/cache",
            "TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
        }
    )

    assert settings.storage.url == "s3://bucket/root"
    assert settings.storage.db_url == "s3://other/db"
    assert settings.model_name == "xray_model"
    assert settings.cache_dir == Path("/cache")
    assert settings.tf_config is not None


def test_training_job_settings_every_problem_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        TrainingJobSettings.from_env(
            {
                "MODEL_NAME": "../escape",
                "TF_CONFIG": "{broken",
                "S3_MAX_ATTEMPTS": "zero",
            }
        )

    problems = " ".join(caught.value.problems)
    assert len(caught.value.problems) == 3
    for name in ("MODEL_NAME", "TF_CONFIG", "S3_MAX_ATTEMPTS"):
        assert name in problems


def test_training_job_settings_with_locations_moves_store_and_database() -> None:
    settings = TrainingJobSettings.from_env({"STORAGE_URL": "/a", "DB_STORAGE_PATH": "/a-db"})

    moved = settings.with_locations("/b", None)
    both = settings.with_locations("/b", "/c")

    assert (moved.storage.url, moved.storage.db_url) == ("/b", "/a-db")
    assert (both.storage.url, both.storage.db_url) == ("/b", "/c")
