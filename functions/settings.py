"""The functions' settings: one frozen object built from the environment at the edge.

`FunctionSettings.from_env(environ)` reads every variable the four functions, the users CLI and
the local gateway use, reports every bad value at once (`common.settings.SettingsError`), and
is passed down; nothing else in `functions/` reads the environment. Names of the original system
stay valid (`STORAGE_PATH`, `PROD_MODEL_NAME`, `ACESS_TOKEN_EXPIRE_MINUTE`, ...).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.logs import log_event
from common.settings import EnvReader
from functions.breaker import BreakerSettings
from functions.traffic import CANARY_LABEL, TrafficSettings
from model_contract.settings import DEFAULT_MODEL_NAME, read_model_name
from storage import StorageSettings

__all__ = [
    "ADVISED_TOKEN_MINUTES",
    "ENVIRONMENTS",
    "MAX_TOKEN_MINUTES",
    "MIN_SECRET_KEY_BYTES",
    "FunctionSettings",
    "LoginThrottleSettings",
    "PasswordHashSettings",
    "ServingSettings",
]

logger = logging.getLogger(__name__)

ENVIRONMENTS = ("production", "local")
# RFC 7518 §3.2: an HS256 key is at least as long as the hash output.
MIN_SECRET_KEY_BYTES = 32
# Token lifetime: the default and the advised ceiling (RFC 6750 §5.3), and the hard ceiling.
ADVISED_TOKEN_MINUTES = 60
MAX_TOKEN_MINUTES = 24 * 60
# How to make a key good enough, in every message that refuses one.
_MAKE_A_KEY = 'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(48))"'
# Cloud Run's request body limit (2nd gen) is 32 MiB; a larger cap could never be reached.
_UPLOAD_CEILING = 32 * 1024 * 1024
# Pillow refuses images above 2 x MAX_IMAGE_PIXELS itself and only warns below: a cap above
# its warning threshold (89,478,485) would let the warning zone through.
_PIXEL_CEILING = 89_478_485
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class ServingSettings:
    """Where the model server is and how patiently to call it (reliability.md §7)."""

    url: str = "http://127.0.0.1:8501"
    model_name: str = DEFAULT_MODEL_NAME
    # A version label (`stable`), a pinned version, or neither (the latest loaded version).
    model_label: str | None = "stable"
    model_version: int | None = None
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    max_attempts: int = 3
    deadline: float = 15.0
    pool_size: int = 16
    retry_after_seconds: int = 5
    breaker: BreakerSettings = field(default_factory=BreakerSettings)


@dataclass(frozen=True)
class PasswordHashSettings:
    """argon2id parameters for new hashes.

    The defaults are OWASP's first recommended configuration (19 MiB, 2 passes, 1 lane): about
    25 ms per hash here, and small enough that concurrent logins on a 256 MiB serverless
    instance do not run it out of memory. Tests use tiny values; production may raise them.
    """

    memory_kib: int = 19_456
    time_cost: int = 2
    parallelism: int = 1

    @classmethod
    def read(cls, env: EnvReader) -> PasswordHashSettings:
        return cls(
            memory_kib=env.integer(
                "PASSWORD_HASH_MEMORY_KIB", 19_456, minimum=8, maximum=4_194_304
            ),
            time_cost=env.integer("PASSWORD_HASH_TIME_COST", 2, minimum=1, maximum=100),
            parallelism=env.integer("PASSWORD_HASH_PARALLELISM", 1, minimum=1, maximum=64),
        )


@dataclass(frozen=True)
class LoginThrottleSettings:
    """Brute-force limits of the token endpoint (functions/throttle.py explains the design).

    10 failures per username per 15 minutes is ten times stricter than ASVS 4's ceiling of 100
    per hour; 100 per client address per window leaves room for a clinic behind one NAT.
    """

    max_failures_per_user: int = 10
    max_failures_per_client: int = 100
    window_seconds: int = 900
    # How many reverse proxies in front of the functions append to X-Forwarded-For (Cloud Run:
    # 1). 0 trusts no header: the connection's address counts.
    trusted_proxy_hops: int = 0

    @classmethod
    def read(cls, env: EnvReader) -> LoginThrottleSettings:
        return cls(
            max_failures_per_user=env.integer(
                "LOGIN_MAX_FAILURES_PER_USER", 10, minimum=1, maximum=1_000_000
            ),
            max_failures_per_client=env.integer(
                "LOGIN_MAX_FAILURES_PER_CLIENT", 100, minimum=1, maximum=1_000_000
            ),
            window_seconds=env.integer("LOGIN_WINDOW_SECONDS", 900, minimum=1, maximum=86_400),
            trusted_proxy_hops=env.integer("TRUSTED_PROXY_HOPS", 0, minimum=0, maximum=10),
        )


@dataclass(frozen=True)
class FunctionSettings:
    storage: StorageSettings = field(default_factory=StorageSettings)
    environment: str = "production"
    secret_key: str = field(default="", repr=False)
    secret_key_generated: bool = False
    algorithm: str = "HS256"
    access_token_expire_minutes: int = 60
    jwt_issuer: str = "xray-serverless"
    jwt_audience: str = "xray-api"
    jwt_leeway_seconds: int = 30
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 50_000_000
    history_page_max: int = 100
    history_default_hours: int = 24
    # Refer an answer whose top probability is below this; None: the model's own threshold.
    refer_below: float | None = None
    users_cache_seconds: float = 5.0
    # How long past `users_cache_seconds` the cached users still answer while the users file
    # cannot be read (a storage outage): a user disabled meanwhile may pass for that long.
    users_stale_seconds: float = 60.0
    serving: ServingSettings = field(default_factory=ServingSettings)
    traffic: TrafficSettings = field(default_factory=TrafficSettings)
    password_hash: PasswordHashSettings = field(default_factory=PasswordHashSettings)
    login_throttle: LoginThrottleSettings = field(default_factory=LoginThrottleSettings)
    api_port: int = 8080
    api_user_email: str | None = None
    api_user_password: str | None = field(default=None, repr=False)
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FunctionSettings:
        """Every setting from `environ`; raises SettingsError listing every problem."""
        env = EnvReader(environ, "functions")
        storage = StorageSettings.read(env)
        environment = env.choice("ENVIRONMENT", "production", ENVIRONMENTS)
        secret_key, generated = _read_secret_key(env, environment)
        algorithm = env.string("ALGORITHM", "HS256", "JWT_ALGORITHM")
        if algorithm != "HS256":
            # RFC 8725 §3.1: one key, one algorithm; asymmetric keys are not configured here.
            env.problem(f"ALGORITHM={algorithm!r} is not supported: only HS256 is")
        settings = cls(
            storage=storage,
            environment=environment,
            secret_key=secret_key,
            secret_key_generated=generated,
            algorithm="HS256",
            # RFC 6750 §5.3 advises an hour or less (the default); the original system's
            # template says 120, so up to a day is honoured, with a warning past the hour.
            access_token_expire_minutes=env.integer(
                "ACCESS_TOKEN_EXPIRE_MINUTES",
                60,
                "ACESS_TOKEN_EXPIRE_MINUTE",
                minimum=1,
                maximum=MAX_TOKEN_MINUTES,
            ),
            jwt_issuer=env.string("JWT_ISSUER", "xray-serverless"),
            jwt_audience=env.string("JWT_AUDIENCE", "xray-api"),
            jwt_leeway_seconds=env.integer("JWT_LEEWAY_SECONDS", 30, minimum=0, maximum=60),
            max_upload_bytes=env.integer(
                "MAX_UPLOAD_BYTES", 10 * 1024 * 1024, minimum=1024, maximum=_UPLOAD_CEILING
            ),
            max_pixels=env.integer("MAX_PIXELS", 50_000_000, minimum=1, maximum=_PIXEL_CEILING),
            history_page_max=env.integer("HISTORY_PAGE_MAX", 100, minimum=1, maximum=1000),
            history_default_hours=env.integer("HISTORY_DEFAULT_HOURS", 24, minimum=1, maximum=8784),
            refer_below=(
                env.number("REFER_BELOW", 0.0, minimum=0, maximum=1)
                if env.optional("REFER_BELOW") is not None
                else None
            ),
            users_cache_seconds=env.number("USERS_CACHE_SECONDS", 5.0, minimum=0, maximum=300),
            users_stale_seconds=env.number("USERS_STALE_SECONDS", 60.0, minimum=0, maximum=3600),
            serving=_read_serving(env, environ),
            traffic=_read_traffic(env),
            password_hash=PasswordHashSettings.read(env),
            login_throttle=LoginThrottleSettings.read(env),
            api_port=env.integer("API_PORT", 8080, minimum=1, maximum=65535),
            api_user_email=env.optional("API_USER_EMAIL"),
            api_user_password=env.optional("API_USER_PASSWORD"),
            log_level=env.choice("LOG_LEVEL", "INFO", _LOG_LEVELS),
        )
        if settings.traffic.uses_canary and settings.serving.model_label != "stable":
            env.problem(
                "CANARY_PERCENT and SHADOW route between the stable and canary labels: "
                "they need MODEL_LABEL=stable (the default) and no MODEL_VERSION"
            )
        if (settings.api_user_email is None) != (settings.api_user_password is None):
            env.problem("API_USER_EMAIL and API_USER_PASSWORD must be set together")
        env.check()
        if settings.access_token_expire_minutes > ADVISED_TOKEN_MINUTES:
            log_event(
                logger,
                "token_lifetime_long",
                logging.WARNING,
                f"tokens live {settings.access_token_expire_minutes} minutes: a stolen token "
                f"stays good that long (RFC 6750 advises {ADVISED_TOKEN_MINUTES} or less)",
                minutes=settings.access_token_expire_minutes,
            )
        if generated:
            log_event(
                logger,
                "secret_key_generated",
                logging.WARNING,
                "SECRET_KEY is not set: a random key was generated for this process "
                "(ENVIRONMENT=local only); tokens will not survive a restart or work across "
                "separately started functions",
            )
        return settings


def _read_secret_key(env: EnvReader, environment: str) -> tuple[str, bool]:
    """The JWT key: at least 32 bytes in every environment; only local may leave it unset.

    ENVIRONMENT=local relaxes one rule, the missing key (a strong one is generated per
    process); a short key is refused there too, since local stacks are reachable and tokens
    signed with a guessable key can be forged by anyone.
    """
    secret = env.optional("SECRET_KEY")
    if secret is None:
        if environment == "local":
            return secrets.token_urlsafe(48), True
        env.problem(
            f"SECRET_KEY is required (at least {MIN_SECRET_KEY_BYTES} random bytes) outside "
            f"ENVIRONMENT=local; {_MAKE_A_KEY}"
        )
        return "", False
    if len(secret.encode("utf-8")) < MIN_SECRET_KEY_BYTES:
        env.problem(
            f"SECRET_KEY is shorter than {MIN_SECRET_KEY_BYTES} bytes, in every ENVIRONMENT "
            f"(a guessable key lets anyone sign tokens); {_MAKE_A_KEY}, or unset it with "
            "ENVIRONMENT=local to get a generated one"
        )
    return secret, False


def _read_serving(env: EnvReader, environ: Mapping[str, str]) -> ServingSettings:
    url = env.string("TF_SERVING_URL", "http://127.0.0.1:8501").rstrip("/")
    if not url.startswith(("http://", "https://")):
        env.problem(f"TF_SERVING_URL={url!r} is not an http(s) URL")
    model_name = read_model_name(env)
    version_text = env.optional("MODEL_VERSION")
    model_version: int | None = None
    if version_text is not None:
        if version_text.isascii() and version_text.isdigit() and int(version_text) >= 1:
            model_version = int(version_text)
        else:
            env.problem(f"MODEL_VERSION={version_text!r} is not a positive integer")
    # MODEL_LABEL set but empty means "the latest loaded version"; unset means `stable`.
    label_set_empty = "MODEL_LABEL" in environ and not environ["MODEL_LABEL"].strip()
    label: str | None = None if label_set_empty else env.string("MODEL_LABEL", "stable")
    if model_version is not None:
        if env.optional("MODEL_LABEL") is not None:
            env.problem("MODEL_LABEL and MODEL_VERSION exclude each other")
        label = None
    if label is not None and not label.replace("_", "").replace("-", "").isalnum():
        env.problem(f"MODEL_LABEL={label!r} is not a valid version label")
    connect_timeout = env.number("TF_SERVING_CONNECT_TIMEOUT", 2.0, minimum=0.05, maximum=30)
    read_timeout = env.number("TF_SERVING_READ_TIMEOUT", 10.0, minimum=0.05, maximum=120)
    deadline = env.number("TF_SERVING_DEADLINE", 15.0, minimum=0.1, maximum=300)
    return ServingSettings(
        url=url,
        model_name=model_name,
        model_label=label,
        model_version=model_version,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_attempts=env.integer(
            "TF_SERVING_MAX_ATTEMPTS", 3, "TF_SERVING_ATTEMPTS", minimum=1, maximum=10
        ),
        deadline=deadline,
        pool_size=env.integer("TF_SERVING_POOL_SIZE", 16, minimum=1, maximum=256),
        retry_after_seconds=env.integer("RETRY_AFTER_SECONDS", 5, minimum=1, maximum=3600),
        breaker=_read_breaker(env),
    )


def _read_traffic(env: EnvReader) -> TrafficSettings:
    percent = env.number("CANARY_PERCENT", 0.0, minimum=0, maximum=100)
    shadow = env.optional("SHADOW")
    shadow = shadow.strip().lower() if shadow is not None else None
    if shadow in ("", "none", "off"):
        shadow = None
    if shadow is not None and shadow != CANARY_LABEL:
        env.problem(f"SHADOW={shadow!r} is not supported: only SHADOW=canary (or unset)")
        shadow = None
    if shadow is not None and percent > 0:
        env.problem(
            "SHADOW=canary and CANARY_PERCENT exclude each other: shadow first (every caller "
            "gets the stable answer), then a canary share"
        )
    return TrafficSettings(
        canary_percent=percent,
        shadow=shadow,
        shadow_budget_ms=env.number("SHADOW_BUDGET_MS", 200.0, minimum=0, maximum=10_000),
        shadow_max_in_flight=env.integer("SHADOW_MAX_IN_FLIGHT", 8, minimum=1, maximum=256),
    )


def _read_breaker(env: EnvReader) -> BreakerSettings:
    default = BreakerSettings()
    open_seconds = env.number(
        "TF_SERVING_BREAKER_OPEN_SECONDS", default.open_seconds, minimum=0.1, maximum=600
    )
    max_open = env.number(
        "TF_SERVING_BREAKER_MAX_OPEN_SECONDS", default.max_open_seconds, minimum=0.1, maximum=3600
    )
    if max_open < open_seconds:
        env.problem("TF_SERVING_BREAKER_MAX_OPEN_SECONDS is below TF_SERVING_BREAKER_OPEN_SECONDS")
    window = env.integer("TF_SERVING_BREAKER_WINDOW", default.window, minimum=1, maximum=1000)
    min_calls = env.integer(
        "TF_SERVING_BREAKER_MIN_CALLS", default.min_calls, minimum=1, maximum=1000
    )
    if min_calls > window:
        env.problem("TF_SERVING_BREAKER_MIN_CALLS is above TF_SERVING_BREAKER_WINDOW")
    return BreakerSettings(
        failures=env.integer(
            "TF_SERVING_BREAKER_FAILURES", default.failures, minimum=1, maximum=1000
        ),
        failure_rate=env.number(
            "TF_SERVING_BREAKER_FAILURE_RATE", default.failure_rate, minimum=0.01, maximum=1.0
        ),
        window=window,
        min_calls=min_calls,
        open_seconds=open_seconds,
        max_open_seconds=max(max_open, open_seconds),
        max_in_flight=env.integer(
            "TF_SERVING_MAX_IN_FLIGHT", default.max_in_flight, minimum=1, maximum=4096
        ),
    )
