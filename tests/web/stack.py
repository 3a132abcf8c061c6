"""The system the browser tests drive, as real processes on loopback: the local model server
(`serving.model_server`) serving the session's exported demo model under the label `stable`,
and the gateway (functions + the web app at /app/) in front of it.

The model server listens on a fixed REST port for the module's life, so a test can stop it (the
gateway then answers 503 model_unavailable) and start it again where the gateway expects it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devstack.processes import MODEL_SERVER_ENV
from functions.users import User, format_users_csv
from model_contract.identity import IDENTITY_ASSET_PATH, ModelIdentity
from storage import StorageSettings, Store, keys, open_areas
from tests.conftest import free_port
from tests.functions.conftest import PASSWORDS, cheap_env, seed_users
from tests.functions.gateway_process import ROOT, Gateway, start_gateway, stop_gateway
from tests.trained_models import MODEL_NAME, RUN_ID

__all__ = ["ADMIN", "ALICE", "BOB", "ModelServer", "WebStack", "model_base", "start_web_stack"]

ALICE = ("alice@example.com", PASSWORDS["1"])
ADMIN = ("admin@example.com", PASSWORDS["2"])
BOB = ("bob@example.com", PASSWORDS["3"])
MODEL_VERSION = 1


def model_base(export: Path, folder: Path) -> Path:
    """`<folder>/<MODEL_NAME>/1/` holding the export, and a models.config labelling it `stable`."""
    version = folder / MODEL_NAME / str(MODEL_VERSION)
    shutil.copytree(export, version)
    # Published as version 1 (what the registry's publish does to the identity asset).
    (version / IDENTITY_ASSET_PATH).write_text(
        ModelIdentity(MODEL_NAME, MODEL_VERSION, RUN_ID).to_text()
    )
    config = folder / "models.config"
    config.write_text(
        f"""model_config_list {{
  config {{
    name: "{MODEL_NAME}" base_path: "{folder / MODEL_NAME}" model_platform: "tensorflow"
    version_labels {{ key: "stable" value: {MODEL_VERSION} }}
  }}
}}
"""
    )
    return config


@dataclass
class ModelServer:
    """`python -m serving.model_server` on a REST port chosen once (no gRPC)."""

    config: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        env = {
            **MODEL_SERVER_ENV,
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "serving.model_server",
                    "--port=0",
                    f"--rest_api_port={self.port}",
                    "--rest_api_host=127.0.0.1",
                    f"--model_config_file={self.config}",
                    "--allow_version_labels_for_unavailable_models",
                    "--xla_cpu_compilation_enabled=true",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"model server exited:\n{self.log()[-4000:]}")
            try:
                status = requests.get(f"{self.url}/v1/models/{MODEL_NAME}", timeout=1)
                if status.ok and "AVAILABLE" in status.text:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"model server not ready:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class WebStack:
    model_server: ModelServer
    gateway: Gateway
    auth_store: Store
    users: dict[str, User]
    env: dict[str, str]
    folder: Path

    @property
    def url(self) -> str:
        return self.gateway.url

    def token(self, user: tuple[str, str] = ALICE) -> str:
        answer = requests.post(
            self.url + "/auth/token",
            data={"grant_type": "password", "username": user[0], "password": user[1]},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Rewrite the users file (the gateway reads it on every request in these tests)."""
        self.users[user_id] = dataclasses.replace(self.users[user_id], disabled=disabled)
        self.auth_store.put(keys.USERS_FILE, format_users_csv(list(self.users.values())))

    @contextlib.contextmanager
    def another_gateway(self, **overrides: str) -> Iterator[Gateway]:
        """A second gateway on the same store and model server, with changed settings."""
        gateway = start_gateway(self.folder, {**self.env, **overrides})
        try:
            yield gateway
        finally:
            stop_gateway(gateway)

    def stop(self) -> None:
        stop_gateway(self.gateway)
        self.model_server.stop()


def start_web_stack(export: Path, folder: Path) -> WebStack:
    model_server = ModelServer(model_base(export, folder / "models"), folder / "model_server.log")
    model_server.start()
    store = folder / "store"
    auth_store = open_areas(StorageSettings(url=str(store))).auth
    users = seed_users(auth_store)
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env = {
        **keep,
        **cheap_env(),
        "STORAGE_URL": str(store),
        "TF_SERVING_URL": model_server.url,
        "PYTHONPATH": str(ROOT),
        # The real model on a shared CPU: Grad-CAM can take a few seconds on a cold graph.
        "TF_SERVING_READ_TIMEOUT": "30",
        "TF_SERVING_DEADLINE": "40",
        "RETRY_AFTER_SECONDS": "3",
        "TF_SERVING_BREAKER_OPEN_SECONDS": "0.5",
        "TF_SERVING_BREAKER_MAX_OPEN_SECONDS": "1",
    }
    try:
        gateway = start_gateway(folder, env)
    except BaseException:
        model_server.stop()
        raise
    return WebStack(model_server, gateway, auth_store, users, env, folder)
