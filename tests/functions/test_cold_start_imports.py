"""Cold start: a function process imports only what its first prediction needs.

Heavy modules that only some routes use are imported on first use: PyYAML and Swagger UI (the
docs routes), passlib's CryptContext (password logins), PyJWT's `cryptography` backend (never:
access tokens are HS256 only), pydicom and highdicom (DICOM uploads and answers), boto3 (an S3
store), NumPy (the image statistics, on a side thread while the model answers; DICOM pixels;
heatmaps), TensorFlow (never, decision 1). Timings live in bench (`cold_start`), not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NOT_AT_START = (
    "yaml",
    "swagger_ui_bundle",
    "passlib.context",
    "cryptography",
    "pydicom",
    "highdicom",
    "boto3",
    "botocore",
    "tensorflow",
    "keras",
    "numpy",
)


def _loaded_after(script: str, tmp_path: Path) -> dict[str, object]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("METRICS_", "PROMETHEUS_", "OTEL_", "STORAGE_", "S3_"))
    }
    env.update(SECRET_KEY="k" * 48, PYTHONPATH=str(ROOT), STORAGE_URL=str(tmp_path / "store"))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(ROOT / "functions" / "main.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check(loaded: dict[str, object]) -> None:
    assert [name for name in NOT_AT_START if loaded[name]] == []
    assert loaded["has_crypto"] is False  # PyJWT: HMAC algorithms only


def test_a_function_imports_no_route_specific_module(tmp_path: Path) -> None:
    _check(
        _loaded_after(
            f"""
            import json, sys
            import functions_framework
            functions_framework.create_app("predict", sys.argv[1])
            import jwt.algorithms
            names = {NOT_AT_START!r}
            loaded = {{name: name in sys.modules for name in names}}
            loaded["has_crypto"] = jwt.algorithms.has_crypto
            print(json.dumps(loaded))
            """,
            tmp_path,
        )
    )


def test_the_gateway_imports_no_route_specific_module(tmp_path: Path) -> None:
    _check(
        _loaded_after(
            f"""
            import json, sys
            from functions.gateway import build_gateway
            from functions.runtime import Runtime, install_runtime
            from functions.settings import FunctionSettings
            from common.settings import load_environment
            install_runtime(Runtime(FunctionSettings.from_env(load_environment())))
            build_gateway()
            import jwt.algorithms
            names = {NOT_AT_START!r}
            loaded = {{name: name in sys.modules for name in names}}
            loaded["has_crypto"] = jwt.algorithms.has_crypto
            print(json.dumps(loaded))
            """,
            tmp_path,
        )
    )


def test_cryptography_still_loads_after_the_tokens_module(tmp_path: Path) -> None:
    """The gateway's --self-signed certificate needs `cryptography` after jwt was imported."""
    loaded = _loaded_after(
        """
        import json, sys
        import functions.tokens
        from cryptography import x509
        print(json.dumps({"ok": x509.Name is not None}))
        """,
        tmp_path,
    )
    assert loaded == {"ok": True}
