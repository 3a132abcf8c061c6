"""Readers for the files in infra/: YAML documents, rendered kustomize overlays, compose
services, Dockerfiles, and the containers (with the environment names they set) in each."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
COMPOSE_DIR = INFRA / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
COMPOSE_GPU_FILE = COMPOSE_DIR / "compose.gpu.yaml"
DOCKER_DIR = INFRA / "docker"
TFSERVING_DIR = INFRA / "tfserving"
OVERLAYS = ("dev", "gpu", "gpu-tfjob", "gpu-indexed")
KNATIVE_API = "serving.knative.dev/v1"
TFJOB_API = "kubeflow.org/v1"

# Our three images, by the Dockerfile that builds them and the last part of their image name.
DEPLOYABLES = ("functions", "sync", "training")


def yaml_files() -> list[Path]:
    return sorted(
        path
        for pattern in ("*.yaml", "*.yml")
        for path in INFRA.rglob(pattern)
        if ".git" not in path.parts
    )


def load_documents(path: Path) -> list[Any]:
    """Every non-empty YAML document in `path`."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


@functools.cache
def _render(overlay: str) -> tuple[str, str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return "", "kubectl is not installed: the kustomize overlays cannot be rendered here"
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}")
    return result.stdout, ""


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's manifests, as `kubectl kustomize` renders them (skips without kubectl)."""
    text, skip_reason = _render(overlay)
    if skip_reason:
        pytest.skip(skip_reason)
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def find(docs: list[dict[str, Any]], kind: str, name: str, api: str | None = None) -> dict:
    matches = [
        doc
        for doc in docs
        if doc["kind"] == kind
        and doc["metadata"]["name"] == name
        and (api is None or doc["apiVersion"] == api)
    ]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_templates(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod template) of every pod a workload starts: one for a Deployment, Job, CronJob
    or Knative Service, one per replica type for a TFJob; [] for other objects."""
    kind = doc.get("kind")
    if kind == "CronJob":
        return [("", doc["spec"]["jobTemplate"]["spec"]["template"])]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        return [("", doc["spec"]["template"])]
    if kind == "Service" and doc.get("apiVersion") == KNATIVE_API:
        return [("", doc["spec"]["template"])]
    if kind == "TFJob" and doc.get("apiVersion") == TFJOB_API:
        return [
            (f" {replica}", spec["template"])
            for replica, spec in doc["spec"]["tfReplicaSpecs"].items()
        ]
    return []


def pod_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template of a workload (see `pod_templates`)."""
    return [(where, template["spec"]) for where, template in pod_templates(doc)]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload with a single pod template, or None."""
    specs = pod_specs(doc)
    return specs[0][1] if len(specs) == 1 else None


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    ((_, template),) = pod_templates(doc)
    return dict(template.get("metadata", {}).get("labels", {}))


def image_deployable(image: str) -> str:
    """`functions`, `sync`, `training` for our images; the repository (`tensorflow/serving`)
    for a third-party one."""
    repository = re.sub(r"[:@].*$", "", image.rsplit("/", 1)[-1])
    path = re.sub(r"[:@][^/]*$", "", image)
    if repository in DEPLOYABLES and "xray" in path:
        return repository
    # Strip a registry host (has a dot or a port) to get e.g. `tensorflow/serving`.
    parts = path.split("/")
    if len(parts) > 2 and ("." in parts[0] or ":" in parts[0]):
        parts = parts[1:]
    return "/".join(parts)


@dataclass
class Container:
    """One container as a manifest or compose file defines it."""

    where: str  # e.g. "overlays/gpu Deployment/tfserving container tfserving"
    image: str
    env_names: set[str] = field(default_factory=set)
    command: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def deployable(self) -> str:
        return image_deployable(self.image)


def k8s_containers(overlay: str, docs: list[dict[str, Any]]) -> Iterator[Container]:
    """Every container and init container of every workload, with the names its environment
    gets (`env`, and the keys of ConfigMaps it takes whole with `envFrom`)."""
    config_maps = {
        doc["metadata"]["name"]: doc.get("data", {}) for doc in docs if doc["kind"] == "ConfigMap"
    }
    for doc in docs:
        for replica, spec in pod_specs(doc):
            for group in ("initContainers", "containers"):
                for container in spec.get(group, []):
                    names = {item["name"] for item in container.get("env", [])}
                    for source in container.get("envFrom", []):
                        assert "secretRef" not in source, (
                            f"{doc['metadata']['name']}/{container['name']}: take secrets by name "
                            "(secretKeyRef), so every name a manifest sets is visible"
                        )
                        reference = source["configMapRef"]["name"]
                        assert reference in config_maps, (
                            f"envFrom names unknown ConfigMap {reference}"
                        )
                        names |= {source.get("prefix", "") + key for key in config_maps[reference]}
                    workload = f"{doc['kind']}/{doc['metadata']['name']}{replica}"
                    yield Container(
                        where=f"overlays/{overlay} {workload} {group[:-1]} {container['name']}",
                        image=container["image"],
                        env_names=names,
                        command=[*container.get("command", []), *container.get("args", [])],
                        spec=container,
                    )


def load_compose(*paths: Path) -> dict[str, Any]:
    """The compose model, YAML merge keys resolved; later files override earlier ones as
    compose merges them: mappings key by key, a service's `volumes` by container path, other
    sequences replaced (enough for infra/compose)."""
    merged: dict[str, Any] = {}
    for path in paths:
        (doc,) = load_documents(path)
        merged = _merge(merged, doc)
    return merged


def _volume_target(volume: str | dict[str, Any]) -> str:
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def _merge(base: Any, override: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        result = dict(base)
        for name, value in override.items():
            result[name] = _merge(base[name], value, name) if name in base else value
        return result
    if key == "volumes" and isinstance(base, list) and isinstance(override, list):
        by_target = {_volume_target(volume): volume for volume in base}
        by_target.update({_volume_target(volume): volume for volume in override})
        return list(by_target.values())
    return override


def compose_dockerfile(service: dict[str, Any]) -> str | None:
    build = service.get("build")
    if isinstance(build, dict):
        return build.get("dockerfile")
    return None


def compose_containers(compose: dict[str, Any], label: str = "compose") -> Iterator[Container]:
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            names = {item.split("=", 1)[0] for item in environment}
        else:
            names = set(environment)
        dockerfile = compose_dockerfile(service)
        image = service["image"]
        if dockerfile is not None:
            deployable = Path(dockerfile).name.split(".")[0]
            assert deployable in DEPLOYABLES, f"{name}: unexpected Dockerfile {dockerfile}"
            image = f"xray/{deployable}"
        command = service.get("command", [])
        yield Container(
            where=f"{label} service {name}",
            image=image,
            env_names=names,
            command=command if isinstance(command, list) else command.split(),
            spec=service,
        )


# --- Dockerfiles ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    stage: int


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped; `stage` counts FROMs.

    Enough for the Dockerfiles in infra/docker (no heredocs, no parser directives but `syntax`).
    """
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # inside a continuation too: Docker drops comment lines there
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), stage))
        pending = ""
    return instructions


def dockerfile_env_names(path: Path) -> set[str]:
    """Names set by ENV in the final stage (the running container's environment)."""
    instructions = dockerfile_instructions(path)
    final = max(instruction.stage for instruction in instructions)
    names: set[str] = set()
    for instruction in instructions:
        if instruction.keyword != "ENV" or instruction.stage != final:
            continue
        if "=" not in instruction.arguments.split()[0]:
            names.add(instruction.arguments.split()[0])  # legacy `ENV NAME value`
        else:
            names |= set(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", instruction.arguments))
    return names
