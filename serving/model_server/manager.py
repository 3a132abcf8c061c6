"""Model lifecycle, as TF Serving's ServerCore with its AvailabilityPreservingPolicy.

For each configured model the manager re-lists the base path every poll, picks the aspired
versions by policy (`latest` N, `all`, `specific`) exactly as FileSystemStoragePathSource does,
loads new ones in background threads (a load includes the warmup replay), and unloads a version
the policy no longer wants only once an aspired version is AVAILABLE: the last serving version
stays until its replacement is ready, and a version that fails to load ends as END with its
error while the old one keeps serving. Requests take a handle on the version they resolved
(`handle()`); an unloaded version stays UNLOADING until the last such request has finished, as
BasicManager waits for the ServableHandles of the old serving map. Every version a model ever
had keeps its last state (the ServableStateMonitor forgets nothing), even after the model left
the configuration.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    "parse_version_number",
]

logger = logging.getLogger("serving.model_server")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# absl::SimpleAtoi, which names a version folder: ASCII whitespace around an optional sign and
# ASCII digits ("00000123", " 7", "+7" and "-7" are versions; "7a", "1_0" and "٣" are not).
_ASCII_SPACE = " \t\n\v\f\r"
_SIGNED_DIGITS = re.compile(r"[+-]?[0-9]+")
_TENSORFLOW = "tensorflow"
_MODEL_TYPE_TENSORFLOW = 1  # ModelType.TENSORFLOW, the deprecated way to name the platform
_URI_SCHEME = re.compile(r"[A-Za-z][0-9A-Za-z.]*://")

Loader = Callable[[str, int, Path], LoadedVersion]


def parse_version_number(name: str) -> int | None:
    """The version a base-path child names, or None (absl::SimpleAtoi into an int64)."""
    text = name.strip(_ASCII_SPACE)
    if not _SIGNED_DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


@dataclass(frozen=True)
class VersionPolicy:
    """`latest` (highest `num_versions`), `all`, or `specific` (exactly `versions`)."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class ServedModelConfig:
    """One ModelConfig: `base_path` as written (TF Serving wants it absolute)."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)
    model_platform: str = _TENSORFLOW
    model_type: int = 0  # the deprecated ModelType enum; 0 is MODEL_TYPE_UNSPECIFIED

    def platform(self) -> str:
        """ServerCore's GetPlatform: the platform, or INVALID_ARGUMENT."""
        if self.model_type != 0:
            if self.model_platform:
                raise ServingError.invalid_argument(
                    "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                    f"ModelServerConfig::model_platform, model name is {self.name}"
                )
            if self.model_type != _MODEL_TYPE_TENSORFLOW:
                raise ServingError.invalid_argument(
                    f"ModelServerConfig::model_type choice {self.model_type} not supported."
                )
            return _TENSORFLOW
        if not self.model_platform:
            raise ServingError.invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {self.name}"
            )
        return self.model_platform


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


class _PollError(Exception):
    """A base path that cannot be listed: the whole poll is dropped, as upstream."""


class _Model:
    def __init__(self, config: ServedModelConfig, statuses: dict[int, VersionStatus]) -> None:
        self.config = config
        # Shared with the manager's record of retired models: states outlive the model.
        self.statuses = statuses
        self.loaded: dict[int, LoadedVersion] = {}
        self.loading: set[int] = set()
        self.cancelled: set[int] = set()  # un-aspired while loading: never becomes AVAILABLE
        self.unloading: set[int] = set()  # waiting for their requests to finish
        self.failed: set[int] = set()  # not retried while they stay aspired (as TF Serving)
        self.aspired: set[int] = set()
        self.folder_names: dict[int, str] = {}  # version -> folder name ("00000123" is 123)
        # The first version to end up AVAILABLE or END since the model was (re)configured:
        # what ServerCore's wait for a new model (a Latest(name) request) decides on.
        self.first_outcome: VersionStatus | None = None
        self.routes = _Routes(available={}, labels=None)
        self.removed = False


