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
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from model_contract.documents import (
    LABELS,
    MANIFEST_FILE_NAME,
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
    PublishError,
    RegistryConflict,
    RegistryError,
    StableChanged,
    VersionCorrupt,
    VersionNotFound,
)
from model_contract.identity import IDENTITY_ASSET_PATH, ModelIdentity
from storage import (
    ObjectNotFound,
    PreconditionFailed,
    Store,
    UpdateConflict,
    keys,
    update_object,
)

__all__ = [
    "UNCHECKED",
    "ModelRegistry",
    "StoredExport",
    "VersionDetails",
    "VersionSummary",
]


class _Unchecked(enum.Enum):
    """The type of UNCHECKED: "no expectation", distinct from None ("no stable version")."""

    UNCHECKED = "unchecked"


UNCHECKED = _Unchecked.UNCHECKED


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
    manifest: Manifest | None


# -- the registry on a store ----------------------------------------------------------------------


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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

    def _parse(self, data: bytes) -> RegistryDocument:
        return RegistryDocument.decode(data, expected_name=self.name)

    def load(self) -> RegistryDocument:
        """The registry as stored (an empty one when nothing was ever published)."""
        try:
            return self._parse(self.store.get_bytes(self.registry_key))
        except ObjectNotFound:
            return RegistryDocument(name=self.name)

    def _stored_versions(self) -> dict[int, list[str]]:
        """Version number -> object keys under that version folder."""
        found: dict[int, list[str]] = {}
        for info in self.store.list(keys.model_prefix(self.name)):
            version = keys.model_version_from_key(self.name, info.key)
            if version is not None:
                found.setdefault(version, []).append(info.key)
        return found

    def read_manifest(self, version: int) -> Manifest:
        """The version's manifest; IncompleteVersion when it has none (or a broken one)."""
        key = keys.model_version_manifest(self.name, version)
        try:
            return Manifest.decode(self.store.get_bytes(key), self.name, version)
        except ObjectNotFound:
            raise IncompleteVersion(
                f"{self.name} version {version} has no manifest: it is incomplete"
            ) from None
        except InvalidDocument as exc:
            raise IncompleteVersion(
                f"{self.name} version {version} has an invalid manifest: {exc}"
            ) from None

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
            manifest: Manifest | None = self.read_manifest(version)
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

    def _update(self, change: Callable[[RegistryDocument], RegistryDocument]) -> RegistryDocument:
        """Read, change, write conditionally; on a lost race re-read and re-apply the change."""

        def stamped(current: RegistryDocument) -> RegistryDocument:
            updated = change(current)
            return current if updated == current else replace(updated, updated_at=self._now())

        try:
            return update_object(
                self.store,
                self.registry_key,
                stamped,
                parse=self._parse,
                serialize=RegistryDocument.encode,
                initial=lambda: RegistryDocument(name=self.name),
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
    ) -> RegistryDocument:
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

        def change(registry: RegistryDocument) -> RegistryDocument:
            if not isinstance(expected_stable, _Unchecked) and registry.stable != expected_stable:
                raise StableChanged(
                    f"{self.name}: stable is version {registry.stable}, not the expected "
                    f"{expected_stable}; version {version} was not promoted",
                    expected=expected_stable,
                    current=registry.stable,
                )
            return registry.promoted(version, label, now)

        return self._update(change)

    def rollback(self) -> RegistryDocument:
        """Stable back to the previous stable; NothingToRollBack when there is none."""
        now = self._now()
        return self._update(lambda registry: registry.rolled_back(now))

    def clear_canary(self) -> RegistryDocument:
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
        entries: dict[str, ManifestFile] = {}
        try:
            identity_data = identity.to_text().encode("utf-8")
            self.store.put(prefix + IDENTITY_ASSET_PATH, identity_data, if_none_match=True)
            written.append(prefix + IDENTITY_ASSET_PATH)
            entries[IDENTITY_ASSET_PATH] = ManifestFile(
                IDENTITY_ASSET_PATH, len(identity_data), _sha256(identity_data)
            )
            for relative in files:
                if relative == IDENTITY_ASSET_PATH:
                    continue
                size, digest = source.write(self.store, relative, prefix + relative)
                written.append(prefix + relative)
                entries[relative] = ManifestFile(relative, size, digest)
            manifest = Manifest(
                name=self.name,
                version=version,
                files=tuple(entries[relative] for relative in sorted(entries)),
                created_at=self._now(),
            )
            self.store.put(
                keys.model_version_manifest(self.name, version),
                manifest.encode(),
                content_type="application/json",
                if_none_match=True,
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
            for item in manifest.files:
                # The codec checked the path: relative, no `..`, inside the version folder.
                relative = PurePosixPath(item.path)
                local_path = partial.joinpath(*relative.parts)
                self.store.download_file(prefix + item.path, local_path)
                data = local_path.read_bytes()
                if len(data) != item.size or _sha256(data) != item.sha256:
                    raise VersionCorrupt(
                        f"{self.name} version {version}: {relative} does not match its manifest"
                    )
            (partial / MANIFEST_FILE_NAME).write_bytes(manifest.encode())
            os.replace(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return target
