"""The model registry on both storage backends: publish, promote, rollback, conflicts, download."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from model_contract.errors import (
    IncompleteVersion,
    InvalidPromotion,
    NothingToRollBack,
    PublishError,
    RegistryConflict,
    StableChanged,
    VersionCorrupt,
    VersionNotFound,
)
from model_contract.identity import IDENTITY_ASSET_PATH, ModelIdentity
from model_contract.registry import ModelRegistry, StoredExport
from storage import Store, keys
from tests.model_contract.helpers import write_fake_saved_model
from tests.stores import InterceptingStore

NAME = "cnn_vit"


def _no_sleep(_: float) -> None:
    """Retries in tests need no real backoff."""


def _registry(store: Store) -> ModelRegistry:
    return ModelRegistry(store, NAME, sleep=_no_sleep)


@pytest.fixture
def saved_model_dir(tmp_path: Path) -> Path:
    return write_fake_saved_model(tmp_path / "export")


def _publish(
    registry: ModelRegistry, source: Path | StoredExport, run_id: str = "run-1", **changes: Any
) -> int:
    options: dict[str, Any] = {
        "run_id": run_id,
        "metrics": {"macro_f1": 0.9},
        "dataset_fingerprint": "sha256:abc",
        "parent_version": None,
        "preset": "small",
    }
    options.update(changes)
    return registry.publish(source, **options)


def test_registry_load_without_object_is_empty(store: Store) -> None:
    registry = _registry(store).load()
    assert (registry.name, registry.stable, registry.canary) == (NAME, None, None)
    assert registry.versions == {}
    assert registry.previous_stable == ()


def test_publish_first_version_writes_files_then_manifest_then_registry(
    store: Store, saved_model_dir: Path
) -> None:
    recording = InterceptingStore(store)
    version = _publish(_registry(recording), saved_model_dir)

    assert version == 1
    prefix = keys.model_version_prefix(NAME, 1)
    version_puts = [key for key in recording.puts if key.startswith(prefix)]
    assert version_puts[-1] == keys.model_version_manifest(NAME, 1)
    assert recording.puts[-1] == keys.model_registry(NAME)
    manifest = store.get_json(keys.model_version_manifest(NAME, 1))
    assert set(manifest) == {"name", "version", "files", "created_at"}
    listed = {item["path"] for item in manifest["files"]}
    assert listed == {key[len(prefix) :] for key in version_puts[:-1]}
    for item in manifest["files"]:
        data = store.get_bytes(prefix + item["path"])
        assert item["size"] == len(data)
        assert item["sha256"] == hashlib.sha256(data).hexdigest()


def test_publish_stamps_identity_in_published_copy_only(
    store: Store, saved_model_dir: Path
) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir, run_id="run-a")
    version = _publish(registry, saved_model_dir, run_id="run-b")

    published = store.get_bytes(keys.model_version_prefix(NAME, version) + IDENTITY_ASSET_PATH)
    assert ModelIdentity.from_text(published.decode()) == ModelIdentity(NAME, 2, "run-b")
    source_identity = (saved_model_dir / IDENTITY_ASSET_PATH).read_text()
    assert ModelIdentity.from_text(source_identity) == ModelIdentity("exported", 0, "")


def test_publish_records_lineage_and_metrics(store: Store, saved_model_dir: Path) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir)
    version = _publish(
        registry,
        saved_model_dir,
        run_id="20261127T101500Z-ab12cd",
        parent_version=1,
        metrics={"macro_f1": 0.93, "accuracy": 0.94},
        extra={"compute_dtype": "bfloat16"},
    )

    document = store.get_json(keys.model_registry(NAME))
    entry = document["versions"][str(version)]
    assert entry["run_id"] == "20261127T101500Z-ab12cd"
    assert entry["parent_version"] == 1
    assert entry["metrics"] == {"macro_f1": 0.93, "accuracy": 0.94}
    assert entry["dataset_fingerprint"] == "sha256:abc"
    assert entry["preset"] == "small"
    assert entry["status"] == "published"
    assert entry["promoted_at"] is None
    assert entry["published_at"].endswith("Z")
    assert entry["extra"] == {"compute_dtype": "bfloat16"}
    assert document["schema"] == 1
    assert document["name"] == NAME


def test_publish_existing_version_folder_is_never_overwritten(
    store: Store, saved_model_dir: Path
) -> None:
    # A leftover of a crashed publish: version 1 has objects but no manifest.
    leftover = keys.model_version_prefix(NAME, 1) + "saved_model.pb"
    store.put_bytes(leftover, b"someone else's")

    version = _publish(_registry(store), saved_model_dir)

    assert version == 2
    assert store.get_bytes(leftover) == b"someone else's"


def test_publish_number_taken_by_concurrent_publisher_moves_to_next(
    store: Store, saved_model_dir: Path
) -> None:
    intercepting = InterceptingStore(store)
    competitor_key = keys.model_version_prefix(NAME, 1) + "assets.extra/model_info.json"

    def competing_publisher(key: str, options: dict[str, Any]) -> None:
        # Between our choice of number 1 and our first write, another publisher writes there.
        if key == competitor_key and not store.exists(key):
            store.put_bytes(key, b"competitor", if_none_match=True)

    intercepting.before_put = competing_publisher
    version = _publish(_registry(intercepting), saved_model_dir)

    assert version == 2
    assert store.get_bytes(competitor_key) == b"competitor"
    assert _registry(store).is_complete(2)
    assert not _registry(store).is_complete(1)


CANDIDATE = "output/learning/run-1/candidate/"


def _stored_export(store: Store, folder: Path) -> StoredExport:
    """The export uploaded where a training run leaves its candidate."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.upload_file(path, CANDIDATE + path.relative_to(folder).as_posix())
    return StoredExport(CANDIDATE)


