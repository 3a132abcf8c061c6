"""Model lifecycle of the local model server as real processes: swaps, failures, labels, sync.

One server polls a base path (`latest` policy) while tests add and remove version folders under
continuous requests; another serves the `models.config` the model sync writes, end to end.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from serving.model_config import read_model_config
from serving.sync import ModelSync, RestAvailabilityProbe, SyncSettings
from storage import LocalStore, StorageSettings
from tests.serving.models import (
    save_half_plus_two,
    write_broken_warmup,
    write_failing_warmup,
    write_unsupported_warmup,
    write_warmup_with_empty_record,
)
from tests.serving.publishing import publish_version, saved_model_files, write_registry
from tests.serving.server_process import ServerProcess


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def install_version(
    base: Path, version: int, offset: float, prepare: Callable[[Path], Any] | None = None
) -> Path:
    """Build a version beside the base path, then rename it in (never seen half-written)."""
    staging = base.parent / f"staging-{base.name}-{version}"
    save_half_plus_two(staging, offset=offset)
    if prepare is not None:
        prepare(staging)
    target = base / str(version)
    staging.rename(target)
    return target


class Hammer:
    """A thread sending predict requests back to back, recording every answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    response = session.post(self.url, json={"instances": [[1.0]]}, timeout=30)
                    if response.status_code == 200:
                        self.answers.append(response.json()["predictions"][0][0])
                    else:
                        self.failures.append(f"{response.status_code} {response.text}")
                except requests.RequestException as error:
                    self.failures.append(repr(error))

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def statuses(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    response = requests.get(f"{server.url}/v1/models/{name}", timeout=10)
    return response.json()["model_version_status"] if response.status_code == 200 else []


@pytest.fixture(scope="module")
def polling_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path_factory.mktemp("polling")
    base = folder / "swap"
    base.mkdir()
    install_version(base, 1, offset=2.0)
    (base / "not-a-version").mkdir()  # ignored: not numeric
    server = ServerProcess(
        [
            "--model_name=swap",
            f"--model_base_path={base}",
            "--file_system_poll_wait_seconds=0.2",
            "--max_num_load_retries=0",
        ],
        folder / "server.log",
    )
    try:
        server.wait_ready()
        yield server, base
    finally:
        server.stop()


def test_lifecycle_swap_under_continuous_requests_has_zero_failures(
    polling_server: tuple[ServerProcess, Path],
) -> None:
    server, base = polling_server
    url = f"{server.url}/v1/models/swap:predict"

    with Hammer(url) as hammer:
        wait_for(lambda: len(hammer.answers) > 5, what="first answers")
        install_version(base, 2, offset=3.0)
        wait_for(lambda: hammer.answers and hammer.answers[-1] == 3.5, what="version 2 answers")
        shutil.rmtree(base / "1")
        seen = len(hammer.answers)
        wait_for(lambda: len(hammer.answers) > seen + 5, what="answers after removal")

    assert hammer.failures == []
    assert hammer.answers[0] == 2.5
    assert hammer.answers[-1] == 3.5
    # Old answers never come back once the new version answers: the swap is clean.
    first_new = hammer.answers.index(3.5)
    assert set(hammer.answers[first_new:]) == {3.5}
    assert statuses(server, "swap") == [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}},
    ]


@pytest.mark.parametrize(
    ("version", "prepare", "code"),
    [
        (7, write_broken_warmup, "DATA_LOSS"),
        (8, write_failing_warmup, "INVALID_ARGUMENT"),
        (9, write_unsupported_warmup, "UNIMPLEMENTED"),
    ],
    ids=["warmup not tfrecord", "warmup request fails", "warmup session_run_log"],
)
def test_lifecycle_version_failing_warmup_ends_with_error_and_old_keeps_serving(
    polling_server: tuple[ServerProcess, Path],
    version: int,
    prepare: Callable[[Path], Any],
    code: str,
) -> None:
    server, base = polling_server
    url = f"{server.url}/v1/models/swap:predict"
    before = requests.post(url, json={"instances": [[1.0]]}, timeout=30).json()

    with Hammer(url) as hammer:
        install_version(base, version, offset=100.0, prepare=prepare)
        failed = wait_for(
            lambda: [
                s
                for s in statuses(server, "swap")
                if s["version"] == str(version) and s["state"] == "END"
            ],
            what=f"version {version} to fail",
        )
        seen = len(hammer.answers)
        wait_for(lambda: len(hammer.answers) > seen + 3, what="answers after the failure")
    shutil.rmtree(base / str(version))

    assert failed[0]["status"]["error_code"] == code
    assert failed[0]["status"]["error_message"]
    assert hammer.failures == []
    assert set(hammer.answers) == {before["predictions"][0][0]}
    assert any(s["state"] == "AVAILABLE" for s in statuses(server, "swap"))


