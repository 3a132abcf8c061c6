"""The whole system as real processes on loopback, driven over HTTP as a client would.

For each backend (a local folder, and a bucket on moto's S3 server) the stack is what `make run`
starts: the model sync (once, then watching), the local model server and the gateway with the
four functions. Version 1 in production is an untrained model published the way any version
is; the test logs in (new routes and the original system's, with a users file in the original
format holding legacy bcrypt hashes), predicts, asks for Grad-CAM, reads the history, adds data,
runs the real training job, sees version 2 promoted and answering, rolls back and sees version 1
answer again.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import numpy as np
import pytest
import requests
from PIL import Image

from devstack.processes import ProcessGroup
from devstack.run import StackOptions, start_serving
from storage import StorageSettings, Store, keys, open_areas
from tests.conftest import FAKE_AWS, free_port, new_bucket

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL_NAME = "cnn_vit"
CLASSES = ("normal", "covid", "no-covid")
ALICE = ("alice@example.com", "alice-password-1")
ADMIN = ("admin@example.com", "admin-password-1")


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    root: Store
    db: Store
    work: Path
    samples: dict[str, bytes]
    groups: dict[str, int]  # process name -> its process group (the process and its children)

    def token(self, username: str, password: str, path: str = "/auth/token") -> str:
        answer = requests.post(
            self.base + path,
            data={"grant_type": "password", "username": username, "password": password},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def run(self, *command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *command],
            cwd=Path(__file__).resolve().parents[2],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _legacy_users_csv() -> bytes:
    """The original system's users file: bcrypt `$2b$12$` hashes, `False` for enabled users."""
    rows = ["id;email;role;hashed_password;disabled"]
    for user_id, (email, password), role in ((1, ALICE, "user"), (2, ADMIN, "admin")):
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()
        rows.append(f"{user_id};{email};{role};{hashed};False")
    rows.append(f"3;mallory@example.com;user;{hashed};True")
    return ("\n".join(rows) + "\n").encode()


def _publish_untrained_version_1(root: Store, work: Path) -> None:
    """Production starts with a model that knows nothing (so retraining visibly wins)."""
    import keras

    from cnn_vit.config import get_preset
    from cnn_vit.model import build_model
    from model_contract.registry import ModelRegistry
    from model_export.export import export_saved_model

    keras.utils.set_random_seed(123)
    config = get_preset("small")
    export_dir = work / "untrained"
    export_saved_model(build_model(config), config, export_dir, model_name=MODEL_NAME, run_id="v1")
    registry = ModelRegistry(root, MODEL_NAME)
    version = registry.publish(
        export_dir,
        run_id="v1",
        metrics={"macro_f1": 0.0},
        dataset_fingerprint="sha256:none",
        parent_version=None,
        preset="small",
    )
    registry.promote(version, "stable")


def _samples() -> dict[str, bytes]:
    from synthetic.xrays import encode_png, generate_xray

    return {
        name: encode_png(generate_xray(name, 900 + index).image)
        for index, name in enumerate(CLASSES)
    }


