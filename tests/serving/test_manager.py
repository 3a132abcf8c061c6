"""The model manager in-process: which folders under a base path count as versions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from serving.model_server.manager import ModelManager, ServedModelConfig, VersionPolicy


class _FakeVersion:
    def close(self) -> None:
        pass


@pytest.mark.parametrize("folder", ["\u0663", "4\n", "5a", "-6", "+7", " 8", "9 "])
def test_manager_version_folders_are_plain_ascii_digits(tmp_path: Path, folder: str) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "0002").mkdir()
    (tmp_path / folder).mkdir()
    (tmp_path / "10").write_text("a file, not a version folder")
    loads: list[tuple[int, str]] = []

    def loader(name: str, version: int, path: Path) -> Any:
        loads.append((version, path.name))
        return _FakeVersion()

    manager = ModelManager(loader)
    try:
        manager.apply_config(
            [ServedModelConfig("m", tmp_path, VersionPolicy(kind="all"))], wait_timeout=30
        )
        # Every aspired version has a status as soon as the base path was listed.
        assert [status.version for status in manager.statuses("m")] == [2, 1]
        deadline = time.monotonic() + 30
        while len(loads) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(loads) == [(1, "1"), (2, "0002")]
    finally:
        manager.stop()
