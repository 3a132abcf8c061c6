"""Settings of the training job, read from the environment once at its edge.

`TrainingJobSettings.from_env(environ)` reads where the store and the image database are (the
storage settings), which model the job trains (`MODEL_NAME`, alias `PROD_MODEL_NAME`), the
local cache folder (`TRAINING_CACHE_DIR`, default `$HOME/.cache/xray-training`) and the cluster
(`TF_CONFIG`, for MultiWorkerMirroredStrategy); it reports every problem at once. Everything
about the run itself (preset, hyperparameters, promotion rules) is a `TrainingOptions` field,
set by a command-line option or its `TRAINING_<NAME>` variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from common.settings import EnvReader
from model_contract.settings import DEFAULT_MODEL_NAME, read_model_name
from storage import StorageSettings
from training_job.strategy import parse_tf_config

__all__ = ["TrainingJobSettings"]

_CACHE_SUBFOLDER = ".cache/xray-training"


@dataclass(frozen=True)
class TrainingJobSettings:
    storage: StorageSettings
    model_name: str = DEFAULT_MODEL_NAME
    cache_dir: Path = Path(_CACHE_SUBFOLDER)
    tf_config: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TrainingJobSettings:
        """Read the job's settings; SettingsError lists every invalid value."""
        env = EnvReader(environ, "training_job")
        storage = StorageSettings.read(env)
        model_name = read_model_name(env)
        cache_dir = env.optional("TRAINING_CACHE_DIR")
        if cache_dir is None:
            home = env.optional("HOME")
            cache_dir = str(Path(home) / _CACHE_SUBFOLDER) if home else "/tmp/xray-training"  # noqa: S108
        tf_config = env.optional("TF_CONFIG")
        try:
            parse_tf_config(tf_config)
        except ValueError as exc:
            env.problem(str(exc))
            tf_config = None
        env.check()
        return cls(
            storage=storage,
            model_name=model_name,
            cache_dir=Path(cache_dir),
            tf_config=tf_config,
        )

    def with_locations(
        self, storage_url: str | None = None, db_url: str | None = None
    ) -> TrainingJobSettings:
        """The same settings pointed at another store and/or image database."""
        storage = self.storage
        if storage_url is not None:
            storage = replace(storage, url=storage_url)
        if db_url is not None:
            storage = replace(storage, db_url=db_url)
        return replace(self, storage=storage)
