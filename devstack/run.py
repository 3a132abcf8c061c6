"""`make run`: the whole system on one machine, as real processes, from an empty checkout.

Steps: prepare the store (a folder, or a bucket on a local S3 emulator); seed synthetic sample
X-rays and a synthetic image database when empty; create the first user when there is no users
file; keep a generated SECRET_KEY in an ignored file; train and publish the `small` preset when
there is no stable model; then start the model sync, the local model server (TF Serving's
stand-in) and the gateway, print how to call them, and stop everything on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import SettingsError, load_environment
from devstack.processes import (
    MODEL_SERVER_ENV,
    ProcessGroup,
    StackError,
    free_port,
    http_ok,
    label_assigned,
    model_available,
    port_is_free,
    python_module,
    wait_until,
    with_bytecode_cache,
)
from storage import StorageError, StorageSettings, Store, keys, open_areas
from storage.cli import create_hierarchy

__all__ = ["StackOptions", "prepare_environment", "run_stack", "start_serving"]

S3_BUCKET = "xray-local"
# The synthetic image database `make run` seeds: enough for the small preset to learn the
# classes well (macro-F1 ~1.0 on its test split) in about a minute on 2 cores.
DEMO_DB_COUNTS = {"train": 160, "val": 40, "test": 40}
SAMPLES_PER_CLASS = 3
# Server-side batching for a small machine: one batch thread (TensorFlow spreads one batch over
# every core already; two batches at once fight for them) and no waiting (bench/REPORT.md,
# "Server-side batching": +10-25 % requests/s at 8-16 clients, the same latency at one).
LOCAL_BATCHING = """max_batch_size { value: 16 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 64 }
num_batch_threads { value: 1 }
"""


@dataclass(frozen=True)
class StackOptions:
    root: Path  # the checkout
    s3: bool = False
    host: str = "127.0.0.1"
    api_port: int = 8080
    rest_port: int = 8501
    grpc_port: int = 8500
    train_epochs: int = 15

    @property
    def run_dir(self) -> Path:
        return self.root / ".run"


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def _secret_key(run_dir: Path) -> str:
    """The local SECRET_KEY, generated once and kept in an ignored file (0600)."""
    path = run_dir / "secret_key"
    if path.is_file():
        return path.read_text().strip()
    run_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key


def prepare_environment(
    options: StackOptions, environ: Mapping[str, str], s3_endpoint: str | None
) -> dict[str, str]:
    """The environment every child gets: the caller's (and .env), plus local defaults."""
    env = dict(environ)
    env.setdefault("ENVIRONMENT", "local")
    env.setdefault("MODEL_NAME", env.get("PROD_MODEL_NAME", "cnn_vit"))
    if "SECRET_KEY" not in env:
        env["SECRET_KEY"] = _secret_key(options.run_dir)
    if s3_endpoint is not None:
        env.update(
            STORAGE_URL=f"s3://{S3_BUCKET}",
            S3_ENDPOINT_URL=s3_endpoint,
            AWS_ACCESS_KEY_ID=env.get("AWS_ACCESS_KEY_ID", "testing"),
            AWS_SECRET_ACCESS_KEY=env.get("AWS_SECRET_ACCESS_KEY", "testing"),
            AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        )
        env.pop("STORAGE_PATH", None)
    else:
        url = env.get("STORAGE_URL") or env.get("STORAGE_PATH") or "./store"
        if "://" not in url:
            url = str((options.root / url).resolve())
        env["STORAGE_URL"] = url
    env["MODEL_BASE_PATH"] = str(options.run_dir / "models")
    env["MODEL_CONFIG_FILE"] = str(options.run_dir / "models" / "models.config")
    env["TF_SERVING_URL"] = f"http://127.0.0.1:{options.rest_port}"
    env["API_PORT"] = str(options.api_port)
    env.setdefault("SYNC_INTERVAL_SECONDS", "2")
    env.setdefault("SYNC_GRACE_SECONDS", "30")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env = with_bytecode_cache(env, options.run_dir / "pycache")
    # Prometheus metrics on their own loopback ports (never the API's), when those are free.
    for name, port in (("METRICS_PORT", 9464), ("SYNC_METRICS_PORT", 9465)):
        if name not in env and port_is_free(port):
            env[name] = str(port)
    return env