@pytest.fixture(scope="module", params=["local", "s3"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    from synthetic.xrays import write_covid_qu_ex_to_store

    work = tmp_path_factory.mktemp(f"e2e-{request.param}")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STORAGE_", "S3_", "DB_", "MODEL_", "TF_SERVING", "SECRET"))
    }
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_server")
        bucket = new_bucket(endpoint)
        env.update(FAKE_AWS, STORAGE_URL=f"s3://{bucket}/xray", S3_ENDPOINT_URL=endpoint)
        # This process reads the store too (boto3's credential chain): whichever test created
        # the session's moto server, its fake credentials may be gone from the environment.
        os.environ.update(FAKE_AWS)
    else:
        env["STORAGE_URL"] = str(work / "store")
    api, rest, grpc = free_port(), free_port(), free_port()
    env.update(
        ENVIRONMENT="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        MODEL_NAME=MODEL_NAME,
        MODEL_BASE_PATH=str(work / "models"),
        MODEL_CONFIG_FILE=str(work / "models" / "models.config"),
        TRAINING_CACHE_DIR=str(work / "training-cache"),
        TF_SERVING_URL=f"http://127.0.0.1:{rest}",
        SYNC_INTERVAL_SECONDS="1",
        SYNC_GRACE_SECONDS="5",
        USERS_CACHE_SECONDS="0",
        PASSWORD_HASH_MEMORY_KIB="64",
        PASSWORD_HASH_TIME_COST="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
        # Each deployable's Prometheus metrics, on ports of their own (not the API's).
        METRICS_PORT=str(free_port()),
        SYNC_METRICS_PORT=str(free_port()),
    )
    areas = open_areas(StorageSettings.from_env(env))
    areas.auth.put_bytes(keys.USERS_FILE, _legacy_users_csv())
    write_covid_qu_ex_to_store(areas.db, "batch-1", {"train": 80, "val": 20, "test": 30}, seed=1)
    _publish_untrained_version_1(areas.root, work)

    options = StackOptions(root=work, api_port=api, rest_port=rest, grpc_port=grpc)
    group = ProcessGroup()
    try:
        start_serving(options, env, group)
        groups = {managed.name: managed.pid for managed in group.processes}
        yield Stack(f"http://127.0.0.1:{api}", env, areas.root, areas.db, work, _samples(), groups)
    finally:
        group.stop_all()


def _predict(stack: Stack, token: str, image: bytes, path: str = "/predict") -> dict[str, Any]:
    answer = requests.post(
        stack.base + path,
        headers={"Authorization": f"Bearer {token}"},
        files={"file": ("xray.png", image, "image/png")},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _wait_for_version(stack: Stack, token: str, version: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = _predict(stack, token, stack.samples["normal"])["model"]["version"]
        if seen == version:
            return
        time.sleep(0.5)
    raise AssertionError(f"version {version} never answered (last seen {seen})")


def test_stack_login_and_profile_with_legacy_bcrypt_users(stack: Stack) -> None:
    token = stack.token(*ALICE)
    me = requests.get(
        stack.base + "/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert me.status_code == 200
    assert me.json()["email"] == ALICE[0]
    assert "hashed_password" not in me.json()
    refused = requests.post(
        stack.base + "/auth/token",
        data={"grant_type": "password", "username": "mallory@example.com", "password": ADMIN[1]},
        timeout=30,
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def test_stack_predicts_each_class_with_version_1_identity(stack: Stack) -> None:
    token = stack.token(*ALICE)
    for name, image in stack.samples.items():
        answer = _predict(stack, token, image)
        assert answer["model"] == {"name": MODEL_NAME, "version": 1, "run_id": "v1"}
        assert set(answer["probabilities"]) == set(CLASSES)
        assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
        assert answer["predicted_class"] in CLASSES, name


def _scrape(port: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _count(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of the samples of `name` whose labels include these."""
    return sum(
        value
        for (sample, sample_labels), value in scraped.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def test_stack_metrics_scraped_match_the_requests_made(stack: Stack) -> None:
    """The gateway's and the sync's metrics ports, scraped before and after known requests:
    names, labels and counts follow them; the API's port serves no metrics."""
    gateway, sync = stack.env["METRICS_PORT"], stack.env["SYNC_METRICS_PORT"]
    before = _scrape(gateway)
    token = stack.token(*ALICE)
    versions = [
        _predict(stack, token, image)["model"]["version"] for image in stack.samples.values()
    ]
    unauthenticated = requests.post(
        stack.base + "/predict", files={"file": ("x.png", b"x", "image/png")}, timeout=30
    )
    assert unauthenticated.status_code == 401
    public = requests.get(stack.base + "/metrics", timeout=10)
    assert public.status_code == 404
    assert public.headers["Content-Type"].startswith("application/json")
    after = _scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return _count(after, name, **labels) - _count(before, name, **labels)

    ok = {"function": "predict", "route": "/", "method": "POST", "status": "200", "error": ""}
    assert delta("xray_requests_total", **ok) == len(versions)
    assert (
        delta(
            "xray_requests_total", function="predict", status="401", error="authentication_required"
        )
        == 1
    )
    assert delta("xray_requests_total", function="auth", route="/token", status="200") == 1
    (version,) = set(versions)
    model = {"model_name": MODEL_NAME, "model_version": str(version), "model_label": "stable"}
    assert delta("xray_model_answers_total", function="predict", **model) == len(versions)
    assert delta("xray_predictions_total", **model) == len(versions)
    assert delta("xray_prediction_confidence_count", **model) == len(versions)
    # Every request has a total and an own time; only the answered ones spent model time.
    for part, count in (("total", len(versions) + 1), ("own", len(versions) + 1)):
        assert (
            delta("xray_request_duration_seconds_count", function="predict", route="/", part=part)
            == count
        )
    model_time = delta(
        "xray_request_duration_seconds_count", function="predict", route="/", part="model"
    )
    assert model_time == len(versions)
    assert delta("xray_model_calls_total", outcome="200") >= len(versions)
    assert _count(after, "xray_model_breaker_state", state="closed") >= 1

    synced = _scrape(sync)
    assert _count(synced, "xray_sync_served_version", label="stable") == version
    assert _count(synced, "xray_sync_cycles_total", outcome="ok") >= 1
    assert _count(synced, "xray_sync_lag_seconds") == 0


def test_stack_gradcam_returns_a_png_overlay(stack: Stack) -> None:
    token = stack.token(*ALICE)
    answer = requests.post(
        stack.base + "/gradcam",
        headers={"Authorization": f"Bearer {token}"},
        files={"file": ("xray.png", stack.samples["covid"], "image/png")},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    overlay = Image.open(io.BytesIO(answer.content))
    assert overlay.size == (256, 256)  # the export draws overlays at max(S, 256)
    assert np.asarray(overlay.convert("RGB")).std() > 0


def test_stack_history_window_and_pagination(stack: Stack) -> None:
    token = stack.token(*ALICE)
    auth = {"Authorization": f"Bearer {token}"}
    start = datetime.now(UTC) - timedelta(hours=1)
    for image in stack.samples.values():
        _predict(stack, token, image)
    seen: list[str] = []
    params: dict[str, Any] = {"start_time": start.isoformat(), "limit": 2}
    while True:
        page = requests.get(stack.base + "/history", headers=auth, params=params, timeout=30)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["records"]) <= 2
        seen.extend(record["id"] for record in body["records"])
        if body["next_page_token"] is None:
            break
        params["page_token"] = body["next_page_token"]
    # Three predicts here, three in the earlier test and one Grad-CAM: newest first.
    assert len(seen) == len(set(seen)) >= 7
    assert seen == sorted(seen, reverse=True)
    future = requests.get(
        stack.base + "/history",
        headers=auth,
        params={
            "start_time": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "stop_time": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        },
        timeout=30,
    )
    assert future.status_code == 200
    assert future.json()["records"] == []
    one = requests.get(f"{stack.base}/history/{seen[0]}", headers=auth, timeout=30)
    assert one.status_code == 200
    admin = stack.token(*ADMIN)
    other = requests.get(
        f"{stack.base}/history/{seen[0]}",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    assert other.status_code == 404  # the admin's own history has no such record


def test_stack_original_systems_own_api_tests_pass(stack: Stack) -> None:
    """The original's API tests (reference section 1), the exact requests it sent, over HTTP."""
    client = requests.Session()
    login = client.post(
        stack.base + "/token",
        data={
            "grant_type": "",
            "username": ADMIN[0],
            "password": ADMIN[1],
            "scope": "",
            "client_id": "",
            "client_secret": "",
        },
        headers={"accept": "application/json"},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    headers = {
        "accept": "application/json",
        "Authorization": f"{login.json()['token_type']} {login.json()['access_token']}",
    }
    wrong = client.post(
        stack.base + "/token",
        data={"grant_type": "", "username": "nobody", "password": "x", "scope": ""},
        headers={"accept": "application/json"},
        timeout=30,
    )
    assert wrong.status_code == 401

    me = client.get(stack.base + "/user/me", headers=headers, timeout=10).json()
    del me["id"]
    assert me == {"email": ADMIN[0], "role": "admin", "disabled": False}
    root = client.get(stack.base + "/", headers=headers, timeout=10)
    assert root.status_code == 200
    assert root.json() == "The API is available."

    upload = {"file": ("x.png", stack.samples["no-covid"], "image/png")}
    xray = client.post(stack.base + "/x-ray", files=upload, headers=headers, timeout=60)
    assert xray.status_code == 200, xray.text
    assert set(xray.json()) == {"covid", "no-covid", "normal"}
    grad_cam = client.post(stack.base + "/grad_cam", files=upload, headers=headers, timeout=60)
    assert grad_cam.status_code == 200
    assert Image.open(io.BytesIO(grad_cam.content)).size == (256, 256)

    results = client.get(stack.base + "/user/results", headers=headers, timeout=30).json()
    entries = json.loads(results)
    assert len(entries) == 2
    assert set(entries[0]) == {"datetime", "covid", "no-covid", "normal"}


def test_stack_retraining_promotes_version_2_then_rollback_restores_version_1(
    stack: Stack,
) -> None:
    from synthetic.xrays import write_covid_qu_ex_to_store

    write_covid_qu_ex_to_store(stack.db, "batch-2", {"train": 60, "val": 10, "test": 10}, seed=2)
    job = stack.run("training_job", "--preset", "small", "--epochs", "12", "--batch-size", "16")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    registry = stack.root.get_json(keys.model_registry(MODEL_NAME))
    assert registry["stable"] == 2, registry

    token = stack.token(*ALICE)
    _wait_for_version(stack, token, 2)
    for name, image in stack.samples.items():
        answer = _predict(stack, token, image)
        assert answer["model"]["version"] == 2
        assert answer["model"]["run_id"] != "v1"
        assert answer["predicted_class"] == name
        # Version 2 comes from the training job: calibrated, with a refer threshold and the
        # out-of-distribution check, all read by the functions from its outputs.
        assert answer["ood"]["checked"] is True
        assert answer["ood"]["reason"] == ""
        assert answer["abstention"]["source"] == "model"
        assert answer["decision"] in {name, "refer"}

    # A photograph and a synthetic skull film: refused in words, recorded, no overlay.
    from training_job.not_chest import generate_not_chest

    rng = np.random.default_rng(0)
    for kind, reason in (("photo", None), ("skull", "features")):
        image = generate_not_chest(kind, rng)
        refused = requests.post(
            stack.base + "/gradcam",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            files={"file": ("photo.png", image, "image/png")},
            timeout=60,
        )
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["error"] == "not_a_chest_xray"
        assert reason is None or body["reason"] == reason
        assert "accept_ood=true" in body["message"]
        flagged = requests.post(
            stack.base + "/predict?accept_ood=true",
            headers={"Authorization": f"Bearer {token}"},
            files={"file": ("photo.png", image, "image/png")},
            timeout=60,
        )
        assert flagged.status_code == 200, flagged.text
        assert flagged.json()["ood"]["accepted"] is True

    rollback = stack.run("model_contract", "rollback", timeout=60)
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    _wait_for_version(stack, token, 1)
    assert _predict(stack, token, stack.samples["covid"])["model"]["run_id"] == "v1"


def test_stack_load_with_a_version_swap_in_the_middle_fails_no_request(stack: Stack) -> None:
    """Four clients predict continuously while version 2 is promoted over version 1: every
    request is answered, both versions answer, and every answer has exactly one record."""
    import statistics
    import threading

    from model_contract.registry import ModelRegistry

    registry = ModelRegistry(stack.root, MODEL_NAME)
    assert registry.load().stable == 1  # after the rollback of the previous test
    tokens = [stack.token(*ALICE), stack.token(*ADMIN)]
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: list[tuple[int, float, dict[str, Any]]] = []
    started = datetime.now(UTC)

    def client(index: int) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {tokens[index % 2]}", "Content-Type": "image/png"}
        image = stack.samples[CLASSES[index % 3]]
        while not stop.is_set():
            sent = time.perf_counter()
            try:
                answer = session.post(
                    stack.base + "/predict", data=image, headers=headers, timeout=30
                )
                status, body = answer.status_code, answer.json()
            except (requests.RequestException, ValueError) as exc:
                status, body = 0, {"error": type(exc).__name__}
            with lock:
                outcomes.append((status, (time.perf_counter() - sent) * 1000, body))

    threads = [threading.Thread(target=client, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        registry.promote(2, "stable")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if any(body.get("model", {}).get("version") == 2 for _, _, body in outcomes):
                    break
            time.sleep(0.2)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    failures = [(status, body) for status, _, body in outcomes if status != 200]
    assert failures == []
    versions = {body["model"]["version"] for _, _, body in outcomes}
    assert versions == {1, 2}
    latencies = sorted(latency for _, latency, _ in outcomes)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"load with swap: {len(outcomes)} requests, p50 {statistics.median(latencies):.1f} ms, "
        f"p99 {p99:.1f} ms, versions {sorted(versions)}"
    )
    # Exactly one record per answer, naming the version that answered; nothing unanswered.
    answered = {body["id"]: body for _, _, body in outcomes}
    assert len(answered) == len(outcomes)
    for inference_id, body in answered.items():
        record = stack.root.get_json(keys.inference_record(body["user_id"], inference_id))
        assert record["model"]["version"] == body["model"]["version"]
    window_records = 0
    for user_id in {body["user_id"] for body in answered.values()}:
        window = keys.inference_window(user_id, started, datetime.now(UTC))
        for info in stack.root.list(window.prefix, start_after=window.start_after):
            if info.key >= window.end_before:
                break
            window_records += 1
    assert window_records == len(answered)


def test_stack_short_soak_fails_no_request_and_leaks_no_file(stack: Stack) -> None:
    """The soak of `python -m bench --only soak` (10 minutes there), for 20 s: mixed load on
    the whole stack, every process sampled; no failed request, no growth of open files."""
    from bench.soak import run_soak

    token = stack.token(*ALICE)
    result = run_soak(
        stack.base, token, list(stack.samples.values()), stack.groups, seconds=20, interval=2
    )

    assert result.failed == 0, result.statuses
    assert result.requests >= 128
    assert {"predict 200", "gradcam 200", "history 200"} <= set(result.statuses)
    from bench.soak import slope

    for name, series in result.samples.items():
        warm = series[len(series) // 4 :]
        fds = [count for _, _, count in warm]
        # A file left open per request climbs with the requests (over 6 a second here);
        # connection pools (boto3's to S3 holds up to 32 sockets a client) open and close
        # sockets as load moves, up and down without a trend.
        per_second = slope([moment for moment, _, _ in warm], fds)
        assert per_second < 3.0, (name, per_second, series)
        assert max(fds) - min(fds) <= 48, (name, series)


def _extra_gateway(stack: Stack, group: ProcessGroup, **settings: str) -> str:
    """Another gateway on the same store and model server, with other traffic settings."""
    from devstack.processes import wait_until

    port = free_port()
    env = {**stack.env, **settings}
    gateway = group.start(
        f"gateway-{port}",
        [sys.executable, "-m", "functions.gateway", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        log_dir=stack.work / "logs",
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(base + "/openapi.yaml", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, timeout=60, what="the extra gateway", alive=gateway.alive)
    return base


def test_stack_canary_by_user_then_shadow_through_the_real_model_server(stack: Stack) -> None:
    """The registry's canary label reaches the model server through the sync; a gateway with
    CANARY_PERCENT sends each user to one label; one with SHADOW=canary answers from stable and
    records the canary's answer beside it."""
    from devstack.processes import label_assigned, wait_until
    from functions.traffic import in_canary
    from model_contract.registry import ModelRegistry

    registry = ModelRegistry(stack.root, MODEL_NAME)
    stable = registry.load().stable
    assert stable == 2  # promoted under load by the test before
    registry.promote(1, "canary")
    wait_until(
        lambda: label_assigned(stack.env["TF_SERVING_URL"], MODEL_NAME, "canary"),
        timeout=60,
        what="the canary label on the model server",
    )
    tokens = {"1": stack.token(*ALICE), "2": stack.token(*ADMIN)}
    group = ProcessGroup()
    try:
        base = _extra_gateway(stack, group, CANARY_PERCENT="50")
        for user_id, token in tokens.items():
            expected = 1 if in_canary(user_id, 50) else 2
            for name in CLASSES:
                answer = requests.post(
                    base + "/predict",
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"},
                    data=stack.samples[name],
                    timeout=60,
                )
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["model"]["version"] == expected
                assert body["routed_to"] == ("canary" if expected == 1 else "stable")
                assert set(body["input"]["stats"]) == {"mean", "std"}
        group.stop_all()
        group = ProcessGroup()
        base = _extra_gateway(stack, group, SHADOW="canary", SHADOW_BUDGET_MS="5000")
        for name in CLASSES:
            answer = requests.post(
                base + "/predict",
                headers={"Authorization": f"Bearer {tokens['1']}", "Content-Type": "image/png"},
                data=stack.samples[name],
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model"]["version"] == 2
            assert "shadow" not in body
            stored = stack.root.get_json(keys.inference_record("1", body["id"]))
            assert stored["shadow"]["status"] == "ok", stored["shadow"]
            assert stored["shadow"]["model"]["version"] == 1
            assert set(stored["shadow"]["probabilities"]) == set(CLASSES)

        # The comparison reads those records (the canary's share and the shadow answers).
        compared = stack.run(
            "monitoring", "compare", "--days", "1", "--min-samples", "1", "--no-plots", timeout=120
        )
        assert compared.returncode == 0, compared.stdout + compared.stderr
        shown = json.loads(compared.stdout[: compared.stdout.rindex("}") + 1])
        assert (shown["stable_version"], shown["canary_version"]) == (2, 1)
        assert shown["shadow_agreement"] is not None
        assert 0 <= shown["shadow_agreement"] <= 1
    finally:
        group.stop_all()
        registry.clear_canary()
