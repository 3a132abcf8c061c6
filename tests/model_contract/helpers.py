"""Test helpers of the registry: a fake exported SavedModel folder (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

from model_contract.identity import IDENTITY_ASSET_PATH, ModelIdentity


def write_fake_saved_model(folder: Path, *, payload: bytes = b"weights") -> Path:
    """The files of an exported SavedModel (contents are not TensorFlow's: no TF needed)."""
    files = {
        "saved_model.pb": b"\x08\x01graph",
        "fingerprint.pb": b"fingerprint",
        "variables/variables.index": b"index",
        "variables/variables.data-00000-of-00001": payload,
        IDENTITY_ASSET_PATH: ModelIdentity(name="exported").to_text().encode(),
        "assets.extra/model_info.json": b'{"classes": ["normal", "covid", "no-covid"]}',
    }
    for relative, data in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder
