"""The model registry: immutable published versions and the object that names stable and canary.

A version is published as `input/model/<name>/<version>/` in TF Serving's layout, every file
written create-only, with `manifest.json` (sizes and sha256) written last as the completeness
marker; from a local folder (uploaded) or from an export already in the store (a learning run's
candidate, copied server-side). `registry.json` beside the versions holds the `stable` and
`canary` labels, the rollback stack and each version's lineage; every change to it is a
conditional read-modify-write retried on conflict, so concurrent promotions never lose each
other's update. No TensorFlow import.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from model_export.identity import IDENTITY_ASSET_PATH, ModelIdentity
from storage import (
    ObjectNotFound,
    PreconditionFailed,
    Store,
    UpdateConflict,
    keys,
    update_object,
)

__all__ = [
    "LABELS",
    "MANIFEST_FILE_NAME",
    "REGISTRY_SCHEMA",
    "UNCHECKED",
    "IncompleteVersion",
    "InvalidPromotion",
    "Label",
    "ModelRegistry",
    "NothingToRollBack",
    "PublishError",
    "Registry",
    "RegistryConflict",
    "RegistryError",
    "StableChanged",
    "StoredExport",
    "VersionCorrupt",
    "VersionDetails",
    "VersionEntry",
    "VersionNotFound",
    "VersionSummary",
]

REGISTRY_SCHEMA = 1
MANIFEST_FILE_NAME = "manifest.json"
Label = Literal["stable", "canary"]
LABELS: tuple[Label, ...] = ("stable", "canary")

# Version statuses kept in each entry, so `show` tells a reader what happened to a version.
STATUS_PUBLISHED = "published"  # complete, never served, or no longer canary
STATUS_SERVING = "serving"  # the stable version
STATUS_CANARY = "canary"
STATUS_RETIRED = "retired"  # replaced as stable; on the rollback stack
STATUS_ROLLED_BACK = "rolled_back"  # was stable until a rollback removed it


class _Unchecked(enum.Enum):
    """The type of UNCHECKED: "no expectation", distinct from None ("no stable version")."""

    UNCHECKED = "unchecked"


UNCHECKED = _Unchecked.UNCHECKED


# -- errors -----------------------------------------------------------------------------------


class RegistryError(Exception):
    """Base of every registry failure, with a machine `code` for CLIs and callers."""

    code = "registry_error"


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


# -- the registry object as data ----------------------------------------------------------------


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


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
    def from_json(cls, document: Mapping[str, Any]) -> VersionEntry:
        return cls(
            version=int(document["version"]),
            run_id=str(document.get("run_id", "")),
            parent_version=_optional_int(document.get("parent_version")),
            published_at=str(document.get("published_at", "")),
            promoted_at=document.get("promoted_at"),
            metrics=dict(document.get("metrics") or {}),
            dataset_fingerprint=str(document.get("dataset_fingerprint", "")),
            preset=str(document.get("preset", "")),
            status=str(document.get("status", STATUS_PUBLISHED)),
            extra=dict(document.get("extra") or {}),
        )


@dataclass(frozen=True)
class Registry:
    """A read-only view of `registry.json`; the operations return changed copies."""

    name: str
    stable: int | None = None
    canary: int | None = None
    previous_stable: tuple[int, ...] = ()
    versions: Mapping[int, VersionEntry] = field(default_factory=dict)
    updated_at: str | None = None
    schema: int = REGISTRY_SCHEMA

    def labels_of(self, version: int) -> tuple[Label, ...]:
        labels: list[Label] = []
        if self.stable == version:
            labels.append("stable")
        if self.canary == version:
            labels.append("canary")
        return tuple(labels)

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

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Registry:
        schema = int(document.get("schema", REGISTRY_SCHEMA))
        if schema > REGISTRY_SCHEMA:
            raise RegistryError(f"registry schema {schema} is newer than this code understands")
        versions = {
            int(number): VersionEntry.from_json(entry)
            for number, entry in (document.get("versions") or {}).items()
        }
        return cls(
            name=str(document["name"]),
            stable=_optional_int(document.get("stable")),
            canary=_optional_int(document.get("canary")),
            previous_stable=tuple(int(v) for v in document.get("previous_stable") or ()),
            versions=versions,
            updated_at=document.get("updated_at"),
            schema=schema,
        )

    # -- pure state changes (the ModelRegistry applies them inside its retry loop) --------------

    def _with_statuses(
        self, statuses: Mapping[int, str], promoted: int | None, now: str
    ) -> Registry:
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

    def with_version(self, entry: VersionEntry) -> Registry:
        if entry.version in self.versions:
            raise PublishError(f"{self.name} version {entry.version} is already registered")
        return replace(self, versions={**self.versions, entry.version: entry})

    def promoted(self, version: int, label: Label, now: str) -> Registry:
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

    def rolled_back(self, now: str) -> Registry:
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

    def canary_cleared(self) -> Registry:
        if self.canary is None:
            return self
        statuses = {self.canary: STATUS_PUBLISHED} if self.canary in self.versions else {}
        return replace(self, canary=None)._with_statuses(statuses, None, "")


@dataclass(frozen=True)
class VersionSummary:
    """A line of `list_versions`: what exists in storage and what the registry says of it."""

    version: int
    complete: bool
    labels: tuple[Label, ...]
    entry: VersionEntry | None


@dataclass(frozen=True)
class VersionDetails:
    """Everything known about one version: its entry, labels and manifest."""

    version: int
    complete: bool
    labels: tuple[Label, ...]
    entry: VersionEntry | None
    manifest: Mapping[str, Any] | None


# -- the registry on a store ----------------------------------------------------------------------


def _registry_bytes(registry: Registry) -> bytes:
    return json.dumps(registry.to_json(), indent=2, sort_keys=True, ensure_ascii=False).encode(
        "utf-8"
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safe_relative_path(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or not relative.parts or ".." in relative.parts:
        raise VersionCorrupt(f"manifest names an unsafe path: {path!r}")
    return relative


def _manifest_entry(path: str, size: int, digest: str) -> dict[str, Any]:
    return {"path": path, "size": size, "sha256": digest}


@dataclass(frozen=True)
class StoredExport:
    """An exported SavedModel already in the registry's store, under `prefix` (a learning
    run's `candidate/`): `publish` copies it server-side instead of uploading it again."""

    prefix: str


