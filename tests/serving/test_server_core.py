"""The stand-in as strict as TF Serving's ServerCore and manager (docs/TFSERVING_CONFORMANCE.md).

Each test runs real model server processes and talks REST and gRPC to them: what a config is
refused for (and with which message), how the start waits, what a poll may change, what happens
to a request in flight when its version goes, and what the status API remembers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from tests.serving.models import (
    save_half_plus_two,
    save_slow,
    slow_warmup_log,
    write_warmup_records,
)
from tests.serving.server_process import ServerProcess


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def entry(
    name: str,
    base: Path | str,
    *,
    versions: tuple[int, ...] | None = None,
    labels: dict[str, int] | None = None,
    platform: str = "tensorflow",
) -> str:
    """One `config { ... }` block (`specific` when `versions` is given, else `latest`)."""
    policy = (
        "model_version_policy { specific { "
        + " ".join(f"versions: {version}" for version in versions)
        + " } } "
        if versions is not None
        else ""
    )
    label_text = "".join(
        f'version_labels {{ key: "{label}" value: {version} }} '
        for label, version in (labels or {}).items()
    )
    platform_text = f'model_platform: "{platform}" ' if platform else ""
    return f'config {{ name: "{name}" base_path: "{base}" {platform_text}{policy}{label_text}}}'


def config_text(*entries: str) -> str:
    return "model_config_list {\n" + "\n".join(f"  {item}" for item in entries) + "\n}\n"


def install(base: Path, version: int, save: Callable[[Path], Any]) -> Path:
    """Build a version beside the base path, then rename it in (never seen half-written)."""
    staging = base.parent / f"staging-{base.name}-{version}"
    save(staging)
    target = base / str(version)
    staging.rename(target)
    return target


def states(server: ServerProcess, name: str) -> dict[str, tuple[str, str, str]]:
    """version -> (state, error_code, error_message), from the REST status API."""
    response = requests.get(f"{server.url}/v1/models/{name}", timeout=10)
    if response.status_code != 200:
        return {}
    return {
        item["version"]: (
            item["state"],
            item["status"]["error_code"],
            item["status"]["error_message"],
        )
        for item in response.json()["model_version_status"]
    }


def predict(server: ServerProcess, path: str, instances: list[Any]) -> requests.Response:
    return requests.post(
        f"{server.url}/v1/models/{path}:predict", json={"instances": instances}, timeout=60
    )


def reload(server: ServerProcess, text: str) -> model_management_pb2.ReloadConfigResponse:
    from google.protobuf import text_format

    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        return stub.HandleReloadConfigRequest(request, timeout=120)


def run_to_exit(arguments: list[str], log: Path) -> tuple[int, str]:
    server = ServerProcess(arguments, log)
    try:
        code = server.wait_exit(120)
    finally:
        server.stop()
    return code, server.log()


# -- start ----------------------------------------------------------------------------------------


def test_start_loads_a_version_that_appears_while_the_server_waits(tmp_path: Path) -> None:
    base = tmp_path / "late"
    base.mkdir()
    server = ServerProcess(
        ["--model_name=late", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0.2"],
        tmp_path / "server.log",
    )
    try:
        wait_for(
            lambda: "No versions of servable late found under base path" in server.log(),
            what="the first poll",
        )
        time.sleep(1.0)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}/v1/models/late", timeout=2)  # not listening yet
        assert server.process.poll() is None
        install(base, 1, save_half_plus_two)
        server.wait_ready(120)

        answer = predict(server, "late", [[1.0]])
    finally:
        server.stop()

    assert answer.json() == {"predictions": [[2.5]]}


def test_start_fails_when_the_first_version_to_finish_fails(tmp_path: Path) -> None:
    base = tmp_path / "m"
    save_half_plus_two(base / "1")
    (base / "2").mkdir()  # no SavedModel: its load fails at once, before version 1 is loaded
    config = tmp_path / "models.config"
    config.write_text(config_text(entry("m", base, versions=(1, 2))))

    code, log = run_to_exit(
        [f"--model_config_file={config}", "--max_num_load_retries=0"], tmp_path / "server.log"
    )

    assert code == 255
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: m version: 2} due to error: NOT_FOUND: Could not find SavedModel .pb or .pbtxt"
    ) in log


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'm' ", "INVALID_ARGUMENT: Invalid protobuf file: '"),
        (
            config_text(entry("m", "relative/m")),
            "INVALID_ARGUMENT: Expected model m to have an absolute path or URI; "
            "got base_path()=relative/m",
        ),
        (
            config_text(entry("m", "/models/m", platform="")),
            "INVALID_ARGUMENT: Illegal setting neither ModelServerConfig::model_type "
            "(deprecated) nor ModelServerConfig::model_platform, model name is m",
        ),
    ],
    ids=["not a text proto", "relative base path", "no platform"],
)
def test_start_with_an_invalid_config_exits(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "models.config"
    config.write_text(text)

    code, log = run_to_exit([f"--model_config_file={config}"], tmp_path / "server.log")

    assert code == 255
    assert f"Failed to start server. Error: {message}" in log


def test_empty_config_starts_with_no_model_and_a_later_list_is_loaded(tmp_path: Path) -> None:
    base = tmp_path / "half"
    save_half_plus_two(base / "1")
    config = tmp_path / "models.config"
    config.write_text("# nothing yet\n")
    server = ServerProcess(
        [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0.2"],
        tmp_path / "server.log",
    )
    try:
        server.wait_ready()
        before = requests.get(f"{server.url}/v1/models/half", timeout=10)
        config.write_text(config_text(entry("half", base)))
        wait_for(lambda: states(server, "half").get("1", ("",))[0] == "AVAILABLE", what="half")
        answer = predict(server, "half", [[1.0]])
    finally:
        server.stop()

    assert before.status_code == 404
    assert before.json() == {"error": "Could not find any versions of model half"}
    assert answer.json() == {"predictions": [[2.5]]}


# -- reload over gRPC -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("core-zoo")
    save_half_plus_two(root / "half" / "1")
    save_half_plus_two(root / "other" / "1", offset=10.0)
    return root


@pytest.fixture(scope="module")
def core_server(
    zoo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    folder = tmp_path_factory.mktemp("core")
    base_config = config_text(entry("half", zoo / "half"), entry("other", zoo / "other"))
    config = folder / "models.config"
    config.write_text(base_config)
    server = ServerProcess([f"--model_config_file={config}"], folder / "server.log")
    try:
        server.wait_ready()
        yield server, base_config
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda zoo: config_text(entry("half", zoo / "half"), entry("half", zoo / "other")),
            "Illegal to list model half multiple times in config list",
        ),
        (
            lambda zoo: config_text(entry("half", "half")),
            "Expected model half to have an absolute path or URI; got base_path()=half",
        ),
        (
            lambda zoo: config_text(entry("half", zoo / "half", platform="")),
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is half",
        ),
        (
            lambda zoo: config_text(entry("half", zoo / "half", platform="pytorch")),
            "Illegal to change a model's platform. For model half platform was tensorflow and "
            "new platform requested is pytorch",
        ),
        (
            lambda zoo: config_text(
                entry("half", zoo / "half"), entry("new", zoo / "other", platform="pytorch")
            ),
            "Model new requests unsupported platform pytorch",
        ),
        (
            lambda zoo: (
                "model_config_list { config { name: 'half' base_path: '"
                + str(zoo / "half")
                + "' model_type: TENSORFLOW model_platform: 'tensorflow' } }"
            ),
            "Illegal setting both ModelServerConfig::model_type (deprecated) and "
            "ModelServerConfig::model_platform, model name is half",
        ),
        (
            lambda zoo: (
                "model_config_list { config { name: 'half' base_path: '"
                + str(zoo / "half")
                + "' model_type: OTHER } }"
            ),
            "ModelServerConfig::model_type choice 2 not supported.",
        ),
    ],
    ids=[
        "name twice",
        "relative base path",
        "no platform",
        "platform changed",
        "unsupported platform",
        "type and platform",
        "type other",
    ],
)
def test_reload_refuses_an_invalid_config_with_server_core_message(
    core_server: tuple[ServerProcess, str],
    zoo: Path,
    change: Callable[[Path], str],
    message: str,
) -> None:
    server, _ = core_server

    with pytest.raises(grpc.RpcError) as raised:
        reload(server, change(zoo))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == message
    assert states(server, "half") == {"1": ("AVAILABLE", "OK", "")}
    assert states(server, "other") == {"1": ("AVAILABLE", "OK", "")}


def test_reload_refuses_a_config_that_is_not_a_model_list(
    core_server: tuple[ServerProcess, str],
) -> None:
    server, _ = core_server

    with pytest.raises(grpc.RpcError) as raised:
        reload(server, "")

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
        "Only ModelConfigList is currently supported"
    )


def test_removed_model_keeps_its_version_states_and_serves_nothing(
    core_server: tuple[ServerProcess, str], zoo: Path
) -> None:
    server, base_config = core_server
    try:
        reload(server, config_text(entry("half", zoo / "half")))
        wait_for(lambda: states(server, "other") == {"1": ("END", "OK", "")}, what="other unloaded")
        status = requests.get(f"{server.url}/v1/models/other/versions/1", timeout=10)
        answer = predict(server, "other", [[1.0]])
        metadata = requests.get(f"{server.url}/v1/models/other/metadata", timeout=10)
    finally:
        reload(server, base_config)

    assert status.status_code == 200
    assert status.json()["model_version_status"][0]["state"] == "END"
    assert answer.status_code == 404
    assert answer.json() == {"error": "Servable not found for request: Latest(other)"}
    assert metadata.status_code == 404
    # Added back: the same version loads again and answers.
    assert states(server, "other") == {"1": ("AVAILABLE", "OK", "")}
    assert predict(server, "other", [[1.0]]).json() == {"predictions": [[10.5]]}


# -- polling the config file --------------------------------------------------------------------


@pytest.fixture(scope="module")
def polled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path, Path]]:
    """A server re-reading its config file every 0.2 s; `moving` (latest) and `pinned`
    (specific 1) both have version 1 (answers 2.5)."""
    folder = tmp_path_factory.mktemp("polled")
    for name in ("moving", "pinned"):
        save_half_plus_two(folder / name / "1")
    config = folder / "models.config"
    config.write_text(
        config_text(
            entry("moving", folder / "moving"),
            entry("pinned", folder / "pinned", versions=(1,)),
        )
    )
    server = ServerProcess(
        [
            f"--model_config_file={config}",
            "--model_config_file_poll_wait_seconds=0.2",
            "--file_system_poll_wait_seconds=0.2",
        ],
        folder / "server.log",
    )
    try:
        server.wait_ready()
        yield server, folder, config
    finally:
        server.stop()


def test_failed_reload_is_retried_every_poll_until_it_applies(
    polled: tuple[ServerProcess, Path, Path],
) -> None:
    server, folder, config = polled
    config.write_text(
        config_text(
            entry("moving", folder / "moving", labels={"stable": 2}),
            entry("pinned", folder / "pinned", versions=(1,)),
        )
    )
    time.sleep(1.5)  # several polls, each refused: version 2 does not exist yet
    refused = predict(server, "moving/labels/stable", [[1.0]])

    install(folder / "moving", 2, lambda path: save_half_plus_two(path, offset=3.0))
    answer = wait_for(
        lambda: (r := predict(server, "moving/labels/stable", [[1.0]])).status_code == 200 and r,
        what="the label, once version 2 is AVAILABLE",
    )

    assert refused.status_code == 400
    assert refused.json() == {"error": "Unrecognized servable version label: stable"}
    assert answer.json() == {"predictions": [[3.5]]}
    assert (
        "PollFilesystemAndReloadConfig failed to ReloadConfig: Request to assign label to "
        "version 2 of model moving, which is not currently available for inference"
    ) in server.log()


def test_label_on_a_version_the_same_write_aspires_never_applies(
    polled: tuple[ServerProcess, Path, Path],
) -> None:
    server, folder, config = polled
    install(folder / "pinned", 2, lambda path: save_half_plus_two(path, offset=3.0))
    config.write_text(
        config_text(
            entry("moving", folder / "moving"),
            entry("pinned", folder / "pinned", versions=(1, 2), labels={"stable": 2}),
        )
    )
    time.sleep(2.0)  # ten polls: the label check fails before the new policy would load 2

    version_2 = requests.get(f"{server.url}/v1/models/pinned/versions/2", timeout=10)
    label = predict(server, "pinned/labels/stable", [[1.0]])

    assert version_2.status_code == 404
    assert version_2.json() == {"error": "Could not find version 2 of model pinned"}
    assert label.status_code == 400
    assert states(server, "pinned") == {"1": ("AVAILABLE", "OK", "")}


# -- the file-system poll -----------------------------------------------------------------------


def test_a_base_path_that_cannot_be_listed_stops_every_models_poll(tmp_path: Path) -> None:
    for name in ("a", "b"):
        save_half_plus_two(tmp_path / name / "1")
    config = tmp_path / "models.config"
    config.write_text(config_text(entry("a", tmp_path / "a"), entry("b", tmp_path / "b")))
    server = ServerProcess(
        [f"--model_config_file={config}", "--file_system_poll_wait_seconds=0.2"],
        tmp_path / "server.log",
    )
    try:
        server.wait_ready()
        (tmp_path / "b").rename(tmp_path / "b-away")
        install(tmp_path / "a", 2, lambda path: save_half_plus_two(path, offset=3.0))
        time.sleep(2.0)  # ten polls, each dropped at b
        while_b_is_away = states(server, "a")
        b_answer = predict(server, "b", [[1.0]])
        (tmp_path / "b-away").rename(tmp_path / "b")
        wait_for(lambda: states(server, "a").get("2", ("",))[0] == "AVAILABLE", what="a/2")
    finally:
        server.stop()

    assert while_b_is_away == {"1": ("AVAILABLE", "OK", "")}
    assert b_answer.json() == {"predictions": [[2.5]]}  # b keeps serving what it had
    assert "Could not find base path " + str(tmp_path / "b") + " for servable b" in server.log()


# -- unloading and cancelling -------------------------------------------------------------------


def test_in_flight_request_finishes_on_its_version_which_stays_unloading_until_then(
    tmp_path: Path,
) -> None:
    base = tmp_path / "slow"
    base.mkdir()
    install(base, 1, lambda path: save_slow(path, offset=1.0))
    staged = tmp_path / "staged-2"
    save_slow(staged, offset=2.0)
    server = ServerProcess(
        ["--model_name=slow", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0.2"],
        tmp_path / "server.log",
    )
    server.wait_ready()
    answers: list[requests.Response] = []
    request = threading.Thread(target=lambda: answers.append(predict(server, "slow", [8.0])))
    try:
        request.start()
        time.sleep(1.0)  # the request is computing on version 1
        staged.rename(base / "2")
        wait_for(lambda: states(server, "slow").get("2", ("",))[0] == "AVAILABLE", what="2")
        during = states(server, "slow")
        new_answer = predict(server, "slow", [0.0])
        request.join(60)
        wait_for(lambda: states(server, "slow").get("1", ("",))[0] == "END", what="1 ends")
    finally:
        request.join(60)
        server.stop()

    assert during["1"] == ("UNLOADING", "OK", "")
    assert new_answer.json() == {"predictions": [2.0]}
    assert answers[0].status_code == 200
    assert answers[0].json() == {"predictions": [1.0]}


def test_version_unaspired_while_loading_ends_cancelled(tmp_path: Path) -> None:
    base = tmp_path / "slow"
    save_slow(base / "1", offset=1.0)
    save_slow(base / "2", offset=2.0)
    write_warmup_records(base / "2", [slow_warmup_log(4.0)])  # loading takes 4 s
    config = tmp_path / "models.config"
    config.write_text(config_text(entry("slow", base, versions=(1,))))
    server = ServerProcess([f"--model_config_file={config}"], tmp_path / "server.log")
    try:
        server.wait_ready()
        reload(server, config_text(entry("slow", base, versions=(1, 2))))
        wait_for(lambda: states(server, "slow").get("2", ("",))[0] == "LOADING", what="loading")
        reload(server, config_text(entry("slow", base, versions=(1,))))
        wait_for(lambda: states(server, "slow").get("2", ("",))[0] == "END", what="2 ends")
        final = states(server, "slow")
        answer = predict(server, "slow/versions/2", [0.0])
    finally:
        server.stop()

    assert final == {
        "2": ("END", "CANCELLED", "Loading of servable cancelled"),
        "1": ("AVAILABLE", "OK", ""),
    }
    assert answer.status_code == 404