def _seed_store(areas_root: Store, db: Store) -> None:
    from synthetic.xrays import write_covid_qu_ex_to_store, write_samples_to_store

    if not any(True for _ in areas_root.list(keys.DATA_AREA)):
        written = write_samples_to_store(areas_root, per_class=SAMPLES_PER_CLASS, seed=11)
        _say(f"seeded {len(written)} synthetic sample X-rays in {keys.DATA_AREA}")
    if not any(True for _ in db.list("")):
        _say("seeding a synthetic image database (COVID-QU-Ex layout) ...")
        write_covid_qu_ex_to_store(db, "synthetic-batch-1", DEMO_DB_COUNTS, seed=0)
        _say(f"seeded {db.describe()}synthetic-batch-1/")


def _ensure_user(env: Mapping[str, str]) -> tuple[str, str | None]:
    """(username, password when it is new) of the first user; creates it if there is none."""
    from functions.passwords import PasswordHasher
    from functions.settings import FunctionSettings
    from functions.users.directory import update_users
    from functions.users.table import User, UserTable

    settings = FunctionSettings.from_env(env)
    auth = open_areas(settings.storage).auth
    if auth.exists(keys.USERS_FILE):
        from functions.users.table import parse_users_csv

        table = parse_users_csv(auth.get_bytes(keys.USERS_FILE))
        admins = [user for user in table.users if user.is_admin and not user.disabled]
        candidates = admins or list(table.users)
        return (candidates[0].email if candidates else "?"), None
    email = settings.api_user_email or "admin"
    password = settings.api_user_password or secrets.token_urlsafe(12)
    hashed = PasswordHasher(settings.password_hash).hash(password)

    def add(table: UserTable) -> UserTable:
        return table.added(User(table.next_id(), email, "admin", hashed, False))

    update_users(auth, add)
    _say(f"created the first user {email!r} (role admin)")
    return email, None if settings.api_user_password else password


def _has_stable_model(root: Store, model_name: str) -> bool:
    try:
        registry = root.get_json(keys.model_registry(model_name))
    except (StorageError, ValueError):  # missing or unreadable registry: no model yet
        return False
    return registry.get("stable") is not None


# TensorFlow's start-up chatter (oneDNN, CUDA probing on a machine without a GPU): not progress.
_NOISE = ("WARNING: All log messages before absl", "I0000 ", "W0000 ", "E0000 ")


def _progress_line(event: dict[str, Any]) -> str | None:
    """A human line for the training job's JSON events that show progress; None for the rest."""
    name = event.get("event")
    if name == "data_discovered":
        batches = event.get("batches") or []
        return f"found {event.get('images', '?')} images in {len(batches)} batch(es)"
    if name == "epoch":
        return (
            f"epoch {event.get('epoch')}/{event.get('epochs')}: loss {event.get('loss', 0):.3f}, "
            f"accuracy {event.get('accuracy', 0):.3f}, validation accuracy "
            f"{event.get('val_accuracy', 0):.3f}, {event.get('images_per_second', 0):.0f} images/s"
        )
    if name == "evaluated":
        return f"{event.get('role')} model: test macro-F1 {event.get('macro_f1', 0):.3f}"
    if name == "decided":
        return f"decision: {event.get('verdict')} ({event.get('reason')})"
    if name in ("published", "promoted"):
        return f"{name} version {event.get('version')}"
    return None


def _follow_training(job: subprocess.Popen[str]) -> None:
    """Print the training job's progress as it comes (its JSON events as readable lines)."""
    assert job.stdout is not None
    for line in job.stdout:
        line = line.rstrip()
        if not line or line.startswith(_NOISE):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            _say(f"  {line}")
            continue
        if isinstance(event, dict):
            if event.get("level") in ("error", "warning"):
                _say(f"  {event.get('level')}: {event.get('event')} {event.get('message', '')}")
            text = _progress_line(event)
            if text:
                _say(f"  {text}")