def test_publish_from_the_store_copies_server_side_and_uploads_only_identity_and_manifest(
    store: Store, saved_model_dir: Path, tmp_path: Path
) -> None:
    export = _stored_export(store, saved_model_dir)
    recording = InterceptingStore(store)

    version = _publish(_registry(recording), export, run_id="run-1")

    prefix = keys.model_version_prefix(NAME, version)
    assert [key for key in recording.puts if key.startswith(prefix)] == [
        prefix + IDENTITY_ASSET_PATH,
        keys.model_version_manifest(NAME, version),
    ]
    assert sorted(recording.copies) == sorted(
        prefix + path.relative_to(saved_model_dir).as_posix()
        for path in saved_model_dir.rglob("*")
        if path.is_file() and path.relative_to(saved_model_dir).as_posix() != IDENTITY_ASSET_PATH
    )
    manifest = store.get_json(keys.model_version_manifest(NAME, version))
    for item in manifest["files"]:
        data = store.get_bytes(prefix + item["path"])
        assert (item["size"], item["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    published = store.get_bytes(prefix + IDENTITY_ASSET_PATH).decode()
    assert ModelIdentity.from_text(published) == ModelIdentity(NAME, version, "run-1")
    # The candidate keeps its own identity (version 0), and the published copy downloads verified.
    assert b"exported" in store.get_bytes(CANDIDATE + IDENTITY_ASSET_PATH)
    downloaded = _registry(store).download_version(version, tmp_path / "downloaded")
    assert (downloaded / "variables/variables.data-00000-of-00001").read_bytes() == b"weights"


def test_publish_from_the_store_moves_on_when_the_number_is_claimed(
    store: Store, saved_model_dir: Path
) -> None:
    export = _stored_export(store, saved_model_dir)
    intercepting = InterceptingStore(store)
    claimed = keys.model_version_prefix(NAME, 1) + IDENTITY_ASSET_PATH

    def competing_publisher(key: str, options: dict[str, Any]) -> None:
        if key == claimed and not store.exists(key):
            store.put_bytes(key, b"competitor", if_none_match=True)

    intercepting.before_put = competing_publisher
    assert _publish(_registry(intercepting), export) == 2
    assert store.get_bytes(claimed) == b"competitor"
    assert store.list_keys(keys.model_version_prefix(NAME, 1)) == [claimed]


def test_publish_from_a_store_prefix_without_saved_model_raises(store: Store) -> None:
    store.put_bytes(CANDIDATE + "assets/model_identity.txt", b"name\tx\n")
    with pytest.raises(PublishError):
        _publish(_registry(store), StoredExport(CANDIDATE))


def test_publish_folder_without_saved_model_raises_publish_error(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishError):
        _publish(_registry(store), tmp_path / "empty")


def test_list_versions_reports_incomplete_version(store: Store, saved_model_dir: Path) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir)
    store.put_bytes(keys.model_version_prefix(NAME, 2) + "saved_model.pb", b"half written")

    summaries = {summary.version: summary for summary in registry.list_versions()}

    assert summaries[1].complete
    assert summaries[1].entry is not None
    assert not summaries[2].complete
    assert summaries[2].entry is None
    assert not registry.is_complete(2)
    assert registry.show(2).manifest is None
    with pytest.raises(IncompleteVersion):
        registry.promote(2)


def test_promote_stable_pushes_old_stable_and_rollback_restores_it(
    store: Store, saved_model_dir: Path
) -> None:
    registry = _registry(store)
    for _ in range(3):
        _publish(registry, saved_model_dir)
    registry.promote(1)
    registry.promote(2)
    registry.promote(3)

    promoted = registry.load()
    assert (promoted.stable, promoted.previous_stable) == (3, (1, 2))
    assert promoted.versions[3].status == "serving"
    assert promoted.versions[2].status == "retired"
    assert promoted.versions[3].promoted_at is not None

    rolled_back = registry.rollback()
    assert (rolled_back.stable, rolled_back.previous_stable) == (2, (1,))
    assert rolled_back.versions[2].status == "serving"
    assert rolled_back.versions[3].status == "rolled_back"
    assert registry.load() == rolled_back


def test_promote_same_stable_twice_does_not_grow_rollback_stack(
    store: Store, saved_model_dir: Path
) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir)
    registry.promote(1)
    registry.promote(1)
    assert registry.load().previous_stable == ()


