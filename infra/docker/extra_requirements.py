"""Print the requirements of one optional-dependency extra of pyproject.toml, one a line.

The images install a deployable's dependencies from this list before copying any source, so
the dependency layer is rebuilt only when pyproject.toml changes. `--exclude NAME` drops a
distribution the base image already provides (the training image keeps its TensorFlow);
`--constraints FILE` then checks that the installed version of each excluded distribution meets
the extra's pin and writes `name==installed` lines, so pip cannot replace it while resolving
the rest. Standard library only (plus `packaging`, only for `--constraints`).

    python extra_requirements.py functions > requirements.txt
    python extra_requirements.py training --exclude tensorflow --constraints c.txt > r.txt
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

# PEP 508: the distribution name is the leading run of letters, digits, `.`, `_`, `-`.
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_requirements(
    pyproject: Path, extra: str, exclude: frozenset[str] = frozenset()
) -> list[str]:
    """The requirement strings of `extra`, minus the distributions named in `exclude`."""
    with pyproject.open("rb") as handle:
        extras = tomllib.load(handle)["project"]["optional-dependencies"]
    if extra not in extras:
        raise KeyError(f"pyproject.toml has no extra {extra!r} (it has: {', '.join(extras)})")
    excluded = {normalise(name) for name in exclude}
    kept = []
    for requirement in extras[extra]:
        match = _NAME.match(requirement)
        if match is None:
            raise ValueError(f"not a requirement: {requirement!r}")
        if normalise(match.group(1)) not in excluded:
            kept.append(requirement)
    return kept


def installed_constraints(pyproject: Path, extra: str, names: frozenset[str]) -> list[str]:
    """`name==version` of each installed distribution in `names`, checked against the extra's pin.

    Raises ValueError when one is missing or its version does not satisfy the pin.
    """
    from packaging.requirements import Requirement

    with pyproject.open("rb") as handle:
        requirements = tomllib.load(handle)["project"]["optional-dependencies"][extra]
    pins = {normalise(Requirement(text).name): Requirement(text) for text in requirements}
    lines = []
    for name in sorted(names):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise ValueError(f"{name} is not installed in this image") from None
        pin = pins.get(normalise(name))
        if pin is not None and not pin.specifier.contains(version, prereleases=True):
            raise ValueError(f"the image has {name} {version}, pyproject.toml wants {pin}")
        lines.append(f"{name}=={version}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extra")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME")
    parser.add_argument("--constraints", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    try:
        lines = extra_requirements(args.pyproject, args.extra, frozenset(args.exclude))
        if args.constraints is not None:
            pins = installed_constraints(args.pyproject, args.extra, frozenset(args.exclude))
            args.constraints.write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
    except (KeyError, ValueError) as error:
        print(f"extra_requirements: {error}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
