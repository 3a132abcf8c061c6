"""Export a trained CNN-ViT as the SavedModel TF Serving serves (docs/CONTRACTS.md).

Three signatures share one graph: `serving_default` (image bytes in; probabilities, class and the
model identity out), `gradcam` (the same plus the heatmap and a PNG overlay) and
`gradcam_overlay` (as `gradcam` without the heatmap: REST has no output filter, and writing an
S x S float heatmap as JSON text costs more than computing it, so callers that only show the
overlay ask for this one). All decode and
preprocess the image bytes in-graph with `training_job.preprocessing`, the function training
uses, and read the identity from `assets/model_identity.txt` through a lookup table initialised
when the SavedModel loads, so publishing can restamp the identity without TensorFlow.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import keras
import tensorflow as tf

from model_export.artifact import MODEL_INFO_PATH
from model_export.gradcam import (
    GradcamExplainer,
    blend_overlay,
    encode_png_batch,
    upsample_heatmap,
)
from model_export.identity import IDENTITY_ASSET_PATH, IDENTITY_FILE_NAME, ModelIdentity
from model_export.warmup import default_warmup_images, write_warmup_records
from training_job.config import ModelConfig
from training_job.model import build_model
from training_job.preprocessing import preprocess_batch

__all__ = [
    "COMPUTE_DTYPES",
    "GRADCAM_OVERLAY_SIGNATURE",
    "GRADCAM_SIGNATURE",
    "SERVING_SIGNATURE",
    "SIGNATURES",
    "ComputeDtype",
    "ExportResult",
    "ServingFunctions",
    "bfloat16_twin",
    "export_saved_model",
]

SERVING_SIGNATURE = "serving_default"
GRADCAM_SIGNATURE = "gradcam"
# Grad-CAM without the `heatmap` output: the answer a caller that shows the overlay needs.
GRADCAM_OVERLAY_SIGNATURE = "gradcam_overlay"
SIGNATURES = (SERVING_SIGNATURE, GRADCAM_SIGNATURE, GRADCAM_OVERLAY_SIGNATURE)
MODEL_INFO_SCHEMA = 1

ComputeDtype = Literal["float32", "bfloat16"]
COMPUTE_DTYPES: tuple[ComputeDtype, ...] = ("float32", "bfloat16")
_DTYPE_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


@dataclass(frozen=True)
class ExportResult:
    """Where the SavedModel went and what it was exported with."""

    export_dir: Path
    model_name: str
    gradcam_layer: str
    compute_dtype: ComputeDtype
    model_info: Mapping[str, Any]


def bfloat16_twin(model: keras.Model, config: ModelConfig) -> keras.Model:
    """The same network computing in bfloat16 (variables stay float32), with `model`'s weights."""
    twin = build_model(config, dtype_policy=_DTYPE_POLICY["bfloat16"])
    twin.set_weights(model.get_weights())
    return twin


