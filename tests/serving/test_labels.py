"""Version labels, as strict as TF Serving's ServerCore (server_core.cc, ReloadConfig then
UpdateModelVersionLabelMap; server_core_test.cc AssignLabelToUnavailableVersion*): the labels are
checked against the versions AVAILABLE *before* anything loads, so a label at start is refused
unless the server runs with `--allow_version_labels_for_unavailable_models`; with the flag a new
label may name a version not loaded (requests on it: 404), an existing label may not move to one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from tests.serving.models import save_half_plus_two
from tests.serving.server_process import ServerProcess

UNAVAILABLE = (
    "Request to assign label to version {version} of model half, which is not currently "
    "available for inference"
)


def _config(base: Path, labels: dict[str, int]) -> str:
    label_lines = "".join(
        f'    version_labels {{ key: "{label}" value: {version} }}\n'
        for label, version in labels.items()
    )
    return (
        "model_config_list {\n  config {\n"
        f'    name: "half" base_path: "{base}" model_platform: "tensorflow"\n'
        "    model_version_policy { specific { versions: 1 } }\n"
        f"{label_lines}  }}\n}}\n"
    )


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("labels") / "half"
    save_half_plus_two(base / "1")
    return base


def test_label_at_start_without_the_flag_refuses_to_start(half: Path, tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text(_config(half, {"stable": 1}))
    server = ServerProcess([f"--model_config_file={config}"], tmp_path / "server.log")
    try:
        code = server.wait_exit(120)
    finally:
        server.stop()

    assert code != 0
    assert UNAVAILABLE.format(version=1) in server.log()


@pytest.fixture(scope="module")
def flagged(half: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("flagged")
    config = folder / "models.config"
    config.write_text(_config(half, {"stable": 1}))
    server = ServerProcess(
        [f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models"],
        folder / "server.log",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _reload(server: ServerProcess, base: Path, labels: dict[str, int]) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    config = request.config.model_config_list.config.add()
    config.name = "half"
    config.base_path = str(base)
    config.model_platform = "tensorflow"
    config.model_version_policy.specific.versions.append(1)
    for label, version in labels.items():
        config.version_labels[label] = version
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        stub.HandleReloadConfigRequest(request, timeout=60)


def _predict(server: ServerProcess, label: str) -> requests.Response:
    return requests.post(
        f"{server.url}/v1/models/half/labels/{label}:predict",
        json={"instances": [1.0]},
        timeout=30,
    )


def test_label_at_start_with_the_flag_starts_and_answers(flagged: ServerProcess) -> None:
    answer = _predict(flagged, "stable")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [2.5]}


def test_with_the_flag_a_new_label_may_name_a_version_not_loaded(
    flagged: ServerProcess, half: Path
) -> None:
    _reload(flagged, half, {"stable": 1, "nice_try": 99})

    answer = _predict(flagged, "nice_try")
    assert answer.status_code == 404
    assert answer.json() == {"error": "Servable not found for request: Specific(half, 99)"}
    assert _predict(flagged, "stable").status_code == 200


def test_with_the_flag_an_existing_label_may_not_move_to_a_version_not_loaded(
    flagged: ServerProcess, half: Path
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _reload(flagged, half, {"stable": 99})

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == UNAVAILABLE.format(version=99)
    assert _predict(flagged, "stable").json() == {"predictions": [2.5]}
