"""The Dockerfiles: pinned bases, a non-root user, no secrets, the right command, a build
context filter that lets in exactly what each image copies, and images that contain every
first-party package their entry points import and every distribution those imports need."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.infra.helpers import (
    COMPOSE_FILE,
    DEPLOYABLES,
    DOCKER_DIR,
    OVERLAYS,
    REPO,
    compose_containers,
    dockerfile_instructions,
    k8s_containers,
    load_compose,
    render,
)
from tests.infra.imports import import_closure, module_path

SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
# What each image runs (its entry modules; the modules of the console commands it installs are
# added from its Dockerfile) and its extra in pyproject.toml.
ENTRY_MODULES = {
    "functions": ["functions.main", "functions.gateway"],
    "sync": ["serving.sync"],
    "training": [
        "training_job.__main__",
        "model_export.__main__",
        "model_contract.__main__",
        "synthetic.__main__",
        "migration.__main__",
        "monitoring.__main__",
    ],
}
EXTRAS = {"functions": "functions", "sync": "sync", "training": "training"}
COMMANDS = {
    "functions": ["functions-framework", "--source", "functions/main.py"],
    "sync": ["xray-model-sync", "--watch"],
    "training": ["xray-train"],
}
# Imports inside functions that an image deliberately lacks the distribution for.
KNOWN_LAZY_GAPS = {
    # `python -m functions.gateway --self-signed` makes a local certificate with cryptography,
    # which the `functions` extra does not install: the image serves TLS from --tls-cert files
    # (or, as on Knative, not at all: the platform terminates HTTPS).
    "functions": {"cryptography"},
    "sync": set(),
    "training": set(),
}
# Paths that must never reach a build context.
NEVER_IN_CONTEXT = [
    ".env",
    "infra/compose/.env",
    "store/input/x.png",
    ".venv/bin/python",
    ".git/config",
    "tests/conftest.py",
    ".secret_key",
]
EXTRAS_TOML = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
    "optional-dependencies"
]


def _dockerfile(deployable: str) -> Path:
    return DOCKER_DIR / f"{deployable}.Dockerfile"


def _final(deployable: str) -> list:
    instructions = dockerfile_instructions(_dockerfile(deployable))
    last = max(instruction.stage for instruction in instructions)
    return [instruction for instruction in instructions if instruction.stage == last]


def _base_images(deployable: str) -> list[str]:
    instructions = dockerfile_instructions(_dockerfile(deployable))
    args = dict(
        instruction.arguments.split("=", 1)
        for instruction in instructions
        if instruction.keyword == "ARG" and instruction.stage == -1 and "=" in instruction.arguments
    )
    images = []
    for instruction in instructions:
        if instruction.keyword != "FROM":
            continue
        image = instruction.arguments.split()[0]
        images.append(re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], image))
    return images


def _copied_packages(deployable: str) -> set[str]:
    packages = set()
    for instruction in _final(deployable):
        if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
            source = instruction.arguments.split()[0].rstrip("/")
            if (REPO / source / "__init__.py").is_file():
                packages.add(source)
    return packages


# --- .dockerignore -------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out + r"\Z")


def in_build_context(ignore_file: Path, path: str) -> bool:
    """Whether `path` reaches the builder under this .dockerignore: the last pattern that
    matches the path or one of its parent folders decides (Docker's rule)."""
    included = True
    parts = path.split("/")
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    for line in ignore_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _pattern_regex(line[1:] if negate else line)
        if any(regex.match(candidate) for candidate in candidates):
            included = negate
    return included


def test_in_build_context_allow_list_semantics(tmp_path: Path) -> None:
    ignore = tmp_path / "x.dockerignore"
    ignore.write_text("*\n!storage/\n**/__pycache__\n", encoding="utf-8")

    assert in_build_context(ignore, "storage/keys.py")
    assert not in_build_context(ignore, "storage/__pycache__/keys.pyc")
    assert not in_build_context(ignore, "functions/main.py")


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_dockerfile_copied_sources_reach_build_context(deployable: str) -> None:
    ignore = DOCKER_DIR / f"{deployable}.Dockerfile.dockerignore"
    copies = [
        instruction.arguments.split()[0]
        for instruction in dockerfile_instructions(_dockerfile(deployable))
        if instruction.keyword == "COPY" and "--from" not in instruction.arguments
    ]

    assert copies
    for source in copies:
        assert (REPO / source).exists(), f"COPY {source}: no such path"
        probe = source.rstrip("/") + ("/__init__.py" if source.endswith("/") else "")
        assert in_build_context(ignore, probe), f"{ignore.name} keeps out {source}"


@pytest.mark.parametrize("deployable", DEPLOYABLES)
@pytest.mark.parametrize("path", NEVER_IN_CONTEXT)
def test_dockerignore_secrets_and_state_kept_out(deployable: str, path: str) -> None:
    assert not in_build_context(DOCKER_DIR / f"{deployable}.Dockerfile.dockerignore", path)


# --- instructions --------------------------------------------------------------------------


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_dockerfile_base_images_pinned(deployable: str) -> None:
    images = _base_images(deployable)

    assert images
    for image in images:
        _name, _, tag = image.partition(":")
        assert tag not in {"", "latest"}, image
        assert re.search(r"\d+\.\d+", tag), image


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_dockerfile_final_stage_runs_as_non_root(deployable: str) -> None:
    users = [
        instruction.arguments for instruction in _final(deployable) if instruction.keyword == "USER"
    ]

    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "a numeric uid, so runAsNonRoot can check it"
    assert int(user) != 0


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_dockerfile_compiles_the_sources_it_copies_before_dropping_root(deployable: str) -> None:
    """The containers run with PYTHONDONTWRITEBYTECODE on a read-only root: bytecode not
    compiled into the image is compiled again on every start (a function's cold start)."""
    final = _final(deployable)
    copied = {
        instruction.arguments.split()[0].rstrip("/")
        for instruction in final
        if instruction.keyword == "COPY"
        and not instruction.arguments.startswith("--")
        and instruction.arguments.split()[0].endswith("/")
    }
    keywords = [instruction.keyword for instruction in final]
    compiles = [
        (index, instruction.arguments)
        for index, instruction in enumerate(final)
        if instruction.keyword == "RUN" and "-m compileall" in instruction.arguments
    ]

    assert len(compiles) == 1
    index, arguments = compiles[0]
    assert copied
    assert copied <= set(arguments.replace("\\", " ").split())
    last_copy = max(i for i, keyword in enumerate(keywords) if keyword == "COPY")
    assert last_copy < index < keywords.index("USER")


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_dockerfile_bakes_no_secret(deployable: str) -> None:
    for instruction in dockerfile_instructions(_dockerfile(deployable)):
        if instruction.keyword in {"ENV", "ARG"}:
            assert not re.search(
                r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", instruction.arguments, re.I
            ), instruction.arguments


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_dockerfile_default_command_runs_deployable(deployable: str) -> None:
    (command,) = [instruction for instruction in _final(deployable) if instruction.keyword == "CMD"]

    assert json.loads(command.arguments) == COMMANDS[deployable]


def test_dockerfile_functions_healthcheck_and_port_match_manifests() -> None:
    final = _final("functions")
    exposed = [instruction.arguments for instruction in final if instruction.keyword == "EXPOSE"]
    compose = load_compose(COMPOSE_FILE)["services"]
    compose_ports = {
        service["ports"][0].rsplit(":", 1)[1]
        for name, service in compose.items()
        if name in {"auth", "predict", "gradcam", "history", "legacy", "gateway"}
    }
    knative = (REPO / "infra/k8s/base/functions.yaml").read_text(encoding="utf-8")

    assert any(instruction.keyword == "HEALTHCHECK" for instruction in final)
    assert exposed == ["8080"]
    assert compose_ports == {"8080"}
    assert set(re.findall(r"containerPort: (\d+)", knative)) == {"8080"}


def test_dockerfile_training_healthcheck_none_for_batch_job() -> None:
    checks = [
        instruction.arguments
        for instruction in _final("training")
        if instruction.keyword == "HEALTHCHECK"
    ]

    assert checks == ["NONE"]


def test_dockerfile_training_base_matches_tensorflow_pin() -> None:
    (image,) = _base_images("training")
    (pin,) = [
        Requirement(text) for text in EXTRAS_TOML["training"] if text.startswith("tensorflow=")
    ]
    version = image.partition(":")[2].split("-")[0]

    assert image.startswith("tensorflow/tensorflow:")
    assert image.endswith("-gpu")
    assert pin.specifier.contains(version), f"{image} does not satisfy {pin}"


# --- what the images contain ---------------------------------------------------------------


def _installed_commands(deployable: str) -> list[str]:
    """The console commands the image writes with infra/docker/install_commands.py."""
    names: list[str] = []
    for instruction in dockerfile_instructions(_dockerfile(deployable)):
        if instruction.keyword != "RUN" or "install_commands.py" not in instruction.arguments:
            continue
        for step in instruction.arguments.split("&&"):
            words = step.split()
            if "install_commands.py" in " ".join(words):
                start = next(
                    i for i, word in enumerate(words) if word.endswith("install_commands.py")
                )
                names += words[start + 3 :]  # after the pyproject and the bin folder
    return names


def _entry_modules(deployable: str) -> list[str]:
    """The modules the image runs: its entry modules and those of the commands it installs."""
    commands = [SCRIPTS[name].partition(":")[0] for name in _installed_commands(deployable)]
    modules = [*ENTRY_MODULES[deployable], *commands]
    missing = [module for module in modules if not module_path(REPO, module)]
    assert not missing, f"entry modules without a source file: {missing}"
    return modules


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_image_installs_every_console_command_it_is_run_with(deployable: str) -> None:
    installed = set(_installed_commands(deployable))
    assert installed <= set(SCRIPTS), installed - set(SCRIPTS)
    (command,) = [instruction for instruction in _final(deployable) if instruction.keyword == "CMD"]
    wanted = {json.loads(command.arguments)[0]}
    compose = load_compose(COMPOSE_FILE)
    for container in compose_containers(compose):
        if container.deployable == deployable and container.command:
            wanted.add(container.command[0])
    for overlay in OVERLAYS:
        for container in k8s_containers(overlay, render(overlay)):
            if container.deployable == deployable and container.command:
                wanted.add(container.command[0])
    ours = {name for name in wanted if name.startswith("xray-")}

    assert ours <= installed, f"{deployable}: runs {sorted(ours - installed)} it does not install"
    assert not {name for name in wanted if name in {"python", "python3"}}, (
        f"{deployable}: a command runs `python -m`; use the console command"
    )


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_image_contains_every_first_party_package_it_imports(deployable: str) -> None:
    needed = import_closure(REPO, _entry_modules(deployable), lazy=True).packages

    assert needed <= _copied_packages(deployable)


@pytest.mark.parametrize("deployable", ["functions", "sync"])
def test_lean_image_copies_no_package_it_never_imports(deployable: str) -> None:
    needed = import_closure(REPO, _entry_modules(deployable), lazy=True).packages

    assert _copied_packages(deployable) <= needed


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_closure(requirements: list[str]) -> set[str]:
    """The distributions an extra installs, following installed metadata transitively."""
    seen: set[str] = set()
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = _normalise(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(requirement.name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            dependency = Requirement(text)
            extras = ("", *requirement.extras)
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in extras
            ):
                pending.append(dependency)
    return seen


@pytest.mark.parametrize("deployable", DEPLOYABLES)
@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_image_extra_installs_every_distribution_imported(deployable: str, lazy: bool) -> None:
    imported = import_closure(REPO, _entry_modules(deployable), lazy=lazy).third_party
    installed = _installed_closure(EXTRAS_TOML[EXTRAS[deployable]])
    providers = metadata.packages_distributions()
    missing = set()
    for name in imported:
        distributions = {_normalise(dist) for dist in providers.get(name, [name])}
        if not distributions & installed:
            missing.add(name)
    if lazy:
        missing -= KNOWN_LAZY_GAPS[deployable]

    assert missing == set(), f"the {EXTRAS[deployable]} extra lacks what these import"


@pytest.mark.parametrize("deployable", ["functions", "sync"])
def test_lean_image_never_imports_tensorflow(deployable: str) -> None:
    imported = import_closure(REPO, _entry_modules(deployable), lazy=True).third_party

    assert not imported & {"tensorflow", "keras", "tensorflow_serving"}
