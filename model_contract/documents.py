"""The one codec for the registry's two documents: `registry.json` and each version's
`manifest.json` (docs/CONTRACTS.md, "Published versions and the registry").

Both are read and written only through these types, by the registry operations, the model sync,
the training job and the CLIs alike: `from_json` validates a parsed document as strictly as any
reader needs (a version number is a positive integer, never a bool or a string; a manifest path
stays inside its version folder), `decode` does the same from bytes, `encode` writes the
canonical bytes. A document that breaks the contract raises `InvalidDocument`. No TensorFlow.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from model_contract.errors import (
    InvalidDocument,
    InvalidPromotion,
    NothingToRollBack,
    PublishError,
    VersionNotFound,
)

__all__ = [
    "LABELS",
    "MANIFEST_FILE_NAME",
    "REGISTRY_FILE_NAME",
    "REGISTRY_SCHEMA",
    "STATUSES",
    "Label",
    "Manifest",
    "ManifestFile",
    "RegistryDocument",
    "VersionEntry",
]

REGISTRY_SCHEMA = 1
REGISTRY_FILE_NAME = "registry.json"
MANIFEST_FILE_NAME = "manifest.json"
Label = Literal["stable", "canary"]
LABELS: tuple[Label, ...] = ("stable", "canary")

# Version statuses kept in each entry, so `show` tells a reader what happened to a version.
STATUS_PUBLISHED = "published"  # complete, never served, or no longer canary
STATUS_SERVING = "serving"  # the stable version
STATUS_CANARY = "canary"
STATUS_RETIRED = "retired"  # replaced as stable; on the rollback stack
STATUS_ROLLED_BACK = "rolled_back"  # was stable until a rollback removed it
STATUSES = (STATUS_PUBLISHED, STATUS_SERVING, STATUS_CANARY, STATUS_RETIRED, STATUS_ROLLED_BACK)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# -- field readers: each raises InvalidDocument naming the document and the field ----------------


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidDocument(f"{what} is not a JSON object")
    return value


def _version(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidDocument(f"{what} must be a positive integer, got {value!r}")
    return value


def _optional_version(value: Any, what: str) -> int | None:
    return None if value is None else _version(value, what)


def _text(value: Any, what: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidDocument(f"{what} must be a string, got {value!r}")
    return value


def _optional_text(value: Any, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _optional_object(value: Any, what: str) -> Mapping[str, Any]:
    return _object({} if value is None else value, what)


def _metrics(value: Any, what: str) -> dict[str, float]:
    metrics = _optional_object(value, what)
    result: dict[str, float] = {}
    for name, number in metrics.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InvalidDocument(f"{what}[{name!r}] is not a number")
        result[str(name)] = float(number)
    return result


def _decode_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise InvalidDocument(f"{what} is not valid JSON") from None


def _encode_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")


# -- registry.json ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionEntry:
    """One published version's lineage and metrics, as kept in `registry.json`."""

    version: int
    run_id: str
    parent_version: int | None
    published_at: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    dataset_fingerprint: str = ""
    preset: str = ""
    status: str = STATUS_PUBLISHED
    promoted_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "version": self.version,
            "run_id": self.run_id,
            "parent_version": self.parent_version,
            "published_at": self.published_at,
            "promoted_at": self.promoted_at,
            "metrics": dict(self.metrics),
            "dataset_fingerprint": self.dataset_fingerprint,
            "preset": self.preset,
            "status": self.status,
        }
        if self.extra:
            document["extra"] = dict(self.extra)
        return document

    @classmethod
    def from_json(cls, document: Any, what: str = "version entry") -> VersionEntry:
        entry = _object(document, what)
        status = _text(entry.get("status"), f"{what} status", STATUS_PUBLISHED)
        if status not in STATUSES:
            raise InvalidDocument(f"{what} status {status!r} is not one of {', '.join(STATUSES)}")
        return cls(
            version=_version(entry.get("version"), f"{what} version"),
            run_id=_text(entry.get("run_id"), f"{what} run_id"),
            parent_version=_optional_version(entry.get("parent_version"), f"{what} parent_version"),
            published_at=_text(entry.get("published_at"), f"{what} published_at"),
            promoted_at=_optional_text(entry.get("promoted_at"), f"{what} promoted_at"),
            metrics=_metrics(entry.get("metrics"), f"{what} metrics"),
            dataset_fingerprint=_text(
                entry.get("dataset_fingerprint"), f"{what} dataset_fingerprint"
            ),
            preset=_text(entry.get("preset"), f"{what} preset"),
            status=status,
            extra=dict(_optional_object(entry.get("extra"), f"{what} extra")),
        )


