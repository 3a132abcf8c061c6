"""Settings of the training job, read from the environment once at its edge.

`TrainingJobSettings.from_env(environ)` reads where the store and the image database are (the
storage settings), which model the job trains (`MODEL_NAME`, alias `PROD_MODEL_NAME`), the
local cache folder (`TRAINING_CACHE_DIR`, default `$HOME/.cache/xray-training`) and the cluster
(`TF_CONFIG`, for MultiWorkerMirroredStrategy, or in a Kubernetes Indexed Job derived from
`JOB_COMPLETION_INDEX`, `TRAINING_WORKERS`, `TRAINING_JOB_NAME`, `TRAINING_WORKER_SERVICE` and
`TRAINING_WORKER_PORT`); it reports every problem at once. Everything
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
from training_job.strategy import indexed_job_tf_config, parse_tf_config

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
        tf_config = env.optional("TF_CONFIG") or _indexed_job_cluster(env)
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


def _indexed_job_cluster(env: EnvReader) -> str | None:
    """TF_CONFIG derived from a Kubernetes Indexed Job's completion index, when the pod names
    the Service its workers share (infra/k8s/components/training-indexed-job)."""
    problems = len(env.problems)
    service = env.optional("TRAINING_WORKER_SERVICE")
    index = env.integer("JOB_COMPLETION_INDEX", 0, minimum=0)
    workers = env.integer("TRAINING_WORKERS", 1, minimum=1)
    port = env.integer("TRAINING_WORKER_PORT", 2222, minimum=1, maximum=65535)
    job_name = env.string("TRAINING_JOB_NAME", "")
    if service is None or len(env.problems) > problems:
        return None
    missing = [
        name
        for name in ("JOB_COMPLETION_INDEX", "TRAINING_WORKERS", "TRAINING_JOB_NAME")
        if env.optional(name) is None
    ]
    if missing:
        env.problem(
            f"TRAINING_WORKER_SERVICE is set (an Indexed Job's workers), but {', '.join(missing)} "
            "is not: TF_CONFIG cannot be derived"
        )
        return None
    try:
        return indexed_job_tf_config(
            index=index, workers=workers, job_name=job_name, service=service, port=port
        )
    except ValueError as exc:
        env.problem(f"TF_CONFIG cannot be derived from the Indexed Job: {exc}")
        return None
