"""The published side of a model, as the sync reads it: the registry and each version's manifest.

Both documents are defined in docs/CONTRACTS.md ("Published versions and the registry"). They are
read here without importing model_export, so the sync container needs nothing but storage.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Manifest",
    "ManifestFile",
    "PublishedDocumentError",
    "RegistryView",
    "parse_manifest",
    "parse_registry",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PublishedDocumentError(ValueError):
    """registry.json or manifest.json does not follow the contract."""


def _version_number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PublishedDocumentError(f"{what} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class RegistryView:
    """What the sync needs from registry.json: which versions to serve under which label."""

    name: str
    stable: int | None
    canary: int | None

    @property
    def labels(self) -> dict[str, int]:
        """The labels the model server should carry: `stable`, and `canary` when set."""
        labels: dict[str, int] = {}
        if self.stable is not None:
            labels["stable"] = self.stable
        if self.canary is not None:
            labels["canary"] = self.canary
        return labels

    @property
    def served_versions(self) -> frozenset[int]:
        return frozenset(self.labels.values())


def parse_registry(document: Any, expected_name: str) -> RegistryView:
    """Validate the parts of registry.json the sync relies on."""
    if not isinstance(document, Mapping):
        raise PublishedDocumentError("registry.json is not a JSON object")
    name = document.get("name", expected_name)
    if name != expected_name:
        raise PublishedDocumentError(
            f"registry.json names model {name!r}, expected {expected_name!r}"
        )
    stable = document.get("stable")
    canary = document.get("canary")
    return RegistryView(
        name=expected_name,
        stable=None if stable is None else _version_number(stable, "stable"),
        canary=None if canary is None else _version_number(canary, "canary"),
    )


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A published version's completeness marker: every file with its size and digest."""

    name: str
    version: int
    files: tuple[ManifestFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)


def _check_relative_path(path: Any) -> str:
    """A manifest path must stay inside the version folder (it becomes a local file name)."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise PublishedDocumentError(f"manifest path {path!r} is not a relative path")
    if "\x00" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise PublishedDocumentError(f"manifest path {path!r} is not a clean relative path")
    if posixpath.normpath(path) != path or path == "manifest.json":
        raise PublishedDocumentError(f"manifest path {path!r} is not allowed")
    return path


def parse_manifest(document: Any, name: str, version: int) -> Manifest:
    """Validate manifest.json for `name`/`version`."""
    if not isinstance(document, Mapping):
        raise PublishedDocumentError("manifest.json is not a JSON object")
    if document.get("name", name) != name:
        raise PublishedDocumentError(f"manifest names model {document.get('name')!r}")
    if _version_number(document.get("version", version), "manifest version") != version:
        raise PublishedDocumentError(f"manifest is for version {document.get('version')!r}")
    entries = document.get("files")
    if not isinstance(entries, list) or not entries:
        raise PublishedDocumentError("manifest lists no files")
    files: list[ManifestFile] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise PublishedDocumentError("manifest file entry is not an object")
        path = _check_relative_path(entry.get("path"))
        size = entry.get("size")
        digest = entry.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PublishedDocumentError(f"manifest size of {path!r} is not a byte count")
        if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            raise PublishedDocumentError(f"manifest sha256 of {path!r} is not a hex digest")
        if path in seen:
            raise PublishedDocumentError(f"manifest lists {path!r} twice")
        seen.add(path)
        files.append(ManifestFile(path=path, size=size, sha256=digest.lower()))
    if not any(entry.path in ("saved_model.pb", "saved_model.pbtxt") for entry in files):
        raise PublishedDocumentError("manifest lists no saved_model.pb")
    return Manifest(name=name, version=version, files=tuple(files))
