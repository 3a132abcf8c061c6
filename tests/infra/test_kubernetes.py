"""The kustomize overlays render, pass Kubernetes schema validation offline, and hold the
shape the design needs: TF Serving with the sync as init container and sidecar, Knative
functions that scale to zero, a training CronJob, secrets referenced never inlined, and a
NetworkPolicy that lets only the model's clients reach TF Serving."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from referencing import Registry, Resource

from tests.infra.helpers import (
    K8S,
    KNATIVE_API,
    OVERLAYS,
    TFJOB_API,
    TFSERVING_DIR,
    find,
    k8s_containers,
    load_documents,
    pod_labels,
    pod_spec,
    pod_specs,
    render,
)

# The oldest Kubernetes these manifests claim (CronJob timeZone, autoscaling/v2, restricted
# pod security are all GA there) and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29", ".".join(kubernetes_validate.latest_version().split(".")[:2]))
FUNCTIONS = ("auth", "predict", "gradcam", "history", "legacy")
MODEL_CLIENTS = {"predict", "gradcam", "legacy"}  # the functions that call TF Serving
SECRET_EXAMPLE = K8S / "base" / "secret.example.yaml"
# Fields a Knative RevisionSpec adds to a Kubernetes PodSpec.
KNATIVE_REVISION_FIELDS = {
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
}
# Env names Knative reserves for itself (its webhook rejects a Service that sets them).
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}

KNATIVE_SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": KNATIVE_API},
        "kind": {"const": "Service"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["template"],
            "additionalProperties": False,
            "properties": {
                "template": {
                    "type": "object",
                    "required": ["spec"],
                    "additionalProperties": False,
                    "properties": {
                        "metadata": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "labels": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                                "annotations": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                        "spec": {
                            "type": "object",
                            "required": ["containers"],
                            "properties": {
                                "containerConcurrency": {"type": "integer", "minimum": 0},
                                "timeoutSeconds": {"type": "integer", "minimum": 1},
                                # Knative serves one container per revision (sidecars are a
                                # feature flag this project does not use).
                                "containers": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 1,
                                    "items": {
                                        "type": "object",
                                        "required": ["image"],
                                        "properties": {
                                            "ports": {
                                                "type": "array",
                                                "maxItems": 1,
                                                "items": {
                                                    "type": "object",
                                                    "properties": {
                                                        "name": {"enum": ["http1", "h2c"]}
                                                    },
                                                },
                                            },
                                            "env": {
                                                "type": "array",
                                                "items": {
                                                    "properties": {
                                                        "name": {
                                                            "not": {
                                                                "enum": sorted(KNATIVE_RESERVED_ENV)
                                                            }
                                                        }
                                                    }
                                                },
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
                "traffic": {"type": "array"},
            },
        },
    },
}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def docs(overlay: str) -> list[dict[str, Any]]:
    return render(overlay)


def _is_knative(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"] == KNATIVE_API


def _validator(definition_file: str, version: str) -> jsonschema.Draft202012Validator:
    """A strict validator for one of kubernetes-validate's bundled schema files."""
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    schema_dir = next(
        entry
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name, reverse=True)
        if entry.name.endswith("-local-strict") and entry.name.startswith(f"v{version}.")
    )
    schema = json.loads((schema_dir / definition_file).read_text())
    definitions = json.loads((schema_dir / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


# --- rendering and schemas -----------------------------------------------------------------


def test_overlay_render_holds_every_part(overlay: str, docs: list[dict[str, Any]]) -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in docs if not _is_knative(doc)}
    knative = {doc["metadata"]["name"] for doc in docs if _is_knative(doc)}

    assert {
        ("Namespace", "xray"),
        ("Deployment", "tfserving"),
        ("Service", "tfserving"),
        ("CronJob", "training"),
        ("NetworkPolicy", "tfserving-ingress"),
        ("ServiceAccount", "xray-functions"),
        ("ServiceAccount", "xray-tfserving"),
        ("ServiceAccount", "xray-training"),
    } <= kinds
    assert knative == set(FUNCTIONS)
    assert (("HorizontalPodAutoscaler", "tfserving") in kinds) == overlay.startswith("gpu")
    assert (("TFJob", "training-distributed") in kinds) == (overlay == "gpu-tfjob")


def test_overlay_every_object_in_namespace_xray(docs: list[dict[str, Any]]) -> None:
    namespaced = [doc for doc in docs if doc["kind"] != "Namespace"]

    assert {doc["metadata"].get("namespace") for doc in namespaced} == {"xray"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_overlay_core_objects_pass_strict_kubernetes_schema(
    docs: list[dict[str, Any]], version: str
) -> None:
    skipped = set()
    for doc in docs:
        if _is_knative(doc) or doc["apiVersion"] == TFJOB_API:
            skipped.add(doc["apiVersion"])  # a CRD: checked by its own tests below
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {error}")

    assert skipped <= {KNATIVE_API, TFJOB_API}, "only the Knative and TFJob CRDs may bypass"


def test_kubernetes_validate_wrong_field_rejected(docs: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(find(docs, "Deployment", "tfserving"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 7
    deployment["spec"]["replica"] = 2  # misspelt

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_knative_services_match_focused_schema(docs: list[dict[str, Any]]) -> None:
    validator = jsonschema.Draft202012Validator(KNATIVE_SERVICE_SCHEMA)

    for doc in filter(_is_knative, docs):
        errors = sorted(validator.iter_errors(doc), key=lambda error: list(error.path))
        assert not errors, (
            f"{doc['metadata']['name']}: {errors[0].message} at {list(errors[0].path)}"
        )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_knative_revision_pod_spec_passes_strict_pod_spec_schema(
    docs: list[dict[str, Any]], version: str
) -> None:
    validator = _validator("podspec-v1.json", version)

    for doc in filter(_is_knative, docs):
        spec = {
            key: value
            for key, value in doc["spec"]["template"]["spec"].items()
            if key not in KNATIVE_REVISION_FIELDS
        }
        errors = list(validator.iter_errors(spec))
        assert not errors, f"{doc['metadata']['name']}: {errors[0].message}"


def test_knative_schema_reserved_port_env_rejected(docs: list[dict[str, Any]]) -> None:
    service = copy.deepcopy(find(docs, "Service", "predict", KNATIVE_API))
    service["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "PORT", "value": "9000"}
    )

    assert not jsonschema.Draft202012Validator(KNATIVE_SERVICE_SCHEMA).is_valid(service)


# --- functions -----------------------------------------------------------------------------


def test_knative_functions_one_image_target_each(docs: list[dict[str, Any]]) -> None:
    images = set()
    for name in FUNCTIONS:
        (container,) = find(docs, "Service", name, KNATIVE_API)["spec"]["template"]["spec"][
            "containers"
        ]
        targets = [item["value"] for item in container["env"] if item["name"] == "FUNCTION_TARGET"]
        images.add(container["image"])

        assert targets == [name]
    assert len(images) == 1


def test_knative_functions_scale_to_zero(docs: list[dict[str, Any]]) -> None:
    for doc in filter(_is_knative, docs):
        annotations = doc["spec"]["template"]["metadata"]["annotations"]

        assert annotations["autoscaling.knative.dev/min-scale"] == "0"
        assert int(annotations["autoscaling.knative.dev/max-scale"]) >= 1
        assert doc["metadata"]["annotations"]["networking.knative.dev/http-protocol"] == (
            "redirected"
        )


def test_functions_settings_tf_serving_url_targets_service_rest_port(
    docs: list[dict[str, Any]],
) -> None:
    settings = next(
        doc["data"]
        for doc in docs
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("xray-functions-")
    )
    service = find(docs, "Service", "tfserving")
    http_port = next(port["port"] for port in service["spec"]["ports"] if port["name"] == "http")

    assert settings["TF_SERVING_URL"] == f"http://tfserving:{http_port}"


# --- references ----------------------------------------------------------------------------


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_overlay_config_map_references_resolve(docs: list[dict[str, Any]]) -> None:
    config_maps = {
        doc["metadata"]["name"]: set(doc.get("data", {}))
        for doc in docs
        if doc["kind"] == "ConfigMap"
    }
    references = 0
    for doc in docs:
        for node in _walk(doc):
            for key in ("configMapRef", "configMapKeyRef", "configMap"):
                if key in node:
                    name = node[key]["name"]
                    references += 1
                    assert name in config_maps, f"{doc['metadata']['name']}: no ConfigMap {name}"
                    if key == "configMapKeyRef":
                        assert node[key]["key"] in config_maps[name]

    assert references >= 10


def _secret_example() -> dict[str, set[str]]:
    return {
        doc["metadata"]["name"]: set(doc["stringData"]) for doc in load_documents(SECRET_EXAMPLE)
    }


def test_overlay_secrets_referenced_never_inlined(docs: list[dict[str, Any]]) -> None:
    examples = _secret_example()
    references = set()
    for doc in docs:
        assert doc["kind"] != "Secret", f"a Secret is part of the render: {doc['metadata']['name']}"
        for node in _walk(doc):
            if "secretKeyRef" in node:
                references.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
            assert "secretRef" not in node, "take secrets by name (secretKeyRef)"
            if "name" in node and "value" in node:
                assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", node["name"]), (
                    f"{node['name']} is set inline"
                )

    assert references
    for name, key in references:
        assert key in examples.get(name, set()), f"secret.example.yaml lacks {name}/{key}"


def test_secret_example_placeholders_outside_kustomization() -> None:
    listed = [
        entry
        for path in K8S.rglob("kustomization.yaml")
        for (kustomization,) in [load_documents(path)]
        for entry in kustomization.get("resources", [])
    ]
    values = [
        value for doc in load_documents(SECRET_EXAMPLE) for value in doc["stringData"].values()
    ]

    assert listed
    assert not [entry for entry in listed if "secret" in entry]
    assert values
    assert all(value.startswith("<replace") for value in values)


def test_overlay_model_name_single_value(docs: list[dict[str, Any]]) -> None:
    names = {
        doc["data"]["MODEL_NAME"]
        for doc in docs
        if doc["kind"] == "ConfigMap" and "MODEL_NAME" in doc.get("data", {})
    }

    assert names == {"cnn_vit"}


# --- TF Serving ----------------------------------------------------------------------------


def test_tfserving_pod_sync_init_and_sidecar_share_models_volume(
    docs: list[dict[str, Any]],
) -> None:
    spec = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    containers = {container["name"]: container for container in spec["containers"]}
    shared = next(volume for volume in spec["volumes"] if volume["name"] == "models")

    assert "emptyDir" in shared
    assert init["command"] == ["xray-model-sync", "--once"]
    assert containers["model-sync"]["command"] == ["xray-model-sync", "--watch"]
    for container in (init, containers["model-sync"], containers["tfserving"]):
        mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
        assert mounts["models"]["mountPath"] == "/models"
    assert containers["tfserving"]["volumeMounts"][0].get("readOnly") is True


def test_tfserving_readiness_asks_model_status_available(docs: list[dict[str, Any]]) -> None:
    spec = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
    server = next(container for container in spec["containers"] if container["name"] == "tfserving")
    probe = " ".join(server["readinessProbe"]["exec"]["command"])
    model_env = next(item for item in server["env"] if item["name"] == "MODEL_NAME")

    assert "/dev/tcp/127.0.0.1/8501" in probe
    assert "GET /v1/models/%s" in probe
    assert '"$MODEL_NAME"' in probe
    assert '"AVAILABLE"' in probe
    assert model_env["valueFrom"]["configMapKeyRef"]["key"] == "MODEL_NAME"
    assert server["livenessProbe"]
    assert server["startupProbe"]


def test_tfserving_flags_point_at_mounted_config(docs: list[dict[str, Any]]) -> None:
    spec = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
    server = next(container for container in spec["containers"] if container["name"] == "tfserving")
    flags = dict(arg.removeprefix("--").partition("=")[::2] for arg in server["args"])
    mounts = {mount["name"]: mount["mountPath"] for mount in server["volumeMounts"]}
    config_volume = next(
        volume for volume in spec["volumes"] if volume["name"] == "tfserving-config"
    )
    config_map = find(docs, "ConfigMap", config_volume["configMap"]["name"])

    assert server["command"] == ["tensorflow_model_server"]
    assert flags["model_config_file"] == "/models/models.config"
    assert "enable_batching" in flags
    for flag in ("batching_parameters_file", "monitoring_config_file"):
        folder, _, file_name = flags[flag].rpartition("/")
        assert folder == mounts["tfserving-config"]
        assert file_name in config_map["data"]


def test_tfserving_network_policy_admits_only_model_clients(docs: list[dict[str, Any]]) -> None:
    policy = find(docs, "NetworkPolicy", "tfserving-ingress")["spec"]
    service = find(docs, "Service", "tfserving")
    deployment = find(docs, "Deployment", "tfserving")
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    allowed = source["podSelector"]["matchLabels"]
    admitted = {
        doc["metadata"]["name"]
        for doc in docs
        if pod_spec(doc) is not None and allowed.items() <= pod_labels(doc).items()
    }

    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels(deployment).items()
    assert "namespaceSelector" not in source
    assert "ipBlock" not in source
    assert admitted == MODEL_CLIENTS
    assert {port["port"] for port in rule["ports"]} == {
        port["port"] for port in service["spec"]["ports"]
    }


def test_tfserving_service_ports_match_container_ports(docs: list[dict[str, Any]]) -> None:
    service = find(docs, "Service", "tfserving")["spec"]
    spec = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
    server = next(container for container in spec["containers"] if container["name"] == "tfserving")
    container_ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    flags = dict(arg.removeprefix("--").partition("=")[::2] for arg in server["args"])

    assert {port["name"]: port["port"] for port in service["ports"]} == {"grpc": 8500, "http": 8501}
    assert container_ports == {"grpc": int(flags["port"]), "http": int(flags["rest_api_port"])}
    assert service["selector"].items() <= pod_labels(find(docs, "Deployment", "tfserving")).items()


# --- every workload ------------------------------------------------------------------------


def test_overlay_every_container_requests_and_limits(
    overlay: str, docs: list[dict[str, Any]]
) -> None:
    for container in k8s_containers(overlay, docs):
        resources_ = container.spec.get("resources", {})

        assert {"cpu", "memory"} <= set(resources_.get("requests", {})), container.where
        assert {"cpu", "memory"} <= set(resources_.get("limits", {})), container.where


def test_overlay_every_pod_non_root_without_escalation(
    overlay: str, docs: list[dict[str, Any]]
) -> None:
    for doc, spec in ((each, spec) for each in docs for _, spec in pod_specs(each)):
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}

            assert context.get("runAsNonRoot") is True, (doc["metadata"]["name"], container["name"])
            assert context.get("allowPrivilegeEscalation") is False
            assert context.get("capabilities", {}).get("drop") == ["ALL"]
        assert spec.get("serviceAccountName", "default") != "default"


def test_overlay_images_pinned(overlay: str, docs: list[dict[str, Any]]) -> None:
    for container in k8s_containers(overlay, docs):
        tag = container.image.rsplit("/", 1)[-1].partition(":")[2]

        assert tag not in {"", "latest"}, container.where


# --- training ------------------------------------------------------------------------------


def test_training_cronjob_forbids_overlap_and_bounds_retries(docs: list[dict[str, Any]]) -> None:
    cronjob = find(docs, "CronJob", "training")["spec"]
    job = cronjob["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]

    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert 0 <= job["backoffLimit"] <= 3
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert container["command"] == ["xray-train"]
    assert {"--preset", "--strategy"} <= set(container["args"])


def test_training_cronjob_on_demand_command_documented() -> None:
    readme = (K8S.parent / "README.md").read_text(encoding="utf-8")
    cronjob_file = (K8S / "base" / "training-cronjob.yaml").read_text(encoding="utf-8")

    for text in (readme, cronjob_file):
        assert "kubectl -n xray create job --from=cronjob/training" in text


# --- overlays ------------------------------------------------------------------------------


def _tfserving_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
    return next(container for container in spec["containers"] if container["name"] == "tfserving")


def test_dev_overlay_cpu_image_one_replica() -> None:
    docs = render("dev")
    deployment = find(docs, "Deployment", "tfserving")

    assert not _tfserving_container(docs)["image"].endswith("-gpu")
    assert deployment["spec"]["replicas"] == 1
    assert "nvidia.com/gpu" not in json.dumps(docs)


def test_gpu_overlay_tfserving_one_gpu_on_gpu_pool_with_hpa() -> None:
    docs = render("gpu")
    deployment = find(docs, "Deployment", "tfserving")
    spec = deployment["spec"]["template"]["spec"]
    server = _tfserving_container(docs)
    hpa = find(docs, "HorizontalPodAutoscaler", "tfserving")["spec"]

    assert server["image"].startswith("tensorflow/serving:")
    assert server["image"].endswith("-gpu")
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"]
    assert any(toleration["key"] == "nvidia.com/gpu" for toleration in spec["tolerations"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tfserving",
    }
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]


def test_gpu_overlay_batching_differs_from_cpu() -> None:
    def batching(docs: list[dict[str, Any]]) -> str:
        spec = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
        volume = next(volume for volume in spec["volumes"] if volume["name"] == "tfserving-config")
        return find(docs, "ConfigMap", volume["configMap"]["name"])["data"][
            "batching_parameters.txt"
        ]

    cpu, gpu = batching(render("dev")), batching(render("gpu"))
    size = re.compile(r"max_batch_size\s*\{\s*value:\s*(\d+)")

    assert int(size.search(gpu).group(1)) > int(size.search(cpu).group(1))  # type: ignore[union-attr]


def test_gpu_overlay_training_requests_gpu() -> None:
    job = find(render("gpu"), "CronJob", "training")["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]

    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


# --- the TF Serving config copies ----------------------------------------------------------

# kustomize loads no file outside a kustomization's folder, so the k8s tree holds copies of
# infra/tfserving/; each must equal its source.
TFSERVING_COPIES = {
    "base/tfserving/batching_parameters.txt": "batching_parameters.txt",
    "base/tfserving/monitoring.config": "monitoring.config",
    "components/gpu/tfserving/batching_parameters.gpu.txt": "batching_parameters.gpu.txt",
}


@pytest.mark.parametrize(("copy_path", "source_name"), TFSERVING_COPIES.items())
def test_tfserving_config_copy_matches_source(copy_path: str, source_name: str) -> None:
    source = TFSERVING_DIR / source_name
    assert source.is_file(), f"infra/tfserving/{source_name} is missing"
    assert (K8S / copy_path).read_bytes() == source.read_bytes(), (
        f"infra/k8s/{copy_path} drifted from infra/tfserving/{source_name}: copy it over"
    )


def test_tfserving_config_copies_all_used() -> None:
    referenced = "\n".join(
        path.read_text(encoding="utf-8") for path in K8S.rglob("kustomization.yaml")
    )

    for copy_path in TFSERVING_COPIES:
        assert Path(copy_path).name in referenced


# --- training on several nodes -------------------------------------------------------------

TFJOB_SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "tfjob-v1-focused.schema.json").read_text()
)
TFJOB_PORT = 2222  # the operator's TFJobDefaultPort, read from the port named tfjob-port


def _tfjob() -> dict[str, Any]:
    return find(render("gpu-tfjob"), "TFJob", "training-distributed", TFJOB_API)


def _tfjob_errors(tfjob: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(TFJOB_SCHEMA)
    return [
        f"{error.message} at {list(error.path)}"
        for error in sorted(validator.iter_errors(tfjob), key=lambda error: list(error.path))
    ]


def test_tfjob_matches_strict_crd_schema() -> None:
    assert _tfjob_errors(_tfjob()) == []


@pytest.mark.parametrize(
    "mutation",
    [
        lambda job: job["spec"]["runPolicy"].update(suspended=True),  # misspelt
        lambda job: job["spec"]["tfReplicaSpecs"].update(
            worker=job["spec"]["tfReplicaSpecs"]["Worker"]
        ),
        lambda job: job["spec"]["tfReplicaSpecs"]["Worker"].update(restartPolicy="Sometimes"),
        lambda job: job["spec"]["runPolicy"].update(cleanPodPolicy="Everything"),
        lambda job: job["metadata"].update(name="Training_Distributed"),
    ],
)
def test_tfjob_schema_rejects_what_the_operator_would(mutation: Any) -> None:
    tfjob = copy.deepcopy(_tfjob())
    mutation(tfjob)

    assert _tfjob_errors(tfjob)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_tfjob_pod_templates_pass_strict_pod_template_schema(version: str) -> None:
    validator = _validator("podtemplatespec-v1.json", version)

    for replica, spec in _tfjob()["spec"]["tfReplicaSpecs"].items():
        errors = list(validator.iter_errors(spec["template"]))
        assert not errors, f"{replica}: {errors[0].message}"


def test_tfjob_passes_the_operators_webhook_rules() -> None:
    # kubeflow/training-operator v1.9.0 pkg/webhooks/tensorflow/tfjob_webhook.go
    # validateTFReplicaSpecs: in every replica a container named `tensorflow`, every container
    # with an image; at most one Chief or Master.
    replicas = _tfjob()["spec"]["tfReplicaSpecs"]

    for spec in replicas.values():
        containers = spec["template"]["spec"]["containers"]
        assert "tensorflow" in {container["name"] for container in containers}
        assert all(container.get("image") for container in containers)
    assert sum(replicas[kind]["replicas"] for kind in ("Chief", "Master") if kind in replicas) == 1


def test_tfjob_chief_and_workers_run_the_same_pod_on_gpus() -> None:
    tfjob = _tfjob()
    chief, worker = (tfjob["spec"]["tfReplicaSpecs"][kind] for kind in ("Chief", "Worker"))
    (container,) = chief["template"]["spec"]["containers"]

    assert chief["template"] == worker["template"]
    assert worker["replicas"] >= 1
    assert container["command"] == ["xray-train"]
    assert container["args"][container["args"].index("--strategy") + 1] in {"auto", "multi-worker"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"].startswith("registry.example.com/xray/training:")
    assert "TF_CONFIG" not in {item["name"] for item in container.get("env", [])}, (
        "the operator writes TF_CONFIG"
    )
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {
        "tfjob-port": TFJOB_PORT
    }


def test_tfjob_is_a_suspended_template_with_bounded_retries() -> None:
    policy = _tfjob()["spec"]["runPolicy"]

    # Applying the overlay must start nothing, and re-applying it must never touch a run.
    assert policy["suspend"] is True
    assert 0 <= policy["backoffLimit"] <= 3
    assert policy["activeDeadlineSeconds"] > 0
    programs = {
        _run_copy_program((K8S.parent / "README.md").read_text(encoding="utf-8")),
        _run_copy_program(
            (K8S / "components" / "tfjob" / "tfjob.yaml").read_text(encoding="utf-8"), "#"
        ),
    }
    assert len(programs) == 1, "the README and the template document the same command"


def _run_copy_program(text: str, comment: str = "") -> str:
    """The jq program of the documented `get tfjob ... | jq '...' | kubectl create` command."""
    lines = [line.strip().removeprefix(comment).strip() for line in text.splitlines()]
    start = lines.index("kubectl -n xray get tfjob training-distributed -o json \\")
    command = " ".join(lines[start : start + 6])
    match = re.search(r"\| jq '(.*?)' \\ \| kubectl create -f -", command)
    assert match, command
    return match.group(1)


def test_tfjob_documented_run_copy_is_a_valid_unsuspended_tfjob() -> None:
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed")
    template = {**_tfjob(), "status": {"conditions": []}}
    program = _run_copy_program((K8S.parent / "README.md").read_text(encoding="utf-8"))

    result = subprocess.run(
        [jq, program], input=json.dumps(template), capture_output=True, text=True, check=True
    )
    run = json.loads(result.stdout)

    assert _tfjob_errors(run) == []
    assert run["spec"]["runPolicy"]["suspend"] is False
    assert "status" not in run
    assert run["metadata"]["namespace"] == "xray"
    assert re.fullmatch(r"training-distributed-\d+", run["metadata"]["name"])
    assert run["spec"]["tfReplicaSpecs"] == template["spec"]["tfReplicaSpecs"]


def test_tfjob_network_policy_admits_the_replicas_on_their_port() -> None:
    docs = render("gpu-tfjob")
    policy = find(docs, "NetworkPolicy", "training-distributed")["spec"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    labels = _tfjob()["spec"]["tfReplicaSpecs"]["Worker"]["template"]["metadata"]["labels"]

    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert source["podSelector"]["matchLabels"].items() <= labels.items()
    assert [port["port"] for port in rule["ports"]] == [TFJOB_PORT]


def _indexed() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    docs = render("gpu-indexed")
    job = find(docs, "CronJob", "training")["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    return docs, job, container


def test_indexed_job_starts_every_worker_together_and_fails_as_one() -> None:
    _, job, container = _indexed()
    env = {item["name"]: item for item in container["env"]}

    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == int(env["TRAINING_WORKERS"]["value"]) >= 2
    assert job["backoffLimit"] == 0
    assert env["TRAINING_JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/job-name']"
    )
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_indexed_job_pods_find_one_another_through_the_headless_service() -> None:
    from training_job.settings import TrainingJobSettings
    from training_job.strategy import is_chief_task, parse_tf_config

    docs, job, container = _indexed()
    pod = job["template"]
    service = find(docs, "Service", "training-workers")["spec"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    port = int(env["TRAINING_WORKER_PORT"])
    workers = int(env["TRAINING_WORKERS"])

    assert pod["spec"]["subdomain"] == env["TRAINING_WORKER_SERVICE"] == "training-workers"
    assert service["clusterIP"] == "None"
    assert service["publishNotReadyAddresses"] is True
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert [entry["port"] for entry in service["ports"]] == [port]
    assert port in {entry["containerPort"] for entry in container["ports"]}
    # What each pod derives: Kubernetes names pod i `<job>-<i>` and sets JOB_COMPLETION_INDEX.
    job_name = "training-29410560"
    chiefs = []
    for index in range(workers):
        environ = {
            **{name: value for name, value in env.items() if value is not None},
            "TRAINING_JOB_NAME": job_name,
            "JOB_COMPLETION_INDEX": str(index),
        }
        tf_config = TrainingJobSettings.from_env(environ).tf_config
        document = parse_tf_config(tf_config)
        assert document is not None
        assert document["cluster"]["worker"] == [
            f"{job_name}-{each}.training-workers:{port}" for each in range(workers)
        ]
        chiefs.append(is_chief_task(tf_config))
    assert chiefs == [True] + [False] * (workers - 1)


def test_indexed_job_network_policy_admits_the_workers_on_their_port() -> None:
    docs, job, _ = _indexed()
    policy = find(docs, "NetworkPolicy", "training-workers")["spec"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    labels = job["template"]["metadata"]["labels"]

    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert source["podSelector"]["matchLabels"].items() <= labels.items()
    assert [entry["port"] for entry in rule["ports"]] == [2222]


def test_single_node_overlays_keep_the_plain_training_job() -> None:
    for overlay in ("dev", "gpu", "gpu-tfjob"):
        job = find(render(overlay), "CronJob", "training")["spec"]["jobTemplate"]["spec"]

        assert "completionMode" not in job, overlay
        assert "subdomain" not in job["template"]["spec"], overlay
