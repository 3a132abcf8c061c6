"""Fixtures for the model server tests: the small models, and one conformance server per session.

The conformance server runs as a real process (REST + gRPC on free loopback ports) with
batching and Prometheus monitoring on, serving three models from a models.config:
`half_plus_two` (version folder `00000123`, label `stable`, warmup records), `multi` and `echo`,
started with `--allow_version_labels_for_unavailable_models` as a labelled config at start needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.models import save_echo, save_half_plus_two, save_multi, write_warmup
from tests.serving.server_process import ServerProcess


@pytest.fixture(scope="session")
def model_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    half = save_half_plus_two(root / "half_plus_two" / "00000123")
    write_warmup(half)
    save_multi(root / "multi" / "1")
    save_echo(root / "echo" / "1")
    return root


@pytest.fixture(scope="session")
def conformance_server(
    model_zoo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("conformance")
    config = folder / "models.config"
    config.write_text(
        f"""
model_config_list {{
  config {{
    name: "half_plus_two" base_path: "{model_zoo / "half_plus_two"}" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 123 }} }}
    version_labels {{ key: "stable" value: 123 }}
  }}
  config {{ name: "multi" base_path: "{model_zoo / "multi"}" model_platform: "tensorflow" }}
  config {{ name: "echo" base_path: "{model_zoo / "echo"}" model_platform: "tensorflow" }}
}}
"""
    )
    batching = folder / "batching_parameters.txt"
    batching.write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
        "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n"
    )
    monitoring = folder / "monitoring.config"
    monitoring.write_text(
        'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'
    )
    server = ServerProcess(
        [
            f"--model_config_file={config}",
            "--enable_batching",
            f"--batching_parameters_file={batching}",
            f"--monitoring_config_file={monitoring}",
            "--file_system_poll_wait_seconds=1",
            # A label at start names a version not loaded yet: TF Serving needs this flag for
            # that (g3doc/serving_config.md), and so does the stand-in.
            "--allow_version_labels_for_unavailable_models",
        ],
        folder / "server.log",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
