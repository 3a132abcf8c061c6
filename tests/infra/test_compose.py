"""The compose files validate against the Compose Specification (focused schema, see
data/README.md) and wire the system as the design says: MinIO with bucket creation, TF Serving
started only after the model sync's first pass, the sync sidecar on the same volume, four
functions from one image, the gateway and the training job under profiles, secrets never
inlined."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.infra.helpers import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    COMPOSE_GPU_FILE,
    REPO,
    compose_dockerfile,
    load_compose,
    load_documents,
)

SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-focused.schema.json").read_text())
ENV_EXAMPLE = COMPOSE_DIR / "env.example"
FUNCTIONS = ("auth", "predict", "gradcam", "history", "legacy")
# `${NAME}`, `${NAME:-default}`, `${NAME:?message}` (and `$$` escapes, which are not references).
_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?+])([^}]*))?\}")
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|ROOT_USER")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def _schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@pytest.mark.parametrize("path", [COMPOSE_FILE, COMPOSE_GPU_FILE], ids=lambda path: path.name)
def test_compose_file_matches_compose_schema(path: Path) -> None:
    (document,) = load_documents(path)

    assert _schema_errors(document) == []


def test_compose_files_merged_match_compose_schema() -> None:
    assert _schema_errors(load_compose(COMPOSE_FILE, COMPOSE_GPU_FILE)) == []


@pytest.mark.parametrize(
    "mutation",
    [
        ("service key misspelt", lambda doc: doc["services"]["tfserving"].update(depend_on=[])),
        (
            "unknown depends_on condition",
            lambda doc: doc["services"]["tfserving"]["depends_on"]["model-sync-init"].update(
                condition="service_done"
            ),
        ),
        ("unknown top-level key", lambda doc: doc.update(service={})),
        (
            "healthcheck typo",
            lambda doc: doc["services"]["tfserving"]["healthcheck"].update(intervall="1s"),
        ),
    ],
    ids=lambda mutation: mutation[0],
)
def test_compose_schema_broken_file_rejected(compose: dict[str, Any], mutation: Any) -> None:
    document = copy.deepcopy(compose)
    mutation[1](document)

    assert _schema_errors(document)


def test_compose_minio_bucket_created_before_anything_uses_it(services: dict[str, Any]) -> None:
    init = services["minio-init"]
    script = " ".join(init["command"])

    # Docker Hub's minio/* repositories were deleted in 2026: the releases are on quay.io.
    assert init["image"].startswith("quay.io/minio/mc:")
    assert services["minio"]["image"].startswith("quay.io/minio/minio:")
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in script
    # The mc image (ubi-micro) has no grep: the lifecycle is imported whole, the same each run.
    assert "| grep" not in script
    assert "mc ilm import" in script
    for name in ("model-sync-init", "training", *FUNCTIONS):
        assert services[name]["depends_on"]["minio-init"]["condition"] == (
            "service_completed_successfully"
        )


def test_compose_tfserving_starts_after_sync_init_on_shared_volume(
    services: dict[str, Any],
) -> None:
    server, init, sidecar = (
        services["tfserving"],
        services["model-sync-init"],
        services["model-sync"],
    )

    assert server["image"].startswith("tensorflow/serving:")
    assert server["depends_on"]["model-sync-init"]["condition"] == "service_completed_successfully"
    assert init["command"] == ["xray-model-sync", "--once"]
    assert sidecar["command"] == ["xray-model-sync", "--watch"]
    assert "models:/models:ro" in server["volumes"]
    assert "models:/models" in init["volumes"]
    assert "models:/models" in sidecar["volumes"]
    assert init["environment"]["MODEL_BASE_PATH"] == "/models"
    assert sidecar["environment"]["TF_SERVING_URL"] == "http://tfserving:8501"
    assert "TF_SERVING_URL" not in init["environment"], "no server to ask before it starts"


def test_compose_tfserving_healthcheck_asks_model_available(services: dict[str, Any]) -> None:
    test = " ".join(services["tfserving"]["healthcheck"]["test"])

    assert "/dev/tcp/127.0.0.1/8501" in test
    assert '"$$MODEL_NAME"' in test
    assert '"AVAILABLE"' in test


def test_compose_tfserving_mounted_config_files_exist(services: dict[str, Any]) -> None:
    gpu = load_compose(COMPOSE_FILE, COMPOSE_GPU_FILE)["services"]["tfserving"]
    host_files = [
        volume.split(":")[0]
        for service in (services["tfserving"], gpu)
        for volume in service["volumes"]
        if volume.startswith(".")
    ]
    assert host_files
    for relative in host_files:
        assert (COMPOSE_DIR / relative).resolve().is_file(), f"{relative} does not exist"


def test_compose_functions_one_image_target_each(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in FUNCTIONS}

    assert len(images) == 1
    for name in FUNCTIONS:
        assert services[name]["environment"]["FUNCTION_TARGET"] == name
        assert compose_dockerfile(services[name]) == "infra/docker/functions.Dockerfile"
    host_ports = [services[name]["ports"][0].rsplit(":", 1)[0] for name in FUNCTIONS]
    assert len(set(host_ports)) == len(FUNCTIONS)


def test_compose_gateway_and_training_only_under_profiles(services: dict[str, Any]) -> None:
    assert services["gateway"]["profiles"] == ["gateway"]
    assert services["gateway"]["command"][0] == "xray-gateway"
    assert services["training"]["profiles"] == ["training"]
    assert services["training"]["command"][0] == "xray-train"
    unprofiled = {name for name, service in services.items() if "profiles" not in service}
    assert {"minio", "minio-init", "model-sync-init", "model-sync", "tfserving", *FUNCTIONS} == (
        unprofiled
    )


def test_compose_build_contexts_and_dockerfiles_exist(services: dict[str, Any]) -> None:
    for service in services.values():
        build = service.get("build")
        if build is None:
            continue
        context = (COMPOSE_DIR / build["context"]).resolve()

        assert context == REPO
        assert (context / build["dockerfile"]).is_file()


def test_compose_gpu_override_reserves_gpus(services: dict[str, Any]) -> None:
    merged = load_compose(COMPOSE_FILE, COMPOSE_GPU_FILE)["services"]
    batching = [
        volume
        for volume in merged["tfserving"]["volumes"]
        if volume.split(":")[1] == "/etc/tfserving/batching_parameters.txt"
    ]

    assert merged["tfserving"]["image"].endswith("-gpu")
    assert batching == [
        "../tfserving/batching_parameters.gpu.txt:/etc/tfserving/batching_parameters.txt:ro"
    ]
    assert "models:/models:ro" in merged["tfserving"]["volumes"]
    for name in ("tfserving", "training"):
        (device,) = merged[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"]
    assert "deploy" not in services["tfserving"], "the base file must run on a CPU-only host"


# --- secrets -------------------------------------------------------------------------------


def _environment_values(compose: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [
        (service_name, name, value)
        for service_name, service in compose["services"].items()
        for name, value in service.get("environment", {}).items()
    ]


def test_compose_secrets_come_from_required_variables(compose: dict[str, Any]) -> None:
    secret_values = [
        (service, name, value)
        for service, name, value in _environment_values(compose)
        if _SECRET_NAME.search(name)
    ]

    assert secret_values
    for service, name, value in secret_values:
        match = _REFERENCE.fullmatch(str(value))
        assert match, f"{service}: {name} must be ${{VAR:?message}}"
        assert match.group(2) == "?", f"{service}: {name} must be ${{VAR:?message}}"


def test_compose_secret_check_inline_value_caught(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["auth"]["environment"]["SECRET_KEY"] = "hunter2-hunter2-hunter2-hunter2-!"

    with pytest.raises(AssertionError):
        test_compose_secrets_come_from_required_variables(broken)


def _strings(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif node is not None:
        yield str(node)


def _required_variables(document: Any) -> set[str]:
    return {
        match.group(1)
        for text in _strings(document)
        for match in _REFERENCE.finditer(text)
        if match.group(2) == "?"
    }


def test_compose_required_variables_listed_in_env_example(compose: dict[str, Any]) -> None:
    required = _required_variables(compose)
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }

    assert required
    assert required <= example


def test_compose_env_example_holds_placeholders_only() -> None:
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        if _SECRET_NAME.search(name) or name == "SECRET_KEY":
            assert value.startswith("change-me"), f"{name} has a real-looking value"


def test_compose_filled_env_file_ignored_by_git() -> None:
    ignored = (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split()

    assert ".env" in ignored
