"""Settings plumbing shared by every deployable, and the storage settings themselves.

`EnvReader` reads typed values from an environment mapping and collects every problem, so a
deployable's `Settings.from_env(environ)` reports all bad values at once. `load_environment`
merges a `.env` file (where present) under the real environment. Nothing here, or anywhere
below the deployables' edges, reads `os.environ` by itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from storage.keys import check_model_name

__all__ = [
    "DEFAULT_MODEL_NAME",
    "EnvReader",
    "SettingsError",
    "StorageSettings",
    "load_environment",
    "parse_dotenv",
    "read_model_name",
]

T = TypeVar("T")

# The served model's name when MODEL_NAME (or the original PROD_MODEL_NAME) is not set.
DEFAULT_MODEL_NAME = "cnn_vit"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """Every invalid or missing setting of a deployable, reported together."""

    def __init__(self, deployable: str, problems: list[str]) -> None:
        self.deployable = deployable
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid {deployable} settings:\n{lines}")


_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_dotenv(text: str) -> dict[str, str]:
    """`KEY=value` lines; `#` comments; single or double quotes; `export` prefix allowed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if not match:
            continue
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
            if line.split("=", 1)[1].strip()[0] == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"')
        else:
            value = re.sub(r"\s+#.*$", "", value)
        values[name] = value
    return values


def load_environment(
    environ: Mapping[str, str] | None = None, dotenv: str | Path | None = ".env"
) -> dict[str, str]:
    """The environment to build settings from: `.env` values, overridden by real variables.

    Called once at a deployable's edge (its `main`); everything below receives the mapping.
    """
    merged: dict[str, str] = {}
    if dotenv is not None:
        path = Path(dotenv)
        if path.is_file():
            merged.update(parse_dotenv(path.read_text(encoding="utf-8")))
    merged.update(os.environ if environ is None else environ)
    return merged


