"""Test helpers that publish model versions straight into a store, per docs/CONTRACTS.md.

They write what model_export writes (the version's files, then `manifest.json` last, then
`registry.json`) without importing it, so the sync is checked against the contract itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from storage import Store, keys

MODEL = "cnn_vit"


def fake_version_files(version: int) -> dict[str, bytes]:
    """A SavedModel-shaped folder whose bytes differ per version (not loadable by TF)."""
    return {
        "saved_model.pb": f"saved model {version}".encode() * 50,
        "variables/variables.index": f"index {version}".encode(),
        "variables/variables.data-00000-of-00001": bytes(range(256)) * (version + 3),
        "assets/model_identity.txt": f"name\t{MODEL}\nversion\t{version}\n".encode(),
    }


def saved_model_files(folder: Path) -> dict[str, bytes]:
    """Every file of a real SavedModel folder, keyed by its relative path."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def manifest_for(name: str, version: int, files: Mapping[str, bytes]) -> dict[str, object]:
    return {
        "name": name,
        "version": version,
        "files": [
            {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in sorted(files.items())
        ],
        "created_at": "2026-11-27T10:20:00Z",
    }


def publish_version(
    store: Store,
    version: int,
    files: Mapping[str, bytes] | None = None,
    *,
    name: str = MODEL,
    with_manifest: bool = True,
) -> dict[str, bytes]:
    """Upload a version's files and (unless told not to) its manifest, written last."""
    files = dict(files if files is not None else fake_version_files(version))
    version_store = store.child(keys.model_version_prefix(name, version))
    for path, data in files.items():
        version_store.put(path, data)
    if with_manifest:
        store.put_json(
            keys.model_version_manifest(name, version), manifest_for(name, version, files)
        )
    return files


def write_registry(
    store: Store,
    stable: int | None,
    canary: int | None = None,
    *,
    name: str = MODEL,
    previous_stable: list[int] | None = None,
) -> None:
    versions = {
        str(version): {"version": version, "status": "serving", "run_id": f"run-{version}"}
        for version in {stable, canary} - {None}
    }
    document = {
        "schema": 1,
        "name": name,
        "stable": stable,
        "canary": canary,
        "previous_stable": previous_stable or [],
        "versions": versions,
        "updated_at": "2026-11-27T10:20:01Z",
    }
    store.put(keys.model_registry(name), json.dumps(document).encode("utf-8"))