@dataclass(frozen=True)
class RegistryDocument:
    """`registry.json`: which version is `stable` (and `canary`), the rollback stack and every
    published version's entry. Immutable; the state changes return changed copies."""

    name: str
    stable: int | None = None
    canary: int | None = None
    previous_stable: tuple[int, ...] = ()
    versions: Mapping[int, VersionEntry] = field(default_factory=dict)
    updated_at: str | None = None
    schema: int = REGISTRY_SCHEMA

    # -- reading ---------------------------------------------------------------------------------

    @property
    def labels(self) -> dict[Label, int]:
        """The labels a model server should carry: `stable`, and `canary` when set."""
        labels: dict[Label, int] = {}
        if self.stable is not None:
            labels["stable"] = self.stable
        if self.canary is not None:
            labels["canary"] = self.canary
        return labels

    @property
    def served_versions(self) -> frozenset[int]:
        return frozenset(self.labels.values())

    def labels_of(self, version: int) -> tuple[Label, ...]:
        return tuple(label for label, labelled in self.labels.items() if labelled == version)

    # -- the codec -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "stable": self.stable,
            "canary": self.canary,
            "previous_stable": list(self.previous_stable),
            "versions": {
                str(version): self.versions[version].to_json() for version in sorted(self.versions)
            },
            "updated_at": self.updated_at,
        }

    def encode(self) -> bytes:
        return _encode_json(self.to_json())

    @classmethod
    def from_json(cls, document: Any, expected_name: str | None = None) -> RegistryDocument:
        """Validate a parsed registry.json; `expected_name` must match its `name` when given."""
        registry = _object(document, "registry.json")
        schema = registry.get("schema", REGISTRY_SCHEMA)
        if isinstance(schema, bool) or not isinstance(schema, int):
            raise InvalidDocument(f"registry.json schema is not an integer: {schema!r}")
        if schema > REGISTRY_SCHEMA:
            raise InvalidDocument(
                f"registry.json schema {schema} is newer than this code understands"
            )
        name = registry.get("name", expected_name)
        if not isinstance(name, str) or not name:
            raise InvalidDocument("registry.json names no model")
        if expected_name is not None and name != expected_name:
            raise InvalidDocument(f"registry.json names model {name!r}, expected {expected_name!r}")
        versions: dict[int, VersionEntry] = {}
        for number, entry in _optional_object(registry.get("versions"), "versions").items():
            if not (isinstance(number, str) and number.isascii() and number.isdigit()):
                raise InvalidDocument(f"registry version key {number!r} is not a number")
            parsed = VersionEntry.from_json(entry, f"registry version {number}")
            if parsed.version != int(number):
                raise InvalidDocument(f"registry version {number} holds version {parsed.version}")
            versions[parsed.version] = parsed
        previous = registry.get("previous_stable")
        previous = [] if previous is None else previous
        if not isinstance(previous, list):
            raise InvalidDocument("registry previous_stable is not a list")
        return cls(
            name=name,
            stable=_optional_version(registry.get("stable"), "registry stable"),
            canary=_optional_version(registry.get("canary"), "registry canary"),
            previous_stable=tuple(_version(v, "registry previous_stable") for v in previous),
            versions=versions,
            updated_at=_optional_text(registry.get("updated_at"), "registry updated_at"),
            schema=schema,
        )

    @classmethod
    def decode(cls, data: bytes, expected_name: str | None = None) -> RegistryDocument:
        return cls.from_json(_decode_json(data, "registry.json"), expected_name)

    # -- pure state changes (ModelRegistry applies them inside its conditional write) ------------

    def _with_statuses(
        self, statuses: Mapping[int, str], promoted: int | None, now: str
    ) -> RegistryDocument:
        versions = dict(self.versions)
        for version, status in statuses.items():
            changes: dict[str, Any] = {"status": status}
            if version == promoted:
                changes["promoted_at"] = now
            versions[version] = replace(versions[version], **changes)
        return replace(self, versions=versions)

    def _require(self, version: int) -> VersionEntry:
        try:
            return self.versions[version]
        except KeyError:
            raise VersionNotFound(f"{self.name} has no published version {version}") from None

    def with_version(self, entry: VersionEntry) -> RegistryDocument:
        if entry.version in self.versions:
            raise PublishError(f"{self.name} version {entry.version} is already registered")
        return replace(self, versions={**self.versions, entry.version: entry})

    def promoted(self, version: int, label: Label, now: str) -> RegistryDocument:
        """Point `label` at `version`. A new stable pushes the old one onto the rollback stack."""
        self._require(version)
        if label == "stable":
            if self.stable == version:
                return self
            statuses = {version: STATUS_SERVING}
            stack = self.previous_stable
            if self.stable is not None:
                stack = (*stack, self.stable)
                statuses[self.stable] = STATUS_RETIRED
            canary = None if self.canary == version else self.canary
            updated = replace(self, stable=version, canary=canary, previous_stable=stack)
            return updated._with_statuses(statuses, version, now)
        if label == "canary":
            if self.stable == version:
                raise InvalidPromotion(f"{self.name} version {version} is already stable")
            if self.canary == version:
                return self
            statuses = {version: STATUS_CANARY}
            if self.canary is not None:
                statuses[self.canary] = STATUS_PUBLISHED
            return replace(self, canary=version)._with_statuses(statuses, version, now)
        raise InvalidPromotion(f"unknown label {label!r}; use one of {', '.join(LABELS)}")

    def rolled_back(self, now: str) -> RegistryDocument:
        """Stable back to the version it replaced."""
        if not self.previous_stable:
            raise NothingToRollBack(f"{self.name} has no previous stable version to roll back to")
        *rest, restored = self.previous_stable
        statuses = {restored: STATUS_SERVING}
        if self.stable is not None:
            statuses[self.stable] = STATUS_ROLLED_BACK
        canary = None if self.canary == restored else self.canary
        updated = replace(self, stable=restored, canary=canary, previous_stable=tuple(rest))
        return updated._with_statuses(
            {v: s for v, s in statuses.items() if v in self.versions}, None, now
        )

    def canary_cleared(self) -> RegistryDocument:
        if self.canary is None:
            return self
        statuses = {self.canary: STATUS_PUBLISHED} if self.canary in self.versions else {}
        return replace(self, canary=None)._with_statuses(statuses, None, "")


