"""Settings of the registry CLI: where the store is and which model it manages.

Built once from the environment at the CLI's edge (`ModelExportSettings.from_env`); nothing
below it reads `os.environ`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from storage import EnvReader, StorageSettings, keys

__all__ = ["DEFAULT_MODEL_NAME", "ModelExportSettings"]

DEFAULT_MODEL_NAME = "cnn_vit"


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
        model_name = env.string("MODEL_NAME", DEFAULT_MODEL_NAME, "PROD_MODEL_NAME")
        try:
            keys.check_model_name(model_name)
        except ValueError:
            env.problem(f"MODEL_NAME={model_name!r} is not a valid model name")
            model_name = DEFAULT_MODEL_NAME
        env.check()
        return cls(storage=storage, model_name=model_name)
