"""The local gateway as a real process for tests: its environment, start (waits for the port)
and stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from storage import StorageSettings, open_areas
from tests.conftest import free_port
from tests.functions.conftest import PASSWORDS, cheap_env, seed_users
from tests.functions.fake_serving import FakeTFServing

__all__ = ["ROOT", "Gateway", "gateway_environment", "start_gateway", "stop_gateway"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    # Only the --self-signed gateway: its certificate is made at start and trusted by no one.
    verify: bool = True

    def token(self, path: str = "/auth/token") -> str:
        response = requests.post(
            self.url + path,
            data={
                "grant_type": "password",
                "username": "alice@example.com",
                "password": PASSWORDS["1"],
            },
            timeout=10,
            verify=self.verify,  # False only for the self-signed gateway
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


def gateway_environment(folder: Path, fake: FakeTFServing) -> dict[str, str]:
    store = folder / "store"
    seed_users(open_areas(StorageSettings(url=str(store))).auth)
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return {
        **keep,
        **cheap_env(),
        "STORAGE_URL": str(store),
        "TF_SERVING_URL": fake.url,
        "PYTHONPATH": str(ROOT),
    }


def start_gateway(
    folder: Path, env: dict[str, str], *arguments: str, scheme: str = "http"
) -> Gateway:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions.gateway",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            *arguments,
        ],
        cwd=folder,  # no stray .env
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Gateway(f"{scheme}://127.0.0.1:{port}", process)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the gateway did not start")


def stop_gateway(gateway: Gateway) -> None:
    gateway.process.terminate()
    try:
        gateway.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait()
    if gateway.process.stderr is not None:
        gateway.process.stderr.close()
