"""`python -m model_export export KERAS_FILE EXPORT_DIR`: a trained `.keras` model as the SavedModel
TF Serving serves (signatures, identity asset, model info, warmup records).

Publishing, promotion and the rest of the registry are `python -m model_contract`. Exit status:
0 done, 1 the export failed (the message says why), 2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.settings import EnvReader, SettingsError, load_environment
from model_contract.settings import read_model_name

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xray-export", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export a .keras model as a served SavedModel")
    export.add_argument("keras_file", type=Path)
    export.add_argument("export_dir", type=Path)
    export.add_argument("--model", help="model name; default: MODEL_NAME (or PROD_MODEL_NAME)")
    export.add_argument("--preset", default=None, help="model preset (default: from the file)")
    export.add_argument("--run-id", default="")
    export.add_argument("--gradcam-layer", default=None)
    export.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32")
    export.add_argument(
        "--gradcam-xla",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile Grad-CAM past its layer with XLA (default; TF Serving then needs "
        "--xla_cpu_compilation_enabled=true)",
    )
    export.add_argument(
        "--overlay-size",
        type=int,
        default=None,
        help="Grad-CAM overlay side in pixels (default: the input size, at least 256)",
    )
    return parser


def _export(arguments: argparse.Namespace, model_name: str) -> int:
    # TensorFlow only once the arguments and settings are known to be good.
    from cnn_vit.config import get_preset
    from cnn_vit.model import load_model
    from model_export.export import export_saved_model

    model = load_model(arguments.keras_file)
    preset = arguments.preset or str(model.name).removeprefix("cnn_vit_")
    result = export_saved_model(
        model,
        get_preset(preset),
        arguments.export_dir,
        model_name=model_name,
        run_id=arguments.run_id,
        gradcam_layer=arguments.gradcam_layer,
        compute_dtype=arguments.compute_dtype,
        overlay_size=arguments.overlay_size,
        gradcam_xla=arguments.gradcam_xla,
    )
    print(
        f"exported {result.export_dir} (preset {preset}, Grad-CAM layer {result.gradcam_layer}, "
        f"compute {result.compute_dtype}, overlay {result.overlay_size} px, "
        f"Grad-CAM XLA {'on' if result.gradcam_xla else 'off'})"
    )
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; `environ` replaces the real environment (tests)."""
    arguments = _parser().parse_args(argv)
    env = EnvReader(load_environment() if environ is None else environ, "model_export")
    model_name = read_model_name(env)
    try:
        env.check()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return _export(arguments, arguments.model or model_name)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
