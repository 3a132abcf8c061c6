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

from cnn_vit.config import CLASS_NAMES, get_preset
from devstack.processes import free_port
from storage import LocalStore, S3Options, S3Store, StorageSettings, Store
from tests.trained_models import (
    GRADCAM_LAYER,
    MODEL_NAME,
    RUN_ID,
    TEST_IMAGES_PER_CLASS,
    TEST_SET_SEED,
    HeldOutFilm,
    Trained,
    project_mask,
)

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
    options = S3Options(
        endpoint_url=endpoint_url,
        region="us-east-1",
        access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        session_token=FAKE_AWS["AWS_SESSION_TOKEN"],
    )
    store = S3Store(name, options=options)
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
    "cnn_vit/config.py",
    "cnn_vit/layers.py",
    "cnn_vit/model.py",
    "cnn_vit/preprocessing.py",
    "synthetic/xrays.py",
    "synthetic/demo_model.py",
    "training_job/options.py",
    "training_job/pipeline.py",
    "training_job/training_loop.py",
)
MODEL_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "test-models"


def _model_sources_digest() -> str:
    import hashlib

    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for name in _MODEL_SOURCES:
        digest.update(name.encode())
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def demo_model() -> tuple[Any, dict[str, Any]]:
    """The `small` preset trained on synthetic X-rays by `train_demo_model(seed=0)`.

    Trained once per session, and kept in `.cache/test-models/` keyed by a digest of the code
    that shapes it, so a rerun on an unchanged checkout loads it instead of training again (a
    clean clone, as in CI, always trains). With several test workers, one trains while the
    others wait on the folder's lock, then load its file.
    """
    import fcntl
    import json

    from cnn_vit.model import load_model
    from synthetic.demo_model import train_demo_model

    folder = MODEL_CACHE / f"small-seed0-{_model_sources_digest()}"
    folder.mkdir(parents=True, exist_ok=True)
    model_path, metrics_path = folder / "model.keras", folder / "metrics.json"
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if model_path.is_file() and metrics_path.is_file():
            return load_model(model_path), json.loads(metrics_path.read_text())
        model, metrics = train_demo_model("small", seed=0)
        partial = folder / "model.partial.keras"
        model.save(partial)
        metrics_path.write_text(json.dumps(metrics, default=_jsonable))
        partial.replace(model_path)
    return model, json.loads(metrics_path.read_text())


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


# -- the demo model's exports and held-out films (export, Grad-CAM and publish tests) ------------
# Training and exporting dominate the cost of these tests, so each happens once per session.


@pytest.fixture(scope="session")
def trained(demo_model: tuple[Any, dict[str, Any]]) -> Trained:
    model, metrics = demo_model  # shared with the other test folders (tests/conftest.py)
    return Trained(model=model, config=get_preset("small"), metrics=metrics)


@pytest.fixture(scope="session")
def test_films() -> list[HeldOutFilm]:
    import numpy as np

    from synthetic.xrays import encode_png, generate_xray

    size = get_preset("small").image_size
    films = []
    for class_index, class_name in enumerate(CLASS_NAMES):
        for index in range(TEST_IMAGES_PER_CLASS):
            rng = np.random.default_rng([TEST_SET_SEED, class_index, index])
            film = generate_xray(class_name, rng)
            films.append(
                HeldOutFilm(encode_png(film.image), class_index, project_mask(film.mask, size))
            )
    return films


@pytest.fixture(scope="session")
def float32_export(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_export.export import export_saved_model

    export_dir = tmp_path_factory.mktemp("export") / "float32"
    export_saved_model(
        trained.model,
        trained.config,
        export_dir,
        model_name=MODEL_NAME,
        run_id=RUN_ID,
        gradcam_layer=GRADCAM_LAYER,
        training_metadata={"metrics": {"macro_f1": trained.metrics["macro_f1"]}},
    )
    return export_dir


@pytest.fixture(scope="session")
def float32_loaded(float32_export: Path) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(str(float32_export))


@pytest.fixture(scope="session")
def bfloat16_loaded(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import tensorflow as tf

    from model_export.export import export_saved_model

    export_dir = tmp_path_factory.mktemp("export") / "bfloat16"
    export_saved_model(
        trained.model,
        trained.config,
        export_dir,
        model_name=MODEL_NAME,
        run_id=RUN_ID,
        gradcam_layer=GRADCAM_LAYER,
        compute_dtype="bfloat16",
    )
    return tf.saved_model.load(str(export_dir))
