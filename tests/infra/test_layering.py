"""The package layering (DESIGN.md "Top-level layout"): one-way dependencies, and a folder's name
telling whether it is lean or TensorFlow-heavy.

Every import in the code is read from source, function-local and `TYPE_CHECKING` ones included,
and each edge between top-level packages must be one the allow-list below names. Lean code
(settings and logs, storage, the model contract, the functions, the model sync) imports no
TensorFlow, Keras or TF Serving module, read from the code and proved by importing it in a
fresh interpreter.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.imports import FIRST_PARTY

REPO = Path(__file__).resolve().parents[2]

# Which top-level package may import which. A package not listed here fails the test: a new
# package takes its place in the layering on purpose, not by accident.
ALLOWED: dict[str, set[str]] = {
    # Standard library only: settings read from the environment, the JSON log format.
    "common": set(),
    # The storage hierarchy's keys and its two backends (boto3).
    "storage": {"common"},
    # Signature and tensor names, the identity, the registry and its documents, its CLI (lean).
    "model_contract": {"common", "storage"},
    # Lean image conversions shared by serving and training (DICOM to PNG): nothing of ours.
    "imaging": set(),
    # The CNN-ViT (Keras/TensorFlow): nothing of ours, not even storage.
    "cnn_vit": set(),
    # SavedModel export and warmup.
    "model_export": {"cnn_vit", "common", "model_contract"},
    # Data discovery, pipeline, loop, evaluation, decision, outputs, the job.
    "training_job": {"cnn_vit", "common", "imaging", "model_contract", "model_export", "storage"},
    # Synthetic films (writes data sets to a store); the demo trainer uses the real loop.
    "synthetic": {"cnn_vit", "storage", "training_job"},
    # The model sync (lean) and the local model server.
    "serving": {"common", "model_contract", "storage"},
    # The HTTP functions (lean; the contract's names only, see ALLOWED_MODULES).
    "functions": {"common", "imaging", "model_contract", "storage"},
    # The original system's storage tree brought in: records in the functions' format, the
    # weights exported and published (TensorFlow only for that step).
    "migration": {
        "cnn_vit",
        "common",
        "functions",
        "model_contract",
        "model_export",
        "storage",
        "training_job",
    },
    # Stable vs canary comparison and drift from the inference records (lean): the records'
    # format and the functions' image statistics (one measure for live and training images).
    "monitoring": {"common", "functions", "model_contract", "storage"},
}
# Edges limited to some modules of the imported package.
ALLOWED_MODULES: dict[tuple[str, str], set[str]] = {
    ("functions", "model_contract"): {
        "model_contract.artifact",
        "model_contract.identity",
        "model_contract.settings",
    },
    ("monitoring", "functions"): {"functions.images", "functions.records"},
}
# Tooling that may import anything of ours (and that nothing of ours imports).
TOOLING = {"devstack", "bench", "tests"}
# Lean code: no TensorFlow, Keras or TF Serving import anywhere in it.
LEAN_PACKAGES = (
    "common",
    "storage",
    "model_contract",
    "imaging",
    "functions",
    "serving",
    "monitoring",
)
# Inside a lean package, the TensorFlow-heavy subpackage that is not lean.
HEAVY_INSIDE_LEAN = ("serving/model_server/",)
HEAVY_MODULES = ("tensorflow", "keras", "tf_keras", "tensorflow_serving")


def _python_files(package: str) -> Iterator[Path]:
    for path in sorted((REPO / package).rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every absolute module an import statement of `path` names, with its line."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) top-level packages -> where (`file:line module`)."""
    found: dict[tuple[str, str], list[str]] = {}
    for package in FIRST_PARTY:
        for path in _python_files(package):
            for module, line in _imports(path):
                top = module.split(".")[0]
                if top != package and (top in FIRST_PARTY or top in TOOLING):
                    where = f"{path.relative_to(REPO)}:{line} {module}"
                    found.setdefault((package, top), []).append(where)
    return found


def test_layering_every_product_package_has_a_place() -> None:
    assert set(FIRST_PARTY) == set(ALLOWED), "add the new package to ALLOWED (and DESIGN.md)"


def test_layering_imports_follow_the_allow_list() -> None:
    bad = {
        edge: places
        for edge, places in _edges().items()
        if edge[1] not in ALLOWED.get(edge[0], set())
    }
    assert bad == {}, "imports outside the layering:\n" + "\n".join(
        f"  {a} -> {b}: {places[:3]}" for (a, b), places in bad.items()
    )


def test_layering_limited_edges_use_only_their_modules() -> None:
    edges = _edges()
    for (importer, imported), allowed in ALLOWED_MODULES.items():
        used = {place.split()[-1] for place in edges.get((importer, imported), [])}
        outside = {
            module
            for module in used
            if not any(module == name or module.startswith(name + ".") for name in allowed)
        }
        assert outside == set(), f"{importer} imports {sorted(outside)} of {imported}"


def test_layering_has_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for importer, imported in _edges():
        if importer not in TOOLING and imported not in TOOLING:
            graph.setdefault(importer, set()).add(imported)

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(
            step == goal or (step not in seen and reaches(step, goal, seen | {step}))
            for step in graph.get(start, ())
        )

    cycles = [(a, b) for a, targets in graph.items() for b in targets if reaches(b, a)]
    assert cycles == []


def test_layering_lean_code_never_names_tensorflow() -> None:
    offenders = []
    for package in LEAN_PACKAGES:
        for path in _python_files(package):
            relative = path.relative_to(REPO).as_posix()
            if relative.startswith(HEAVY_INSIDE_LEAN):
                continue
            offenders += [
                f"{relative}:{line} {module}"
                for module, line in _imports(path)
                if module.split(".")[0] in HEAVY_MODULES
            ]
    assert offenders == []


# Imports every module of the lean code in a fresh interpreter (the functions also build their
# apps and the gateway), then lists any heavy module that came along.
_PROBE = """
import importlib, os, pkgutil, sys
heavy_inside = {heavy_inside!r}
for package in {packages!r}:
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, package + "."):
        path = module.name.replace(".", "/") + "/"
        if module.name.endswith("__main__") or path.startswith(heavy_inside):
            continue
        importlib.import_module(module.name)
if "functions" in {packages!r}:
    import functions_framework
    for target in ("auth", "predict", "gradcam", "history", "legacy"):
        functions_framework.create_app(target, "functions/main.py")
    from functions.gateway import build_gateway
    build_gateway()
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {heavy_modules!r})
print("heavy modules:", heavy)
sys.exit(1 if heavy else 0)
"""


@pytest.mark.parametrize(
    "packages",
    [
        ("functions",),
        ("serving",),
        ("common", "storage", "model_contract"),
        ("monitoring",),
    ],
    ids=["functions", "model-sync", "contract", "monitoring"],
)
def test_layering_lean_code_imports_without_tensorflow(packages: tuple[str, ...]) -> None:
    probe = _PROBE.format(
        packages=packages, heavy_inside=HEAVY_INSIDE_LEAN, heavy_modules=HEAVY_MODULES
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        # Creating an app checks the settings; local development needs no SECRET_KEY.
        env={**os.environ, "ENVIRONMENT": "local"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heavy modules: []" in result.stdout


def test_test_modules_share_helpers_through_helper_modules_not_other_tests() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line} {module}"
        for path in _python_files("tests")
        for module, line in _imports(path)
        if module.startswith("tests.") and module.split(".")[-1].startswith("test_")
    ]
    assert offenders == [], "move shared helpers to a fixture or a helpers module"
