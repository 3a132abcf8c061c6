"""Prometheus text-format files for node_exporter's textfile collector (standard library only).

Jobs that end (training, the drift monitor) cannot be scraped; they leave their last run's
metrics in a file the collector reads. The file is written beside its target and renamed, so
the collector never reads half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["label_value", "write_textfile"]


def label_value(value: object) -> str:
    """A label value escaped as the text format requires (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_textfile(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a temporary file beside it, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
