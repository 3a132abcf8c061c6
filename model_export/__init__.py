"""Model export and the model registry.

The package root stays free of TensorFlow so the registry runs in lean places (the model sync,
CLIs); the export, Grad-CAM and warmup modules (`model_export.export`, `model_export.gradcam`,
`model_export.warmup`) import TensorFlow and are imported explicitly.
"""

from model_export.identity import IDENTITY_ASSET_PATH, ModelIdentity
from model_export.registry import (
    IncompleteVersion,
    InvalidPromotion,
    ModelRegistry,
    NothingToRollBack,
    PublishError,
    Registry,
    RegistryConflict,
    RegistryError,
    VersionCorrupt,
    VersionDetails,
    VersionEntry,
    VersionNotFound,
    VersionSummary,
)

__all__ = [
    "IDENTITY_ASSET_PATH",
    "IncompleteVersion",
    "InvalidPromotion",
    "ModelIdentity",
    "ModelRegistry",
    "NothingToRollBack",
    "PublishError",
    "Registry",
    "RegistryConflict",
    "RegistryError",
    "VersionCorrupt",
    "VersionDetails",
    "VersionEntry",
    "VersionNotFound",
    "VersionSummary",
]
