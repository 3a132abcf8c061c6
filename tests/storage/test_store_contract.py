"""One contract, two backends: every test here runs on a local folder and on moto's S3 server."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage import (
    InvalidKey,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    keys,
    upload_folder,
)


def test_store_put_then_get_returns_same_bytes_and_etag(store: Store) -> None:
    written = store.put_bytes("input/data/a.png", b"\x89PNG bytes")
    stored = store.get("input/data/a.png")
    assert stored.data == b"\x89PNG bytes"
    assert stored.etag == written.etag
    assert store.head("input/data/a.png").size == len(b"\x89PNG bytes")


def test_store_json_round_trip_keeps_unicode(store: Store) -> None:
    store.put_json("output/x.json", {"name": "Zoë", "values": [1, 2.5, None]})
    assert store.get_json("output/x.json") == {"name": "Zoë", "values": [1, 2.5, None]}


def test_store_overwrite_changes_etag(store: Store) -> None:
    first = store.put_bytes("k/v", b"one")
    second = store.put_bytes("k/v", b"two")
    assert first.etag != second.etag
    assert store.get_bytes("k/v") == b"two"


def test_store_get_missing_raises_not_found(store: Store) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("no/such/key")
    with pytest.raises(ObjectNotFound):
        store.head("no/such/key")
    assert not store.exists("no/such/key")


def test_store_delete_removes_and_missing_delete_is_quiet(store: Store) -> None:
    store.put_bytes("a/b", b"x")
    store.delete("a/b")
    store.delete("a/b")
    assert not store.exists("a/b")


def test_store_list_is_in_key_byte_order(store: Store) -> None:
    # "-" (0x2d) < "/" (0x2f) < "0" (0x30): S3 order, which a naive folder walk gets wrong.
    names = ["a/b", "a-b", "a0", "a/a/z", "a/c", "ab", "é", "b"]
    for name in names:
        store.put_bytes(name, b".")
    assert store.list_keys() == sorted(names, key=lambda key: key.encode("utf-8"))


def test_store_list_prefix_may_end_mid_segment(store: Store) -> None:
    for name in ["output/inference/u1/x", "output/inference/u2/y", "output/grad_cam/z"]:
        store.put_bytes(name, b".")
    assert store.list_keys("output/infer") == ["output/inference/u1/x", "output/inference/u2/y"]
    assert store.list_keys("output/inference/u1/") == ["output/inference/u1/x"]
    assert store.list_keys("nothing/") == []


def test_store_list_start_after_skips_earlier_keys(store: Store) -> None:
    for index in range(10):
        store.put_bytes(f"p/{index:02d}" if index != 5 else "p/05/deeper", b".")
    assert store.list_keys("p/", start_after="p/05") == [
        "p/05/deeper",
        "p/06",
        "p/07",
        "p/08",
        "p/09",
    ]
    assert store.list_keys("p/", start_after="p/09") == []


def test_store_list_page_walks_every_key_once(store: Store) -> None:
    expected = [f"page/{index:03d}" for index in range(23)]
    for key in expected:
        store.put_bytes(key, b".")
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        items, token = store.list_page("page/", start_after=token, limit=5)
        seen.extend(item.key for item in items)
        pages += 1
        if token is None:
            break
    assert seen == expected
    assert pages == 5


def test_store_list_with_small_pages_follows_continuations(store: Store) -> None:
    for index in range(7):
        store.put_bytes(f"c/{index}", b".")
    assert [info.key for info in store.list("c/", page_size=2)] == [f"c/{i}" for i in range(7)]


def test_store_create_only_put_refuses_existing_key(store: Store) -> None:
    store.put_bytes("once", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("once", b"second", if_none_match=True)
    assert store.get_bytes("once") == b"first"


def test_store_conditional_put_second_writer_of_same_version_fails(store: Store) -> None:
    store.put_json("shared.json", {"rows": []})
    # Two writers read the same version, in a fixed interleaving.
    reader_a = store.get("shared.json")
    reader_b = store.get("shared.json")
    store.put_json("shared.json", {"rows": ["b"]}, if_match=reader_b.etag)
    with pytest.raises(PreconditionFailed):
        store.put_json("shared.json", {"rows": ["a"]}, if_match=reader_a.etag)
    assert store.get_json("shared.json") == {"rows": ["b"]}
    # The loser re-reads and retries: both changes survive.
    fresh = store.get("shared.json")
    rows = fresh.json()["rows"] + ["a"]
    store.put_json("shared.json", {"rows": rows}, if_match=fresh.etag)
    assert store.get_json("shared.json") == {"rows": ["b", "a"]}


def test_store_conditional_put_on_missing_key_fails(store: Store) -> None:
    with pytest.raises(PreconditionFailed):
        store.put_bytes("gone", b"x", if_match='"0-0-0"')
    assert not store.exists("gone")


def test_store_conditional_options_exclude_each_other(store: Store) -> None:
    with pytest.raises(ValueError, match="exclude"):
        store.put_bytes("k", b"x", if_none_match=True, if_match="e")


@pytest.mark.parametrize(
    "bad_key",
    [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a//b",
        "./a",
        "a/./b",
        "nul\x00byte",
        "a\\b",
        "folder/",
        "line\nbreak",
        "x" * 1025,
    ],
)
def test_store_refuses_unsafe_keys(store: Store, bad_key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes(bad_key, b"x")
    with pytest.raises(InvalidKey):
        store.get(bad_key)


@pytest.mark.parametrize("bad_key", ["a//b", "../escape", "folder/"])
def test_store_delete_and_upload_file_refuse_unsafe_keys(
    store: Store, tmp_path: Path, bad_key: str
) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"x")
    with pytest.raises(InvalidKey):
        store.delete(bad_key)
    with pytest.raises(InvalidKey):
        store.upload_file(source, bad_key)
    with pytest.raises(InvalidKey):
        store.head(bad_key)
    with pytest.raises(InvalidKey):
        store.download_file(bad_key, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_store_child_view_strips_and_adds_its_prefix(store: Store) -> None:
    area = store.child("input/db_auth")
    area.put_bytes(keys.USERS_FILE, b"id;email")
    assert store.get_bytes("input/db_auth/authentication.csv") == b"id;email"
    assert area.list_keys() == ["authentication.csv"]
    assert area.exists("authentication.csv")
    with pytest.raises(InvalidKey):
        area.get("../db/x")


def test_store_copy_and_delete_prefix(store: Store) -> None:
    store.put_bytes("src/a", b"1")
    store.copy("src/a", "dst/a")
    assert store.get_bytes("dst/a") == b"1"
    store.put_bytes("src/b", b"2")
    assert store.delete_prefix("src/") == 2
    assert store.list_keys() == ["dst/a"]


def test_store_create_only_copy_creates_and_reports_the_copy(store: Store) -> None:
    store.put_bytes("src/a", b"payload")
    info = store.copy("src/a", "dst/a", if_none_match=True)
    assert (info.key, info.size) == ("dst/a", len(b"payload"))
    assert store.get_bytes("dst/a") == b"payload"


def test_store_upload_and_download_file(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(bytes(range(256)) * 40)
    store.upload_file(source, "files/in.bin")
    target = tmp_path / "out" / "copy.bin"
    store.download_file("files/in.bin", target)
    assert target.read_bytes() == source.read_bytes()
    assert not list(target.parent.glob(".*partial"))


def test_upload_folder_keeps_relative_paths_under_the_prefix(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "saved_model"
    (folder / "variables").mkdir(parents=True)
    (folder / "empty").mkdir()
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.index").write_bytes(b"index")

    assert upload_folder(store, folder, "/models/candidate/") == 2
    assert upload_folder(store, folder, "") == 2

    assert store.list_keys() == [
        "models/candidate/saved_model.pb",
        "models/candidate/variables/variables.index",
        "saved_model.pb",
        "variables/variables.index",
    ]
    assert store.get_bytes("models/candidate/variables/variables.index") == b"index"


def test_store_time_window_lists_only_records_in_window_newest_first(store: Store) -> None:
    rng = random.Random(7)
    base = datetime(2026, 11, 20, tzinfo=UTC)
    moments = [base + timedelta(microseconds=rng.randrange(6 * 86400 * 10**6)) for _ in range(60)]
    # Exact boundaries must be included.
    start, stop = base + timedelta(days=2, hours=3), base + timedelta(days=3, hours=1)
    moments += [start, stop, start - timedelta(microseconds=1), stop + timedelta(microseconds=1)]
    ids = {keys.new_inference_id(moment): moment for moment in moments}
    for inference_id in ids:
        store.put_bytes(keys.inference_record("alice", inference_id), b"{}")
        store.put_bytes(keys.inference_record("bob", inference_id), b"{}")

    window = keys.inference_window("alice", start, stop)
    listed = []
    for info in store.list(window.prefix, start_after=window.start_after):
        if info.key >= window.end_before:
            break
        listed.append(info.key.rsplit("-", 1)[-1].removesuffix(".json"))

    expected = sorted(
        (iid for iid, moment in ids.items() if start <= moment <= stop),
        key=lambda iid: ids[iid],
        reverse=True,
    )
    assert listed == expected
    assert all("bob" not in key for key in listed)


def test_store_download_of_missing_object_leaves_nothing(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "out" / "missing.bin"
    with pytest.raises(ObjectNotFound):
        store.download_file("no/such/object", target)
    assert not target.exists()
    assert not list(target.parent.glob(".*partial")) if target.parent.exists() else True
