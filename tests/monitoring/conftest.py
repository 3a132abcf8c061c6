"""A store on each backend (a folder, and a moto bucket), filled once per test module, with the
settings a command line run of `xray-monitor` needs to reach the same store.

Module-scoped: generating a month of records takes seconds on moto, and every test of a module
reads the same ones (tests that change the registry set its labels back first). The S3 store
carries moto's fake credentials itself, since the environment is restored after each test; a
command line test of the S3 backend asks for `s3_env` (`command_env`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from storage import LocalStore, S3Options, S3Store, Store, keys
from tests.conftest import FAKE_AWS, new_bucket


@dataclass(frozen=True)
class Monitored:
    backend: str
    root: Store
    db: Store
    environ: dict[str, str]


@pytest.fixture(scope="module", params=["local", "s3"])
def empty_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Monitored:
    if request.param == "local":
        folder = tmp_path_factory.mktemp("store")
        root: Store = LocalStore(folder)
        environ = {"STORAGE_URL": str(folder)}
    else:
        endpoint = request.getfixturevalue("moto_server")
        bucket = new_bucket(endpoint)
        options = S3Options(
            endpoint_url=endpoint,
            region="us-east-1",
            access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
            session_token=FAKE_AWS["AWS_SESSION_TOKEN"],
        )
        root = S3Store(bucket, "root", options=options)
        environ = {
            "STORAGE_URL": f"s3://{bucket}/root",
            "S3_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1",
        }
    environ["MODEL_NAME"] = "cnn_vit"
    return Monitored(request.param, root, root.child(keys.DB_AREA), environ)


@pytest.fixture
def command_env(request: pytest.FixtureRequest) -> None:
    """Credentials in the environment for a command line run against moto (boto3 reads them)."""
    backend = request.node.callspec.params.get("empty_store")
    if backend == "s3":
        request.getfixturevalue("s3_env")
