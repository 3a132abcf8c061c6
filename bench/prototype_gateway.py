"""The gateway with the Grad-CAM change proposed in NOTES-for-functions.md, for measurement only.

    python -m bench.prototype_gateway [gateway arguments]

Starts the real gateway (`functions.gateway.main`) after replacing one method in this process:
`ServingClient.gradcam` asks the model server for the `gradcam_overlay` signature (no heatmap
in the answer) instead of `gradcam`. The heatmap the function then no longer receives is stood
in by zeros of the overlay's size (the function only reads its size, for the record, unless a
JSON answer with the heatmap is asked for; the benchmark asks for the PNG). Nothing in
`functions/` changes: this measures the proposal before its owner adopts it.
"""

from __future__ import annotations

import base64
import struct
import sys
from typing import Any

import numpy as np

from functions import serving_client
from functions.serving_client import GradcamResult, ServingClient


def _png_size(png: bytes) -> int:
    # IHDR starts at byte 16: width, height (big-endian); the overlay is square.
    width, _height = struct.unpack(">II", png[16:24])
    return int(width)


def _gradcam_overlay(
    self: ServingClient, image: bytes, target_class_index: int | None = None
) -> GradcamResult:
    payload = {
        "signature_name": "gradcam_overlay",
        "instances": [
            {
                "image_bytes": {"b64": base64.b64encode(image).decode("ascii")},
                "target_class": -1 if target_class_index is None else int(target_class_index),
            }
        ],
    }
    (row,) = self._rows(self._call(payload), 1)
    answer: dict[str, Any] = dict(row)
    overlay = answer.get("overlay_png_bytes", {})
    png = base64.b64decode(overlay.get("b64", "")) if isinstance(overlay, dict) else b""
    size = _png_size(png) if len(png) >= 24 else 1
    answer["heatmap"] = np.zeros((size, size), np.float32)
    return serving_client._gradcam(answer, target_class_index)


def main() -> int:
    ServingClient.gradcam = _gradcam_overlay  # type: ignore[method-assign]
    from functions.gateway import main as gateway_main

    return gateway_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
