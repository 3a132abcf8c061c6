"""Every entry point is an installed console command, and no data folder in the working
directory can shadow the project's packages: the original system keeps its data in `storage/`
at its root, and `python -m` puts the working directory first on `sys.path`.

Each command (and each `python -m` module) is started with `--help` from a temporary working
directory holding `storage/`, `functions/`, `serving/` and `model_contract/` data folders and
the original system's `.env`; every one must start and print its usage."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.infra.helpers import REPO

SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
BIN = Path(sys.executable).parent
# The modules `python -m` runs, as the README and the Makefile use them.
MODULES = (
    "functions.gateway",
    "functions.users",
    "serving.sync",
    "serving.model_server",
    "training_job",
    "model_export",
    "model_contract",
    "storage",
    "migration",
    "monitoring",
    "synthetic",
    "devstack",
    "bench",
)


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An old deployment's root: data folders named like the project's packages, and .env."""
    root = tmp_path_factory.mktemp("old-deployment")
    for name in ("storage", "functions", "serving", "model_contract", "training_job"):
        (root / name / "input" / "db_auth").mkdir(parents=True)
        (root / name / "input" / "db_auth" / "authentication.csv").write_text("id,username\n")
    (root / ".env").write_text(
        "STORAGE_PATH=./storage/\nSECRET_KEY=xxxxxx\nPROD_MODEL_NAME=cnn_vit\n", encoding="utf-8"
    )
    return root


def _start(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONSAFEPATH"} and not key.startswith("STORAGE_")
    }
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=180, check=False
    )


def test_every_entry_point_is_a_console_command_with_a_real_target() -> None:
    assert set(SCRIPTS) >= {
        "xray-gateway",
        "xray-users",
        "xray-model-sync",
        "xray-model-server",
        "xray-train",
        "xray-registry",
        "xray-storage",
        "xray-migrate",
        "xray-bench",
        "xray-monitor",
    }
    for name, target in SCRIPTS.items():
        assert name.startswith("xray-"), name
        module, _, function = target.partition(":")
        assert function, f"{name}: {target} names no function"
        assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"


def test_every_console_command_starts_from_a_folder_of_look_alike_data(data_folder: Path) -> None:
    missing = [name for name in SCRIPTS if not (BIN / name).exists()]
    if missing:
        pytest.skip(f"not installed in this environment (pip install -e .): {missing}")

    with ThreadPoolExecutor(2) as pool:
        results = dict(
            zip(
                SCRIPTS,
                pool.map(lambda name: _start([str(BIN / name), "--help"], data_folder), SCRIPTS),
                strict=True,
            )
        )

    for name, result in results.items():
        assert result.returncode == 0, f"{name}:\n{result.stderr[-2000:]}"
        assert "usage" in result.stdout.lower(), f"{name} printed no usage:\n{result.stdout}"


def test_python_m_modules_start_from_a_folder_of_look_alike_data(data_folder: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = dict(
            zip(
                MODULES,
                pool.map(
                    lambda module: _start([sys.executable, "-m", module, "--help"], data_folder),
                    MODULES,
                ),
                strict=True,
            )
        )

    for module, result in results.items():
        assert result.returncode == 0, f"python -m {module}:\n{result.stderr[-2000:]}"
        assert "usage" in result.stdout.lower(), f"python -m {module}:\n{result.stdout}"


def test_a_look_alike_data_folder_would_shadow_without_the_project_root_on_the_path(
    data_folder: Path,
) -> None:
    # The failure this guards against, shown: with only the working directory and the standard
    # library on the path, `storage` resolves to the data folder (a namespace package).
    probe = "import storage, sys; print(type(storage.__path__).__name__)"
    result = _start([sys.executable, "-S", "-c", probe], data_folder)

    assert result.stdout.strip() == "_NamespacePath"


def test_image_commands_written_by_install_commands_start_from_look_alike_data(
    data_folder: Path, tmp_path: Path
) -> None:
    # The images do not pip-install the project: infra/docker/install_commands.py writes the
    # commands over the source on PYTHONPATH, as the Dockerfiles run it.
    folder = tmp_path / "bin"
    written = _start(
        [
            sys.executable,
            str(REPO / "infra" / "docker" / "install_commands.py"),
            str(REPO / "pyproject.toml"),
            str(folder),
            "xray-storage",
            "xray-registry",
            "xray-model-sync",
        ],
        data_folder,
    )
    assert written.returncode == 0, written.stderr
    refused = _start(
        [
            sys.executable,
            str(REPO / "infra" / "docker" / "install_commands.py"),
            str(REPO / "pyproject.toml"),
            str(folder),
            "xray-nothing",
        ],
        data_folder,
    )
    assert refused.returncode == 2

    for name in ("xray-storage", "xray-registry", "xray-model-sync"):
        environment = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run(
            [str(folder / name), "--help"],
            cwd=data_folder,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{name}:\n{result.stderr[-2000:]}"
        assert "usage" in result.stdout.lower()
