"""Start `python -m serving.model_server` as a real process on free loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from devstack.processes import MODEL_SERVER_ENV
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """A model server subprocess; its log goes to a file shown when a test needs it."""

    def __init__(self, arguments: list[str], log_path: Path, *, xla: bool = True) -> None:
        """`xla`: pass --xla_cpu_compilation_enabled (the project's exports compile Grad-CAM's
        tail with XLA, and the deployment runs TF Serving with the flag)."""
        self.grpc_port = free_port()
        self.rest_port = free_port()
        while self.rest_port == self.grpc_port:
            self.rest_port = free_port()
        self.log_path = log_path
        env = {
            **MODEL_SERVER_ENV,
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.model_server",
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                *(["--xla_cpu_compilation_enabled=true"] if xla else []),
                *arguments,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the REST port answers (it opens only once every model is AVAILABLE)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"model server exited early:\n{self.log()[-4000:]}")
            try:
                requests.get(f"{self.url}/v1/models/x", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError(f"model server not ready:\n{self.log()[-4000:]}")

    def wait_exit(self, timeout: float = 120.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
