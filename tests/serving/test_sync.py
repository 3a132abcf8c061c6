"""The model sync against both storage backends: complete versions only, labels in steps."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.model_config import read_model_config
from serving.sync import (
    ModelSync,
    RestAvailabilityProbe,
    SyncError,
    SyncSettings,
    run_once,
    run_watch,
)
from storage import StorageSettings, StorageUnavailable, Store, StoredObject, keys
from storage.base import PrefixedStore
from tests.serving.publishing import (
    MODEL,
    fake_version_files,
    manifest_for,
    publish_version,
    write_registry,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeProbe:
    """What a model server would answer: the versions it reports AVAILABLE."""

    def __init__(self) -> None:
        self.available: set[int] = set()
        self.asked: list[int] = []

    def is_available(self, model_name: str, version: int) -> bool:
        self.asked.append(version)
        return version in self.available


class FailingStore(PrefixedStore):
    """A store that fails (like a dropped connection) after `budget` reads under `prefix`."""

    def __init__(self, inner: Store, prefix: str, budget: int) -> None:
        super().__init__(inner, "")
        self.failing_prefix = prefix
        self.budget = budget

    def get(self, key: str) -> StoredObject:
        if key.startswith(self.failing_prefix) and not key.endswith("manifest.json"):
            if self.budget <= 0:
                raise StorageUnavailable("connection reset while downloading")
            self.budget -= 1
        return super().get(key)


def make_settings(tmp_path: Path, **overrides: Any) -> SyncSettings:
    base = tmp_path / "models"
    values: dict[str, Any] = {
        "storage": StorageSettings(url=str(tmp_path / "unused")),
        "model_name": MODEL,
        "model_base_path": base,
        "model_config_file": base / "models.config",
        "interval_seconds": 0.01,
        "grace_seconds": 300.0,
    }
    values.update(overrides)
    return SyncSettings(**values)


def config_entry(settings: SyncSettings) -> tuple[list[int], dict[str, int]]:
    entries = read_model_config(settings.model_config_file)
    assert entries is not None
    (entry,) = [entry for entry in entries if entry.name == MODEL]
    return list(entry.versions), dict(entry.labels)


def version_folders(settings: SyncSettings) -> list[str]:
    return sorted(child.name for child in (settings.model_base_path / MODEL).iterdir())


def test_sync_cycle_published_stable_installs_verified_copy_and_config(
    store: Store, tmp_path: Path
) -> None:
    files = publish_version(store, 1)
    write_registry(store, stable=1)
    settings = make_settings(tmp_path)

    sync = ModelSync(settings, store)
    report = sync.run_cycle()

    assert report.installed == [1]
    assert report.stable_in_place
    folder = settings.model_base_path / MODEL / "1"
    for path, data in files.items():
        assert (folder / path).read_bytes() == data
    assert json.loads((folder / "manifest.json").read_bytes()) == manifest_for(MODEL, 1, files)
    # TF Serving refuses a label on a version it has not loaded, at start too: the first
    # config serves the version, the next one (a cycle to load) labels it.
    assert config_entry(settings) == ([1], {})
    sync.run_cycle()
    assert config_entry(settings) == ([1], {"stable": 1})


def test_sync_cycle_version_without_manifest_is_never_copied(store: Store, tmp_path: Path) -> None:
    publish_version(store, 1)
    publish_version(store, 2, with_manifest=False)
    write_registry(store, stable=1, canary=2)
    settings = make_settings(tmp_path)
    sync = ModelSync(settings, store)

    first = sync.run_cycle()
    second = sync.run_cycle()

    assert first.incomplete == [2]
    assert second.incomplete == [2]
    assert version_folders(settings) == ["1"]
    assert config_entry(settings) == ([1], {"stable": 1})


def test_sync_cycle_interrupted_download_leaves_no_partial_version_and_next_cycle_completes(
    store: Store, tmp_path: Path
) -> None:
    files = publish_version(store, 1)
    write_registry(store, stable=1)
    settings = make_settings(tmp_path)
    flaky = FailingStore(store, keys.model_version_prefix(MODEL, 1), budget=2)

    interrupted = ModelSync(settings, flaky).run_cycle()

    assert 1 in interrupted.failed
    assert not interrupted.stable_in_place
    assert version_folders(settings) == []
    assert not settings.model_config_file.exists()

    flaky.budget = len(files)
    completed = ModelSync(settings, flaky).run_cycle()

    assert completed.installed == [1]
    assert version_folders(settings) == ["1"]
    assert config_entry(settings) == ([1], {})


def test_sync_cycle_file_differing_from_manifest_installs_nothing(
    store: Store, tmp_path: Path
) -> None:
    files = publish_version(store, 1)
    store.child(keys.model_version_prefix(MODEL, 1)).put("saved_model.pb", b"tampered")
    write_registry(store, stable=1)
    settings = make_settings(tmp_path)

    report = ModelSync(settings, store).run_cycle()

    assert "sha256" in report.failed[1] or "bytes" in report.failed[1]
    assert version_folders(settings) == []
    assert len(files) > 1


def test_sync_cycle_leftover_partial_folder_from_a_crash_is_removed(
    local_store: Store, tmp_path: Path
) -> None:
    publish_version(local_store, 1)
    write_registry(local_store, stable=1)
    settings = make_settings(tmp_path)
    leftover = settings.model_base_path / MODEL / ".partial-1-deadbeef"
    (leftover / "variables").mkdir(parents=True)
    (leftover / "saved_model.pb").write_bytes(b"half")

    ModelSync(settings, local_store).run_cycle()

    assert not leftover.exists()
    assert (settings.model_base_path / MODEL / "1" / "saved_model.pb").is_file()


def test_sync_promotion_without_server_url_moves_label_a_cycle_later_then_drops_old(
    store: Store, tmp_path: Path
) -> None:
    publish_version(store, 1)
    write_registry(store, stable=1)
    settings = make_settings(tmp_path)
    sync = ModelSync(settings, store)
    sync.run_cycle()
    sync.run_cycle()  # the label on version 1, once it had a cycle to load
    publish_version(store, 2)
    write_registry(store, stable=2, previous_stable=[1])

    steps = []
    for _ in range(4):
        sync.run_cycle()
        steps.append(config_entry(settings))

    assert steps == [
        ([1, 2], {"stable": 1}),  # both served, the label waits on the loaded version
        ([1, 2], {"stable": 2}),  # the new version had a cycle to load: the label moves
        ([2], {"stable": 2}),  # no label points at 1 any more: it leaves the config
        ([2], {"stable": 2}),
    ]


def test_sync_promotion_with_probe_moves_label_only_once_version_is_available(
    store: Store, tmp_path: Path
) -> None:
    publish_version(store, 1)
    write_registry(store, stable=1)
    settings = make_settings(tmp_path)
    probe = FakeProbe()
    sync = ModelSync(settings, store, probe=probe)
    sync.run_cycle()
    probe.available.add(1)
    sync.run_cycle()
    assert config_entry(settings) == ([1], {"stable": 1})
    publish_version(store, 2)
    write_registry(store, stable=2)

    for _ in range(3):
        sync.run_cycle()
        assert config_entry(settings) == ([1, 2], {"stable": 1})
    probe.available.add(2)
    sync.run_cycle()
    moved = config_entry(settings)
    sync.run_cycle()

    assert 2 in probe.asked
    assert moved == ([1, 2], {"stable": 2})
    assert config_entry(settings) == ([2], {"stable": 2})


def test_sync_rollback_serves_previous_stable_again_without_download(
    store: Store, tmp_path: Path
) -> None:
    publish_version(store, 1)
    publish_version(store, 2)
    write_registry(store, stable=1)
    settings = make_settings(tmp_path)
    probe = FakeProbe()
    probe.available = {1, 2}
    sync = ModelSync(settings, store, probe=probe)
    sync.run_cycle()
    write_registry(store, stable=2, previous_stable=[1])
    for _ in range(3):
        sync.run_cycle()
    assert config_entry(settings) == ([2], {"stable": 2})

    write_registry(store, stable=1)  # rollback pops previous_stable
    reports = [sync.run_cycle() for _ in range(3)]

    assert all(report.installed == [] for report in reports)
    assert config_entry(settings) == ([1], {"stable": 1})


def test_sync_canary_label_appears_only_when_available_and_goes_when_cleared(
    store: Store, tmp_path: Path
) -> None:
    publish_version(store, 1)
    publish_version(store, 2)
    write_registry(store, stable=1)
    settings = make_settings(tmp_path)
    probe = FakeProbe()
    probe.available = {1}
    sync = ModelSync(settings, store, probe=probe)
    sync.run_cycle()
    write_registry(store, stable=1, canary=2)

    sync.run_cycle()
    before = config_entry(settings)
    probe.available.add(2)
    sync.run_cycle()
    during = config_entry(settings)
    write_registry(store, stable=1)
    sync.run_cycle()
    label_gone = config_entry(settings)
    sync.run_cycle()
    after = config_entry(settings)

    assert before == ([1, 2], {"stable": 1})
    assert during == ([1, 2], {"stable": 1, "canary": 2})
    assert label_gone == ([1, 2], {"stable": 1})
    assert after == ([1], {"stable": 1})


def test_sync_unused_version_folder_removed_only_after_grace_period(
    store: Store, tmp_path: Path
) -> None:
    publish_version(store, 1)
    publish_version(store, 2)
    write_registry(store, stable=1)
    clock = FakeClock()
    settings = make_settings(tmp_path, grace_seconds=300.0)
    probe = FakeProbe()
    probe.available = {1, 2}
    sync = ModelSync(settings, store, probe=probe, clock=clock)
    sync.run_cycle()
    write_registry(store, stable=2)
    sync.run_cycle()
    sync.run_cycle()  # 1 leaves the config here: its grace period starts

    clock.now += 299
    kept = sync.run_cycle()
    clock.now += 2
    removed = sync.run_cycle()

    assert kept.removed == []
    assert removed.removed == [1]
    assert [name for name in version_folders(settings) if name.isdigit()] == ["2"]


def test_sync_models_config_parses_as_tf_serving_model_server_config(
    local_store: Store, tmp_path: Path
) -> None:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    publish_version(local_store, 1)
    publish_version(local_store, 2)
    write_registry(local_store, stable=1, canary=2)
    settings = make_settings(tmp_path)
    sync = ModelSync(settings, local_store)
    sync.run_cycle()
    sync.run_cycle()

    config = text_format.Parse(
        settings.model_config_file.read_text(), model_server_config_pb2.ModelServerConfig()
    )

    (model,) = config.model_config_list.config
    assert model.name == MODEL
    assert model.base_path == str((settings.model_base_path / MODEL).resolve())
    assert model.model_platform == "tensorflow"
    assert list(model.model_version_policy.specific.versions) == [1, 2]
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}


def test_sync_registry_missing_raises_clear_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="no registry"):
        ModelSync(make_settings(tmp_path), store).run_cycle()


def test_sync_run_once_stable_without_manifest_returns_nonzero(
    local_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_version(local_store, 1, with_manifest=False)
    write_registry(local_store, stable=1)

    code = run_once(ModelSync(make_settings(tmp_path), local_store), attempts=1)

    assert code == 2
    assert "stable version 1 has no manifest" in capsys.readouterr().err


def test_sync_run_watch_transient_storage_errors_are_retried(
    local_store: Store, tmp_path: Path
) -> None:
    publish_version(local_store, 1)
    write_registry(local_store, stable=1)
    settings = make_settings(tmp_path)

    class RecoveringStore(FailingStore):
        def get(self, key: str) -> StoredObject:
            if key == keys.model_registry(MODEL) and self.budget < 2:
                self.budget += 1
                raise StorageUnavailable("bucket unreachable")
            return super().get(key)

    flaky = RecoveringStore(local_store, "never/", budget=0)

    code = run_watch(ModelSync(settings, flaky), 0.01, max_cycles=4)

    assert code == 0
    assert config_entry(settings) == ([1], {"stable": 1})


def test_sync_settings_from_env_reads_names_aliases_and_reports_all_problems() -> None:
    settings = SyncSettings.from_env(
        {
            "STORAGE_PATH": "/data/store",
            "PROD_MODEL_NAME": "other",
            "MODEL_BASE_PATH": "/models",
            "SYNC_INTERVAL_SECONDS": "2.5",
            "TF_SERVING_URL": "http://tfs:8501/",
        }
    )
    assert settings.storage.url == "/data/store"
    assert settings.model_name == "other"
    assert settings.model_config_file == Path("/models/models.config")
    assert settings.interval_seconds == 2.5
    assert settings.grace_seconds == 300.0
    assert settings.tf_serving_url == "http://tfs:8501"

    with pytest.raises(ValueError) as raised:
        SyncSettings.from_env(
            {"MODEL_NAME": "../x", "SYNC_GRACE_SECONDS": "soon", "TF_SERVING_URL": "tfs:8501"}
        )
    message = str(raised.value)
    assert "MODEL_NAME" in message
    assert "SYNC_GRACE_SECONDS" in message
    assert "TF_SERVING_URL" in message


@pytest.fixture
def fake_status_server() -> Iterator[tuple[str, dict[int, str]]]:
    """A tiny HTTP server answering TF Serving's version status like a real one."""
    states: dict[int, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            version = int(self.path.rsplit("/", 1)[1])
            if version not in states:
                body = json.dumps({"error": f"Could not find version {version} of model m"})
                self.send_response(404)
            else:
                body = json.dumps(
                    {
                        "model_version_status": [
                            {
                                "version": str(version),
                                "state": states[version],
                                "status": {"error_code": "OK", "error_message": ""},
                            }
                        ]
                    }
                )
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", states
    finally:
        server.shutdown()
        server.server_close()


def test_rest_availability_probe_reads_version_state_over_http(
    fake_status_server: tuple[str, dict[int, str]],
) -> None:
    url, states = fake_status_server
    probe = RestAvailabilityProbe(url)
    states[1] = "LOADING"

    loading = probe.is_available(MODEL, 1)
    states[1] = "AVAILABLE"

    assert loading is False
    assert probe.is_available(MODEL, 1) is True
    assert probe.is_available(MODEL, 7) is False  # 404
    assert RestAvailabilityProbe("http://127.0.0.1:9").is_available(MODEL, 1) is False


def _cli_env(tmp_path: Path, store_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("S3_")}
    env.update(
        STORAGE_URL=str(store_dir),
        MODEL_NAME=MODEL,
        MODEL_BASE_PATH=str(tmp_path / "models"),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    return env


def test_sync_cli_once_exits_zero_with_stable_in_place(local_store: Store, tmp_path: Path) -> None:
    files = publish_version(local_store, 3, fake_version_files(3))
    write_registry(local_store, stable=3)
    store_dir = Path(local_store.describe())

    result = subprocess.run(
        [sys.executable, "-m", "serving.sync", "--once"],
        env=_cli_env(tmp_path, store_dir),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    copied = tmp_path / "models" / MODEL / "3" / "saved_model.pb"
    assert (
        hashlib.sha256(copied.read_bytes()).digest()
        == hashlib.sha256(files["saved_model.pb"]).digest()
    )
    events = [json.loads(line)["event"] for line in result.stderr.splitlines() if line]
    assert "version_installed" in events
    assert "config_written" in events


def test_sync_cli_once_without_registry_exits_nonzero_with_message(
    local_store: Store, tmp_path: Path
) -> None:
    local_store.put("input/data/placeholder.txt", b"x")

    result = subprocess.run(
        [sys.executable, "-m", "serving.sync", "--once"],
        env=_cli_env(tmp_path, Path(local_store.describe())),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "no registry for model 'cnn_vit'" in result.stderr


def test_sync_shared_models_config_keeps_other_models_verbatim(
    local_store: Store, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    settings.model_config_file.parent.mkdir(parents=True)
    other_latest = (
        'config {\n    name: "other"\n    base_path: "/models/other"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy { latest { num_versions: 2 } }\n  }"
    )
    no_policy = 'config { name: "third" base_path: "/models/third" }'
    settings.model_config_file.write_text(
        f"model_config_list {{\n  {other_latest}\n  {no_policy}\n"
        f'  config {{ name: "{MODEL}" base_path: "/old" }}\n}}\n'
    )
    publish_version(local_store, 1)
    write_registry(local_store, stable=1)

    ModelSync(settings, local_store).run_cycle()

    text = settings.model_config_file.read_text()
    assert other_latest in text
    assert no_policy in text
    assert text.count("config {") == 3
    assert config_entry(settings)[0] == [1]
    names = [entry.name for entry in read_model_config(settings.model_config_file) or []]
    assert names == ["other", "third", MODEL]


def test_sync_damaged_installed_version_is_installed_again(store: Store, tmp_path: Path) -> None:
    files = publish_version(store, 1)
    write_registry(store, stable=1)
    settings = make_settings(tmp_path)
    sync = ModelSync(settings, store)
    sync.run_cycle()
    folder = settings.model_base_path / MODEL / "1"
    damaged = next(path for path in files if (folder / path).stat().st_size > 1)
    (folder / damaged).write_bytes(b"x")  # a truncated file after a crash

    report = sync.run_cycle()

    assert report.installed == [1]
    assert (folder / damaged).read_bytes() == files[damaged]


def test_sync_installed_version_differing_from_the_store_is_replaced(
    store: Store, tmp_path: Path
) -> None:
    """A served folder reused with another store (or a store started afresh) holding another
    version under the same number gets the store's version, not the one left on disk."""
    settings = make_settings(tmp_path)
    other_store = PrefixedStore(store, "elsewhere/")
    publish_version(other_store, 1, {**fake_version_files(1), "saved_model.pb": b"old run"})
    write_registry(other_store, stable=1)
    ModelSync(settings, other_store).run_cycle()
    files = publish_version(store, 1)
    write_registry(store, stable=1)
    sync = ModelSync(settings, store)

    report = sync.run_cycle()

    folder = settings.model_base_path / MODEL / "1"
    assert report.installed == [1]
    assert (folder / "saved_model.pb").read_bytes() == files["saved_model.pb"]
    assert sync.run_cycle().installed == []  # left alone once it matches
    assert version_folders(settings) == ["1"]  # the old folder, set aside, is gone


def test_sync_installed_version_without_its_manifest_is_installed_again(
    local_store: Store, tmp_path: Path
) -> None:
    publish_version(local_store, 1)
    write_registry(local_store, stable=1)
    settings = make_settings(tmp_path)
    sync = ModelSync(settings, local_store)
    sync.run_cycle()
    folder = settings.model_base_path / MODEL / "1"
    (folder / "manifest.json").unlink()

    report = sync.run_cycle()

    assert report.installed == [1]
    assert (folder / "manifest.json").read_bytes() == local_store.get_bytes(
        keys.model_version_manifest(MODEL, 1)
    )


def test_sync_installed_version_is_kept_while_its_published_manifest_cannot_be_read(
    local_store: Store, tmp_path: Path
) -> None:
    publish_version(local_store, 1)
    write_registry(local_store, stable=1)
    settings = make_settings(tmp_path)
    ModelSync(settings, local_store).run_cycle()
    folder = settings.model_base_path / MODEL / "1"
    installed = {path.name: path.stat().st_ino for path in folder.iterdir()}

    refused: list[str] = []

    class ManifestUnreachable(PrefixedStore):
        def get(self, key: str) -> StoredObject:
            if key == keys.model_version_manifest(MODEL, 1):
                refused.append(key)
                raise StorageUnavailable("connection reset")
            return super().get(key)

    report = ModelSync(settings, ManifestUnreachable(local_store, "")).run_cycle()

    assert refused == [keys.model_version_manifest(MODEL, 1)]
    assert report.installed == []
    assert report.failed == {}
    assert {path.name: path.stat().st_ino for path in folder.iterdir()} == installed
    assert config_entry(settings) == ([1], {"stable": 1})


def test_sync_drops_labels_of_versions_a_restarted_server_has_not_loaded(
    store: Store, tmp_path: Path
) -> None:
    """The model server restarts with the config file the sync wrote (a pod's shared volume, or
    `make run` started again): the sync's next config must not name a label on a version the
    server does not report AVAILABLE yet, or the server refuses to start (and would forever)."""
    publish_version(store, 1)
    write_registry(store, stable=1)
    settings = make_settings(tmp_path)
    probe = FakeProbe()
    probe.available = {1}
    ModelSync(settings, store, probe=probe).run_cycle()
    ModelSync(settings, store, probe=probe).run_cycle()
    assert config_entry(settings) == ([1], {"stable": 1})

    probe.available = set()  # the server is restarting: nothing loaded, or not answering
    restarted = ModelSync(settings, store, probe=probe)  # `xray-model-sync --once` at start
    restarted.run_cycle()
    assert config_entry(settings) == ([1], {})

    probe.available = {1}  # loaded: the label follows
    restarted.run_cycle()
    assert config_entry(settings) == ([1], {"stable": 1})