def _check_export_files(files: list[str], where: str) -> list[str]:
    """The files to publish, sorted, once the export is known to be one (manifest excluded)."""
    if "saved_model.pb" not in files:
        raise PublishError(f"{where} is not a SavedModel folder (no saved_model.pb)")
    if IDENTITY_ASSET_PATH not in files:
        raise PublishError(
            f"{where} has no {IDENTITY_ASSET_PATH}: export it with model_export first"
        )
    # A manifest in the source would be someone else's; ours is written last.
    return sorted(path for path in files if path != MANIFEST_FILE_NAME)


class _ExportSource(Protocol):
    def list(self) -> list[str]:
        """The relative paths to publish."""

    def write(self, store: Store, relative: str, key: str) -> tuple[int, str]:
        """Create `key` (create-only) from the source's `relative`; its (size, sha256)."""


class _FolderSource:
    """An export in a local folder: each file is read and uploaded."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def list(self) -> list[str]:
        files = [
            path.relative_to(self._folder).as_posix()
            for path in self._folder.rglob("*")
            if path.is_file() and not path.is_symlink()
        ]
        return _check_export_files(files, str(self._folder))

    def write(self, store: Store, relative: str, key: str) -> tuple[int, str]:
        data = (self._folder / relative).read_bytes()
        store.put(key, data, if_none_match=True)
        return len(data), _sha256(data)


class _StoredSource:
    """An export in the registry's own store: each file is read once (for its sha256) and
    copied server-side (S3 CopyObject), never uploaded again."""

    def __init__(self, store: Store, export: StoredExport) -> None:
        prefix = export.prefix if export.prefix.endswith("/") else export.prefix + "/"
        self._store = store
        self._prefix = prefix

    def list(self) -> list[str]:
        files = [info.key[len(self._prefix) :] for info in self._store.list(self._prefix)]
        return _check_export_files(files, self._store.describe().rstrip("/") + "/" + self._prefix)

    def write(self, store: Store, relative: str, key: str) -> tuple[int, str]:
        data = self._store.get_bytes(self._prefix + relative)
        copied = store.copy(self._prefix + relative, key, if_none_match=True)
        if copied.size != len(data):
            raise PublishError(f"{self._prefix}{relative} changed while it was being published")
        return len(data), _sha256(data)


class ModelRegistry:
    """Publish, promote, roll back and read the versions of one model on a store."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        max_attempts: int = 8,
        backoff_seconds: float = 0.05,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.name = keys.check_model_name(name)
        self._max_attempts = max(1, max_attempts)
        self._backoff_seconds = backoff_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep

    @property
    def registry_key(self) -> str:
        return keys.model_registry(self.name)

    def _now(self) -> str:
        return _timestamp(self._clock())

    # -- reading -----------------------------------------------------------------------------

    def _parse(self, data: bytes) -> Registry:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise RegistryError(f"{self.registry_key} is not valid JSON") from exc
        return Registry.from_json(document)

    def load(self) -> Registry:
        """The registry as stored (an empty one when nothing was ever published)."""
        try:
            return self._parse(self.store.get_bytes(self.registry_key))
        except ObjectNotFound:
            return Registry(name=self.name)

    def _stored_versions(self) -> dict[int, list[str]]:
        """Version number -> object keys under that version folder."""
        found: dict[int, list[str]] = {}
        for info in self.store.list(keys.model_prefix(self.name)):
            version = keys.model_version_from_key(self.name, info.key)
            if version is not None:
                found.setdefault(version, []).append(info.key)
        return found

    def read_manifest(self, version: int) -> dict[str, Any]:
        """The version's manifest; IncompleteVersion when it has none (or a broken one)."""
        key = keys.model_version_manifest(self.name, version)
        try:
            manifest = self.store.get_json(key)
        except ObjectNotFound:
            raise IncompleteVersion(
                f"{self.name} version {version} has no manifest: it is incomplete"
            ) from None
        except ValueError:
            raise IncompleteVersion(
                f"{self.name} version {version} has an unreadable manifest"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("version") != version:
            raise IncompleteVersion(f"{self.name} version {version} has an invalid manifest")
        return manifest

    def is_complete(self, version: int) -> bool:
        try:
            self.read_manifest(version)
        except IncompleteVersion:
            return False
        return True

    def list_versions(self) -> list[VersionSummary]:
        """Every version found in storage or in the registry, ascending."""
        registry = self.load()
        stored = self._stored_versions()
        summaries = []
        for version in sorted(set(stored) | set(registry.versions)):
            manifest_key = keys.model_version_manifest(self.name, version)
            complete = manifest_key in stored.get(version, ()) and self.is_complete(version)
            summaries.append(
                VersionSummary(
                    version=version,
                    complete=complete,
                    labels=registry.labels_of(version),
                    entry=registry.versions.get(version),
                )
            )
        return summaries

    def show(self, version: int) -> VersionDetails:
        registry = self.load()
        try:
            manifest: dict[str, Any] | None = self.read_manifest(version)
        except IncompleteVersion:
            manifest = None
        if manifest is None and version not in registry.versions:
            prefix = keys.model_version_prefix(self.name, version)
            if next(iter(self.store.list(prefix)), None) is None:
                raise VersionNotFound(f"{self.name} has no version {version}")
        return VersionDetails(
            version=version,
            complete=manifest is not None,
            labels=registry.labels_of(version),
            entry=registry.versions.get(version),
            manifest=manifest,
        )

    # -- changing registry.json ----------------------------------------------------------------

    def _update(self, change: Callable[[Registry], Registry]) -> Registry:
        """Read, change, write conditionally; on a lost race re-read and re-apply the change."""

        def stamped(current: Registry) -> Registry:
            updated = change(current)
            return current if updated == current else replace(updated, updated_at=self._now())

        try:
            return update_object(
                self.store,
                self.registry_key,
                stamped,
                parse=self._parse,
                serialize=_registry_bytes,
                initial=lambda: Registry(name=self.name),
                content_type="application/json",
                attempts=self._max_attempts,
                backoff_seconds=self._backoff_seconds,
                max_backoff_seconds=2.0,
                sleep=self._sleep,
            )
        except UpdateConflict as exc:
            raise RegistryConflict(
                f"{self.registry_key} kept changing; gave up after {self._max_attempts} attempts"
            ) from exc

    def promote(
        self,
        version: int,
        label: Label = "stable",
        *,
        expected_stable: int | _Unchecked | None = UNCHECKED,
    ) -> Registry:
        """Point `stable` or `canary` at a complete, registered version.

        `expected_stable` (a version, or None for "no stable yet") makes the promotion
        conditional: it is checked against the registry read in the same conditional write,
        so if anyone changed `stable` since the caller decided, StableChanged is raised and
        nothing is written.
        """
        if label not in LABELS:
            raise InvalidPromotion(f"unknown label {label!r}; use one of {', '.join(LABELS)}")
        if not self.is_complete(version):
            if version not in self.load().versions and not self._stored_versions().get(version):
                raise VersionNotFound(f"{self.name} has no version {version}")
            raise IncompleteVersion(f"{self.name} version {version} is incomplete; not promoted")
        now = self._now()

        def change(registry: Registry) -> Registry:
            if not isinstance(expected_stable, _Unchecked) and registry.stable != expected_stable:
                raise StableChanged(
                    f"{self.name}: stable is version {registry.stable}, not the expected "
                    f"{expected_stable}; version {version} was not promoted",
                    expected=expected_stable,
                    current=registry.stable,
                )
            return registry.promoted(version, label, now)

        return self._update(change)

    def rollback(self) -> Registry:
        """Stable back to the previous stable; NothingToRollBack when there is none."""
        now = self._now()
        return self._update(lambda registry: registry.rolled_back(now))

    def clear_canary(self) -> Registry:
        return self._update(lambda registry: registry.canary_cleared())

    # -- publishing ------------------------------------------------------------------------------

    def next_version(self) -> int:
        """1 + the highest version in storage or in the registry."""
        known = set(self._stored_versions()) | set(self.load().versions)
        return max(known, default=0) + 1

    def publish(
        self,
        source: str | Path | StoredExport,
        *,
        run_id: str,
        metrics: Mapping[str, float],
        dataset_fingerprint: str,
        parent_version: int | None,
        preset: str,
        extra: Mapping[str, Any] | None = None,
        max_version_attempts: int = 5,
    ) -> int:
        """Publish an exported SavedModel as the next version and register it; returns it.

        `source` is a local folder (uploaded), or a `StoredExport` already in this registry's
        store (a learning run's candidate), copied server-side so it is not uploaded again.
        The published copy's identity asset names this model, version and run: it is written
        first, create-only, and so claims the version number; every other file follows
        create-only, then the manifest. A number someone else is writing is never
        overwritten: the publish moves on to the next number instead.
        """
        keys.check_run_id(run_id)
        files: _ExportSource = (
            _StoredSource(self.store, source)
            if isinstance(source, StoredExport)
            else _FolderSource(Path(source))
        )
        relatives = files.list()
        for _ in range(max(1, max_version_attempts)):
            version = self.next_version()
            identity = ModelIdentity(name=self.name, version=version, run_id=run_id)
            if self._write_version(files, relatives, version, identity):
                break
        else:
            raise PublishError(
                f"{self.name}: every version number tried was taken by concurrent publishers"
            )
        entry = VersionEntry(
            version=version,
            run_id=run_id,
            parent_version=parent_version,
            published_at=self._now(),
            metrics=dict(metrics),
            dataset_fingerprint=dataset_fingerprint,
            preset=preset,
            extra=dict(extra or {}),
        )
        self._update(lambda registry: registry.with_version(entry))
        return version

    def _write_version(
        self, source: _ExportSource, files: list[str], version: int, identity: ModelIdentity
    ) -> bool:
        """The identity asset, every other file, then the manifest, all create-only.

        False (after removing what it wrote) if another publisher holds the number.
        """
        prefix = keys.model_version_prefix(self.name, version)
        written: list[str] = []
        entries: dict[str, dict[str, Any]] = {}
        try:
            identity_data = identity.to_text().encode("utf-8")
            self.store.put(prefix + IDENTITY_ASSET_PATH, identity_data, if_none_match=True)
            written.append(prefix + IDENTITY_ASSET_PATH)
            entries[IDENTITY_ASSET_PATH] = _manifest_entry(
                IDENTITY_ASSET_PATH, len(identity_data), _sha256(identity_data)
            )
            for relative in files:
                if relative == IDENTITY_ASSET_PATH:
                    continue
                size, digest = source.write(self.store, relative, prefix + relative)
                written.append(prefix + relative)
                entries[relative] = _manifest_entry(relative, size, digest)
            manifest = {
                "name": self.name,
                "version": version,
                "files": [entries[relative] for relative in sorted(entries)],
                "created_at": self._now(),
            }
            self.store.put_json(
                keys.model_version_manifest(self.name, version), manifest, if_none_match=True
            )
        except PreconditionFailed:
            # Another publisher holds this number; remove only what we created, then move on.
            for key in written:
                with contextlib.suppress(Exception):
                    self.store.delete(key)
            return False
        return True

    # -- downloading -----------------------------------------------------------------------------

    def download_version(self, version: int, destination: str | Path) -> Path:
        """Copy a complete version into `destination` (which must not exist), verified.

        Files land in a temporary sibling folder and are checked against the manifest's sizes
        and sha256; only then is the folder renamed into place, so a reader of `destination`
        never sees a partial version.
        """
        manifest = self.read_manifest(version)
        target = Path(destination)
        if target.exists():
            raise RegistryError(f"{target} already exists; not overwritten")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
        prefix = keys.model_version_prefix(self.name, version)
        try:
            for item in manifest.get("files", []):
                relative = _safe_relative_path(str(item["path"]))
                local_path = partial.joinpath(*relative.parts)
                self.store.download_file(prefix + relative.as_posix(), local_path)
                data = local_path.read_bytes()
                if len(data) != int(item["size"]) or _sha256(data) != item["sha256"]:
                    raise VersionCorrupt(
                        f"{self.name} version {version}: {relative} does not match its manifest"
                    )
            (partial / MANIFEST_FILE_NAME).write_text(
                json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8"
            )
            os.replace(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return target
