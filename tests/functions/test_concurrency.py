"""Hundreds of concurrent inferences from several users over real HTTP (the gateway process,
gunicorn threads, the fake model server as a process, a local folder or moto's S3): every
answered inference has exactly one record, none lost, none duplicated, each naming the model
version that answered, also across a version swap in the middle of the run.

(Concurrent changes to the users file are proven with fixed interleavings in test_users.py,
and concurrent logins against the throttle in test_login_hardening.py.)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import StorageSettings, keys, open_areas
from tests.conftest import FAKE_AWS, free_port, new_bucket
from tests.functions.conftest import PASSWORDS, cheap_env, seed_users
from tests.functions.fake_serving_process import FakeServingProcess
from tests.functions.gateway_process import ROOT, Gateway, start_gateway, stop_gateway
from tests.functions.load_driver import LoadReport, login, run_load, verify_records
from tests.functions.sample_images import png_bytes

USERS = {
    "alice@example.com": PASSWORDS["1"],
    "admin@example.com": PASSWORDS["2"],
    "bob@example.com": PASSWORDS["3"],
}
USER_IDS = ["1", "2", "3"]


@pytest.fixture(scope="module")
def model_process() -> Iterator[FakeServingProcess]:
    process = FakeServingProcess(free_port()).start()
    yield process
    process.kill()


def _gateway_env(storage: dict[str, str], model: FakeServingProcess) -> dict[str, str]:
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return {
        **keep,
        **cheap_env(),
        **storage,
        "USERS_CACHE_SECONDS": "1",
        "TF_SERVING_URL": model.url,
        "TF_SERVING_READ_TIMEOUT": "10",
        "TF_SERVING_DEADLINE": "20",
        "PYTHONPATH": str(ROOT),
    }


def _run(gateway: Gateway, model: FakeServingProcess, total: int) -> LoadReport:
    """`total` predictions from three users, the model swapping from 3 to 4 halfway."""
    model.control("reset")
    model.control("set", version=3)
    tokens = {user: login(gateway.url, user, password) for user, password in USERS.items()}
    report = run_load(
        gateway.url,
        tokens,
        png_bytes(96, 96),
        total=total,
        concurrency=12,
        max_seconds=240,
        midway=lambda: model.control("set", version=4),
    )
    assert len(report.outcomes) == total
    assert report.failed == [], report.summary()
    versions = Counter(outcome.model_version for outcome in report.answered)
    answered_by_model = Counter(model.report()["versions_answered"])
    # One model call per answer, and each answer names the version that computed it.
    assert versions == answered_by_model
    assert set(versions) == {3, 4}
    return report


@pytest.fixture(scope="module")
def local_gateway(
    tmp_path_factory: pytest.TempPathFactory, model_process: FakeServingProcess
) -> Iterator[tuple[Gateway, StorageSettings]]:
    folder = tmp_path_factory.mktemp("concurrency")
    settings = StorageSettings(url=str(folder / "store"))
    seed_users(open_areas(settings).auth)
    env = _gateway_env({"STORAGE_URL": settings.url}, model_process)
    running = start_gateway(folder, env, "--threads", "8")
    yield running, settings
    stop_gateway(running)


def test_concurrency_predictions_each_recorded_exactly_once(
    local_gateway: tuple[Gateway, StorageSettings], model_process: FakeServingProcess
) -> None:
    gateway, settings = local_gateway
    root = open_areas(settings).root
    report = _run(gateway, model_process, total=240)
    assert verify_records(root, report, USER_IDS) == []
    per_user = [len(root.list_keys(keys.inference_user_prefix(user))) for user in USER_IDS]
    assert per_user == [80, 80, 80]  # round-robin over three users


def test_concurrency_load_driver_verifies_records_on_s3(
    tmp_path: Path, s3_env: dict[str, str], model_process: FakeServingProcess
) -> None:
    moto_server = s3_env["S3_ENDPOINT_URL"]
    bucket = new_bucket(moto_server)
    storage = {
        "STORAGE_URL": f"s3://{bucket}/root",
        "S3_ENDPOINT_URL": moto_server,
        "AWS_REGION": "us-east-1",
        **FAKE_AWS,
    }
    settings = StorageSettings(
        url=storage["STORAGE_URL"], s3_endpoint_url=moto_server, s3_region="us-east-1"
    )
    areas = open_areas(settings)
    seed_users(areas.auth)
    running = start_gateway(tmp_path, _gateway_env(storage, model_process), "--threads", "8")
    try:
        model_process.control("reset")
        model_process.control("set", version=3)
        tokens = {user: login(running.url, user, password) for user, password in USERS.items()}
        predictions = run_load(
            running.url,
            tokens,
            png_bytes(96, 96),
            total=120,
            concurrency=10,
            midway=lambda: model_process.control("set", version=4),
        )
        explanations = run_load(
            running.url, tokens, png_bytes(96, 96), total=30, concurrency=6, path="/gradcam"
        )
    finally:
        stop_gateway(running)
    assert predictions.failed == []
    assert explanations.failed == []
    combined = predictions
    combined.outcomes = predictions.outcomes + explanations.outcomes
    assert verify_records(areas.root, combined, USER_IDS) == []
    images = areas.root.list_keys(keys.GRAD_CAM_AREA)
    assert len(images) == 30
    answered = {outcome.inference_id for outcome in explanations.answered}
    assert {key.rsplit("/", 1)[-1].removesuffix(".png") for key in images} == answered