class ModelManager:
    """Owns every model's versions; `handle()` is the request path, the rest is lifecycle."""

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
        # Version states of models no longer configured (GetModelStatus still answers them).
        self._retired: dict[str, dict[int, VersionStatus]] = {}
        self._configured = False
        self._stop = threading.Event()
        self._poll_thread: threading.Thread | None = None

    # -- configuration -----------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """Whether a model list was ever accepted (ServerCore's config_ is set)."""
        return self._configured

    def apply_config(
        self,
        configs: Iterable[ServedModelConfig],
        *,
        wait_timeout: float | None = None,
        allow_labels_for_unavailable: bool = False,
    ) -> None:
        """Replace the set of models (those left out are unloaded), then set labels.

        In ServerCore::ReloadConfig's order, each failure leaving the models as they were:
        the list itself (a name twice, a relative base path), a platform changed on reload,
        the labels - checked against the versions AVAILABLE now, before anything loads, so at
        start any label is refused unless `allow_labels_for_unavailable`
        (`--allow_version_labels_for_unavailable_models`, which lets a label that is new, or
        that keeps its version, name a version not loaded) - then each model's platform. Then
        models are added and removed, and the new ones waited for: the first of their versions
        to end up AVAILABLE or END decides, and an END fails the call ("N servable(s) did not
        become available" for the first configuration, "N model(s)" later).
        """
        configs = list(configs)
        with self._lock:
            first = not self._configured
            self._validate(configs, first)
            self._configured = True
            self._check_labels(configs, allow_labels_for_unavailable)
            for config in configs:
                if config.platform() != _TENSORFLOW:
                    raise ServingError.invalid_argument(
                        f"Model {config.name} requests unsupported platform {config.platform()}"
                    )
            new_models = []
            for config in configs:
                model = self._models.get(config.name)
                if model is None:
                    model = _Model(config, self._retired.pop(config.name, {}))
                    self._models[config.name] = model
                    new_models.append(config.name)
                else:
                    model.config = config
            names = {config.name for config in configs}
            for name in list(self._models):
                if name not in names:
                    self._remove_model(name)
            self._set_labels(configs)
        self.poll_once()
        failures = self.wait_until_available(new_models, timeout=wait_timeout)
        if failures:
            what = "servable(s)" if first else "model(s)"
            details = "".join(
                f"{{{{name: {name} version: {status.version}}}"
                + (f" due to error: {status.error.status_string()}" if status.error else "")
                + "}, "
                if status is not None
                else f"{{{{name: {name}}} still loading}}, "
                for name, status in sorted(failures.items())
            )
            raise ServingError(
                Code.UNKNOWN, f"{len(failures)} {what} did not become available: {{{details}}}"
            )

    def _validate(self, configs: list[ServedModelConfig], first: bool) -> None:
        """ValidateModelConfigList, then (on reload) ValidateNoModelsChangePlatforms."""
        seen: set[str] = set()
        for config in configs:
            if config.name in seen:
                raise ServingError.invalid_argument(
                    f"Illegal to list model {config.name} multiple times in config list"
                )
            seen.add(config.name)
        for config in configs:
            path = config.base_path
            if not _URI_SCHEME.match(path) and not path.startswith("/"):
                raise ServingError.invalid_argument(
                    f"Expected model {config.name} to have an absolute path or URI; "
                    f"got base_path()={path}"
                )
        if first:
            return
        for config in configs:
            model = self._models.get(config.name)
            if model is None:
                continue
            old, new = model.config.platform(), config.platform()
            if new != old:
                raise ServingError.invalid_argument(
                    "Illegal to change a model's platform. For model "
                    f"{config.name} platform was {old} and new platform requested is {new}"
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

    def _remove_model(self, name: str) -> None:
        model = self._models.pop(name)
        model.removed = True
        model.cancelled |= model.loading
        self._retired[name] = model.statuses
        for version in list(model.loaded):
            self._unload(model, version)
        model.routes = _Routes(available={}, labels=None)
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
        """One FileSystemStoragePathSource poll: every model's aspired versions, or nothing
        at all when one base path cannot be listed (PollFileSystemForConfig stops there)."""
        with self._lock:
            models = list(self._models.values())
        listed: list[tuple[_Model, dict[int, str]]] = []
        for model in models:
            try:
                listed.append((model, self._aspired_versions(model.config)))
            except _PollError as error:
                log_event(
                    logger,
                    "base_path_unreadable",
                    logging.ERROR,
                    model=model.config.name,
                    detail="FileSystemStoragePathSource encountered a filesystem access error: "
                    f"{error}",
                )
                return
        with self._lock:
            for model, versions in listed:
                if model.removed:
                    continue
                model.folder_names = versions
                aspired = set(versions)
                # Un-aspired while loading: the load is cancelled (LoaderHarness::Load).
                model.cancelled |= model.loading - aspired
                model.aspired = aspired
                # A failed version may load again once it left and came back.
                model.failed &= aspired
                self._reconcile(model)

    def _aspired_versions(self, config: ServedModelConfig) -> dict[int, str]:
        """PollFileSystemForServable: aspired version -> folder name under the base path."""
        base = Path(config.base_path)
        name, policy = config.name, config.policy
        if not base.exists():
            raise _PollError(
                f"Could not find base path {config.base_path} for servable {name} with error "
                f"NOT_FOUND: {config.base_path}; No such file or directory"
            )
        if policy.kind == "specific":
            if not policy.versions:
                log_event(
                    logger,
                    "no_specific_versions",
                    logging.WARNING,
                    detail=f"No specific versions requested for servable {name}.",
                )
                return {}
            # The fast path: every version under its plain decimal name.
            if all((base / str(version)).exists() for version in policy.versions):
                return {version: str(version) for version in policy.versions}
        try:
            children = sorted(os.listdir(base))  # files too, as GetChildren
        except OSError as error:
            raise _PollError(f"{error.strerror}: {config.base_path}") from None
        by_version: dict[int, str] = {}  # IndexChildrenByVersion: the last one wins
        first_of: dict[int, str] = {}  # AspireAllVersions manages the first one
        for child in children:
            number = parse_version_number(child)
            if number is None:
                continue
            if number in by_version:
                log_event(
                    logger,
                    "duplicate_version",
                    logging.WARNING,
                    detail=f"Duplicate version directories detected. Version {number} will "
                    f"be loaded from {child}, {by_version[number]} will be ignored.",
                )
            by_version[number] = child
            first_of.setdefault(number, child)
        if policy.kind == "all":
            aspired = first_of
        elif policy.kind == "specific":
            aspired = {v: by_version[v] for v in policy.versions if v in by_version}
            for missing in sorted(set(policy.versions) - set(by_version)):
                log_event(
                    logger,
                    "specific_version_missing",
                    logging.WARNING,
                    detail=f"Version {missing} of servable {name}, which was requested to be "
                    "served as a 'specific' version in the servable's version policy, was not "
                    "found in the file system",
                )
        else:
            newest = sorted(by_version, reverse=True)[: max(1, policy.num_versions)]
            aspired = {version: by_version[version] for version in newest}
        if not aspired:
            log_event(
                logger,
                "no_versions",
                logging.WARNING,
                model=name,
                detail=f"No versions of servable {name} found under base path "
                f"{config.base_path}. Did you forget to name your leaf directory as a number "
                "(eg. '/1/')?",
            )
        return aspired

    def _folder(self, model: _Model, version: int) -> Path:
        return Path(model.config.base_path) / model.folder_names.get(version, str(version))

    def _reconcile(self, model: _Model) -> None:
        """Availability-preserving: load aspired versions, unload the rest once one is ready."""
        aspired = model.aspired
        for version in sorted(aspired, reverse=True):
            if (
                version in model.loaded
                or version in model.loading
                or version in model.failed
                # Re-aspired while unloading: loaded again once the unload is done.
                or version in model.unloading
            ):
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
        model.cancelled.discard(version)
        model.statuses[version] = VersionStatus(version, VersionState.START)
        log_event(logger, "version_aspired", model=model.config.name, version=version)
        self._executor.submit(self._load, model, version, self._folder(model, version))

    def _end(self, model: _Model, status: VersionStatus) -> None:
        """Record a version reaching AVAILABLE or END (call with the lock held)."""
        model.statuses[status.version] = status
        if model.first_outcome is None:
            model.first_outcome = status
        self._changed.notify_all()

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
                still_wanted = version not in model.cancelled
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
                    self._end(model, VersionStatus(version, VersionState.END, error))
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
            if version in model.cancelled:
                # LoaderHarness::Load: un-aspired while loading, so unloaded at once and never
                # AVAILABLE; the state says why.
                model.cancelled.discard(version)
                loaded.close()
                cancelled = ServingError(Code.CANCELLED, "Loading of servable cancelled")
                self._end(model, VersionStatus(version, VersionState.END, cancelled))
                log_event(logger, "version_load_cancelled", model=name, version=version)
                if not model.removed:
                    self._reconcile(model)
                return
            model.loaded[version] = loaded
            model.routes = _Routes(
                available={**model.routes.available, version: loaded}, labels=model.routes.labels
            )
            self._end(model, VersionStatus(version, VersionState.AVAILABLE))
            log_event(logger, "version_available", model=name, version=version)
            self._reconcile(model)

    def _unload(self, model: _Model, version: int) -> None:
        """BasicManager::ExecuteUnload: UNLOADING (no new request reaches it), then, once the
        requests holding it are done, unloaded and END."""
        loaded = model.loaded.pop(version)
        model.unloading.add(version)
        model.statuses[version] = VersionStatus(version, VersionState.UNLOADING)
        available = {v: item for v, item in model.routes.available.items() if v != version}
        model.routes = _Routes(available=available, labels=model.routes.labels)
        log_event(logger, "version_unloading", model=model.config.name, version=version)
        threading.Thread(
            target=self._finish_unload,
            args=(model, version, loaded),
            name=f"unload-{model.config.name}-{version}",
            daemon=True,
        ).start()

    def _finish_unload(self, model: _Model, version: int, loaded: LoadedVersion) -> None:
        loaded.wait_idle()
        loaded.close()
        with self._changed:
            model.unloading.discard(version)
            self._end(model, VersionStatus(version, VersionState.END))
            log_event(logger, "version_unloaded", model=model.config.name, version=version)
            if not model.removed:
                self._reconcile(model)

    # -- waiting -------------------------------------------------------------------------------

    def wait_until_available(
        self, names: Iterable[str] | None = None, timeout: float | None = None
    ) -> dict[str, VersionStatus | None]:
        """Block until, for each model, a first version ended up AVAILABLE or END.

        Returns the models whose first such version ended END (with that status), and on
        timeout those still undecided (None). A model without any version waits forever, as
        TF Serving's does.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            wanted = list(self._models) if names is None else list(names)
            while True:
                pending: list[str] = []
                failed: dict[str, VersionStatus | None] = {}
                for name in wanted:
                    model = self._models.get(name)
                    if model is None:
                        continue
                    outcome = model.first_outcome
                    if outcome is None:
                        pending.append(name)
                    elif outcome.state != VersionState.AVAILABLE:
                        failed[name] = outcome
                if not pending:
                    return failed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return {**failed, **dict.fromkeys(pending)}
                self._changed.wait(remaining if remaining is not None else 1.0)

    def stop(self) -> None:
        self._stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for model in self._models.values():
                for loaded in model.loaded.values():
                    loaded.close()

    # -- the request path ----------------------------------------------------------------------

    @contextlib.contextmanager
    def handle(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[LoadedVersion]:
        """The version a request targets, held for the request (GetServableHandle)."""
        loaded = self._acquire(name, version, label)
        try:
            yield loaded
        finally:
            loaded.release()

    def _acquire(self, name: str, version: int | None, label: str | None) -> LoadedVersion:
        while True:
            model = self._models.get(name)
            routes = model.routes if model is not None else None
            loaded = self._pick(name, routes, version, label)
            loaded.acquire()
            # Still routable once held: an unload that started meanwhile (and may have seen
            # no holder) took it out of the routes first, so let go and resolve again.
            current = self._models.get(name)
            if (
                current is model
                and current is not None
                and current.routes.available.get(loaded.version) is loaded
            ):
                return loaded
            loaded.release()

    @staticmethod
    def _pick(
        name: str, routes: _Routes | None, version: int | None, label: str | None
    ) -> LoadedVersion:
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
            statuses = dict(model.statuses if model is not None else self._retired.get(name, {}))
        if version is not None:
            if version not in statuses:
                raise ServingError.not_found(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise ServingError.not_found(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]