class ServingFunctions:
    """The bodies of the signatures, over one model, one Grad-CAM split and one identity."""

    def __init__(
        self,
        model: keras.Model,
        config: ModelConfig,
        gradcam_layer: str,
        identity_table: tf.lookup.StaticHashTable,
    ) -> None:
        self._model = model
        self._image_size = config.image_size
        self._class_names = tf.constant(list(config.classes), dtype=tf.string)
        self._explainer = GradcamExplainer(model, gradcam_layer)
        self._identity_table = identity_table

    @property
    def explainer(self) -> GradcamExplainer:
        return self._explainer

    def _identity(self, batch_size: tf.Tensor) -> dict[str, tf.Tensor]:
        def lookup(key: str) -> tf.Tensor:
            return self._identity_table.lookup(tf.constant(key))

        version = tf.strings.to_number(lookup("version"), out_type=tf.int64)
        return {
            "model_name": tf.fill([batch_size], lookup("name")),
            "model_version": tf.fill([batch_size], version),
            "model_run_id": tf.fill([batch_size], lookup("run_id")),
        }

    def _prediction(self, probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        batch_size = tf.shape(probabilities)[0]
        class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "class_index": class_index,
            "class_name": tf.gather(self._class_names, class_index),
            "class_names": tf.tile(self._class_names[tf.newaxis], [batch_size, 1]),
            **self._identity(batch_size),
        }

    def predict(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = preprocess_batch(image_bytes, self._image_size)
        probabilities = tf.cast(self._model(images, training=False), tf.float32)
        return self._prediction(probabilities)

    def explain(self, image_bytes: tf.Tensor, target_class: tf.Tensor) -> dict[str, tf.Tensor]:
        images = preprocess_batch(image_bytes, self._image_size)
        num_classes = tf.shape(self._class_names)[0]
        checks = [
            tf.debugging.assert_equal(
                tf.shape(target_class),
                tf.shape(image_bytes),
                message="target_class needs one entry per image",
            ),
            tf.debugging.assert_greater_equal(
                target_class, -1, message="target_class must be -1 (predicted) or a class index"
            ),
            tf.debugging.assert_less(
                target_class, num_classes, message="target_class is not a class index"
            ),
        ]
        with tf.control_dependencies(checks):
            result = self._explainer(images, tf.identity(target_class))
        heatmap = upsample_heatmap(result.heatmap, self._image_size)
        # The equalised film the model saw: the preprocessing's output scaled back to levels.
        film = tf.cast(tf.round(images[..., 0] * 255.0), tf.uint8)
        return {
            **self._prediction(result.probabilities),
            "heatmap": heatmap,
            "overlay_png_bytes": encode_png_batch(blend_overlay(film, heatmap)),
            "target_class_index": result.target_class,
        }

    def explain_overlay(
        self, image_bytes: tf.Tensor, target_class: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """`explain` without the heatmap (the overlay is still drawn from it, in-graph)."""
        outputs = self.explain(image_bytes, target_class)
        del outputs["heatmap"]
        return outputs


def _check_model(model: keras.Model, config: ModelConfig) -> None:
    expected_input = (None, config.image_size, config.image_size, 1)
    if tuple(model.input_shape) != expected_input:
        raise ValueError(f"model input {model.input_shape} does not match {expected_input}")
    if tuple(model.output_shape) != (None, config.num_classes):
        raise ValueError(f"model output {model.output_shape} does not match the class list")


def _identity_table(identity_file: Path) -> tf.lookup.StaticHashTable:
    # The initializer's file becomes a SavedModel asset: the loaded model reads the copy under
    # `assets/`, so rewriting that copy changes what the signatures return.
    initializer = tf.lookup.TextFileInitializer(
        str(identity_file),
        key_dtype=tf.string,
        key_index=0,
        value_dtype=tf.string,
        value_index=1,
        delimiter="\t",
    )
    return tf.lookup.StaticHashTable(initializer, default_value="")


def export_saved_model(
    model: keras.Model,
    config: ModelConfig,
    export_dir: str | Path,
    *,
    model_name: str,
    run_id: str = "",
    gradcam_layer: str | None = None,
    compute_dtype: ComputeDtype = "float32",
    training_metadata: Mapping[str, Any] | None = None,
    warmup_images: Sequence[bytes] | None = None,
) -> ExportResult:
    """Write `model` as a SavedModel with the `serving_default`, `gradcam` and
    `gradcam_overlay` signatures.

    The identity asset names `model_name`, version 0 (not yet published) and `run_id`.
    `compute_dtype="bfloat16"` exports a twin computing in bfloat16 with the same float32
    weights (faster on CPUs with AMX and on GPUs; slower elsewhere, so the deployment chooses).
    Warmup records for every signature use `warmup_images` (default: one synthetic X-ray).
    `export_dir` must not exist or be empty.
    """
    target = Path(export_dir)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty; export into a fresh folder")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, not {compute_dtype!r}")
    _check_model(model, config)
    layer = gradcam_layer or config.gradcam_layer
    identity = ModelIdentity(name=model_name, version=0, run_id=run_id)
    served = model if compute_dtype == "float32" else bfloat16_twin(model, config)

    with tempfile.TemporaryDirectory(prefix="identity-") as staging:
        identity_file = Path(staging) / IDENTITY_FILE_NAME
        identity_file.write_text(identity.to_text(), encoding="utf-8")
        table = _identity_table(identity_file)
        functions = ServingFunctions(served, config, layer, table)

        archive = keras.export.ExportArchive()
        archive.track(served)
        archive.track(table)
        image_bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
        archive.add_endpoint(SERVING_SIGNATURE, functions.predict, [image_bytes_spec])
        gradcam_inputs = [image_bytes_spec, tf.TensorSpec([None], tf.int32, name="target_class")]
        archive.add_endpoint(GRADCAM_SIGNATURE, functions.explain, gradcam_inputs)
        archive.add_endpoint(
            GRADCAM_OVERLAY_SIGNATURE, functions.explain_overlay, list(gradcam_inputs)
        )
        archive.write_out(str(target), verbose=False)

    if not (target / IDENTITY_ASSET_PATH).is_file():  # the asset is what publishing restamps
        raise RuntimeError(f"export wrote no {IDENTITY_ASSET_PATH}")
    model_info = {
        "schema": MODEL_INFO_SCHEMA,
        "model_name": model_name,
        "run_id": run_id,
        "classes": list(config.classes),
        "preset": config.name,
        "config": config.to_dict(),
        "input_size": config.image_size,
        "input": {"name": "image_bytes", "dtype": "string", "content": "PNG or JPEG bytes"},
        "gradcam_layer": layer,
        "gradcam_weighting": functions.explainer.weighting,
        "gradcam_smoothing": functions.explainer.smoothing,
        "compute_dtype": compute_dtype,
        "signatures": list(SIGNATURES),
        "exported_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "training": dict(training_metadata or {}),
    }
    info_path = target / MODEL_INFO_PATH
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(model_info, indent=2, sort_keys=True), encoding="utf-8")
    images = list(warmup_images) if warmup_images is not None else default_warmup_images()
    write_warmup_records(target, images)
    return ExportResult(
        export_dir=target,
        model_name=model_name,
        gradcam_layer=layer,
        compute_dtype=compute_dtype,
        model_info=model_info,
    )
