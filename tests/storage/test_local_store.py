"""Behaviour only the local-folder backend has: files, locks between processes, the root."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from storage import InvalidKey, LocalStore, PreconditionFailed


def _increment_many(root: str, times: int) -> None:
    store = LocalStore(root)
    for _ in range(times):
        while True:
            current = store.get("counter")
            value = int(current.data) + 1
            try:
                store.put_bytes("counter", str(value).encode(), if_match=current.etag)
                break
            except PreconditionFailed:
                continue


def test_local_conditional_writes_between_processes_lose_no_update(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("counter", b"0")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_increment_many, args=(str(tmp_path), 25)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert store.get_bytes("counter") == b"75"


def test_local_create_only_between_processes_has_one_winner(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        results = pool.starmap(_create_once, [(str(tmp_path), index) for index in range(6)])
    assert sorted(results).count(True) == 1
    assert store.get_bytes("once").decode() in {str(index) for index in range(6)}


def _create_once(root: str, index: int) -> bool:
    try:
        LocalStore(root).put_bytes("once", str(index).encode(), if_none_match=True)
    except PreconditionFailed:
        return False
    return True


def test_local_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    store = LocalStore(root)
    with pytest.raises(InvalidKey):
        store.get("link/secret")


def test_local_key_and_folder_of_same_name_is_a_clear_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("a", b"file")
    with pytest.raises(InvalidKey):
        store.put_bytes("a/b", b"x")
    store.put_bytes("c/d", b"x")
    with pytest.raises(InvalidKey):
        store.put_bytes("c", b"x")


def test_local_bookkeeping_files_are_never_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("shared", b"0")
    current = store.get("shared")
    store.put_bytes("shared", b"1", if_match=current.etag)  # creates a lock file
    (tmp_path / ".xstore-tmp-stale").write_bytes(b"half")  # a crashed writer's leftover
    assert store.list_keys() == ["shared"]
    with pytest.raises(InvalidKey):
        store.get(".xstore-tmp-stale")


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for index in range(5):
        store.put_bytes("dir/obj", str(index).encode())
    store.put_bytes("dir/new", b"x", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("dir/new", b"y", if_none_match=True)
    assert sorted(path.name for path in (tmp_path / "dir").iterdir()) == ["new", "obj"]


def test_local_etag_changes_even_for_same_size_rewrites(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    etags = set()
    current = store.put_bytes("k", b"aaaa")
    etags.add(current.etag)
    for letter in "bcdefgh":
        current = store.put_bytes("k", letter.encode() * 4, if_match=current.etag)
        etags.add(current.etag)
    assert len(etags) == 8


def test_local_store_create_only_copy_onto_an_existing_key_fails(local_store: LocalStore) -> None:
    # moto ignores CopyObject's destination conditions (AWS S3 enforces them), so this part
    # of the contract is checked on the local backend; the S3 request is checked on its own.
    local_store.put_bytes("src/a", b"new")
    local_store.put_bytes("dst/a", b"theirs")
    with pytest.raises(PreconditionFailed):
        local_store.copy("src/a", "dst/a", if_none_match=True)
    assert local_store.get_bytes("dst/a") == b"theirs"
