"""The model manager in-process: which children of a base path count as versions.

As FileSystemStoragePathSource: a child is a version when absl::SimpleAtoi reads its whole name
as an int64 (ASCII whitespace around an optional sign and ASCII digits), file or folder alike;
of two children naming one version, `latest`/`specific` take the last in name order, `all` the
first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from serving.model_server.manager import (
    ModelManager,
    ServedModelConfig,
    VersionPolicy,
    parse_version_number,
)


class _FakeVersion:
    def close(self) -> None:
        pass

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    def wait_idle(self) -> None:
        pass


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("00000123", 123),
        (" 8", 8),
        ("9 ", 9),
        ("4\n", 4),
        ("+7", 7),
        ("-6", -6),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),
        ("\u0663", None),
        ("5a", None),
        ("1_0", None),
        ("0x10", None),
        ("+-1", None),
        (" ", None),
        ("", None),
    ],
)
def test_manager_version_number_is_absl_simple_atoi(name: str, version: int | None) -> None:
    assert parse_version_number(name) == version


def _loads_with(tmp_path: Path, policy: VersionPolicy, expected: int) -> list[tuple[int, str]]:
    loads: list[tuple[int, str]] = []

    def loader(name: str, version: int, path: Path) -> Any:
        loads.append((version, path.name))
        return _FakeVersion()

    manager = ModelManager(loader)
    try:
        manager.apply_config([ServedModelConfig("m", str(tmp_path), policy)], wait_timeout=30)
        deadline = time.monotonic() + 30
        while len(loads) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        return sorted(loads)
    finally:
        manager.stop()


def test_manager_files_and_signed_names_are_versions_too(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "+7").mkdir()
    (tmp_path / "10").write_text("a file: TF Serving lists it as version 10 (and fails to load it)")
    (tmp_path / "5a").mkdir()
    (tmp_path / "\u0663").mkdir()

    assert _loads_with(tmp_path, VersionPolicy(kind="all"), 3) == [(1, "1"), (7, "+7"), (10, "10")]


def test_manager_duplicate_version_latest_takes_the_last_name_all_the_first(
    tmp_path: Path,
) -> None:
    (tmp_path / "01").mkdir()
    (tmp_path / "1").mkdir()

    assert _loads_with(tmp_path, VersionPolicy(kind="latest"), 1) == [(1, "1")]
    assert _loads_with(tmp_path, VersionPolicy(kind="all"), 1) == [(1, "01")]
