"""DESIGN decision 1: importing every function (and the gateway) never imports TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.functions.conftest import MAIN

_PROBE = """
import importlib, pkgutil, sys
import functions
for module in pkgutil.walk_packages(functions.__path__, "functions."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
import functions_framework
for target in ("auth", "predict", "gradcam", "history"):
    functions_framework.create_app(target, {main!r})
from functions.gateway import build_gateway
build_gateway()
heavy = sorted(name for name in sys.modules
               if name.split(".")[0] in ("tensorflow", "keras", "tensorflow_serving"))
print("heavy modules:", heavy)
sys.exit(1 if heavy else 0)
"""


def test_functions_import_without_tensorflow() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(main=MAIN)],
        cwd=Path(MAIN).parents[1],
        # Creating an app checks the settings; local development needs no SECRET_KEY.
        env={**os.environ, "ENVIRONMENT": "local"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heavy modules: []" in result.stdout
