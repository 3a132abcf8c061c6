"""Settings of the registry CLI: where the store is and which model it manages.

Built once from the environment at the CLI's edge (`ModelExportSettings.from_env`); nothing
below it reads `os.environ`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from storage import DEFAULT_MODEL_NAME, EnvReader, StorageSettings, read_model_name

__all__ = ["DEFAULT_MODEL_NAME", "ModelExportSettings"]


@dataclass(frozen=True)
class ModelExportSettings:
    storage: StorageSettings
    model_name: str = DEFAULT_MODEL_NAME

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ModelExportSettings:
        """Read `MODEL_NAME` (alias `PROD_MODEL_NAME`) and the storage settings; report all
        problems at once."""
        env = EnvReader(environ, "model_export")
        storage = StorageSettings.read(env)
        model_name = read_model_name(env)
        env.check()
        return cls(storage=storage, model_name=model_name)
