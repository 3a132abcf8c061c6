"""Settings plumbing shared by every deployable: typed reads from the environment, `.env` files.

`EnvReader` reads typed values from an environment mapping and collects every problem, so a
deployable's `Settings.from_env(environ)` reports all bad values at once. `load_environment`
merges a `.env` file (where present) under the real environment. Nothing here, or anywhere
below the deployables' edges, reads `os.environ` by itself. Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

__all__ = ["EnvReader", "SettingsError", "load_environment", "parse_dotenv"]

T = TypeVar("T")

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
