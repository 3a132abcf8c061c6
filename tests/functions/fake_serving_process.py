"""The fake TF Serving as a separate process, told what to do over HTTP, killed and restarted.

A process (not a thread of the test) is the real seam: the functions reach it only over TCP, and
killing it is a model server going down for real (connection refused), not a flag.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class FakeServingProcess:
    def __init__(self, port: int, version: int = 3) -> None:
        self.port = port
        self.version = version
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> FakeServingProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.functions.fake_serving",
                "--port",
                str(self.port),
                "--version",
                str(self.version),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        line = self._process.stdout.readline() if ready else b""
        if not line.startswith(b"ready "):
            self.kill()
            raise RuntimeError("the fake model server did not start")
        return self

    def kill(self) -> None:
        """The model server goes down (SIGKILL: no goodbye on open connections)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def restart(self) -> FakeServingProcess:
        self.kill()
        return self.start()

    def control(self, action: str, **arguments: Any) -> dict[str, Any]:
        """`ok`, `hang` (seconds, times), `status` (code, body, times), `garbage`, `drop`,
        `wrong_shape`, `non_finite`, `set` (version=...), `reset`; returns the report."""
        body = json.dumps({"action": action, **arguments}).encode()
        request = urllib.request.Request(
            self.url + "/_control", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    def report(self) -> dict[str, Any]:
        """attempts, answered, version, versions_answered (in answer order)."""
        with urllib.request.urlopen(self.url + "/_control", timeout=10) as response:
            return dict(json.loads(response.read()))
