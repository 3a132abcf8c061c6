"""Model lifecycle, as TF Serving's ServerCore with its AvailabilityPreservingPolicy.

For each configured model the manager re-lists the base path every poll (numeric folder names
only), picks the aspired versions by policy (`latest` N, `all`, `specific`), loads new ones in
background threads (a load includes the warmup replay), and unloads a version the policy no
longer wants only once an aspired version is AVAILABLE: the last serving version stays until
its replacement is ready, and a version that fails to load ends as END with its error while the
old one keeps serving. Requests read an immutable routing snapshot, so lookups take no lock and
a request keeps the version it resolved even if that version is unloaded meanwhile.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common.logs import log_event
from serving.model_server.errors import Code, ServingError
from serving.model_server.servable import LoadedVersion

__all__ = [
    "ModelManager",
    "ServedModelConfig",
    "VersionPolicy",
    "VersionState",
    "VersionStatus",
]

logger = logging.getLogger("serving.model_server")

_INT64_MAX = 2**63 - 1
# Plain ASCII digits only (no other Unicode digits, no trailing newline), as serving/sync.py writes.
_NUMERIC = re.compile(r"[0-9]+")

Loader = Callable[[str, int, Path], LoadedVersion]


@dataclass(frozen=True)
class VersionPolicy:
    """`latest` (highest `num_versions`), `all`, or `specific` (exactly `versions`)."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def aspired(self, on_disk: Iterable[int]) -> set[int]:
        present = sorted(set(on_disk))
        if self.kind == "all":
            return set(present)
        if self.kind == "specific":
            return set(present) & set(self.versions)
        return set(present[-max(1, self.num_versions) :]) if present else set()


@dataclass(frozen=True)
class ServedModelConfig:
    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


class VersionState:
    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error: ServingError | None = None


@dataclass(frozen=True)
class _Routes:
    """What a request may reach: AVAILABLE versions and labels. Replaced, never mutated."""

    available: Mapping[int, LoadedVersion]
    labels: Mapping[str, int] | None  # None until the model's labels were first applied

    @property
    def latest(self) -> LoadedVersion | None:
        return self.available[max(self.available)] if self.available else None


class _Model:
    def __init__(self, config: ServedModelConfig) -> None:
        self.config = config
        self.statuses: dict[int, VersionStatus] = {}
        self.loaded: dict[int, LoadedVersion] = {}
        self.loading: set[int] = set()
        self.failed: set[int] = set()  # not retried while they stay aspired (as TF Serving)
        self.aspired: set[int] = set()
        self.folder_names: dict[int, str] = {}  # version -> folder name ("00000123" is 123)
        self.polled = False
        self.routes = _Routes(available={}, labels=None)
        self.removed = False


