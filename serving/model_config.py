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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from serving.textproto import TextProtoError, _tokenize, parse_text_proto

__all__ = [
    "ModelConfigEntry",
    "config_file_lock",
    "foreign_config_blocks",
    "read_model_config",
    "render_model_config",
    "write_file_atomically",
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


def foreign_config_blocks(text: str, own_name: str) -> list[str]:
    """The raw `config { ... }` blocks of other models in a models.config text, verbatim.

    A shared models.config may hold models the sync does not manage (another sync's, or ones
    an operator wrote by hand, with any version policy): they are carried over untouched.
    Raises ValueError when the text is not a model_config_list.
    """
    try:
        tokens = _tokenize(text)
    except TextProtoError as exc:
        raise ValueError(str(exc)) from exc
    blocks: list[str] = []
    depth, index = 0, 0
    while index < len(tokens):
        kind, word, position = tokens[index]
        following = [next_token for _, next_token, _ in tokens[index + 1 : index + 3]]
        opens = following[:1] in (["{"], ["<"]) or following == [":", "{"]
        if depth == 1 and kind == "ident" and word == "config" and opens:
            start, level, cursor = position, 0, index + 1
            while cursor < len(tokens):
                if tokens[cursor][1] in ("{", "<"):
                    level += 1
                elif tokens[cursor][1] in ("}", ">"):
                    level -= 1
                    if level == 0:
                        break
                cursor += 1
            if cursor >= len(tokens):
                raise ValueError("unbalanced braces in models.config")
            raw = text[start : tokens[cursor][2] + 1]
            config = parse_text_proto(raw).message("config")
            if config is None or config.string("name") != own_name:
                blocks.append(raw)
            index = cursor + 1
            continue
        if word in ("{", "<"):
            depth += 1
        elif word in ("}", ">"):
            depth -= 1
        index += 1
    return blocks


def render_model_config(
    entries: Iterable[ModelConfigEntry], foreign_blocks: Iterable[str] = ()
) -> str:
    """The text of a ModelServerConfig holding a model_config_list of `entries` (after any
    other models' `config` blocks, kept verbatim)."""
    lines = [
        "# Written by serving.sync from the model registry; replaced atomically on every change.",
        "model_config_list {",
    ]
    lines += [f"  {block}" for block in foreign_blocks]
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


@contextlib.contextmanager
def config_file_lock(path: Path) -> Iterator[None]:
    """Exclusive between processes: two syncs sharing one models.config must not interleave
    their read-modify-write of it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
