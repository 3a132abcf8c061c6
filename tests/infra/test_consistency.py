"""Ports, paths, model names and image tags agree across the compose file, the Kubernetes
manifests, the TF Serving configuration, the settings' defaults and the functions'
TF_SERVING_URL."""

from __future__ import annotations

import re
import tomllib
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.infra.helpers import (
    COMPOSE_FILE,
    COMPOSE_GPU_FILE,
    K8S,
    OVERLAYS,
    REPO,
    TFSERVING_DIR,
    find,
    load_compose,
    render,
)

MODEL_NAME = "cnn_vit"
REST_PORT, GRPC_PORT = 8501, 8500
_DEFAULT = re.compile(r"^\$\{[A-Za-z_]\w*:-([^}]*)\}$")


def _resolve(value: Any) -> str:
    """A compose value with its `${NAME:-default}` replaced by the default."""
    text = str(value)
    match = _DEFAULT.match(text)
    return match.group(1) if match else text


def _flags(arguments: list[str]) -> dict[str, str]:
    return {
        argument.removeprefix("--").partition("=")[0]: argument.partition("=")[2]
        for argument in arguments
        if argument.startswith("--")
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(load_compose(COMPOSE_FILE)["services"])


def _k8s_server(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
    return next(container for container in spec["containers"] if container["name"] == "tfserving")


def _config_map(docs: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    return next(
        doc["data"]
        for doc in docs
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith(f"{prefix}-")
    )


def test_model_name_same_in_compose_k8s_and_settings_defaults(compose: dict[str, Any]) -> None:
    from functions.settings import ServingSettings
    from serving.sync import SyncSettings

    compose_names = {
        _resolve(service["environment"]["MODEL_NAME"])
        for service in compose.values()
        if "MODEL_NAME" in service.get("environment", {})
    }
    k8s_names = {_config_map(render(overlay), "xray-storage")["MODEL_NAME"] for overlay in OVERLAYS}

    assert compose_names == k8s_names == {MODEL_NAME}
    assert ServingSettings().model_name == SyncSettings.model_name == MODEL_NAME


def test_model_name_same_in_tfserving_models_config_example() -> None:
    example = TFSERVING_DIR / "models.config"
    text = example.read_text(encoding="utf-8")

    assert set(re.findall(r"name\s*:\s*['\"]([^'\"]+)['\"]", text)) == {MODEL_NAME}
    assert set(re.findall(r"base_path\s*:\s*['\"]([^'\"]+)['\"]", text)) == {
        f"/models/{MODEL_NAME}"
    }


def test_tfserving_flags_same_in_compose_and_k8s(compose: dict[str, Any]) -> None:
    compose_flags = _flags(compose["tfserving"]["command"])

    assert compose["tfserving"]["entrypoint"] == ["tensorflow_model_server"]
    for overlay in OVERLAYS:
        assert _flags(_k8s_server(render(overlay))["args"]) == compose_flags
    assert compose_flags["port"] == str(GRPC_PORT)
    assert compose_flags["rest_api_port"] == str(REST_PORT)
    assert compose_flags["model_config_file_poll_wait_seconds"] == "10"
    assert compose_flags["file_system_poll_wait_seconds"] == "5"


def test_tfserving_config_file_is_where_sync_writes_it(compose: dict[str, Any]) -> None:
    config_file = _flags(compose["tfserving"]["command"])["model_config_file"]
    compose_sync = compose["model-sync"]["environment"]

    assert compose_sync["MODEL_CONFIG_FILE"] == config_file
    assert config_file.startswith(compose_sync["MODEL_BASE_PATH"] + "/")
    for overlay in OVERLAYS:
        sync = _config_map(render(overlay), "xray-sync")
        assert sync["MODEL_CONFIG_FILE"] == config_file
        assert sync["MODEL_BASE_PATH"] == compose_sync["MODEL_BASE_PATH"]


def test_tf_serving_url_points_at_rest_port(compose: dict[str, Any]) -> None:
    urls = {
        name: service["environment"]["TF_SERVING_URL"]
        for name, service in compose.items()
        if "TF_SERVING_URL" in service.get("environment", {})
    }
    for overlay in OVERLAYS:
        docs = render(overlay)
        urls[f"{overlay} functions"] = _config_map(docs, "xray-functions")["TF_SERVING_URL"]
        sidecar = next(
            container
            for container in find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"][
                "containers"
            ]
            if container["name"] == "model-sync"
        )
        urls[f"{overlay} sidecar"] = next(
            item["value"] for item in sidecar["env"] if item["name"] == "TF_SERVING_URL"
        )

    assert {"predict", "gradcam", "model-sync"} <= set(urls)
    for where, url in urls.items():
        parts = urlsplit(url)
        assert (parts.scheme, parts.port, parts.path) == ("http", REST_PORT, ""), where
        assert parts.hostname in {"tfserving", "127.0.0.1"}, where


def test_tfserving_ports_published_in_compose(compose: dict[str, Any]) -> None:
    targets = {int(port.rsplit(":", 1)[1]) for port in compose["tfserving"]["ports"]}

    assert targets == {REST_PORT, GRPC_PORT}


def test_tfserving_image_tags_agree_with_training_tensorflow(compose: dict[str, Any]) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (pin,) = [
        text
        for text in pyproject["project"]["optional-dependencies"]["training"]
        if text.startswith("tensorflow==")
    ]
    tensorflow_line = pin.removeprefix("tensorflow==").rstrip(".*")
    compose_tag = _resolve(compose["tfserving"]["image"].partition(":")[2])
    gpu_tag = _resolve(
        load_compose(COMPOSE_FILE, COMPOSE_GPU_FILE)["services"]["tfserving"]["image"]
        .partition(":")[2]
        .removesuffix("-gpu")
    )
    k8s_tags = {
        overlay: _k8s_server(render(overlay))["image"].partition(":")[2] for overlay in OVERLAYS
    }

    assert compose_tag == gpu_tag == k8s_tags["dev"] == k8s_tags["gpu"].removesuffix("-gpu")
    assert k8s_tags["gpu"].endswith("-gpu")
    # A SavedModel exported by TensorFlow 2.N may use ops an older server lacks.
    assert compose_tag.startswith(tensorflow_line + ".")


def test_tfserving_metrics_path_same_in_annotation_and_monitoring_config() -> None:
    docs = render("gpu")
    annotations = find(docs, "Deployment", "tfserving")["spec"]["template"]["metadata"][
        "annotations"
    ]
    monitoring = (K8S / "base" / "tfserving" / "monitoring.config").read_text(encoding="utf-8")

    path = re.search(r'path:\s*"([^"]+)"', monitoring)

    assert path is not None
    assert path.group(1) == annotations["prometheus.io/path"]
    assert annotations["prometheus.io/port"] == str(REST_PORT)


def test_contracts_document_same_ports_and_model_name() -> None:
    contracts = (REPO / "docs" / "CONTRACTS.md").read_text(encoding="utf-8")

    assert f"REST on {REST_PORT}, gRPC on {GRPC_PORT}" in contracts
    assert f"`{MODEL_NAME}`" in contracts


def test_k8s_settings_files_parse_as_env() -> None:
    for path in sorted((K8S / "base" / "settings").glob("*.env")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                assert re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", line), f"{path.name}: {line!r}"


def test_tfserving_runs_tensorflows_bfc_cpu_allocator_everywhere(compose: dict[str, Any]) -> None:
    """compose, every Kubernetes overlay and the local stack's model servers (make run, bench,
    the tests) all set TF_CPU_ALLOCATOR_USE_BFC (devstack.processes.MODEL_SERVER_ENV)."""
    from devstack.processes import MODEL_SERVER_ENV

    assert MODEL_SERVER_ENV == {"TF_CPU_ALLOCATOR_USE_BFC": "true"}
    assert compose["tfserving"]["environment"]["TF_CPU_ALLOCATOR_USE_BFC"] == "true"
    for overlay in OVERLAYS:
        env = {item["name"]: item.get("value") for item in _k8s_server(render(overlay))["env"]}
        assert env["TF_CPU_ALLOCATOR_USE_BFC"] == "true", overlay