class EnvReader:
    """Typed, validated reads from an environment mapping, collecting problems."""

    def __init__(self, environ: Mapping[str, str], deployable: str) -> None:
        self._environ = environ
        self.deployable = deployable
        self.problems: list[str] = []
        # Every variable name this reader was asked for: the static infra checks use it to
        # prove that each variable a manifest sets is one the settings know.
        self.names_read: set[str] = set()

    def raw(self, name: str, *aliases: str) -> tuple[str, str] | None:
        """(name actually used, value) of the first of `name`, `aliases` that is set."""
        self.names_read.update((name, *aliases))
        for candidate in (name, *aliases):
            value = self._environ.get(candidate)
            if value is not None and value.strip() != "":
                return candidate, value.strip()
        return None

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def string(self, name: str, default: str, *aliases: str) -> str:
        found = self.raw(name, *aliases)
        return default if found is None else found[1]

    def optional(self, name: str, *aliases: str) -> str | None:
        found = self.raw(name, *aliases)
        return None if found is None else found[1]

    def _convert(
        self, name: str, default: T, convert: Callable[[str], T], what: str, *aliases: str
    ) -> T:
        found = self.raw(name, *aliases)
        if found is None:
            return default
        used, value = found
        try:
            return convert(value)
        except (TypeError, ValueError):
            self.problem(f"{used}={value!r} is not {what}")
            return default

    def integer(
        self,
        name: str,
        default: int,
        *aliases: str,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self._convert(name, default, int, "an integer", *aliases)
        return self._bounded(name, value, default, minimum, maximum)

    def number(
        self,
        name: str,
        default: float,
        *aliases: str,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self._convert(name, default, float, "a number", *aliases)
        if value != value:  # NaN
            self.problem(f"{name} is not a number")
            return default
        return self._bounded(name, value, default, minimum, maximum)

    def _bounded(self, name: str, value: T, default: T, minimum: T | None, maximum: T | None) -> T:
        if minimum is not None and value < minimum:  # type: ignore[operator]
            self.problem(f"{name}={value} is below the minimum {minimum}")
            return default
        if maximum is not None and value > maximum:  # type: ignore[operator]
            self.problem(f"{name}={value} is above the maximum {maximum}")
            return default
        return value

    def boolean(self, name: str, default: bool, *aliases: str) -> bool:
        def convert(value: str) -> bool:
            lowered = value.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(value)

        return self._convert(name, default, convert, "a boolean (true/false)", *aliases)

    def choice(self, name: str, default: str, choices: tuple[str, ...], *aliases: str) -> str:
        found = self.raw(name, *aliases)
        if found is None:
            return default
        used, value = found
        if value not in choices:
            self.problem(f"{used}={value!r} is not one of {', '.join(choices)}")
            return default
        return value

    def check(self) -> None:
        """Raise SettingsError listing every problem found so far."""
        if self.problems:
            raise SettingsError(self.deployable, self.problems)


def read_model_name(env: EnvReader) -> str:
    """`MODEL_NAME` (alias `PROD_MODEL_NAME`, the original system's name), default `cnn_vit`.

    Read into the deployable's reader: a name that is not a valid key segment is one of its
    problems (and the default is returned so the other checks can go on).
    """
    name = env.string("MODEL_NAME", DEFAULT_MODEL_NAME, "PROD_MODEL_NAME")
    try:
        return check_model_name(name)
    except ValueError:
        env.problem(f"MODEL_NAME={name!r} is not a valid model name")
        return DEFAULT_MODEL_NAME


def _is_storage_url(value: str) -> bool:
    return value.startswith(("s3://", "file://", "/", "./", "../")) or "://" not in value


@dataclass(frozen=True)
class StorageSettings:
    """Where the storage hierarchy lives, and how to reach an S3-compatible bucket.

    `url` is a directory, `file:///abs/dir` or `s3://bucket[/prefix]`. `db_auth_url` and
    `db_url` move the users area and the image database elsewhere (even another bucket).
    """

    url: str = "./store"
    db_auth_url: str | None = None
    db_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_connect_timeout: float = 2.0
    s3_read_timeout: float = 10.0
    s3_max_attempts: int = 3

    @classmethod
    def read(cls, env: EnvReader) -> StorageSettings:
        """Read into an existing reader (so the deployable reports all problems together)."""
        url = env.string("STORAGE_URL", "./store", "STORAGE_PATH")
        settings = cls(
            url=url,
            db_auth_url=env.optional("DB_AUTH_STORAGE_PATH", "DB_AUTH_STORAGE_URL"),
            db_url=env.optional("DB_STORAGE_PATH", "DB_STORAGE_URL"),
            s3_endpoint_url=env.optional("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"),
            s3_region=env.optional("AWS_REGION", "AWS_DEFAULT_REGION"),
            s3_connect_timeout=env.number("S3_CONNECT_TIMEOUT", 2.0, minimum=0.1, maximum=60),
            s3_read_timeout=env.number("S3_READ_TIMEOUT", 10.0, minimum=0.1, maximum=300),
            s3_max_attempts=env.integer("S3_MAX_ATTEMPTS", 3, minimum=1, maximum=10),
        )
        for name, value in (
            ("STORAGE_URL", settings.url),
            ("DB_AUTH_STORAGE_PATH", settings.db_auth_url),
            ("DB_STORAGE_PATH", settings.db_url),
        ):
            if value is not None and not _is_storage_url(value):
                env.problem(f"{name}={value!r} is not a directory, file:// or s3:// URL")
            if value is not None and value.startswith("s3://") and len(value) <= len("s3://"):
                env.problem(f"{name}={value!r} names no bucket")
        if settings.s3_endpoint_url and not settings.s3_endpoint_url.startswith(
            ("http://", "https://")
        ):
            env.problem(f"S3_ENDPOINT_URL={settings.s3_endpoint_url!r} is not an http(s) URL")
        return settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StorageSettings:
        env = EnvReader(environ, "storage")
        settings = cls.read(env)
        env.check()
        return settings

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")
