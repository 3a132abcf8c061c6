"""Per-process singletons: settings, stores, the model client, users, tokens and the cores.

Nothing is built at import time. Creating a function's app (`functions_framework.create_app`,
which runs `functions/main.py`) builds the `Runtime`'s settings from the environment
(`common.settings.load_environment()`: real variables over `.env`), so bad settings stop the start;
every request, on any thread, reuses it: settings parsed once, stores and clients made on first
use and then shared (pooled model-server connections, one cached users file).
Tests install a runtime of their own (`install_runtime`), built from an explicit environment or
with a wrapped store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from functools import cached_property

from common.settings import load_environment
from functions import metrics
from functions.auth import Authenticator
from functions.history import HistoryService
from functions.inference import InferenceService
from functions.logs import configure_logging
from functions.passwords import PasswordHasher
from functions.serving_client import ServingClient
from functions.settings import FunctionSettings
from functions.throttle import LoginThrottle
from functions.tokens import TokenService
from functions.traffic import CANARY_LABEL
from functions.users import SeedUser, UserDirectory
from storage import Store, open_areas

__all__ = ["Runtime", "get_runtime", "install_runtime", "reset_runtime"]


class Runtime:
    """Everything a request needs, each part built on first use and then shared."""

    def __init__(
        self,
        settings: FunctionSettings,
        *,
        root_store: Store | None = None,
        auth_store: Store | None = None,
        serving: ServingClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        # Wall-clock time of the login throttle (tests pass a clock they can move).
        self.clock = clock
        self._root_store = root_store
        self._auth_store = auth_store
        self._serving = serving
        self._areas_lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Runtime:
        return cls(FunctionSettings.from_env(environ))

    def _open_areas(self) -> None:
        with self._areas_lock:
            if self._root_store is None or self._auth_store is None:
                areas = open_areas(self.settings.storage)
                # Timed and counted when metrics are on (METRICS_PORT); as is otherwise.
                self._root_store = self._root_store or metrics.metered(areas.root, "root")
                self._auth_store = self._auth_store or metrics.metered(areas.auth, "auth")

    @property
    def root_store(self) -> Store:
        if self._root_store is None:
            self._open_areas()
        assert self._root_store is not None
        return self._root_store

    @property
    def auth_store(self) -> Store:
        if self._auth_store is None:
            self._open_areas()
        assert self._auth_store is not None
        return self._auth_store

    @cached_property
    def serving(self) -> ServingClient:
        return self._serving or ServingClient(self.settings.serving)

    @cached_property
    def hasher(self) -> PasswordHasher:
        return PasswordHasher(self.settings.password_hash)

    @cached_property
    def users(self) -> UserDirectory:
        settings = self.settings
        seed = None
        if settings.api_user_email and settings.api_user_password:
            seed = SeedUser(settings.api_user_email, settings.api_user_password)
        return UserDirectory(
            self.auth_store,
            cache_seconds=settings.users_cache_seconds,
            stale_seconds=settings.users_stale_seconds,
            seed=seed,
            hasher=self.hasher,
        )

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(self.settings)

    @cached_property
    def login_throttle(self) -> LoginThrottle:
        return LoginThrottle(
            self.auth_store,
            self.settings.login_throttle,
            self.settings.secret_key,
            clock=self.clock,
        )

    @cached_property
    def authenticator(self) -> Authenticator:
        return Authenticator(self.users, self.hasher, self.tokens, self.login_throttle)

    @cached_property
    def inference(self) -> InferenceService:
        return InferenceService(
            self.root_store,
            self.serving,
            refer_below=self.settings.refer_below,
            canary=self.canary_serving,
            traffic=self.settings.traffic,
        )

    @cached_property
    def canary_serving(self) -> ServingClient | None:
        """The client of the `canary` label when traffic goes to it (CANARY_PERCENT, SHADOW):
        its own connection pool, circuit breaker and bulkhead. One attempt per call: a canary
        that fails is replaced by the stable model (or, for a shadow, recorded as failed)."""
        traffic = self.settings.traffic
        if not traffic.uses_canary:
            return None
        settings = replace(self.settings.serving, model_label=CANARY_LABEL, max_attempts=1)
        return ServingClient(settings)

    @cached_property
    def history(self) -> HistoryService:
        return HistoryService(
            self.root_store,
            self.settings.secret_key,
            default_window=timedelta(hours=self.settings.history_default_hours),
        )


_current: Runtime | None = None
_current_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built from the environment on first use (SettingsError if bad).

    `functions/main.py` calls it when an app is created, so a deployed function checks its
    settings at start, as the gateway does.
    """
    global _current
    runtime = _current
    if runtime is not None:
        return runtime
    with _current_lock:
        if _current is None:
            settings = FunctionSettings.from_env(load_environment())
            configure_logging(settings.log_level)
            _current = Runtime(settings)
        return _current


def install_runtime(runtime: Runtime) -> Runtime:
    """Use `runtime` for every following request of this process (tests, the gateway)."""
    global _current
    with _current_lock:
        configure_logging(runtime.settings.log_level)
        _current = runtime
    return runtime


def reset_runtime() -> None:
    global _current
    with _current_lock:
        _current = None
