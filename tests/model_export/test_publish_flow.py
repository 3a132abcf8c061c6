"""Issue 3's "done when": a briefly trained small model, exported, published, promoted, then
downloaded from storage and loaded like TF Serving would: it names its version and answers
correctly with a Grad-CAM PNG for a synthetic image of each class, on both storage backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from cnn_vit.config import CLASS_NAMES
from model_contract.artifact import read_model_info
from model_contract.registry import ModelRegistry
from storage import Store
from tests.trained_models import MODEL_NAME, RUN_ID, HeldOutFilm, Trained


def test_published_version_downloaded_from_storage_predicts_and_explains_each_class(
    store: Store,
    trained: Trained,
    float32_export: Path,
    test_films: list[HeldOutFilm],
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(store, MODEL_NAME)
    version = registry.publish(
        float32_export,
        run_id=RUN_ID,
        metrics={"macro_f1": trained.metrics["macro_f1"]},
        dataset_fingerprint="sha256:synthetic-seed-0",
        parent_version=None,
        preset="small",
    )
    registry.promote(version, "stable")
    stable = registry.load().stable
    assert stable == version

    local_copy = registry.download_version(stable, tmp_path / "models" / MODEL_NAME / str(stable))
    served = tf.saved_model.load(str(local_copy))

    films = [next(f for f in test_films if f.class_index == index) for index in range(3)]
    images = tf.constant([film.png for film in films])
    prediction = served.signatures["serving_default"](image_bytes=images)
    explanation = served.signatures["gradcam"](
        image_bytes=images, target_class=tf.constant([-1, -1, -1])
    )

    expected_names = [CLASS_NAMES[film.class_index].encode() for film in films]
    assert prediction["class_name"].numpy().tolist() == expected_names
    assert prediction["model_version"].numpy().tolist() == [version] * 3
    assert prediction["model_name"].numpy().tolist() == [MODEL_NAME.encode()] * 3
    assert prediction["model_run_id"].numpy().tolist() == [RUN_ID.encode()] * 3
    assert explanation["model_version"].numpy().tolist() == [version] * 3
    assert explanation["class_name"].numpy().tolist() == expected_names
    overlay_size = read_model_info(local_copy)["overlay_size"]
    assert overlay_size == 256  # the small preset's 64 px input, shown at a display size
    for png in explanation["overlay_png_bytes"].numpy():
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        overlay = tf.io.decode_png(png).numpy()
        assert overlay.shape == (overlay_size, overlay_size, 3)
        assert np.ptp(overlay) > 0
