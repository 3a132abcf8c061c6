"""The registry's error vocabulary: each error has a machine `code` for CLIs and callers."""

from __future__ import annotations

__all__ = [
    "IncompleteVersion",
    "InvalidDocument",
    "InvalidPromotion",
    "NothingToRollBack",
    "PublishError",
    "RegistryConflict",
    "RegistryError",
    "StableChanged",
    "VersionCorrupt",
    "VersionNotFound",
]


class RegistryError(Exception):
    """Base of every registry failure, with a machine `code` for CLIs and callers."""

    code = "registry_error"


class InvalidDocument(RegistryError, ValueError):
    """registry.json or manifest.json does not follow the contract (docs/CONTRACTS.md)."""

    code = "invalid_document"


class VersionNotFound(RegistryError):
    code = "version_not_found"


class IncompleteVersion(RegistryError):
    """The version folder has no manifest: a publish failed or is still running."""

    code = "incomplete_version"


class VersionCorrupt(RegistryError):
    """A downloaded file does not match the size or sha256 its manifest records."""

    code = "version_corrupt"


class NothingToRollBack(RegistryError):
    code = "nothing_to_roll_back"


class InvalidPromotion(RegistryError):
    code = "invalid_promotion"


class PublishError(RegistryError):
    code = "publish_error"


class StableChanged(RegistryError):
    """A promotion's precondition failed: `stable` is no longer the version the caller expected.

    Raised instead of promoting, so a decision made against one stable version (a training
    run's comparison) never overrides a promotion or rollback someone made in the meantime.
    """

    code = "stable_changed"

    def __init__(self, message: str, *, expected: int | None, current: int | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.current = current


class RegistryConflict(RegistryError):
    """Every attempt of a conditional update lost to a concurrent writer."""

    code = "registry_conflict"
