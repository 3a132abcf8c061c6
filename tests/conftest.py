"""Shared fixtures: an environment restored after each test, and a `store` on each backend.

S3 runs against one moto server per test session (real HTTP, so conditional writes are checked
by moto's server code, and other processes can reach it); every test gets a fresh bucket.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.processes import free_port
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


# -- one trained demo model for the whole session ------------------------------------------------

_MODEL_SOURCES = (
    "config.py",
    "model.py",
    "preprocessing.py",
    "synthetic.py",
    "train.py",
    "demo.py",
)
MODEL_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "test-models"


def _model_sources_digest() -> str:
    import hashlib

    digest = hashlib.sha256()
    folder = Path(__file__).resolve().parent.parent / "training_job"
    for name in _MODEL_SOURCES:
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def demo_model() -> tuple[Any, dict[str, Any]]:
    """The `small` preset trained on synthetic X-rays by `train_demo_model(seed=0)`.

    Trained once per session, and kept in `.cache/test-models/` keyed by a digest of the code
    that shapes it, so a rerun on an unchanged checkout loads it instead of training again (a
    clean clone, as in CI, always trains).
    """
    import json

    import keras

    from training_job.demo import train_demo_model

    folder = MODEL_CACHE / f"small-seed0-{_model_sources_digest()}"
    model_path, metrics_path = folder / "model.keras", folder / "metrics.json"
    if model_path.is_file() and metrics_path.is_file():
        return keras.models.load_model(model_path), json.loads(metrics_path.read_text())
    model, metrics = train_demo_model("small", seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "model.partial.keras"
    model.save(partial)
    partial.replace(model_path)
    metrics_path.write_text(json.dumps(metrics, default=_jsonable))
    return model, json.loads(metrics_path.read_text())


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
