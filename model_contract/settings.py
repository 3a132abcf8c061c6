"""Which model a deployable works with, and the settings of the registry CLI.

`MODEL_NAME` (alias `PROD_MODEL_NAME`, the original system's name) is read by every deployable
that touches a model (the functions, the model sync, the training job, the registry CLI) through
`read_model_name`, so the name, its default and its check are written once. Built at the edge;
nothing below reads `os.environ`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.settings import EnvReader
from storage import StorageSettings
from storage.keys import check_model_name

__all__ = ["DEFAULT_MODEL_NAME", "RegistrySettings", "read_model_name"]

# The served model's name when MODEL_NAME (or the original PROD_MODEL_NAME) is not set.
DEFAULT_MODEL_NAME = "cnn_vit"


def read_model_name(env: EnvReader) -> str:
    """`MODEL_NAME` (alias `PROD_MODEL_NAME`), default `cnn_vit`.

    Read into the deployable's reader: a name that is not a valid key segment is one of its
    problems (and the default is returned so the other checks can go on).
    """
    name = env.string("MODEL_NAME", DEFAULT_MODEL_NAME, "PROD_MODEL_NAME")
    try:
        return check_model_name(name)
    except ValueError:
        env.problem(f"MODEL_NAME={name!r} is not a valid model name")
        return DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class RegistrySettings:
    """The registry CLI's settings: the store and the model it manages."""

    storage: StorageSettings
    model_name: str = DEFAULT_MODEL_NAME

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RegistrySettings:
        """Read `MODEL_NAME` and the storage settings; report all problems at once."""
        env = EnvReader(environ, "model registry")
        storage = StorageSettings.read(env)
        model_name = read_model_name(env)
        env.check()
        return cls(storage=storage, model_name=model_name)
