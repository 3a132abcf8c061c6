"""Write the project's console commands into an image's bin folder, without installing it.

    python install_commands.py pyproject.toml /opt/venv/bin xray-model-sync ...

Each named command of `[project.scripts]` becomes a small script, as pip writes them: the Python
that runs this file in its first line, then `sys.exit(main())` of its entry point. The image keeps
its source under PYTHONPATH and gets only the commands whose packages it holds (an image without
TensorFlow has no `xray-train`). A script puts its own folder, never the working directory, first
on sys.path, so a data folder named like a package cannot shadow the code.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

TEMPLATE = """#!{python}
# The `{name}` command of {project} (written by infra/docker/install_commands.py).
import sys

from {module} import {function}

if __name__ == "__main__":
    sys.exit({function}())
"""


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    pyproject, folder, names = Path(argv[0]), Path(argv[1]), argv[2:]
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    scripts = project.get("scripts", {})
    unknown = [name for name in names if name not in scripts]
    if unknown:
        print(f"not in [project.scripts]: {', '.join(unknown)}", file=sys.stderr)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        module, _, function = scripts[name].partition(":")
        path = folder / name
        path.write_text(
            TEMPLATE.format(
                python=sys.executable,
                name=name,
                project=project["name"],
                module=module,
                function=function,
            ),
            encoding="utf-8",
        )
        os.chmod(path, 0o755)  # noqa: S103 - a command: everyone may run it, only root writes it
        print(f"{path} -> {module}:{function}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