def test_lifecycle_warmup_record_without_log_type_runs_nothing_and_the_version_loads(
    polling_server: tuple[ServerProcess, Path],
) -> None:
    server, base = polling_server
    url = f"{server.url}/v1/models/swap:predict"
    before = requests.post(url, json={"instances": [[1.0]]}, timeout=30).json()

    install_version(base, 30, offset=30.0, prepare=write_warmup_with_empty_record)
    wait_for(
        lambda: (
            requests.post(url, json={"instances": [[1.0]]}, timeout=30).json()
            == {"predictions": [[30.5]]}
        ),
        what="version 30 answers",
    )
    shutil.rmtree(base / "30")
    # The highest remaining version serves again once version 30 has left.
    wait_for(
        lambda: (
            requests.post(url, json={"instances": [[1.0]]}, timeout=30).json() == before
            and [s["state"] for s in statuses(server, "swap") if s["version"] == "30"] == ["END"]
        ),
        what="the previous version back",
    )

    assert [s["status"] for s in statuses(server, "swap") if s["version"] == "30"] == [
        {"error_code": "OK", "error_message": ""}
    ]


def test_lifecycle_label_on_unavailable_version_is_refused_on_reload(
    polling_server: tuple[ServerProcess, Path],
) -> None:
    server, base = polling_server
    available = [int(s["version"]) for s in statuses(server, "swap") if s["state"] == "AVAILABLE"]

    def reload(label_version: int) -> model_management_pb2.ReloadConfigResponse:
        request = model_management_pb2.ReloadConfigRequest()
        config = request.config.model_config_list.config.add()
        config.name = "swap"
        config.base_path = str(base)
        config.model_platform = "tensorflow"
        config.version_labels["stable"] = label_version
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            return stub.HandleReloadConfigRequest(request, timeout=60)

    with pytest.raises(grpc.RpcError) as raised:
        reload(99)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not currently available for inference" in raised.value.details()
    refused = requests.post(
        f"{server.url}/v1/models/swap/labels/stable:predict",
        json={"instances": [[1.0]]},
        timeout=30,
    )

    accepted = reload(max(available))
    labelled = requests.post(
        f"{server.url}/v1/models/swap/labels/stable:predict",
        json={"instances": [[1.0]]},
        timeout=30,
    )

    assert refused.status_code == 400
    assert accepted.status.error_code == 0
    assert labelled.status_code == 200, labelled.text


def test_lifecycle_startup_with_no_loadable_version_exits_with_message(tmp_path: Path) -> None:
    base = tmp_path / "broken"
    base.mkdir()
    install_version(base, 1, offset=2.0, prepare=write_broken_warmup)
    server = ServerProcess(
        [f"--model_base_path={base}", "--model_name=broken", "--max_num_load_retries=0"],
        tmp_path / "server.log",
    )
    try:
        code = server.wait_exit(120)
    finally:
        server.stop()

    assert code == 255  # tensorflow_model_server's `return -1`
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: broken version: 1} due to error: DATA_LOSS: "
    ) in server.log()


def test_sync_and_model_server_promotion_end_to_end_has_zero_failures(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    for version, offset in ((1, 2.0), (2, 3.0)):
        folder = save_half_plus_two(tmp_path / "export" / str(version), offset=offset)
        publish_version(store, version, saved_model_files(folder))
    write_registry(store, stable=1)
    base = tmp_path / "models"
    settings = SyncSettings(
        storage=StorageSettings(url=str(tmp_path / "store")),
        model_base_path=base,
        model_config_file=base / "models.config",
    )
    assert ModelSync(settings, store).run_cycle().stable_in_place  # the init container
    server = ServerProcess(
        [
            f"--model_config_file={settings.model_config_file}",
            "--model_config_file_poll_wait_seconds=0.2",
            "--file_system_poll_wait_seconds=0.2",
        ],
        tmp_path / "server.log",
    )
    try:
        server.wait_ready()
        sidecar = ModelSync(settings, store, probe=RestAvailabilityProbe(server.url))

        def labelled() -> bool:
            # The sidecar labels version 1 once the server reports it AVAILABLE.
            sidecar.run_cycle()
            answer = requests.post(
                f"{server.url}/v1/models/cnn_vit/labels/stable:predict",
                json={"instances": [[1.0]]},
                timeout=30,
            )
            return answer.status_code == 200

        wait_for(labelled, timeout=60, what="the stable label")
        with Hammer(f"{server.url}/v1/models/cnn_vit/labels/stable:predict") as hammer:
            wait_for(lambda: len(hammer.answers) > 5, what="first answers")
            write_registry(store, stable=2, previous_stable=[1])

            def promoted() -> bool:
                sidecar.run_cycle()
                entries = read_model_config(settings.model_config_file) or []
                return [(e.versions, dict(e.labels)) for e in entries] == [((2,), {"stable": 2})]

            wait_for(promoted, timeout=90, what="the promotion to finish")
            wait_for(lambda: hammer.answers[-1] == 3.5, what="version 2 answers")
            seen = len(hammer.answers)
            wait_for(lambda: len(hammer.answers) > seen + 5, what="answers after the swap")
    finally:
        server.stop()

    assert hammer.failures == []
    assert hammer.answers[0] == 2.5
    assert hammer.answers[-1] == 3.5
    assert set(hammer.answers) == {2.5, 3.5}
