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


# The `.env` grammar python-dotenv reads (the original system's loader), so its files read the
# same here: `[export] KEY = value` with spaces around `=`; values unquoted (to the end of the
# line, an inline `#` comment after white space dropped), 'single-quoted' (escapes \\ and \')
# or "double-quoted" (backslash escapes; may span lines); `#` comment lines; blank lines.
_KEY = re.compile(r"[ \t]*(?:export[ \t]+)?(?:'([^']+)'|([^=#\s]+))[ \t]*")
_SINGLE_QUOTED = re.compile(r"'((?:\\'|[^'])*)'")
_DOUBLE_QUOTED = re.compile(r'"((?:\\"|[^"])*)"')
_SINGLE_ESCAPES = re.compile(r"\\[\\']")
_DOUBLE_ESCAPES = re.compile(r"\\[\\'\"abfnrtv]")
_ESCAPED = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_LINE_END = re.compile(r"[ \t]*(?:#[^\r\n]*)?(?:\r\n|\n|\r|$)")
_REST_OF_LINE = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)?")
# POSIX-style references: ${NAME} or ${NAME:-default}.
_REFERENCE = re.compile(r"\$\{([^}:]*)(?::-([^}]*))?\}")


def _unescape(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(lambda match: _ESCAPED.get(match.group(0)[1], match.group(0)[1]), text)


def _dotenv_value(text: str, position: int, after_spaces: bool) -> tuple[str, int]:
    """The value starting at `position`, and where it ends."""
    for pattern, escapes in ((_SINGLE_QUOTED, _SINGLE_ESCAPES), (_DOUBLE_QUOTED, _DOUBLE_ESCAPES)):
        match = pattern.match(text, position)
        if match:
            return _unescape(escapes, match.group(1)), match.end()
    end = len(text)
    for newline in "\r\n":
        found = text.find(newline, position)
        if found != -1:
            end = min(end, found)
    raw = text[position:end]
    if after_spaces and raw.startswith("#"):
        return "", end  # `KEY=  # comment`: an empty value
    return re.sub(r"\s+#.*", "", raw).rstrip(), end


def _expand(value: str, known: Mapping[str, str]) -> str:
    def resolve(match: re.Match[str]) -> str:
        found = known.get(match.group(1))
        return (match.group(2) or "") if found is None else found

    return _REFERENCE.sub(resolve, value)


def parse_dotenv(text: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of a `.env` text, read as python-dotenv reads it.

    `${NAME}` and `${NAME:-default}` expand to the real environment's value (`environ`) if it has
    one, else to an earlier line's, else to the default (or nothing): the real environment wins,
    as it does over the file's own values. Lines that do not parse are skipped.
    """
    real = environ or {}
    values: dict[str, str] = {}
    position = 0
    text = text.removeprefix("\ufeff")
    while position < len(text):
        blank = re.compile(r"\s*").match(text, position)
        position = blank.end() if blank else position
        if position >= len(text):
            break
        key = _KEY.match(text, position)
        if text[position] == "#" or key is None:
            rest = _REST_OF_LINE.match(text, position)
            position = rest.end() if rest and rest.end() > position else position + 1
            continue
        name = key.group(1) or key.group(2)
        position = key.end()
        if not text.startswith("=", position):
            rest = _REST_OF_LINE.match(text, position)
            position = rest.end() if rest and rest.end() > position else position + 1
            continue
        spaces = re.compile(r"=[ \t]*").match(text, position)
        assert spaces is not None
        value, position = _dotenv_value(text, spaces.end(), len(spaces.group(0)) > 1)
        end = _LINE_END.match(text, position)
        if end is None:  # text after a closing quote: not a binding python-dotenv reads
            rest = _REST_OF_LINE.match(text, position)
            position = rest.end() if rest and rest.end() > position else position + 1
            continue
        position = end.end()
        values[name] = _expand(value, {**values, **real})
    return values


def load_environment(
    environ: Mapping[str, str] | None = None, dotenv: str | Path | None = ".env"
) -> dict[str, str]:
    """The environment to build settings from: `.env` values, overridden by real variables.

    Called once at a deployable's edge (its `main`); everything below receives the mapping.
    """
    real = os.environ if environ is None else environ
    merged: dict[str, str] = {}
    if dotenv is not None:
        path = Path(dotenv)
        if path.is_file():
            merged.update(parse_dotenv(path.read_text(encoding="utf-8"), real))
    merged.update(real)
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
