"""The model identity asset: which model (name, version, training run) a SavedModel is.

The exported graph reads `assets/model_identity.txt` through a lookup table when it loads, so
publishing can give an exported artefact its version by rewriting this small text file, without
TensorFlow. No TensorFlow import here: the registry stamps the file in lean places.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "IDENTITY_ASSET_PATH",
    "IDENTITY_FILE_NAME",
    "IDENTITY_KEYS",
    "ModelIdentity",
]

IDENTITY_FILE_NAME = "model_identity.txt"
# Relative to the SavedModel folder (TF Serving's version folder).
IDENTITY_ASSET_PATH = f"assets/{IDENTITY_FILE_NAME}"
# The keys the graph looks up, one `key<TAB>value` line each.
IDENTITY_KEYS: tuple[str, ...] = ("name", "version", "run_id")

_FORBIDDEN = ("\t", "\n", "\r")


def _check_field(value: str, what: str) -> str:
    if not isinstance(value, str) or any(character in value for character in _FORBIDDEN):
        raise ValueError(f"invalid model identity {what}: {value!r}")
    return value


@dataclass(frozen=True)
class ModelIdentity:
    """Name, version (0 until published) and training run id of a served model."""

    name: str
    version: int = 0
    run_id: str = ""

    def __post_init__(self) -> None:
        _check_field(self.name, "name")
        if not self.name:
            raise ValueError("model identity needs a name")
        _check_field(self.run_id, "run id")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise ValueError(f"invalid model identity version: {self.version!r}")

    def to_json(self) -> dict[str, object]:
        """The identity as answers and history records carry it."""
        return {"name": self.name, "version": self.version, "run_id": self.run_id}

    def to_text(self) -> str:
        """The asset file's content: `key<TAB>value` lines (an empty run id stays empty)."""
        return f"name\t{self.name}\nversion\t{self.version}\nrun_id\t{self.run_id}\n"

    @classmethod
    def from_text(cls, text: str) -> ModelIdentity:
        """Parse the asset file; ValueError when a key is missing or the version is no integer."""
        values: dict[str, str] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            key, separator, value = line.partition("\t")
            if not separator:
                raise ValueError(f"model identity line without a tab: {line!r}")
            values[key] = value
        missing = [key for key in IDENTITY_KEYS if key not in values]
        if missing:
            raise ValueError(f"model identity lacks {', '.join(missing)}")
        try:
            version = int(values["version"])
        except ValueError:
            raise ValueError(
                f"model identity version is no integer: {values['version']!r}"
            ) from None
        return cls(name=values["name"], version=version, run_id=values["run_id"])