# -- manifest.json ------------------------------------------------------------------------------


def check_manifest_path(path: Any) -> str:
    """A manifest path must stay inside the version folder (it becomes a local file name)."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise InvalidDocument(f"manifest path {path!r} is not a relative path")
    if "\x00" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidDocument(f"manifest path {path!r} is not a clean relative path")
    if posixpath.normpath(path) != path or path == MANIFEST_FILE_NAME:
        raise InvalidDocument(f"manifest path {path!r} is not allowed")
    return path


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    """A published version's completeness marker: every file with its size and digest.

    Written last by a publish, so a version folder without one is incomplete.
    """

    name: str
    version: int
    files: tuple[ManifestFile, ...]
    created_at: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "files": [entry.to_json() for entry in self.files],
        }
        if self.created_at is not None:
            document["created_at"] = self.created_at
        return document

    def encode(self) -> bytes:
        return _encode_json(self.to_json())

    @classmethod
    def from_json(cls, document: Any, name: str, version: int) -> Manifest:
        """Validate a parsed manifest.json of model `name`, version `version`."""
        manifest = _object(document, "manifest.json")
        if manifest.get("name", name) != name:
            raise InvalidDocument(f"manifest names model {manifest.get('name')!r}")
        if _version(manifest.get("version", version), "manifest version") != version:
            raise InvalidDocument(f"manifest is for version {manifest.get('version')!r}")
        entries = manifest.get("files")
        if not isinstance(entries, list) or not entries:
            raise InvalidDocument("manifest lists no files")
        files: list[ManifestFile] = []
        seen: set[str] = set()
        for entry in entries:
            item = _object(entry, "manifest file entry")
            path = check_manifest_path(item.get("path"))
            size = item.get("size")
            digest = item.get("sha256")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidDocument(f"manifest size of {path!r} is not a byte count")
            if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
                raise InvalidDocument(f"manifest sha256 of {path!r} is not a hex digest")
            if path in seen:
                raise InvalidDocument(f"manifest lists {path!r} twice")
            seen.add(path)
            files.append(ManifestFile(path=path, size=size, sha256=digest.lower()))
        if not any(entry.path in ("saved_model.pb", "saved_model.pbtxt") for entry in files):
            raise InvalidDocument("manifest lists no saved_model.pb")
        return cls(
            name=name,
            version=version,
            files=tuple(files),
            created_at=_optional_text(manifest.get("created_at"), "manifest created_at"),
        )

    @classmethod
    def decode(cls, data: bytes, name: str, version: int) -> Manifest:
        return cls.from_json(_decode_json(data, "manifest.json"), name, version)