def test_promote_canary_then_stable_clears_canary(store: Store, saved_model_dir: Path) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir)
    _publish(registry, saved_model_dir)
    registry.promote(1)
    with_canary = registry.promote(2, "canary")
    assert (with_canary.stable, with_canary.canary) == (1, 2)
    assert registry.show(2).labels == ("canary",)

    after = registry.promote(2, "stable")
    assert (after.stable, after.canary, after.previous_stable) == (2, None, (1,))


def test_clear_canary_removes_label(store: Store, saved_model_dir: Path) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir)
    _publish(registry, saved_model_dir)
    registry.promote(1)
    registry.promote(2, "canary")

    cleared = registry.clear_canary()

    assert cleared.canary is None
    assert cleared.versions[2].status == "published"
    assert registry.load().canary is None


def test_rollback_without_previous_stable_raises_nothing_to_roll_back(
    store: Store, saved_model_dir: Path
) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir)
    registry.promote(1)
    with pytest.raises(NothingToRollBack):
        registry.rollback()


def test_promote_unknown_version_raises_version_not_found(store: Store) -> None:
    with pytest.raises(VersionNotFound):
        _registry(store).promote(7)
    with pytest.raises(VersionNotFound):
        _registry(store).show(7)


def test_promote_stable_version_to_canary_raises_invalid_promotion(
    store: Store, saved_model_dir: Path
) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir)
    registry.promote(1)
    with pytest.raises(InvalidPromotion):
        registry.promote(1, "canary")


def test_concurrent_promotions_with_competing_write_between_read_and_write_keep_both(
    store: Store, saved_model_dir: Path
) -> None:
    setup = _registry(store)
    for _ in range(3):
        _publish(setup, saved_model_dir)
    setup.promote(1)

    intercepting = InterceptingStore(store)
    competitor = _registry(store)

    def competing_promotion(key: str, options: dict[str, Any]) -> None:
        # Fixed interleaving: after our registry read, before our conditional write (once),
        # the competitor promotes version 3 to canary through the real store.
        if key == keys.model_registry(NAME) and not intercepting.failed_puts:
            intercepting.before_put = None
            competitor.promote(3, "canary")

    intercepting.before_put = competing_promotion

    ours = _registry(intercepting).promote(2, "stable")

    assert intercepting.failed_puts == [keys.model_registry(NAME)]
    assert intercepting.puts == [keys.model_registry(NAME)]
    final = setup.load()
    assert (final.stable, final.canary, final.previous_stable) == (2, 3, (1,))
    assert final == ours


