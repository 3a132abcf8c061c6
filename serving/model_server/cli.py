"""The model server's console command, `xray-model-server` (as `python -m serving.model_server`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow reads its log level when first imported: keep its C++ chatter out of the logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from serving.model_server.server import main as serve

    return int(serve(list(argv) if argv is not None else None) or 0)
