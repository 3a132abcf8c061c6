"""`models.config`: TF Serving's text-format ModelServerConfig, written and read without protobuf.

The sync writes one entry per model (a `specific` version policy listing the served versions,
and `stable`/`canary` version labels) and replaces the file atomically, so a server polling it
never reads half a config. The sync also reads its previous file back to know where the labels
pointed (labels may only move to versions the server has already loaded).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from serving.textproto import TextProtoError, parse_text_proto

__all__ = [
    "ModelConfigEntry",
    "read_model_config",
    "render_model_config",
    "write_file_atomically",
    "write_model_config",
]


@dataclass(frozen=True)
class ModelConfigEntry:
    """One `config { ... }` block with a `specific` version policy."""

    name: str
    base_path: str
    versions: tuple[int, ...]
    labels: Mapping[str, int] = field(default_factory=dict)
    platform: str = "tensorflow"


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_model_config(entries: Iterable[ModelConfigEntry]) -> str:
    """The text of a ModelServerConfig holding a model_config_list of `entries`."""
    lines = [
        "# Written by serving.sync from the model registry; replaced atomically on every change.",
        "model_config_list {",
    ]
    for entry in entries:
        lines += [
            "  config {",
            f"    name: {_quote(entry.name)}",
            f"    base_path: {_quote(entry.base_path)}",
            f"    model_platform: {_quote(entry.platform)}",
            "    model_version_policy {",
            "      specific {",
            *(f"        versions: {version}" for version in sorted(entry.versions)),
            "      }",
            "    }",
        ]
        for label, version in sorted(entry.labels.items()):
            lines += [
                "    version_labels {",
                f"      key: {_quote(label)}",
                f"      value: {version}",
                "    }",
            ]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def read_model_config(path: Path) -> list[ModelConfigEntry] | None:
    """The entries of an existing models.config with a `specific` policy; None if absent.

    Entries with another policy come back with no versions (the sync only reads its own file).
    Raises ValueError when the file exists but cannot be parsed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        root = parse_text_proto(text)
        config_list = root.message("model_config_list")
        entries: list[ModelConfigEntry] = []
        for config in [] if config_list is None else config_list.messages("config"):
            policy = config.message("model_version_policy")
            specific = None if policy is None else policy.message("specific")
            versions = [] if specific is None else specific.values("versions")
            labels: dict[str, int] = {}
            for label in config.messages("version_labels"):
                key, value = label.string("key"), label.integer("value")
                if key is not None and value is not None:
                    labels[key] = value
            entries.append(
                ModelConfigEntry(
                    name=config.string("name") or "",
                    base_path=config.string("base_path") or "",
                    versions=tuple(sorted(_version(value) for value in versions)),
                    labels=labels,
                    platform=config.string("model_platform") or "tensorflow",
                )
            )
    except (TextProtoError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot parse {path}: {exc}") from exc
    return entries


def _version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"version {value!r} is not an integer")
    return value


def write_file_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_model_config(path: Path, entries: Iterable[ModelConfigEntry]) -> str:
    """Render and atomically replace `path`; returns the text written."""
    text = render_model_config(entries)
    write_file_atomically(path, text)
    return text
