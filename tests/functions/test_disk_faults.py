"""A full disk and a read-only one under the local store, for real: a small tmpfs mounted as the
store (skipped where this process may not mount). Every write answers 503 with nothing
half-written; reads go on; the first request after space returns (or the disk is writable
again) succeeds."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.users import parse_users_csv
from storage import keys
from tests.functions.conftest import Stack, error_of
from tests.functions.sample_images import png_bytes

pytestmark = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None,
    reason="mounting a tmpfs needs root and mount(8)",
)


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "disk"
    folder.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(folder)):
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def _fill(disk: Path) -> Path:
    """Take every free byte of the disk; returns the filler file to delete."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512):  # big blocks, then the last partial ones
            try:
                while os.write(descriptor, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(descriptor)
    return filler


def _predict(stack: Stack) -> Any:
    return stack.client("predict").post(
        "/", data=png_bytes(), content_type="image/png", headers=stack.bearer()
    )


def _gradcam(stack: Stack) -> Any:
    return stack.client("gradcam").post(
        "/",
        data={"file": (io.BytesIO(png_bytes()), "x.png", "image/png")},
        headers=stack.bearer(),
    )


def _everything(disk: Path) -> list[str]:
    """Every file of the store, its internal temporaries included."""
    return sorted(str(path.relative_to(disk)) for path in disk.rglob("*") if path.is_file())


def _store_is_whole(stack: Stack, disk: Path, outputs: int) -> None:
    files = _everything(disk / "store")
    assert not [name for name in files if "tmp-" in name], files  # no temporary left behind
    assert len(stack.root.list_keys("output/")) == outputs
    table = parse_users_csv(stack.auth_store.get_bytes(keys.USERS_FILE))
    assert table.problems == ()
    assert set(stack.users) <= {user.id for user in table.users}


@pytest.fixture
def disk_stack(stack_factory: Callable[..., Stack], disk: Path) -> Stack:
    return stack_factory(STORAGE_URL=str(disk / "store"))


def test_full_disk_every_write_is_503_nothing_half_written_then_recovers(
    disk_stack: Stack, disk: Path
) -> None:
    assert _predict(disk_stack).status_code == 200
    filler = _fill(disk)

    answers = [_predict(disk_stack), _gradcam(disk_stack)]

    assert [answer.status_code for answer in answers] == [503, 503]
    assert {error_of(answer) for answer in answers} == {"storage_unavailable"}
    assert all(answer.headers["Retry-After"] for answer in answers)
    _store_is_whole(disk_stack, disk, outputs=1)
    history = disk_stack.client("history").get("/", headers=disk_stack.bearer())
    assert history.status_code == 200  # reads go on
    assert len(history.get_json()["records"]) == 1

    filler.unlink()
    assert _predict(disk_stack).status_code == 200
    assert _gradcam(disk_stack).status_code == 200
    _store_is_whole(disk_stack, disk, outputs=4)  # two records and one overlay more


def test_read_only_disk_every_write_is_503_then_recovers(disk_stack: Stack, disk: Path) -> None:
    assert _predict(disk_stack).status_code == 200
    assert _mount("-o", "remount,ro", str(disk))
    try:
        answers = [_predict(disk_stack), _gradcam(disk_stack)]
        history = disk_stack.client("history").get("/", headers=disk_stack.bearer())
    finally:
        assert _mount("-o", "remount,rw", str(disk))

    assert [answer.status_code for answer in answers] == [503, 503]
    assert {error_of(answer) for answer in answers} == {"storage_unavailable"}
    assert history.status_code == 200
    _store_is_whole(disk_stack, disk, outputs=1)
    assert _predict(disk_stack).status_code == 200
