"""Every environment variable that infra/ sets on a container is one that container reads.

The allowlist comes from the code: each deployable's settings class is asked to read a few
environments through a Mapping that records every key it is asked for. Names that third-party
programs read themselves (boto3, functions-framework, TensorFlow, the official images) are
listed below, each with the reason. A settings module that does not exist yet skips its check,
which tightens by itself when the module lands.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.infra.helpers import (
    COMPOSE_FILE,
    COMPOSE_GPU_FILE,
    DEPLOYABLES,
    DOCKER_DIR,
    OVERLAYS,
    Container,
    compose_containers,
    dockerfile_env_names,
    k8s_containers,
    load_compose,
    render,
)

# Settings classes per deployable: (module, class). The training image also runs the registry
# CLI (`python -m model_contract` promote, rollback), so its settings count there too.
SETTINGS: dict[str, list[tuple[str, str | None]]] = {
    "functions": [
        ("storage.config", "StorageSettings"),
        ("functions.settings", "FunctionSettings"),
        ("functions.metrics", "MetricsSettings"),
        ("functions.tracing", "TracingSettings"),
    ],
    "sync": [("storage.config", "StorageSettings"), ("serving.sync", "SyncSettings")],
    "training": [
        ("model_contract.settings", "RegistrySettings"),
        ("training_job.settings", "TrainingJobSettings"),
        ("training_job.options", "TrainingOptions"),
        ("training_job.run_metrics", "RunMetricsSettings"),
    ],
}

# Names read by our interpreter and installer, set by our Dockerfiles.
PYTHON_AND_PIP = {
    "PATH",
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_ROOT_USER_ACTION",
    "PIP_BREAK_SYSTEM_PACKAGES",
}
# boto3's standard credential chain: storage/s3.py hands boto3 no keys, boto3 reads these.
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
TOOL_NAMES: dict[str, set[str]] = {
    # functions-framework's CLI reads the function's name and the port (Knative sets PORT).
    "functions": {"FUNCTION_TARGET", "PORT"},
    "sync": set(),
    # TensorFlow: C++ log level; the cluster spec MultiWorkerMirroredStrategy reads.
    "training": {"TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG"},
}
# Containers from official images: the names each image documents.
THIRD_PARTY: dict[str, set[str]] = {
    # Prometheus reads no environment (its flags and prometheus.yml); Grafana its GF_* names.
    "prom/prometheus": set(),
    "grafana/grafana": {
        "GF_AUTH_ANONYMOUS_ENABLED",
        "GF_AUTH_ANONYMOUS_ORG_ROLE",
        "GF_USERS_ALLOW_SIGN_UP",
    },
    # tf_serving_entrypoint.sh passes --model_name/--model_base_path from these; TensorFlow's
    # GPU allocator reads TF_FORCE_GPU_ALLOW_GROWTH, its CPU allocator (process_state.cc)
    # TF_CPU_ALLOCATOR_USE_BFC.
    "tensorflow/serving": {
        "MODEL_NAME",
        "MODEL_BASE_PATH",
        "TF_FORCE_GPU_ALLOW_GROWTH",
        "TF_CPU_ALLOCATOR_USE_BFC",
    },
    # The server's root account.
    "minio/minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
    # mc itself reads none of these: minio-init's own shell script in compose.yaml does.
    "minio/mc": {
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        "XRAY_BUCKET",
        "XRAY_S3_ACCESS_KEY",
        "XRAY_S3_SECRET_KEY",
    },
}
# Environments the settings are asked to read, so branches that read more names run too.
PROBES: list[dict[str, str]] = [
    {},
    {"ENVIRONMENT": "local"},
    {"ENVIRONMENT": "local", "MODEL_VERSION": "3", "STORAGE_URL": "s3://bucket/prefix"},
]


class RecordingEnvironment(Mapping[str, str]):
    """A read-only environment that records every name it is asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        self.asked.add(name)
        return self._values.get(name, default)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.asked.add(name)
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def names_read(settings_class: Any) -> set[str]:
    """Every environment name `settings_class.from_env` asks for, over the PROBES."""
    names: set[str] = set()
    for values in PROBES:
        environment = RecordingEnvironment(values)
        # SettingsError (a ValueError) comes after every name has been read.
        with contextlib.suppress(ValueError):
            settings_class.from_env(environment)
        names |= environment.asked
    return names