class ModelManager:
    """Owns every model's versions; `resolve()` is the request path, the rest is lifecycle."""

    def __init__(
        self,
        loader: Loader,
        *,
        load_threads: int = 2,
        max_load_retries: int = 5,
        load_retry_interval: float = 60.0,
    ) -> None:
        self._loader = loader
        self._executor = ThreadPoolExecutor(max_workers=load_threads, thread_name_prefix="load")
        self._max_load_retries = max_load_retries
        self._load_retry_interval = load_retry_interval
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, _Model] = {}
        self._stop = threading.Event()
        self._poll_thread: threading.Thread | None = None

    # -- configuration -----------------------------------------------------------------------

    def apply_config(
        self,
        configs: Iterable[ServedModelConfig],
        *,
        wait_timeout: float | None = None,
        allow_labels_for_unavailable: bool = False,
    ) -> None:
        """Replace the set of models (those left out are unloaded), then set labels.

        As TF Serving's ServerCore::ReloadConfig does, the labels are checked first, against
        the versions AVAILABLE now, before any model is added or removed: a label on a version
        that is not AVAILABLE raises FAILED_PRECONDITION and nothing changes (at start, when
        nothing is loaded yet, any label is refused) - unless `allow_labels_for_unavailable`
        (`--allow_version_labels_for_unavailable_models`), which lets a label that is new, or
        that keeps its version, point at a version not loaded yet. Then newly added models are
        waited for (AVAILABLE or failed) and the labels take effect.
        """
        configs = list(configs)
        names = [config.name for config in configs]
        if len(set(names)) != len(names):
            raise ServingError.invalid_argument("Illegal to list model more than once in config")
        with self._lock:
            self._check_labels(configs, allow_labels_for_unavailable)
            new_models = []
            for config in configs:
                model = self._models.get(config.name)
                if model is None:
                    model = _Model(config)
                    self._models[config.name] = model
                    new_models.append(config.name)
                else:
                    model.config = config
            for name in list(self._models):
                if name not in names:
                    self._remove_model(name)
            self._set_labels(configs)
        self.poll_once()
        failures = self.wait_until_available(new_models, timeout=wait_timeout)
        if failures:
            raise ServingError(
                Code.UNKNOWN,
                f"{len(failures)} model(s) did not become available: "
                + ", ".join(sorted(failures)),
            )

    def _check_labels(self, configs: list[ServedModelConfig], allow_unavailable: bool) -> None:
        """ServerCore::UpdateModelVersionLabelMap: the first label on a version that is not
        AVAILABLE fails the whole configuration."""
        for config in configs:
            model = self._models.get(config.name)
            available = model.routes.available if model is not None else {}
            current = (model.routes.labels or {}) if model is not None else {}
            for label, version in config.labels.items():
                keeps_or_adds = label not in current or current[label] == version
                if allow_unavailable and keeps_or_adds:
                    continue
                if version not in available:
                    raise ServingError.failed_precondition(
                        f"Request to assign label to version {version} of model {config.name}, "
                        "which is not currently available for inference"
                    )

    def _set_labels(self, configs: list[ServedModelConfig]) -> None:
        for config in configs:
            model = self._models[config.name]
            wanted = dict(config.labels)
            if model.routes.labels != wanted:
                model.routes = _Routes(available=model.routes.available, labels=wanted)
                log_event(logger, "labels_applied", model=config.name, labels=wanted)

    def labels_pending(self, configs: Iterable[ServedModelConfig]) -> bool:
        """Whether some configured label is not in effect yet (the caller may retry)."""
        with self._lock:
            return any(
                (model := self._models.get(config.name)) is not None
                and (model.routes.labels or {}) != dict(config.labels)
                for config in configs
            )

    def _remove_model(self, name: str) -> None:
        model = self._models.pop(name)
        model.removed = True
        for version in list(model.loaded):
            self._unload(model, version)
        log_event(logger, "model_removed", model=name)

    # -- polling -------------------------------------------------------------------------------

    def start_polling(self, interval_seconds: float) -> None:
        """Re-list base paths every `interval_seconds` (0: listed once at configuration)."""
        if interval_seconds <= 0 or self._poll_thread is not None:
            return

        def poll() -> None:
            while not self._stop.wait(interval_seconds):
                try:
                    self.poll_once()
                except Exception:
                    logger.exception("poll failed")

        self._poll_thread = threading.Thread(target=poll, name="fs-poll", daemon=True)
        self._poll_thread.start()

    def poll_once(self) -> None:
        with self._lock:
            models = list(self._models.values())
        for model in models:
            versions = self._list_versions(model.config)
            with self._lock:
                if model.removed:
                    continue
                if versions is not None:
                    model.folder_names = versions
                    model.aspired = model.config.policy.aspired(versions)
                    # A failed version may load again once it left and came back.
                    model.failed &= model.aspired
                model.polled = True
                self._reconcile(model)

    def _list_versions(self, config: ServedModelConfig) -> dict[int, str] | None:
        """Numeric child folders of the base path; None (no change) if it cannot be listed."""
        try:
            children = list(config.base_path.iterdir())
        except OSError as error:
            log_event(
                logger,
                "base_path_unreadable",
                logging.ERROR,
                model=config.name,
                base_path=str(config.base_path),
                reason=str(error),
            )
            return None
        versions: dict[int, str] = {}
        for child in sorted(children, key=lambda path: path.name):
            if not _NUMERIC.fullmatch(child.name) or not child.is_dir():
                continue
            number = int(child.name)
            if number > _INT64_MAX:
                continue
            if number in versions:
                log_event(
                    logger,
                    "duplicate_version",
                    logging.WARNING,
                    model=config.name,
                    version=number,
                    kept=versions[number],
                    ignored=child.name,
                )
                continue
            versions[number] = child.name
        if not versions:
            log_event(
                logger,
                "no_versions",
                logging.WARNING,
                model=config.name,
                detail=f"No versions of servable {config.name} found under base path "
                f"{config.base_path}. Did you forget to name your leaf directory as a number "
                "(eg. '/1/')?",
            )
        if config.policy.kind == "specific":
            for missing in sorted(set(config.policy.versions) - set(versions)):
                log_event(
                    logger,
                    "specific_version_missing",
                    logging.WARNING,
                    model=config.name,
                    version=missing,
                )
        return versions

    def _folder(self, model: _Model, version: int) -> Path:
        return model.config.base_path / model.folder_names.get(version, str(version))

    def _reconcile(self, model: _Model) -> None:
        """Availability-preserving: load aspired versions, unload the rest once one is ready."""
        aspired = model.aspired
        for version in sorted(aspired, reverse=True):
            if version in model.loaded or version in model.loading or version in model.failed:
                continue
            self._start_load(model, version)
        unaspired = sorted(set(model.loaded) - aspired)
        if not unaspired:
            return
        if not aspired or any(version in model.loaded for version in aspired):
            # Either a replacement is ready, or the base path holds no versions at all.
            doomed = unaspired
        else:
            # Nothing aspired is ready: keep serving the newest of the old versions.
            doomed = unaspired[:-1]
        for version in doomed:
            self._unload(model, version)

    def _start_load(self, model: _Model, version: int) -> None:
        model.loading.add(version)
        model.statuses[version] = VersionStatus(version, VersionState.START)
        log_event(logger, "version_aspired", model=model.config.name, version=version)
        self._executor.submit(self._load, model, version, self._folder(model, version))

    def _load(self, model: _Model, version: int, path: Path) -> None:
        name = model.config.name
        with self._lock:
            model.statuses[version] = VersionStatus(version, VersionState.LOADING)
        attempt = 0
        while True:
            try:
                loaded = self._loader(name, version, path)
                break
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, ServingError)
                    else ServingError(Code.UNKNOWN, f"{type(exc).__name__}: {exc}")
                )
                still_wanted = not model.removed and version in model.aspired
                if attempt < self._max_load_retries and still_wanted:
                    attempt += 1
                    log_event(
                        logger,
                        "version_load_retry",
                        logging.WARNING,
                        model=name,
                        version=version,
                        attempt=attempt,
                        reason=error.message,
                    )
                    if self._stop.wait(self._load_retry_interval):
                        return
                    continue
                with self._changed:
                    model.loading.discard(version)
                    model.failed.add(version)
                    model.statuses[version] = VersionStatus(version, VersionState.END, error)
                    self._changed.notify_all()
                log_event(
                    logger,
                    "version_load_failed",
                    logging.ERROR,
                    model=name,
                    version=version,
                    code=error.code.name,
                    reason=error.message,
                )
                return
        with self._changed:
            model.loading.discard(version)
            if model.removed or version not in model.aspired:
                # Un-aspired while loading: never becomes available.
                loaded.close()
                model.statuses[version] = VersionStatus(version, VersionState.END)
                self._changed.notify_all()
                return
            model.loaded[version] = loaded
            model.statuses[version] = VersionStatus(version, VersionState.AVAILABLE)
            model.routes = _Routes(
                available={**model.routes.available, version: loaded}, labels=model.routes.labels
            )
            log_event(logger, "version_available", model=name, version=version)
            self._reconcile(model)
            self._changed.notify_all()

    def _unload(self, model: _Model, version: int) -> None:
        loaded = model.loaded.pop(version)
        model.statuses[version] = VersionStatus(version, VersionState.UNLOADING)
        available = {v: item for v, item in model.routes.available.items() if v != version}
        model.routes = _Routes(available=available, labels=model.routes.labels)
        # Requests in flight keep their reference and finish on this version.
        loaded.close()
        model.statuses[version] = VersionStatus(version, VersionState.END)
        log_event(logger, "version_unloaded", model=model.config.name, version=version)

    # -- waiting -------------------------------------------------------------------------------

    def wait_until_available(
        self, names: Iterable[str] | None = None, timeout: float | None = None
    ) -> list[str]:
        """Block until each model has a version AVAILABLE or has nothing left to load.

        Returns the models that ended with no version available (their loads failed).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            wanted = list(self._models) if names is None else list(names)
            while True:
                pending, failed = [], []
                for name in wanted:
                    model = self._models.get(name)
                    if model is None or model.routes.available:
                        continue
                    if (
                        model.polled
                        and not model.loading
                        and model.aspired
                        and (model.aspired <= model.failed)
                    ):
                        failed.append(name)
                    else:
                        pending.append(name)
                if not pending:
                    return failed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return failed + pending
                self._changed.wait(remaining if remaining is not None else 1.0)

    def stop(self) -> None:
        self._stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for model in self._models.values():
                for loaded in model.loaded.values():
                    loaded.close()

    # -- the request path ----------------------------------------------------------------------

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedVersion:
        """The version a request targets (TF Serving's GetServableHandle)."""
        model = self._models.get(name)
        routes = model.routes if model is not None else None
        if label is not None:
            labels = routes.labels if routes is not None else None
            if labels is None or label not in labels:
                raise ServingError.invalid_argument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            latest = routes.latest if routes is not None else None
            if latest is None:
                raise ServingError.not_found(f"Servable not found for request: Latest({name})")
            return latest
        found = routes.available.get(version) if routes is not None else None
        if found is None:
            raise ServingError.not_found(
                f"Servable not found for request: Specific({name}, {version})"
            )
        return found

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version the model ever had, newest first (TF Serving's GetModelStatus)."""
        with self._lock:
            model = self._models.get(name)
            statuses = dict(model.statuses) if model is not None else {}
        if not statuses:
            raise ServingError.not_found(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in statuses:
                raise ServingError.not_found(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        return [statuses[v] for v in sorted(statuses, reverse=True)]
