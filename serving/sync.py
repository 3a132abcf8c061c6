"""The model sync: mirrors the registry's served versions from storage to TF Serving's base path.

TF Serving 2.7+ cannot read `s3://`, and a version it sees half-written may load broken, so this
process (a Kubernetes init container with `--once`, then a sidecar with `--watch`; a compose
service) copies each served version (registry `stable` and `canary`) from
`input/model/<name>/<version>/` into a temporary folder beside `<base>/<name>/<version>/`, checks
every file against the version's manifest, renames it into place, and writes `models.config`
(a `specific` version policy, `stable`/`canary` labels) atomically.

TF Serving refuses a label on a version that is not loaded yet (at start too), so a model's first
config carries no label, and a label moves in steps: first a config that serves the old and the
new version with the label still on the old one; then, once
the server reports the new version AVAILABLE (or, without `TF_SERVING_URL`, one cycle later), the
label moves; one cycle after that, the old version leaves the config. Its folder is deleted after
`SYNC_GRACE_SECONDS`. Usage: `python -m serving.sync --once | --watch`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from common.logs import configure_json_logging, log_event
from common.settings import EnvReader, load_environment
from model_contract.documents import MANIFEST_FILE_NAME, Manifest, RegistryDocument
from model_contract.errors import InvalidDocument
from model_contract.settings import DEFAULT_MODEL_NAME, read_model_name
from serving.model_config import (
    ModelConfigEntry,
    config_file_lock,
    foreign_config_blocks,
    read_model_config,
    render_model_config,
    write_file_atomically,
)
from storage import ObjectNotFound, StorageError, StorageSettings, Store, keys, open_areas

__all__ = [
    "AvailabilityProbe",
    "CycleReport",
    "ModelSync",
    "RestAvailabilityProbe",
    "SyncError",
    "SyncMetrics",
    "SyncSettings",
    "main",
]

logger = logging.getLogger("serving.sync")

# Folders the sync owns beside the version folders. TF Serving ignores any child whose whole
# name is not an integer, so neither can be mistaken for a version.
_PARTIAL_PREFIX = ".partial-"
_STATE_FILE = ".sync-state.json"
_ONCE_ATTEMPTS = 3


class SyncError(RuntimeError):
    """A cycle could not bring the served versions into place (message says why)."""


@dataclass(frozen=True)
class SyncSettings:
    """Everything the sync reads from its environment (see `from_env` for the names)."""

    storage: StorageSettings
    model_name: str = DEFAULT_MODEL_NAME
    model_base_path: Path = Path("./.run/models")
    model_config_file: Path = Path("./.run/models/models.config")
    interval_seconds: float = 10.0
    grace_seconds: float = 300.0
    tf_serving_url: str | None = None
    # Prometheus metrics of `--watch` on this port (None: none served, nothing imported).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SyncSettings:
        """STORAGE_URL/STORAGE_PATH (and the other storage names), MODEL_NAME (alias
        PROD_MODEL_NAME), MODEL_BASE_PATH, MODEL_CONFIG_FILE, SYNC_INTERVAL_SECONDS,
        SYNC_GRACE_SECONDS, TF_SERVING_URL, SYNC_METRICS_PORT, METRICS_HOST. Every problem is
        reported at once."""
        env = EnvReader(environ, "model sync")
        storage = StorageSettings.read(env)
        model_name = read_model_name(env)
        base_path = Path(env.string("MODEL_BASE_PATH", "./.run/models"))
        config_file = Path(env.string("MODEL_CONFIG_FILE", str(base_path / "models.config")))
        interval = env.number("SYNC_INTERVAL_SECONDS", 10.0, minimum=0.05, maximum=3600)
        grace = env.number("SYNC_GRACE_SECONDS", 300.0, minimum=0, maximum=7 * 86400)
        url = env.optional("TF_SERVING_URL")
        if url is not None and not url.startswith(("http://", "https://")):
            env.problem(f"TF_SERVING_URL={url!r} is not an http(s) URL")
        metrics_port: int | None = None
        if env.raw("SYNC_METRICS_PORT") is not None:
            metrics_port = env.integer("SYNC_METRICS_PORT", 0, minimum=1, maximum=65535) or None
        metrics_host = env.string("METRICS_HOST", "127.0.0.1")
        env.check()
        return cls(
            storage=storage,
            model_name=model_name,
            model_base_path=base_path,
            model_config_file=config_file,
            interval_seconds=interval,
            grace_seconds=grace,
            tf_serving_url=url.rstrip("/") if url else None,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )


class AvailabilityProbe(Protocol):
    """Tells whether the model server reports a version AVAILABLE."""

    def is_available(self, model_name: str, version: int) -> bool: ...


class RestAvailabilityProbe:
    """Asks TF Serving's REST status endpoint (any failure counts as not available)."""

    def __init__(self, base_url: str, timeout_seconds: float = 2.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout_seconds

    def is_available(self, model_name: str, version: int) -> bool:
        url = f"{self._base_url}/v1/models/{quote(model_name, safe='')}/versions/{version}"
        try:
            with urllib.request.urlopen(url, timeout=self._timeout) as response:  # noqa: S310
                document = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log_event(
                logger,
                "availability_unknown",
                logging.WARNING,
                model=model_name,
                version=version,
                reason=str(exc),
            )
            return False
        statuses = document.get("model_version_status", []) if isinstance(document, dict) else []
        return any(
            isinstance(status, dict)
            and str(status.get("version")) == str(version)
            and status.get("state") == "AVAILABLE"
            for status in statuses
        )


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a folder's entries (new files, a rename) durable, so a crash cannot leave a version
    folder whose files are missing or short."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass
class CycleReport:
    """What one cycle saw and did."""

    registry: RegistryDocument
    on_disk: list[int] = field(default_factory=list)
    installed: list[int] = field(default_factory=list)
    incomplete: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    config_versions: list[int] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    config_written: bool = False
    removed: list[int] = field(default_factory=list)

    @property
    def stable_in_place(self) -> bool:
        stable = self.registry.stable
        return stable is not None and stable in self.on_disk and stable in self.config_versions


class _VersionMismatch(SyncError):
    """A downloaded file disagrees with the manifest (size or sha256)."""


class ModelSync:
    """One model's mirror from storage to `<base>/<name>/`, one `run_cycle()` at a time."""

    def __init__(
        self,
        settings: SyncSettings,
        store: Store,
        *,
        probe: AvailabilityProbe | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._probe = probe
        self._clock = clock
        self._name = keys.check_model_name(settings.model_name)
        self._model_dir = settings.model_base_path / self._name

    @classmethod
    def from_settings(cls, settings: SyncSettings) -> ModelSync:
        probe = RestAvailabilityProbe(settings.tf_serving_url) if settings.tf_serving_url else None
        return cls(settings, open_areas(settings.storage).root, probe=probe)

    @property
    def model_dir(self) -> Path:
        return self._model_dir

    # -- one cycle -------------------------------------------------------------------------------

    def read_registry(self) -> RegistryDocument:
        try:
            data = self._store.get_bytes(keys.model_registry(self._name))
        except ObjectNotFound:
            raise SyncError(f"no registry for model {self._name!r} in storage") from None
        try:
            return RegistryDocument.decode(data, expected_name=self._name)
        except InvalidDocument as exc:
            raise SyncError(f"registry of model {self._name!r}: {exc}") from exc

    def run_cycle(self) -> CycleReport:
        """Download what is missing, rewrite models.config when it changes, retire old folders.

        A label goes into the config only once its version can answer (TF Serving refuses a
        configuration whose label names a version that is not AVAILABLE, at start too:
        ServerCore::ReloadConfig checks the labels before it loads anything). So the first
        config of a model carries its versions and no label; the labels follow once the server
        reports the versions AVAILABLE (or, without TF_SERVING_URL, one cycle later).
        """
        registry = self.read_registry()
        report = CycleReport(registry=registry)
        self._model_dir.mkdir(parents=True, exist_ok=True)
        self._remove_partial_folders()
        for version in sorted(registry.served_versions):
            self._ensure_installed(version, report)

        on_disk = self._versions_on_disk()
        report.on_disk = sorted(on_disk)
        previous = self._previous_entry()
        previous_labels = dict(previous.labels) if previous else {}
        labels = self._labels_to_write(
            registry,
            on_disk,
            previous_versions=set(previous.versions) if previous else set(),
            previous_labels=previous_labels,
        )
        # A version leaves the config only once no label pointed at it in the config the server
        # already has, so a request on a label never lands on a version being unloaded.
        config_versions = (
            (registry.served_versions & on_disk)
            | (set(previous_labels.values()) & on_disk)
            | set(labels.values())
        )
        report.config_versions = sorted(config_versions)
        report.labels = labels
        if config_versions:
            report.config_written = self._write_config(config_versions, labels)
        else:
            log_event(
                logger,
                "config_not_written",
                logging.WARNING,
                model=self._name,
                reason="no served version is on disk",
            )
        report.removed = self._retire(on_disk - config_versions - registry.served_versions)
        return report

    def _ensure_installed(self, version: int, report: CycleReport) -> None:
        """Install a served version unless an intact copy of it is in place; say what happened."""
        if self._version_dir(version).is_dir():
            problem = self._installed_problem(version)
            if problem is None:
                return
            # Damaged since it was installed (a crash on a persistent volume, a hand edit), or
            # another version under the same number (this folder reused with another store or
            # a store started afresh): set it aside (removed with the partial folders) and
            # install it again.
            log_event(
                logger,
                problem,
                logging.WARNING,
                model=self._name,
                version=version,
                **(
                    {"note": "a server that loaded the old one serves it until restarted"}
                    if problem == "version_differs_from_store"
                    else {}
                ),
            )
            os.rename(
                self._version_dir(version),
                self._model_dir / f"{_PARTIAL_PREFIX}{version}-damaged-{secrets.token_hex(4)}",
            )
        try:
            if self._install(version):
                report.installed.append(version)
            else:
                report.incomplete.append(version)
        except (StorageError, SyncError, OSError) as exc:
            report.failed[version] = str(exc)
            log_event(
                logger,
                "version_download_failed",
                logging.WARNING,
                model=self._name,
                version=version,
                reason=str(exc),
            )

    def _labels_to_write(
        self,
        registry: RegistryDocument,
        on_disk: set[int],
        *,
        previous_versions: set[int],
        previous_labels: Mapping[str, int],
    ) -> dict[str, int]:
        """Each label at its target once the target can answer, else where it was while that
        version still answers; otherwise no label. A label is never written on a version the
        server does not report AVAILABLE: after a restart of the model server (its config file
        kept, as a pod's shared volume keeps it), a held label would stop the restarted server
        at start (ServerCore refuses it before loading anything) and the sync would hold it
        forever: a crash loop. Dropped, the server starts, loads, and the labels follow."""

        def available(version: int) -> bool:
            if version not in on_disk:
                return False
            if self._probe is not None:
                return self._probe.is_available(self._name, version)
            # Without a server to ask: a version listed in the config we wrote last cycle has
            # had a whole cycle to load.
            return version in previous_versions

        labels: dict[str, int] = {}
        for label, target in registry.labels.items():
            if available(target):
                labels[label] = target
            elif label in previous_labels and available(previous_labels[label]):
                labels[label] = previous_labels[label]
                log_event(
                    logger,
                    "label_held",
                    model=self._name,
                    label=label,
                    version=previous_labels[label],
                    target=target,
                    reason="target not available yet" if target in on_disk else "target missing",
                )
        return labels

    # -- download --------------------------------------------------------------------------------

    def _version_dir(self, version: int) -> Path:
        return self._model_dir / str(version)

    def _read_manifest(self, version: int) -> tuple[Manifest, bytes] | None:
        try:
            raw = self._store.get_bytes(keys.model_version_manifest(self._name, version))
        except ObjectNotFound:
            return None
        try:
            return Manifest.decode(raw, self._name, version), raw
        except InvalidDocument as exc:
            raise SyncError(f"manifest of version {version}: {exc}") from exc

    def _install(self, version: int) -> bool:
        """Download, verify and rename one version into place; False if it has no manifest."""
        found = self._read_manifest(version)
        if found is None:
            log_event(
                logger,
                "version_incomplete",
                logging.WARNING,
                model=self._name,
                version=version,
                reason="no manifest.json: the version is not published completely",
            )
            return False
        manifest, manifest_bytes = found
        started = time.monotonic()
        partial = self._model_dir / f"{_PARTIAL_PREFIX}{version}-{secrets.token_hex(4)}"
        version_store = self._store.child(keys.model_version_prefix(self._name, version))
        try:
            partial.mkdir()
            for entry in manifest.files:
                data = version_store.get_bytes(entry.path)
                if len(data) != entry.size:
                    raise _VersionMismatch(
                        f"{entry.path}: {len(data)} bytes, manifest says {entry.size}"
                    )
                if hashlib.sha256(data).hexdigest() != entry.sha256:
                    raise _VersionMismatch(f"{entry.path}: sha256 differs from the manifest")
                target = partial / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_durably(target, data)
            # Keep the manifest beside the files: it records what this folder was checked against.
            _write_durably(partial / MANIFEST_FILE_NAME, manifest_bytes)
            _fsync_folder(partial)
            os.rename(partial, self._version_dir(version))
            _fsync_folder(self._model_dir)
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
        log_event(
            logger,
            "version_installed",
            model=self._name,
            version=version,
            files=len(manifest.files),
            bytes=manifest.total_bytes,
            seconds=round(time.monotonic() - started, 3),
        )
        return True

    def _installed_problem(self, version: int) -> str | None:
        """Why an installed version folder must be installed again, or None when it may stay."""
        folder = self._version_dir(version)
        try:
            installed = (folder / MANIFEST_FILE_NAME).read_bytes()
        except OSError:
            return "version_damaged"
        if not self._intact(folder, version, installed):
            return "version_damaged"
        try:
            published = self._store.get_bytes(keys.model_version_manifest(self._name, version))
        except (StorageError, OSError):
            return None  # cannot tell now: keep serving what is in place
        return None if published == installed else "version_differs_from_store"

    def _intact(self, folder: Path, version: int, manifest_bytes: bytes) -> bool:
        """The folder still holds every file of its installed manifest, at the recorded size."""
        try:
            manifest = Manifest.decode(manifest_bytes, self._name, version)
            return all(
                (folder / entry.path).stat().st_size == entry.size for entry in manifest.files
            )
        except (OSError, ValueError):
            return False

    def _remove_partial_folders(self) -> None:
        """Folders left by an interrupted download: never complete, never served."""
        for child in self._model_dir.iterdir():
            if child.name.startswith(_PARTIAL_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
                log_event(logger, "partial_version_removed", model=self._name, folder=child.name)

    def _versions_on_disk(self) -> set[int]:
        return {
            int(child.name)
            for child in self._model_dir.iterdir()
            if child.name.isascii()
            and child.name.isdigit()
            and child.is_dir()
            and int(child.name) > 0
        }

    # -- config ----------------------------------------------------------------------------------

    def _previous_entry(self) -> ModelConfigEntry | None:
        try:
            entries = read_model_config(self._settings.model_config_file)
        except ValueError as exc:
            log_event(logger, "config_unreadable", logging.WARNING, reason=str(exc))
            return None
        for entry in entries or []:
            if entry.name == self._name:
                return entry
        return None

    def _write_config(self, versions: set[int] | frozenset[int], labels: dict[str, int]) -> bool:
        entry = ModelConfigEntry(
            name=self._name,
            base_path=str(self._model_dir.resolve()),
            versions=tuple(sorted(versions)),
            labels=labels,
        )
        path = self._settings.model_config_file
        with config_file_lock(path):
            # Other models in a shared config file are carried over verbatim, whatever their
            # version policy; a file that cannot be read is replaced by this model alone.
            try:
                current = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                current = ""
            try:
                others = foreign_config_blocks(current, self._name) if current else []
            except ValueError as exc:
                log_event(logger, "config_unreadable", logging.WARNING, reason=str(exc))
                others = []
            text = render_model_config([entry], others)
            if text == current:
                return False
            write_file_atomically(path, text)
        log_event(
            logger,
            "config_written",
            model=self._name,
            path=str(path),
            versions=sorted(versions),
            labels=labels,
        )
        return True

    # -- retirement ------------------------------------------------------------------------------

    def _state_path(self) -> Path:
        return self._model_dir / _STATE_FILE

    def _load_retired(self) -> dict[int, float]:
        try:
            document = json.loads(self._state_path().read_text(encoding="utf-8"))
            return {int(version): float(since) for version, since in document["retired"].items()}
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def _retire(self, unused: set[int]) -> list[int]:
        """Delete folders unused for the grace period; remember when each became unused."""
        now = self._clock()
        previous = self._load_retired()
        retired = {version: previous.get(version, now) for version in unused}
        removed: list[int] = []
        for version, since in sorted(retired.items()):
            if now - since >= self._settings.grace_seconds:
                shutil.rmtree(self._version_dir(version), ignore_errors=True)
                removed.append(version)
                log_event(
                    logger,
                    "version_removed",
                    model=self._name,
                    version=version,
                    unused_seconds=round(now - since, 1),
                )
        for version in removed:
            del retired[version]
        if retired != previous:
            write_file_atomically(
                self._state_path(),
                json.dumps({"retired": {str(v): t for v, t in sorted(retired.items())}}),
            )
        return removed


class SyncMetrics:
    """The sidecar's Prometheus metrics (prometheus_client, imported only when served).

    `xray_sync_cycles_total{outcome}` (ok, failed), `xray_sync_cycle_duration_seconds`,
    `xray_sync_actions_total{action}` (installed, failed, incomplete, config_written, removed),
    `xray_sync_last_success_timestamp_seconds`, `xray_sync_served_version{label}` (the version
    each label points at in the config written), and `xray_sync_lag_seconds`: how long the
    config's labels have differed from the registry's (0 when in step; a promotion is
    normally in step within two cycles, once the new version is loaded).
    """

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        where = REGISTRY if registry is None else registry
        self.registry = where
        self.cycles = Counter(
            "xray_sync_cycles", "Sync cycles by outcome", ["outcome"], registry=where
        )
        self.duration = Histogram(
            "xray_sync_cycle_duration_seconds",
            "Duration of one sync cycle",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
            registry=where,
        )
        self.actions = Counter(
            "xray_sync_actions", "What the sync did, by action", ["action"], registry=where
        )
        self.last_success = Gauge(
            "xray_sync_last_success_timestamp_seconds",
            "When a cycle last succeeded (Unix time)",
            registry=where,
        )
        self.served = Gauge(
            "xray_sync_served_version",
            "The version each label points at in the config written",
            ["label"],
            registry=where,
        )
        self.lag = Gauge(
            "xray_sync_lag_seconds",
            "How long the served labels have differed from the registry's",
            registry=where,
        )
        self._behind_since: float | None = None
        for outcome in ("ok", "failed"):
            self.cycles.labels(outcome)
        for action in ("installed", "failed", "incomplete", "config_written", "removed"):
            self.actions.labels(action)

    def cycle(self, report: CycleReport | None, seconds: float, now: float) -> None:
        """Record one cycle: its report, or None when it failed."""
        self.duration.observe(seconds)
        if report is None:
            self.cycles.labels("failed").inc()
            if self._behind_since is not None:
                self.lag.set(now - self._behind_since)
            return
        self.cycles.labels("ok").inc()
        self.last_success.set(now)
        for action, count in (
            ("installed", len(report.installed)),
            ("failed", len(report.failed)),
            ("incomplete", len(report.incomplete)),
            ("config_written", int(report.config_written)),
            ("removed", len(report.removed)),
        ):
            if count:
                self.actions.labels(action).inc(count)
        for label in ("stable", "canary"):
            version = report.labels.get(label)
            if version is None:
                with contextlib.suppress(KeyError):
                    self.served.remove(label)
            else:
                self.served.labels(label).set(version)
        if dict(report.labels) == dict(report.registry.labels):
            self._behind_since = None
            self.lag.set(0)
        else:
            if self._behind_since is None:
                self._behind_since = now
            self.lag.set(now - self._behind_since)


def serve_metrics(port: int, host: str) -> SyncMetrics:
    """Start the metrics endpoint (a daemon thread) and return what it serves."""
    from prometheus_client import start_http_server

    sync_metrics = SyncMetrics()
    start_http_server(port, host)
    log_event(logger, "metrics_serving", port=port, host=host)
    return sync_metrics


def run_once(sync: ModelSync, *, attempts: int = _ONCE_ATTEMPTS, backoff: float = 0.5) -> int:
    """The init container: 0 once the stable version is in place, 2 with a message otherwise."""
    problem = "unknown"
    for attempt in range(1, attempts + 1):
        try:
            report = sync.run_cycle()
        except (SyncError, StorageError, OSError) as exc:
            problem = str(exc)
            log_event(logger, "cycle_failed", logging.WARNING, attempt=attempt, reason=problem)
        else:
            if report.stable_in_place:
                log_event(
                    logger,
                    "sync_once_done",
                    stable=report.registry.stable,
                    canary=report.registry.canary,
                    versions=report.config_versions,
                )
                return 0
            stable = report.registry.stable
            if stable is None:
                problem = "the registry names no stable version"
            elif stable in report.failed:
                problem = f"stable version {stable} failed to download: {report.failed[stable]}"
            elif stable in report.incomplete:
                problem = f"stable version {stable} has no manifest (not completely published)"
            else:
                problem = f"stable version {stable} is not in place"
        if attempt < attempts:
            time.sleep(backoff * attempt)
    message = f"model sync failed for model {sync.model_dir.name!r}: {problem}"
    log_event(logger, "sync_once_failed", logging.ERROR, reason=problem)
    print(message, file=sys.stderr)
    return 2


def run_watch(
    sync: ModelSync,
    interval_seconds: float,
    *,
    stop: threading.Event | None = None,
    max_cycles: int | None = None,
    metrics: SyncMetrics | None = None,
) -> int:
    """The sidecar: a cycle every interval; errors are logged and retried, never fatal."""
    stop = stop or threading.Event()
    cycles = 0
    failures = 0
    while not stop.is_set():
        delay = interval_seconds
        started = time.monotonic()
        try:
            report = sync.run_cycle()
            failures = 0
            if metrics is not None:
                metrics.cycle(report, time.monotonic() - started, time.time())
        except Exception as exc:
            if metrics is not None:
                metrics.cycle(None, time.monotonic() - started, time.time())
            failures += 1
            # Back off while storage is down, but never longer than a minute past the interval.
            delay = min(interval_seconds * 2 ** min(failures - 1, 6), interval_seconds + 60)
            log_event(
                logger,
                "cycle_failed",
                logging.WARNING,
                consecutive_failures=failures,
                retry_in_seconds=round(delay, 2),
                reason=str(exc),
                error=type(exc).__name__,
            )
        cycles += 1
        if max_cycles is not None and cycles >= max_cycles:
            break
        stop.wait(delay)
    return 0


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xray-model-sync",
        description="Mirror the model registry's served versions to TF Serving's base path.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one sync, then exit (init container)")
    mode.add_argument("--watch", action="store_true", help="sync every interval (sidecar)")
    arguments = parser.parse_args(argv)
    configure_json_logging()
    try:
        settings = SyncSettings.from_env(load_environment(environ))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    sync = ModelSync.from_settings(settings)
    log_event(
        logger,
        "sync_started",
        mode="once" if arguments.once else "watch",
        model=settings.model_name,
        base_path=str(settings.model_base_path),
        config_file=str(settings.model_config_file),
        tf_serving_url=settings.tf_serving_url,
    )
    if arguments.once:
        return run_once(sync)
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    sync_metrics = None
    if settings.metrics_port is not None:
        sync_metrics = serve_metrics(settings.metrics_port, settings.metrics_host)
    return run_watch(sync, settings.interval_seconds, stop=stop, metrics=sync_metrics)


if __name__ == "__main__":
    raise SystemExit(main())
