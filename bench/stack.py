"""The systems under test, set up from nothing in a temporary folder.

One seeded model, exported twice (float32 and bfloat16 compute) and published into a local store
through the registry; the published copies are downloaded into a model server base path. The
same weights are saved for the monolith. Then the processes: the local model server (with or
without server-side batching), the gateway (all functions in one process), a function alone
under functions-framework, the monolith under uvicorn, and moto's S3 server. Each process is
started with its log in the work folder and stopped by its own id.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.processes import (
    MODEL_SERVER_ENV,
    ManagedProcess,
    free_port,
    http_ok,
    model_available,
    wait_until,
    with_bytecode_cache,
)
from devstack.run import LOCAL_BATCHING
from serving.model_config import ModelConfigEntry, render_model_config

__all__ = [
    "BENCH_EMAIL",
    "MODEL_NAME",
    "BenchModel",
    "ServerHandle",
    "WorkFolder",
    "bench_images",
    "function_env",
    "login",
    "model_name",
    "prepare_model",
    "prepare_users",
    "start_function",
    "start_gateway",
    "start_model_server",
    "start_monolith",
    "stopping",
]

MODEL_NAME = "cnn_vit"
BENCH_EMAIL = "bench@example.com"
REPO_ROOT = Path(__file__).resolve().parent.parent

# CPU batching parameters, measured on 2 cores. ONE batch thread: TensorFlow already spreads one
# batch over every core. On a quiet machine one and two batch threads (infra's file) gave the
# same throughput; with other work on the machine two concurrent batches fought for the cores
# and lost a third of it (REST alone, bfloat16, 8 clients: 56 against 85 requests/s in the
# same run). No waiting for a batch to fill (timeout 0: under load the queue fills batches by
# itself); up to 16 images per batch (what 16 clients can have queued). The same text is what
# `make run` serves with (devstack.run.LOCAL_BATCHING, kept there).
DEFAULT_BATCHING = LOCAL_BATCHING


def model_name(preset: str) -> str:
    """The registry and model server name of `preset`'s bench model: `cnn_vit` for the seed
    preset, `cnn_vit_<preset>` for the others."""
    return MODEL_NAME if preset == "seed" else f"{MODEL_NAME}_{preset}"


@dataclass(frozen=True)
class WorkFolder:
    """Everything one benchmark run writes, under one temporary root."""

    root: Path

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def monolith(self) -> Path:
        return self.root / "monolith"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def create(self) -> None:
        for folder in (self.store, self.models, self.exports, self.monolith, self.logs):
            folder.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class BenchModel:
    """One preset's published versions (by compute dtype) and where they were served from."""

    preset: str
    image_size: int
    # compute dtype -> published version; "<dtype>-plain": the same without Grad-CAM's XLA tail
    versions: Mapping[str, int]
    model_config_file: Path
    config_entry: ModelConfigEntry  # its `config { ... }` block in a models.config
    weights_file: Path
    build_seconds: float
    export_seconds: Mapping[str, float]

    @property
    def name(self) -> str:
        return model_name(self.preset)


def bench_images(count: int, size: int, seed: int = 7) -> list[bytes]:
    """Synthetic chest X-ray PNGs (8-bit grey, `size` px square), classes in turn."""
    from cnn_vit.config import CLASS_NAMES
    from synthetic.xrays import encode_png, generate_xray

    return [
        encode_png(
            generate_xray(
                CLASS_NAMES[index % len(CLASS_NAMES)], seed * 1000 + index, height=size, width=size
            ).image
        )
        for index in range(count)
    ]