def _train_first_model(options: StackOptions, env: Mapping[str, str]) -> None:
    _say("no stable model yet: training the `small` preset on the synthetic database")
    command = python_module(
        "training_job", "--preset", "small", "--epochs", str(options.train_epochs)
    )
    job = subprocess.Popen(
        command,
        cwd=options.root,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _follow_training(job)
    except BaseException:
        # Ctrl-C or an error here must not leave a training run behind that could still publish.
        job.terminate()
        try:
            job.wait(timeout=30)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
        raise
    if job.wait() != 0:
        raise StackError("the first training run failed (see its output above)")


def _write_local_samples(root: Store, run_dir: Path) -> list[Path]:
    """Copies of the sample X-rays on disk, for the printed curl lines (works for S3 too)."""
    folder = run_dir / "samples"
    paths = []
    for info in root.list(keys.DATA_AREA):
        target = folder / info.key.rsplit("/", 1)[-1]
        if not target.exists():
            root.download_file(info.key, target)
        paths.append(target)
    return sorted(paths)


def _start_s3_emulator(options: StackOptions, group: ProcessGroup, env: dict[str, str]) -> str:
    port = free_port()
    _say(f"starting the S3 emulator (moto server) on 127.0.0.1:{port}")
    emulator = group.start(
        "s3-emulator",
        python_module("moto.server", "-H", "127.0.0.1", "-p", str(port)),
        env=env,
        cwd=options.root,
        log_dir=options.run_dir / "logs",
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: http_ok(f"{endpoint}/moto-api/data.json"),
        timeout=30,
        what="the S3 emulator",
        alive=emulator.alive,
    )
    return endpoint


def _print_banner(
    options: StackOptions,
    username: str,
    password: str | None,
    samples: list[Path],
    store: str,
    env: Mapping[str, str],
) -> None:
    base = f"http://{options.host}:{options.api_port}"
    sample = next((str(p) for p in samples if "covid_" in p.name and "no-" not in p.name), None)
    sample = sample or (str(samples[0]) if samples else "your-xray.png")
    if password is not None:
        credentials = f"user {username!r}, password {password!r} (shown once: keep it)"
        password_line = f"export PASSWORD='{password}'"
    else:
        credentials = (
            f"user {username!r}; its password was printed when it was created "
            "(reset: .venv/bin/xray-users set-password " + username + ")"
        )
        password_line = "export PASSWORD='...'   # the password of " + username
    token = (
        f"TOKEN=$(curl -s {base}/auth/token -d grant_type=password "
        f'--data-urlencode username={username} --data-urlencode password="$PASSWORD" '
        "| python3 -c 'import sys, json; print(json.load(sys.stdin)[\"access_token\"])')"
    )
    auth = '-H "Authorization: Bearer $TOKEN"'
    lines = [
        "",
        "=" * 78,
        f" Open the web app: {base}/app/",
        f" The X-ray classifier is running at {base}",
        f" API docs:       {base}/docs      (OpenAPI: {base}/openapi.yaml)",
        f" Model server:   http://127.0.0.1:{options.rest_port}/v1/models/cnn_vit  (gRPC :"
        f"{options.grpc_port})",
        f" Store:          {store}",
        *(
            [
                f" Metrics:        http://127.0.0.1:{env['METRICS_PORT']}/metrics (functions), "
                f"http://127.0.0.1:{env['SYNC_METRICS_PORT']}/metrics (model sync)"
            ]
            if "METRICS_PORT" in env and "SYNC_METRICS_PORT" in env
            else []
        ),
        f" Credentials:    {credentials}",
        f" Logs:           {options.run_dir / 'logs'}",
        "=" * 78,
        "",
        "Try it:",
        f"  {password_line}",
        f"  {token}",
        f"  curl {auth} {base}/auth/me",
        f"  curl {auth} -F file=@{sample} {base}/predict",
        f"  curl {auth} -F file=@{sample} -o gradcam.png {base}/gradcam",
        f'  curl {auth} "{base}/history?limit=5"',
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def start_serving(options: StackOptions, env: Mapping[str, str], group: ProcessGroup) -> None:
    """Model sync (once, then watching), the local model server and the gateway; ready on return.

    The model server reads the folder the sync writes, exactly as TF Serving does in a
    deployment (the sync is its init container and sidecar there).
    """
    log_dir = options.run_dir / "logs"
    batching = options.run_dir / "batching_parameters.txt"
    batching.parent.mkdir(parents=True, exist_ok=True)
    batching.write_text(LOCAL_BATCHING)
    _say("syncing the served model versions to the model server's folder")
    once = subprocess.run(
        python_module("serving.sync", "--once"),
        cwd=options.root,
        env=dict(env),
        check=False,
        capture_output=True,
        text=True,
    )
    if once.returncode != 0:
        raise StackError(f"the model sync failed:\n{once.stderr[-2000:]}")
    server = group.start(
        "model-server",
        python_module(
            "serving.model_server",
            f"--port={options.grpc_port}",
            f"--rest_api_port={options.rest_port}",
            f"--model_config_file={env['MODEL_CONFIG_FILE']}",
            "--model_config_file_poll_wait_seconds=1",
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=0",
            # Grad-CAM's tail is compiled with XLA (model_export): TF Serving's flag for it.
            "--xla_cpu_compilation_enabled=true",
            "--enable_batching",
            f"--batching_parameters_file={batching}",
        ),
        env={**MODEL_SERVER_ENV, **env},
        cwd=options.root,
        log_dir=log_dir,
    )
    group.start(
        "model-sync",
        python_module("serving.sync", "--watch"),
        env=env,
        cwd=options.root,
        log_dir=log_dir,
    )
    gateway = group.start(
        "gateway",
        python_module("functions.gateway", "--host", options.host, "--port", str(options.api_port)),
        env=env,
        cwd=options.root,
        log_dir=log_dir,
    )
    _say("starting the model server and the gateway ...")
    wait_until(
        lambda: model_available(env["TF_SERVING_URL"], env["MODEL_NAME"]),
        timeout=180,
        what="the model server",
        alive=server.alive,
    )
    wait_until(
        lambda: label_assigned(env["TF_SERVING_URL"], env["MODEL_NAME"]),
        timeout=60,
        what="the stable label (the model sync adds it once the version answers)",
        alive=server.alive,
    )
    wait_until(
        lambda: http_ok(f"http://127.0.0.1:{options.api_port}/openapi.yaml"),
        timeout=60,
        what="the gateway",
        alive=gateway.alive,
    )


def run_stack(options: StackOptions) -> int:
    environ = load_environment(dotenv=options.root / ".env")
    group = ProcessGroup()

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C also when started in the background (a shell without job control starts background
    # commands with SIGINT ignored, and Python keeps an inherited "ignore").
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for port, what in (
            (options.api_port, "API_PORT"),
            (options.rest_port, "the model server's REST port"),
            (options.grpc_port, "the model server's gRPC port"),
        ):
            if not port_is_free(port):
                raise StackError(f"port {port} ({what}) is in use: stop what uses it or change it")
        s3_endpoint = None
        if options.s3:
            s3_endpoint = _start_s3_emulator(options, group, dict(environ))
        env = prepare_environment(options, environ, s3_endpoint)
        if s3_endpoint is not None:
            # boto3 in this process reads credentials through its own chain (the environment).
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
                os.environ[name] = env[name]
        storage_settings = StorageSettings.from_env(env)
        areas = open_areas(storage_settings)
        for line in create_hierarchy(areas.root):
            _say(line)
        _say(f"store: {areas.root.describe()}")
        _seed_store(areas.root, areas.db)
        username, password = _ensure_user(env)
        model_name = env["MODEL_NAME"]
        if not _has_stable_model(areas.root, model_name):
            _train_first_model(options, env)
        else:
            _say(f"reusing the stable model of {keys.model_registry(model_name)}")
        samples = _write_local_samples(areas.root, options.run_dir)

        start_serving(options, env, group)
        _print_banner(options, username, password, samples, areas.root.describe(), env)
        while True:
            dead = group.first_dead()
            if dead is not None:
                raise StackError(f"{dead.name} stopped unexpectedly:\n{dead.log_tail()}")
            time.sleep(1)
    except KeyboardInterrupt:
        print("", flush=True)
        _say("stopping ...")
        return 0
    except (StackError, StorageError, SettingsError) as exc:
        print(f"[make run] error: {exc}", file=sys.stderr, flush=True)
        for managed in group.processes:
            if not managed.alive() and managed.log_tail():
                print(f"--- {managed.name} log ---\n{managed.log_tail()}", file=sys.stderr)
        return 1
    finally:
        group.stop_all()
