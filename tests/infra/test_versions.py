"""One place says which releases the deployment runs (infra/versions.yaml); everything that names
one agrees with it: pyproject.toml's TensorFlow pins, the training image's base, TF Serving's tag
in compose, the overlays and the README command lines, and the MinIO images."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from tests.infra.helpers import COMPOSE_DIR, DOCKER_DIR, REPO, render

VERSIONS: dict[str, Any] = yaml.safe_load((REPO / "infra" / "versions.yaml").read_text())
TENSORFLOW = VERSIONS["tensorflow"]
MINOR = ".".join(TENSORFLOW.split(".")[:2])


def test_versions_pyproject_pins_the_serving_tensorflow() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    pins = {
        requirement
        for requirements in extras.values()
        for requirement in requirements
        if re.match(r"^(tensorflow|tensorflow-serving-api|tf-keras)\b", requirement)
    }
    assert pins
    for pin in pins:
        assert pin.endswith(f"=={MINOR}.*"), pin


def test_versions_training_image_base_is_the_serving_tensorflow() -> None:
    text = (DOCKER_DIR / "training.Dockerfile").read_text()
    (base,) = re.findall(r"ARG TENSORFLOW_IMAGE=(\S+)", text)
    assert base == f"tensorflow/tensorflow:{TENSORFLOW}-gpu"


def test_versions_compose_serves_with_the_same_tensorflow_and_pinned_minio() -> None:
    cpu = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())["services"]
    gpu = yaml.safe_load((COMPOSE_DIR / "compose.gpu.yaml").read_text())["services"]
    assert cpu["tfserving"]["image"] == f"tensorflow/serving:${{TF_SERVING_TAG:-{TENSORFLOW}}}"
    assert gpu["tfserving"]["image"] == (
        f"tensorflow/serving:${{TF_SERVING_TAG:-{TENSORFLOW}}}-gpu"
    )
    assert cpu["minio"]["image"] == VERSIONS["minio"]
    assert cpu["minio-init"]["image"] == VERSIONS["minio_client"]
    assert cpu["prometheus"]["image"] == VERSIONS["prometheus"]
    assert cpu["grafana"]["image"] == VERSIONS["grafana"]


@pytest.mark.parametrize(("overlay", "suffix"), [("dev", ""), ("gpu", "-gpu")])
def test_versions_kubernetes_serves_with_the_same_tensorflow(overlay: str, suffix: str) -> None:
    images = {
        container["image"]
        for document in render(overlay)
        if document.get("kind") == "Deployment"
        for container in document["spec"]["template"]["spec"]["containers"]
        if "tensorflow/serving" in container["image"]
    }
    assert images == {f"tensorflow/serving:{TENSORFLOW}{suffix}"}


@pytest.mark.parametrize("document", ["README.md", "infra/README.md", "infra/tfserving/README.md"])
def test_versions_command_lines_name_the_same_tensorflow(document: str) -> None:
    text = (REPO / document).read_text()
    for tag in re.findall(r"tensorflow/(?:serving|tensorflow):(\d+\.\d+\.\d+)", text):
        assert tag == TENSORFLOW, f"{document} names {tag}"
    for image in re.findall(r"(?<![\w./])minio/(?:minio|mc):", text):
        raise AssertionError(f"{document} names Docker Hub's {image} (gone; use quay.io)")


def test_versions_documented_minimums_are_the_file_s() -> None:
    text = (REPO / "infra" / "README.md").read_text()
    assert f"Knative Serving {VERSIONS['knative_serving_minimum']}" in text
    assert f"Kubernetes {VERSIONS['kubernetes_minimum']}" in text
