"""The whole training job as two processes under MultiWorkerMirroredStrategy (TF_CONFIG on
loopback; plain workers, and a Chief and a Worker as the Kubeflow Training Operator describes them),
on a folder and on moto's S3: one learning run, one published version, the same
weights on both workers, nothing written by the worker (on a folder it runs on a copy of the
store, unchanged at the end); a worker that dies mid-run fails the job
cleanly, with no version published."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from storage import StorageSettings, Store, keys, open_areas
from synthetic.xrays import write_covid_qu_ex_to_store
from tests.conftest import FAKE_AWS

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


class Worker:
    """One `python -m training_job` process of the cluster; its JSON lines collected as read."""

    def __init__(
        self,
        index: int,
        hosts: list[str],
        env: dict[str, str],
        work: Path,
        args: list[str],
        *,
        tfjob: bool = False,
    ) -> None:
        environment = {
            **env,
            "PYTHONPATH": str(REPOSITORY),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TRAINING_CACHE_DIR": str(work / f"cache-{index}"),
            "TF_CONFIG": _tf_config(hosts, index, tfjob=tfjob),
        }
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "training_job",
                "--preset",
                "small",
                "--batch-size",
                "8",
                "--min-macro-f1",
                "0",
                *args,
            ],
            cwd=work,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.append(event)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [event for event in list(self.events) if event.get("event") == name]

    def finish(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _store_env(
    backend: str, work: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STORAGE_", "S3_", "DB_", "MODEL_", "TRAINING_", "TF_CONFIG"))
    }
    if backend == "local":
        return {**env, "STORAGE_URL": str(work / "store")}
    from tests.conftest import new_bucket

    endpoint = request.getfixturevalue("moto_server")
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    return {
        **env,
        **FAKE_AWS,
        "STORAGE_URL": f"s3://{new_bucket(endpoint)}/root",
        "S3_ENDPOINT_URL": endpoint,
    }


def _tf_config(hosts: list[str], index: int, *, tfjob: bool) -> str:
    """Worker `index`'s TF_CONFIG: plain workers (worker 0 the chief), or as the Kubeflow
    Training Operator writes it for a TFJob with one Chief and Workers (tensorflow.go
    genTFConfigJSONStr: lower-case replica types, "environment": "cloud")."""
    if not tfjob:
        return json.dumps(
            {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        )
    task = {"type": "chief", "index": 0} if index == 0 else {"type": "worker", "index": index - 1}
    cluster = {"chief": hosts[:1], "worker": hosts[1:]}
    return json.dumps({"cluster": cluster, "task": task, "environment": "cloud"})


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], Store, list[str]]:
    backend = getattr(request, "param", "local")
    env = _store_env(backend, tmp_path, request, monkeypatch)
    areas = open_areas(StorageSettings.from_env(env))
    write_covid_qu_ex_to_store(areas.db, "b1", {"train": 12, "val": 3, "test": 4}, seed=2)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    return env, areas.root, workers


@pytest.mark.parametrize(
    ("cluster", "tfjob"), [("local", False), ("s3", True)], indirect=["cluster"]
)
def test_whole_job_on_two_workers_publishes_once_with_the_same_weights(
    cluster: tuple[dict[str, str], Store, list[str]], tfjob: bool, tmp_path: Path
) -> None:
    env, root, workers = cluster
    worker_env = env
    if "S3_ENDPOINT_URL" not in env:
        # On a folder the worker gets a copy of the store, to show it writes nothing at all.
        shutil.copytree(env["STORAGE_URL"], tmp_path / "worker-store")
        worker_env = {**env, "STORAGE_URL": str(tmp_path / "worker-store")}
        before = _snapshot(tmp_path / "worker-store")
    args = ["--epochs", "2"]
    # No --run-id: the workers agree on the chief's.
    chief = Worker(0, workers, env, tmp_path, args, tfjob=tfjob)
    worker = Worker(1, workers, worker_env, tmp_path, args, tfjob=tfjob)
    try:
        codes = [chief.finish(), worker.finish()]
    finally:
        chief.stop()
        worker.stop()

    assert codes == [0, 0], "".join(chief.lines[-40:] + worker.lines[-40:])
    registry = json.loads(root.get_bytes(keys.model_registry("cnn_vit")))
    assert sorted(registry["versions"]) == ["1"]
    assert registry["stable"] == 1
    (started,) = chief.named("job_started")
    (agreed,) = worker.named("run_id_agreed")
    assert agreed["run_id"] == started["run_id"] != agreed["tentative"]
    assert {event["run_id"] for event in worker.events[worker.events.index(agreed) :]} == {
        started["run_id"]
    }
    runs = {info.key.split("/")[2] for info in root.list(keys.LEARNING_AREA)}
    assert runs == {started["run_id"]}
    (chief_trained,) = chief.named("training_finished")
    (worker_trained,) = worker.named("training_finished")
    assert chief_trained["replicas"] == worker_trained["replicas"] == 2
    assert chief_trained["weights_sha256"] == worker_trained["weights_sha256"]
    # Only the chief evaluates, writes and publishes.
    assert worker.named("worker_finished")
    for name in ("exported", "outputs_written", "published", "promoted"):
        assert worker.named(name) == []
        assert chief.named(name)
    if worker_env is not env:
        assert _snapshot(tmp_path / "worker-store") == before


def test_a_worker_that_dies_mid_run_fails_the_job_and_publishes_nothing(
    cluster: tuple[dict[str, str], Store, list[str]], tmp_path: Path
) -> None:
    env, root, workers = cluster
    env = {**env, "TRAINING_COLLECTIVE_TIMEOUT_SECONDS": "20"}
    args = ["--epochs", "200", "--patience", "200"]
    chief, worker = (Worker(index, workers, env, tmp_path, args) for index in range(2))
    try:
        deadline = 240.0
        waited = 0.0
        while not worker.named("epoch") and waited < deadline and worker.process.poll() is None:
            threading.Event().wait(0.2)
            waited += 0.2
        assert worker.named("epoch"), "".join(worker.lines[-40:])
        worker.process.kill()
        code = chief.finish(timeout=240)
    finally:
        chief.stop()
        worker.stop()

    assert code == 1, "".join(chief.lines[-40:])
    assert chief.named("job_failed")
    assert not root.exists(keys.model_registry("cnn_vit"))