def _classes_with_from_env(module_name: str) -> list[str]:
    spec = importlib.util.find_spec(module_name)
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(isinstance(item, ast.FunctionDef) and item.name == "from_env" for item in node.body)
    ]


def allowlist(deployable: str) -> set[str]:
    """The names a container of `deployable` may be given: those its settings read."""
    names = set(PYTHON_AND_PIP | AWS_CREDENTIALS | TOOL_NAMES[deployable])
    for module_name, class_name in SETTINGS[deployable]:
        module = importlib.import_module(module_name)
        for name in [class_name] if class_name else _classes_with_from_env(module_name):
            names |= names_read(getattr(module, name))
    return names


def unknown_names(container: Container, allowed: dict[str, set[str]]) -> set[str]:
    known = allowed.get(container.deployable, THIRD_PARTY.get(container.deployable))
    assert known is not None, f"{container.where}: no allowlist for image {container.image}"
    return container.env_names - known


def _containers(source: str) -> list[Container]:
    if source == "compose":
        return list(compose_containers(load_compose(COMPOSE_FILE, COMPOSE_GPU_FILE)))
    if source.startswith("dockerfile:"):
        deployable = source.split(":", 1)[1]
        names = dockerfile_env_names(DOCKER_DIR / f"{deployable}.Dockerfile")
        return [Container(f"{deployable}.Dockerfile ENV", f"xray/{deployable}", names)]
    overlay = source.split("/", 1)[1]
    return list(k8s_containers(overlay, render(overlay)))


# (where the containers come from, which deployable's containers to check)
CASES = [
    (source, deployable)
    for source in ["compose", *(f"k8s/{overlay}" for overlay in OVERLAYS)]
    for deployable in [*DEPLOYABLES, "third-party"]
] + [(f"dockerfile:{deployable}", deployable) for deployable in DEPLOYABLES]


# --- the recording itself ------------------------------------------------------------------


def test_recording_environment_storage_settings_names_recorded() -> None:
    from storage.config import StorageSettings

    names = names_read(StorageSettings)

    assert {"STORAGE_URL", "STORAGE_PATH", "S3_ENDPOINT_URL", "AWS_REGION"} <= names
    assert "SECRET_KEY" not in names


def test_recording_environment_membership_test_recorded() -> None:
    environment = RecordingEnvironment({"A": "1"})

    assert "B" not in environment
    assert environment.get("C") is None
    assert environment["A"] == "1"
    assert environment.asked == {"A", "B", "C"}


def test_allowlist_functions_from_code_holds_settings_names() -> None:
    names = allowlist("functions")

    assert {"SECRET_KEY", "TF_SERVING_URL", "MODEL_NAME", "MODEL_LABEL", "STORAGE_URL"} <= names
    assert "MODEL_BASE_PATH" not in names


def test_allowlist_sync_from_code_holds_settings_names() -> None:
    names = allowlist("sync")

    assert {"MODEL_BASE_PATH", "MODEL_CONFIG_FILE", "SYNC_INTERVAL_SECONDS"} <= names
    assert "SECRET_KEY" not in names


def test_unknown_names_unread_variable_reported() -> None:
    allowed = {"functions": {"STORAGE_URL"}}
    container = Container("test", "registry.example.com/xray/functions:1", {"STORAGE_URL", "TYPO"})

    assert unknown_names(container, allowed) == {"TYPO"}


# --- the check -----------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "deployable"), CASES)
def test_infra_environment_names_known_to_reader(source: str, deployable: str) -> None:
    containers = [
        container
        for container in _containers(source)
        if (container.deployable == deployable)
        or (deployable == "third-party" and container.deployable not in DEPLOYABLES)
    ]
    assert containers, f"{source} has no {deployable} container"
    allowed = {deployable: allowlist(deployable)} if deployable in DEPLOYABLES else {}

    for container in containers:
        reads_none = THIRD_PARTY.get(container.deployable) == set()
        assert container.env_names or reads_none, f"{container.where} sets no environment"
        assert unknown_names(container, allowed) == set(), container.where