def prepare_model(
    work: WorkFolder,
    preset: str,
    seed: int,
    warmup_image: bytes,
    *,
    dtypes: Sequence[str],
    plain_gradcam: Sequence[str] = (),
) -> BenchModel:
    """Build `preset` (seeded), export it per compute dtype, publish, and lay out a base path.

    Each dtype in `plain_gradcam` is also exported without XLA on Grad-CAM's tail
    (`gradcam_xla=False`), as version "<dtype>-plain": the before of that change.

    The monolith gets the same weights (`model.weights.h5`). Versions are published through the
    registry into the work store, so each served answer names its version, and downloaded into
    the model server's base path as the model sync would.
    """
    import keras

    from cnn_vit.config import get_preset
    from cnn_vit.model import build_model
    from model_contract.registry import ModelRegistry
    from model_export.export import export_saved_model
    from storage.local import LocalStore

    config = get_preset(preset)
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    model = build_model(config)
    build_seconds = time.perf_counter() - started
    weights_file = work.monolith / f"{preset}.weights.h5"
    model.save_weights(str(weights_file))

    store = LocalStore(work.store)
    name = model_name(preset)
    registry = ModelRegistry(store, name)
    versions: dict[str, int] = {}
    export_seconds: dict[str, float] = {}
    exports = [(dtype, dtype, True) for dtype in dtypes]
    exports += [(f"{dtype}-plain", dtype, False) for dtype in plain_gradcam]
    for key, dtype, gradcam_xla in exports:
        export_dir = work.exports / f"{preset}-{key}"
        started = time.perf_counter()
        export_saved_model(
            model,
            config,
            export_dir,
            model_name=name,
            run_id=f"bench-{preset}-seed{seed}",
            compute_dtype=dtype,  # type: ignore[arg-type]
            gradcam_xla=gradcam_xla,
            warmup_images=[warmup_image],
        )
        export_seconds[key] = time.perf_counter() - started
        version = registry.publish(
            export_dir,
            run_id=f"bench-{preset}-seed{seed}",
            metrics={},
            dataset_fingerprint="",
            parent_version=None,
            preset=preset,
            extra={"compute_dtype": dtype, "gradcam_xla": gradcam_xla},
        )
        registry.download_version(version, work.models / name / str(version))
        versions[key] = version
    registry.promote(versions[dtypes[0]])
    entry = ModelConfigEntry(
        name=name, base_path=str(work.models / name), versions=tuple(sorted(versions.values()))
    )
    config_file = work.models / f"{name}.config"
    config_file.write_text(render_model_config([entry]), encoding="utf-8")
    return BenchModel(
        preset=preset,
        image_size=config.image_size,
        versions=versions,
        model_config_file=config_file,
        config_entry=entry,
        weights_file=weights_file,
        build_seconds=build_seconds,
        export_seconds=export_seconds,
    )


def prepare_users(
    work: WorkFolder, secret_key: str, password: str, root_stores: Sequence[Any]
) -> None:
    """The bench user (an admin) in each store's users file (argon2id), and the monolith's
    bcrypt CSV in the original's format."""
    import bcrypt

    from functions.passwords import PasswordHasher
    from functions.settings import FunctionSettings
    from functions.users.directory import update_users
    from functions.users.table import User, UserTable
    from storage import keys

    settings = FunctionSettings.from_env({"SECRET_KEY": secret_key, "STORAGE_URL": str(work.store)})
    hashed = PasswordHasher(settings.password_hash).hash(password)

    def add(table: UserTable) -> UserTable:
        if table.by_email(BENCH_EMAIL) is not None:
            return table
        return table.added(User(table.next_id(), BENCH_EMAIL, "admin", hashed, False))

    for root in root_stores:
        update_users(root.child(keys.AUTH_AREA), add)
    legacy = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()
    (work.monolith / "authentication.csv").write_text(
        f"id;email;role;hashed_password;disabled\n1;{BENCH_EMAIL};admin;{legacy};False\n",
        encoding="utf-8",
    )


# -- processes -----------------------------------------------------------------------------------


@dataclass
class ServerHandle:
    """A started process and its base URL."""

    process: ManagedProcess
    url: str
    started_at: float
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        self.process.stop()


def _base_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BENCH_")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def _start(
    name: str, command: Sequence[str], env: Mapping[str, str], work: WorkFolder
) -> ManagedProcess:
    managed = ManagedProcess(name, list(command), work.logs / f"{name}.log")
    # Bytecode under the work folder: without it every process started, cold starts
    # included, compiled every first-party module again.
    managed.start(with_bytecode_cache(env, work.root / "pycache"), REPO_ROOT)
    return managed


