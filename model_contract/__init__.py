"""The model contract (lean: storage only, never TensorFlow).

What every part that touches a published model agrees on: the signature and tensor names and
the asset paths of an exported SavedModel (`artifact`), the model identity baked into it
(`identity`), the one codec for `registry.json` and `manifest.json` (`documents`), the registry
operations on a store (`registry`: publish, promote, roll back, canary, list, show, verified
download) and their command line (`python -m model_contract`).
"""

from model_contract.documents import (
    LABELS,
    Label,
    Manifest,
    ManifestFile,
    RegistryDocument,
    VersionEntry,
)
from model_contract.errors import (
    IncompleteVersion,
    InvalidDocument,
    InvalidPromotion,
    NothingToRollBack,
    PublishError,
    RegistryConflict,
    RegistryError,
    StableChanged,
    VersionCorrupt,
    VersionNotFound,
)
from model_contract.identity import IDENTITY_ASSET_PATH, ModelIdentity
from model_contract.registry import (
    UNCHECKED,
    ModelRegistry,
    StoredExport,
    VersionDetails,
    VersionSummary,
)
from model_contract.settings import DEFAULT_MODEL_NAME, RegistrySettings, read_model_name

__all__ = [
    "DEFAULT_MODEL_NAME",
    "IDENTITY_ASSET_PATH",
    "LABELS",
    "UNCHECKED",
    "IncompleteVersion",
    "InvalidDocument",
    "InvalidPromotion",
    "Label",
    "Manifest",
    "ManifestFile",
    "ModelIdentity",
    "ModelRegistry",
    "NothingToRollBack",
    "PublishError",
    "RegistryConflict",
    "RegistryDocument",
    "RegistryError",
    "RegistrySettings",
    "StableChanged",
    "StoredExport",
    "VersionCorrupt",
    "VersionDetails",
    "VersionEntry",
    "VersionNotFound",
    "VersionSummary",
    "read_model_name",
]
