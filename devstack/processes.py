"""Child processes of the local stack: start with logs in a file, wait until ready, stop cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MODEL_SERVER_ENV",
    "ManagedProcess",
    "ProcessGroup",
    "StackError",
    "free_port",
    "http_ok",
    "model_available",
    "port_is_free",
    "wait_until",
    "with_bytecode_cache",
]


# Environment for a TensorFlow model server (the stand-in here, tensorflow/serving in infra/):
# TensorFlow's CPU allocator is plain malloc by default, and glibc serves every buffer of 32 MiB
# or more (the first convolution's output is 32 MiB an image) with a fresh mmap, so each
# request page-faults its largest tensors in again: about 98,000 faults and 0.27 s of kernel
# time for a batch of 8 on the seed model. TensorFlow's BFC allocator (process_state.cc reads
# this name) keeps the memory: infra/tfserving/README.md has the figures.
MODEL_SERVER_ENV: Mapping[str, str] = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}


def with_bytecode_cache(env: Mapping[str, str], folder: Path) -> dict[str, str]:
    """`env` with compiled bytecode kept under `folder` (the tree stays clean, which is why the
    Makefile sets PYTHONDONTWRITEBYTECODE), so child processes start as the images do, with
    their sources compiled (infra/docker); a prefix the caller set is kept."""
    if "PYTHONPYCACHEPREFIX" in env:
        return dict(env)
    cached = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(folder)
    return cached


class StackError(RuntimeError):
    """The local stack cannot start; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """No one listens there (connections of a previous run in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def model_available(
    rest_url: str, model_name: str, timeout: float = 2.0, *, version: int | None = None
) -> bool:
    """TF Serving's status endpoint reports at least one AVAILABLE version (`version` itself,
    when given)."""
    url = f"{rest_url}/v1/models/{model_name}"
    if version is not None:
        url += f"/versions/{version}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            status = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(
        entry.get("state") == "AVAILABLE" for entry in status.get("model_version_status", [])
    )


def label_assigned(
    rest_url: str, model_name: str, label: str = "stable", timeout: float = 2.0
) -> bool:
    """The label resolves to a loaded version (its metadata answers 200): the model sync adds a
    label only once its version is AVAILABLE, as TF Serving requires."""
    url = f"{rest_url}/v1/models/{model_name}/labels/{label}/metadata"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not alive():
            raise StackError(f"{what} stopped while starting")
        time.sleep(interval)
    raise StackError(f"{what} was not ready within {timeout:.0f} s")


@dataclass
class ManagedProcess:
    name: str
    command: Sequence[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen(
            list(self.command),
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        """The process id, also its process group's (it starts a new session)."""
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


@dataclass
class ProcessGroup:
    """The children started so far, stopped in reverse order."""

    processes: list[ManagedProcess] = field(default_factory=list)

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_dir: Path,
    ) -> ManagedProcess:
        managed = ManagedProcess(name, command, log_dir / f"{name}.log")
        managed.start(env, cwd)
        self.processes.append(managed)
        return managed

    def first_dead(self) -> ManagedProcess | None:
        return next((process for process in self.processes if not process.alive()), None)

    def stop_all(self) -> None:
        for managed in reversed(self.processes):
            managed.stop()


def python_module(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *arguments]