def start_model_server(
    work: WorkFolder,
    models: Sequence[BenchModel],
    *,
    batching: str | None = None,
    name: str = "model-server",
    timeout: float = 300.0,
    extra_flags: Sequence[str] = (),
) -> ServerHandle:
    """The local model server (TF Serving's stand-in) serving every version of `models`."""
    port = free_port()
    config = work.models / f"{name}.config"
    # One ModelServerConfig with every model's `config { ... }` block.
    config.write_text(render_model_config(model.config_entry for model in models), encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "serving.model_server",
        "--port=0",
        f"--rest_api_port={port}",
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=60",
        "--xla_cpu_compilation_enabled=true",
    ]
    if batching is not None:
        parameters = work.models / f"{name}.batching.txt"
        parameters.write_text(batching, encoding="utf-8")
        command += ["--enable_batching", f"--batching_parameters_file={parameters}"]
    command += list(extra_flags)
    started = time.perf_counter()
    process = _start(name, command, {**MODEL_SERVER_ENV, **_base_env()}, work)
    url = f"http://127.0.0.1:{port}"
    for model in models:
        wait_until(
            lambda model=model: all(  # type: ignore[misc]
                model_available(url, model.name, version=version)
                for version in model.versions.values()
            ),
            timeout=timeout,
            what=name,
            alive=process.alive,
            interval=0.5,
        )
    return ServerHandle(process, url, started, {"ready_seconds": time.perf_counter() - started})


def function_env(
    storage_url: str,
    secret_key: str,
    serving_url: str,
    model_name: str,
    version: int,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = _base_env()
    env.update(
        ENVIRONMENT="production",
        SECRET_KEY=secret_key,
        STORAGE_URL=storage_url,
        TF_SERVING_URL=serving_url,
        MODEL_NAME=model_name,
        MODEL_VERSION=str(version),
        LOG_LEVEL="INFO",
    )
    env.pop("STORAGE_PATH", None)
    env.pop("MODEL_LABEL", None)
    env.update(extra or {})
    return env


def start_gateway(
    work: WorkFolder,
    env: Mapping[str, str],
    *,
    name: str = "gateway",
    threads: int = 8,
    module: str = "functions.gateway",
    wait: bool = True,
) -> ServerHandle:
    """The local gateway (or `module`, a drop-in with the same arguments); waits until ready
    unless `wait` is false (then it returns as soon as the process is spawned)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        module,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(threads),
    ]
    started = time.perf_counter()
    process = _start(name, command, env, work)
    url = f"http://127.0.0.1:{port}"
    if wait:
        wait_until(
            lambda: http_ok(f"{url}/openapi.yaml"),
            timeout=60,
            what=name,
            alive=process.alive,
            interval=0.05,
        )
    return ServerHandle(process, url, started)


def start_function(
    work: WorkFolder, env: Mapping[str, str], target: str, *, name: str | None = None
) -> ServerHandle:
    """One function alone under the functions-framework CLI (a Cloud Run instance's command)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(REPO_ROOT / "functions" / "main.py"),
        "--target",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    started = time.perf_counter()
    process = _start(name or f"function-{target}", command, env, work)
    return ServerHandle(process, f"http://127.0.0.1:{port}", started)


def start_monolith(work: WorkFolder, secret_key: str, preset: str = "seed") -> ServerHandle:
    """uvicorn, one worker, on loopback; returns as soon as the process is spawned."""
    port = free_port()
    env = _base_env()
    env.update(
        BENCH_MONOLITH_DIR=str(work.monolith),
        BENCH_MONOLITH_PRESET=preset,
        SECRET_KEY=secret_key,
    )
    # The weights the monolith loads: the same file the exports came from.
    link = work.monolith / "model.weights.h5"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(work.monolith / f"{preset}.weights.h5")
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.monolith:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    started = time.perf_counter()
    process = _start("monolith", command, env, work)
    return ServerHandle(process, f"http://127.0.0.1:{port}", started)


def login(url: str, path: str, password: str) -> str:
    """A bearer token from an OAuth2 password grant at `url + path`."""
    body = urllib.parse.urlencode(
        {"grant_type": "password", "username": BENCH_EMAIL, "password": password}
    ).encode()
    request = urllib.request.Request(
        url + path,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["access_token"])


def new_secret() -> str:
    return secrets.token_urlsafe(48)


@contextlib.contextmanager
def stopping(*handles: ServerHandle | None) -> Iterator[None]:
    """Stop the given processes (each by its own process group) when the block ends."""
    try:
        yield
    finally:
        for handle in handles:
            if handle is not None:
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    handle.stop()
