"""infra/docker/extra_requirements.py: the requirement list each image installs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.infra.helpers import DOCKER_DIR, REPO

PYPROJECT = REPO / "pyproject.toml"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "extra_requirements", DOCKER_DIR / "extra_requirements.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


extra_requirements = _load()


def _toy_pyproject(tmp_path: Path, requirements: list[str]) -> Path:
    path = tmp_path / "pyproject.toml"
    lines = ", ".join(f'"{requirement}"' for requirement in requirements)
    path.write_text(f"[project.optional-dependencies]\nimage = [{lines}]\n", encoding="utf-8")
    return path


def test_extra_requirements_functions_extra_lean() -> None:
    names = extra_requirements.extra_requirements(PYPROJECT, "functions")

    assert any(name.startswith("functions-framework") for name in names)
    assert not any(name.lower().startswith(("tensorflow", "keras")) for name in names)


def test_extra_requirements_exclude_drops_normalised_name(tmp_path: Path) -> None:
    pyproject = _toy_pyproject(tmp_path, ["Tensor_Flow==2.21.*", "boto3>=1.35"])

    kept = extra_requirements.extra_requirements(pyproject, "image", frozenset({"tensor-flow"}))

    assert kept == ["boto3>=1.35"]


def test_extra_requirements_unknown_extra_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = extra_requirements.main(["nope", "--pyproject", str(PYPROJECT)])

    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_extra_requirements_constraints_pin_installed_version(tmp_path: Path) -> None:
    pyproject = _toy_pyproject(tmp_path, ["pyyaml>=5", "boto3>=1.35"])
    constraints = tmp_path / "constraints.txt"

    code = extra_requirements.main(
        [
            "image",
            "--pyproject",
            str(pyproject),
            "--exclude",
            "pyyaml",
            "--constraints",
            str(constraints),
        ]
    )

    assert code == 0
    assert constraints.read_text(encoding="utf-8").startswith("pyyaml==")


def test_extra_requirements_constraints_version_outside_pin_exit_code_2(tmp_path: Path) -> None:
    pyproject = _toy_pyproject(tmp_path, ["pyyaml<1"])

    code = extra_requirements.main(
        [
            "image",
            "--pyproject",
            str(pyproject),
            "--exclude",
            "pyyaml",
            "--constraints",
            str(tmp_path / "c"),
        ]
    )

    assert code == 2


def test_extra_requirements_constraints_missing_distribution_exit_code_2(tmp_path: Path) -> None:
    pyproject = _toy_pyproject(tmp_path, ["not-installed-anywhere==1.0"])

    code = extra_requirements.main(
        [
            "image",
            "--pyproject",
            str(pyproject),
            "--exclude",
            "not-installed-anywhere",
            "--constraints",
            str(tmp_path / "c"),
        ]
    )

    assert code == 2