def test_promote_expected_stable_changed_between_read_and_write_raises_and_keeps_theirs(
    store: Store, saved_model_dir: Path
) -> None:
    setup = _registry(store)
    for _ in range(3):
        _publish(setup, saved_model_dir)
    setup.promote(1)
    intercepting = InterceptingStore(store)
    competitor = _registry(store)

    def competing_promotion(key: str, options: dict[str, Any]) -> None:
        # After our read of the registry (stable 1, as we expect), before our write: someone
        # promotes version 3. Our write then loses, and the re-read must see the change.
        if key == keys.model_registry(NAME) and not intercepting.failed_puts:
            intercepting.before_put = None
            competitor.promote(3)

    intercepting.before_put = competing_promotion

    with pytest.raises(StableChanged) as caught:
        _registry(intercepting).promote(2, expected_stable=1)

    assert (caught.value.code, caught.value.expected, caught.value.current) == (
        "stable_changed",
        1,
        3,
    )
    final = setup.load()
    assert (final.stable, final.previous_stable) == (3, (1,))
    assert final.versions[2].status == "published"


@pytest.mark.parametrize("expected", [None, 1])
def test_promote_expected_stable_that_holds_promotes(
    store: Store, saved_model_dir: Path, expected: int | None
) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir)
    _publish(registry, saved_model_dir)
    if expected is not None:
        registry.promote(expected)

    assert registry.promote(2, expected_stable=expected).stable == 2


def test_promote_expected_no_stable_when_one_exists_raises(
    store: Store, saved_model_dir: Path
) -> None:
    registry = _registry(store)
    _publish(registry, saved_model_dir)
    _publish(registry, saved_model_dir)
    registry.promote(1)

    with pytest.raises(StableChanged):
        registry.promote(2, "canary", expected_stable=None)
    assert registry.load().canary is None


def test_update_losing_every_attempt_raises_registry_conflict(
    store: Store, saved_model_dir: Path
) -> None:
    setup = _registry(store)
    _publish(setup, saved_model_dir)
    _publish(setup, saved_model_dir)
    intercepting = InterceptingStore(store)
    registry_key = keys.model_registry(NAME)

    def always_competing(key: str, options: dict[str, Any]) -> None:
        # Another writer changes the registry before each of our writes. (S3's version tag
        # is the content's MD5, so the competitor must change the content, not just rewrite.)
        if key == registry_key:
            document = store.get_json(registry_key)
            document["updated_at"] = f"competitor-{len(intercepting.failed_puts)}"
            store.put_json(registry_key, document)

    intercepting.before_put = always_competing
    with pytest.raises(RegistryConflict):
        ModelRegistry(intercepting, NAME, max_attempts=3, sleep=_no_sleep).promote(2, "canary")


def test_download_version_verifies_files_into_fresh_folder(
    store: Store, saved_model_dir: Path, tmp_path: Path
) -> None:
    registry = _registry(store)
    version = _publish(registry, saved_model_dir, run_id="run-x")

    target = registry.download_version(version, tmp_path / "models" / NAME / str(version))

    assert (target / "saved_model.pb").read_bytes() == (
        saved_model_dir / "saved_model.pb"
    ).read_bytes()
    identity = ModelIdentity.from_text((target / IDENTITY_ASSET_PATH).read_text())
    assert identity == ModelIdentity(NAME, version, "run-x")
    assert json.loads((target / "manifest.json").read_text())["version"] == version
    assert sorted(p.name for p in target.parent.iterdir()) == [str(version)]


def test_download_corrupted_file_raises_and_leaves_no_folder(
    store: Store, saved_model_dir: Path, tmp_path: Path
) -> None:
    registry = _registry(store)
    version = _publish(registry, saved_model_dir)
    key = keys.model_version_prefix(NAME, version) + "variables/variables.index"
    store.put_bytes(key, b"tampered")
    destination = tmp_path / "models" / str(version)

    with pytest.raises(VersionCorrupt):
        registry.download_version(version, destination)

    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []


def test_download_incomplete_version_raises_incomplete(store: Store, tmp_path: Path) -> None:
    store.put_bytes(keys.model_version_prefix(NAME, 1) + "saved_model.pb", b"half")
    with pytest.raises(IncompleteVersion):
        _registry(store).download_version(1, tmp_path / "1")
