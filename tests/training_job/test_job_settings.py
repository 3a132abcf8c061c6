"""The training job's settings: names of the original system, defaults, every problem at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.settings import SettingsError
from training_job.settings import TrainingJobSettings
from training_job.strategy import is_chief_task


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


INDEXED_JOB = {
    "JOB_COMPLETION_INDEX": "1",
    "TRAINING_WORKERS": "3",
    "TRAINING_JOB_NAME": "training-distributed-29400000",
    "TRAINING_WORKER_SERVICE": "training-workers",
}


def test_training_job_settings_indexed_job_pod_derives_its_tf_config() -> None:
    settings = TrainingJobSettings.from_env(INDEXED_JOB)

    assert settings.tf_config is not None
    assert json.loads(settings.tf_config) == {
        "cluster": {
            "worker": [
                f"training-distributed-29400000-{index}.training-workers:2222" for index in range(3)
            ]
        },
        "task": {"type": "worker", "index": 1},
    }
    assert not is_chief_task(settings.tf_config)


def test_training_job_settings_tf_config_given_wins_over_the_indexed_job() -> None:
    given = (
        '{"cluster": {"chief": ["c:1"], "worker": ["w:1"]}, "task": {"type": "chief", "index": 0}}'
    )

    settings = TrainingJobSettings.from_env({**INDEXED_JOB, "TF_CONFIG": given})

    assert settings.tf_config == given


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"TRAINING_WORKERS": None}, "TRAINING_WORKERS"),
        ({"TRAINING_JOB_NAME": None}, "TRAINING_JOB_NAME"),
        ({"JOB_COMPLETION_INDEX": "3"}, "completion index 3"),
        ({"TRAINING_WORKER_PORT": "70000"}, "TRAINING_WORKER_PORT"),
    ],
)
def test_training_job_settings_indexed_job_incomplete_is_refused(
    changes: dict[str, str | None], named: str
) -> None:
    environ = {**INDEXED_JOB, **changes}

    with pytest.raises(SettingsError) as caught:
        TrainingJobSettings.from_env({k: v for k, v in environ.items() if v is not None})

    assert named in " ".join(caught.value.problems)
