"""Shared fixtures: an environment restored after each test, and a `store` on each backend.

S3 runs against one moto server per test session (real HTTP, so conditional writes are checked
by moto's server code, and other processes can reach it); every test gets a fresh bucket.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import LocalStore, S3Options, S3Store, StorageSettings, Store

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    for name, value in FAKE_AWS.items():
        os.environ.setdefault(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment variables that point a process at the moto server with fake credentials."""
    env = dict(FAKE_AWS, S3_ENDPOINT_URL=moto_server)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def new_bucket(endpoint_url: str) -> str:
    """Create a fresh bucket on the moto server and return its name."""
    name = f"test-{secrets.token_hex(6)}"
    store = S3Store(name, options=S3Options(endpoint_url=endpoint_url, region="us-east-1"))
    store.create_bucket()
    return name


@pytest.fixture
def s3_bucket(s3_env: dict[str, str]) -> str:
    return new_bucket(s3_env["S3_ENDPOINT_URL"])


@pytest.fixture
def s3_store(s3_env: dict[str, str], s3_bucket: str) -> S3Store:
    options = S3Options(endpoint_url=s3_env["S3_ENDPOINT_URL"], region="us-east-1")
    return S3Store(s3_bucket, "root", options=options)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The same test on both backends: a temporary folder, and a moto bucket."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")


@pytest.fixture(params=["local", "s3"])
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    """StorageSettings for a fresh store on each backend (for code that opens its own)."""
    if request.param == "local":
        return StorageSettings(url=str(tmp_path / "store"))
    env = request.getfixturevalue("s3_env")
    bucket = new_bucket(env["S3_ENDPOINT_URL"])
    return StorageSettings(
        url=f"s3://{bucket}/root", s3_endpoint_url=env["S3_ENDPOINT_URL"], s3_region="us-east-1"
    )
