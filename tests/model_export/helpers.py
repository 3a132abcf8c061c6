"""Test helpers: a fake exported SavedModel folder, a store that lets a test inject a competing
write at a fixed point of another writer's read-modify-write, and the held-out synthetic films."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from model_export.identity import IDENTITY_ASSET_PATH, ModelIdentity
from storage import ObjectInfo, PreconditionFailed, Store
from tests.stores import DelegatingStore
from training_job.config import ModelConfig


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


class InterceptingStore(DelegatingStore):
    """Delegates to `inner`, recording puts and copies (by destination); `before_put(key,
    options)` runs before each put or copy, so a test fixes exactly when a competitor writes
    (between another writer's read and write). Copies go to `inner.copy` (server-side on S3)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.before_put: Callable[[str, dict[str, Any]], None] | None = None
        self.puts: list[str] = []
        self.put_bytes_total = 0
        self.copies: list[str] = []
        self.failed_puts: list[str] = []

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        if self.before_put is not None:
            self.before_put(key, {"if_none_match": if_none_match, "if_match": if_match})
        try:
            info = super().put(
                key, data, content_type=content_type, if_none_match=if_none_match, if_match=if_match
            )
        except PreconditionFailed:
            self.failed_puts.append(key)
            raise
        self.puts.append(key)
        self.put_bytes_total += len(data)
        return info

    def copy(self, source_key: str, destination_key: str, **options: Any) -> ObjectInfo:
        if self.before_put is not None:
            self.before_put(destination_key, dict(options))
        try:
            info = self.inner.copy(source_key, destination_key, **options)
        except PreconditionFailed:
            self.failed_puts.append(destination_key)
            raise
        self.copies.append(destination_key)
        return info

    def download_file(self, key: str, path: str | Path) -> ObjectInfo:
        return self.inner.download_file(key, path)

    def describe(self) -> str:
        return f"intercepted {self.inner.describe()}"


MODEL_NAME = "cnn_vit"
RUN_ID = "20261127T101500Z-test01"
# The layer these tests export Grad-CAM on: it localised the synthetic patterns best on the small
# preset (see model_export.gradcam.GradcamExplainer), so it is the recommended small default.
GRADCAM_LAYER = "encoder_conv_1"
# Held-out films come from their own seed streams, apart from the training data's.
TEST_SET_SEED = 424242
TEST_IMAGES_PER_CLASS = 40


@dataclass(frozen=True)
class HeldOutFilm:
    png: bytes
    class_index: int
    # Where the class pattern lies, in the model's input frame (S x S, after centre crop).
    mask: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Trained:
    model: Any  # keras.Model
    config: ModelConfig
    metrics: dict[str, Any]


def project_mask(mask: npt.NDArray[np.bool_], size: int) -> npt.NDArray[np.bool_]:
    """A full-size pattern mask in the model's frame: the preprocessing's centre crop and resize."""
    height, width = mask.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = mask[top : top + side, left : left + side].astype(np.float32)
    resized = Image.fromarray(square, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized) > 0.5
