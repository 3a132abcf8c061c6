"""Export a trained CNN-ViT as the SavedModel TF Serving serves (docs/CONTRACTS.md).

Three signatures share one graph: `serving_default` (image bytes in; probabilities, class and the
model identity out), `gradcam` (the same plus the heatmap and a PNG overlay) and
`gradcam_overlay` (as `gradcam` without the heatmap: REST has no output filter, and writing an
S x S float heatmap as JSON text costs more than computing it, so callers that only show the
overlay ask for this one). All decode and
preprocess the image bytes in-graph with `cnn_vit.preprocessing`, the function training
uses, and read the identity from `assets/model_identity.txt` through a lookup table initialised
when the SavedModel loads, so publishing can restamp the identity without TensorFlow.

Every signature serves calibrated probabilities: the training job fits a temperature T on the
validation split (`training_job.calibration`) and the export divides the logits by it,
`softmax(log(p) / T)` on the network's float32 softmax (exactly `softmax(logits / T)`: the
log-probabilities are the logits up to a per-image constant). T = 1 leaves the graph as it was.
No argmax changes, so neither does any class or Grad-CAM target.

The overlay is drawn at a display size (`overlay_size`, default max(S, 256)) rather than at the
model's input size S: the small preset's 64 px is a postage stamp on a screen. The film under
the heat is the same preprocessing run at the display size, so it is what the model saw, larger.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from cnn_vit.config import ModelConfig
from cnn_vit.gradcam import (
    GradcamExplainer,
    blend_overlay,
    encode_png_batch,
    upsample_heatmap,
)
from cnn_vit.model import build_model
from cnn_vit.ood import (
    OOD_REASONS,
    OodStatistics,
    encoder_statistics_model,
    image_check_reasons,
    statistics_from_outputs,
    statistics_layers,
)
from cnn_vit.preprocessing import (
    equalized_image_bytes,
    preprocess_batch,
    preprocess_image_bytes,
)
from model_contract.artifact import (
    CLASS_INDEX_OUTPUT,
    CLASS_NAME_OUTPUT,
    CLASS_NAMES_OUTPUT,
    COMPUTE_DTYPES,
    GRADCAM_OVERLAY_SIGNATURE,
    GRADCAM_SIGNATURE,
    HEATMAP_OUTPUT,
    IMAGE_BYTES_INPUT,
    MODEL_INFO_PATH,
    MODEL_NAME_OUTPUT,
    MODEL_RUN_ID_OUTPUT,
    MODEL_VERSION_OUTPUT,
    OOD_REASON_OUTPUT,
    OOD_SCORE_OUTPUT,
    OVERLAY_PNG_OUTPUT,
    PROBABILITIES_OUTPUT,
    REFER_THRESHOLD_OUTPUT,
    SERVING_SIGNATURE,
    SIGNATURES,
    TARGET_CLASS_INDEX_OUTPUT,
    TARGET_CLASS_INPUT,
)
from model_contract.identity import IDENTITY_ASSET_PATH, IDENTITY_FILE_NAME, ModelIdentity
from model_export.warmup import default_warmup_images, write_warmup_records

__all__ = [
    "MAX_OVERLAY_SIZE",
    "MIN_DEFAULT_OVERLAY_SIZE",
    "ComputeDtype",
    "ExportResult",
    "ServingFunctions",
    "bfloat16_twin",
    "default_overlay_size",
    "export_saved_model",
]

MODEL_INFO_SCHEMA = 1

# The overlay's default side is at least this many pixels: a size a viewer shows without zooming.
MIN_DEFAULT_OVERLAY_SIZE = 256
# Every Grad-CAM answer PNG-encodes its overlay; past this side the encoding alone would cost
# more than the model (and the PNG would outweigh most uploads).
MAX_OVERLAY_SIZE = 2048

ComputeDtype = Literal["float32", "bfloat16"]
# bfloat16 exports store their weights in bfloat16 (cnn_vit/model.py: same answers as
# mixed_bfloat16, half the weights, no per-call casts of float32 variables).
_DTYPE_POLICY = {"float32": "float32", "bfloat16": "bfloat16"}


@dataclass(frozen=True)
class ExportResult:
    """Where the SavedModel went and what it was exported with."""

    export_dir: Path
    model_name: str
    gradcam_layer: str
    compute_dtype: ComputeDtype
    overlay_size: int
    model_info: Mapping[str, Any]
    gradcam_xla: bool = False


def default_overlay_size(image_size: int) -> int:
    """The overlay side an export uses unless told: the input size, but at least 256 px."""
    return max(image_size, MIN_DEFAULT_OVERLAY_SIZE)


def _overlay_size(image_size: int, overlay_size: int | None) -> int:
    """`overlay_size`, or the default for `image_size` when None; ValueError when out of range."""
    if overlay_size is None:
        overlay_size = default_overlay_size(image_size)
    if isinstance(overlay_size, bool) or not isinstance(overlay_size, int):
        raise ValueError(f"overlay_size must be an integer, not {overlay_size!r}")
    if not 1 <= overlay_size <= MAX_OVERLAY_SIZE:
        raise ValueError(
            f"overlay_size must be between 1 and {MAX_OVERLAY_SIZE}, not {overlay_size}"
        )
    return overlay_size


def bfloat16_twin(model: keras.Model, config: ModelConfig) -> keras.Model:
    """The same network computing in bfloat16, with `model`'s weights rounded to bfloat16
    (the final softmax layer keeps float32), for serving only."""
    twin = build_model(config, dtype_policy=_DTYPE_POLICY["bfloat16"])
    twin.set_weights(model.get_weights())
    return twin


class ServingFunctions:
    """The bodies of the signatures, over one model, one Grad-CAM split and one identity.

    Overlays are drawn `overlay_size` pixels square (default `default_overlay_size`).
    """

    def __init__(
        self,
        model: keras.Model,
        config: ModelConfig,
        gradcam_layer: str,
        identity_table: tf.lookup.StaticHashTable,
        *,
        overlay_size: int | None = None,
        temperature: float = 1.0,
        refer_threshold: float = 0.0,
        ood: OodStatistics | None = None,
        gradcam_xla: bool = False,
    ) -> None:
        self._model = model
        self._ood = ood
        self._gradcam_xla = gradcam_xla
        # With OOD statistics: the probabilities and the encoder's maps from one forward pass
        # (predict); Grad-CAM's explainer returns them from its own pass.
        self._with_maps = encoder_statistics_model(model, True) if ood is not None else None
        self._ood_reasons = tf.constant([*OOD_REASONS, ""], dtype=tf.string)
        self._temperature = _temperature(temperature)
        self._refer_threshold = _refer_threshold(refer_threshold)
        self._image_size = config.image_size
        self._overlay_size = _overlay_size(config.image_size, overlay_size)
        self._num_classes = config.num_classes
        self._class_names = tf.constant(list(config.classes), dtype=tf.string)
        # With OOD statistics, the explainer's forward pass also yields the pooled maps they
        # are computed on: Grad-CAM pays no second encoder pass for the check.
        # Diseases explained against `normal` (cnn_vit/gradcam.py says why and what it measured).
        reference = config.classes.index("normal") if "normal" in config.classes else None
        self._explainer = GradcamExplainer(
            model,
            gradcam_layer,
            extra_outputs=statistics_layers(model) if ood is not None else (),
            reference_class=reference,
        )
        self._identity_table = identity_table
        # Grad-CAM past the layer, compiled with XLA one image at a time (see `_explained`).
        self._tail_one = tf.function(self._tail_of_one, jit_compile=True, autograph=False)
        # The Grad-CAM graph traced once and called by both Grad-CAM signatures: an export
        # traces each endpoint twice, and this one is most of the tracing time.
        self.explain_function = tf.function(
            self.explain,
            input_signature=[
                tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT),
                tf.TensorSpec([None], tf.int32, name=TARGET_CLASS_INPUT),
            ],
            autograph=False,
        )

    @property
    def explainer(self) -> GradcamExplainer:
        return self._explainer

    @property
    def overlay_size(self) -> int:
        return self._overlay_size

    def _identity(self, batch_size: tf.Tensor) -> dict[str, tf.Tensor]:
        def lookup(key: str) -> tf.Tensor:
            return self._identity_table.lookup(tf.constant(key))

        version = tf.strings.to_number(lookup("version"), out_type=tf.int64)
        return {
            MODEL_NAME_OUTPUT: tf.fill([batch_size], lookup("name")),
            MODEL_VERSION_OUTPUT: tf.fill([batch_size], version),
            MODEL_RUN_ID_OUTPUT: tf.fill([batch_size], lookup("run_id")),
        }

    def _calibrated(self, probabilities: tf.Tensor) -> tf.Tensor:
        if self._temperature == 1.0:
            return probabilities
        # A float32 softmax underflows to 0 far below the top class: log of the smallest
        # normal float instead of -inf (its calibrated share stays ~0 for any T in range).
        floor = tf.constant(np.finfo(np.float32).tiny, tf.float32)
        logits = tf.math.log(tf.maximum(probabilities, floor))
        return tf.nn.softmax(logits / tf.constant(self._temperature, tf.float32), axis=-1)

    def _ood_outputs(
        self, image_bytes: tf.Tensor, features: tf.Tensor | None
    ) -> dict[str, tf.Tensor]:
        """`ood_score` and `ood_reason` (cnn_vit/ood.py); nothing checked without statistics."""
        batch_size = tf.shape(image_bytes)[0]
        if self._ood is None or features is None:
            return {
                OOD_SCORE_OUTPUT: tf.zeros([batch_size], tf.float32),
                OOD_REASON_OUTPUT: tf.fill([batch_size], tf.constant("")),
            }
        score = self._ood.score(features)
        cheap = image_check_reasons(image_bytes)
        feature_index = OOD_REASONS.index("features")
        reason = tf.where(cheap >= 0, cheap, tf.where(score > 1.0, feature_index, -1))
        none_index = len(OOD_REASONS)
        return {
            OOD_SCORE_OUTPUT: score,
            OOD_REASON_OUTPUT: tf.gather(
                self._ood_reasons, tf.where(reason < 0, none_index, reason)
            ),
        }

    def _prediction(self, probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = self._calibrated(probabilities)
        batch_size = tf.shape(probabilities)[0]
        class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            PROBABILITIES_OUTPUT: probabilities,
            CLASS_INDEX_OUTPUT: class_index,
            CLASS_NAME_OUTPUT: tf.gather(self._class_names, class_index),
            CLASS_NAMES_OUTPUT: tf.tile(self._class_names[tf.newaxis], [batch_size, 1]),
            REFER_THRESHOLD_OUTPUT: tf.fill(
                [batch_size], tf.constant(self._refer_threshold, tf.float32)
            ),
            **self._identity(batch_size),
        }

    def predict(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = preprocess_batch(image_bytes, self._image_size)
        features = None
        if self._with_maps is not None:
            probabilities, *maps = self._with_maps(images, training=False)
            features = statistics_from_outputs(maps)
        else:
            probabilities = self._model(images, training=False)
        probabilities = tf.cast(probabilities, tf.float32)
        return {**self._prediction(probabilities), **self._ood_outputs(image_bytes, features)}

    def explain(self, image_bytes: tf.Tensor, target_class: tf.Tensor) -> dict[str, tf.Tensor]:
        images, display_films = self._inputs_and_display_films(image_bytes)
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
            target_class = tf.identity(target_class)
        if display_films is None:
            # Overlay at the input size: the film is the model's input scaled back to levels.
            films = tf.cast(tf.round(images[..., 0] * 255.0), tf.uint8)
        else:
            films = display_films
        feature_map, *front_extras = self._explainer.front(images)
        heatmap, overlay, probabilities, target, *tail_extras = self._explained(
            feature_map, target_class, films
        )
        extras = self._explainer.merge_extras(front_extras, tuple(tail_extras))
        features = statistics_from_outputs(list(extras)) if extras else None
        return {
            **self._prediction(probabilities),
            **self._ood_outputs(image_bytes, features),
            HEATMAP_OUTPUT: heatmap,
            OVERLAY_PNG_OUTPUT: encode_png_batch(overlay),
            TARGET_CLASS_INDEX_OUTPUT: target,
        }

    def _explained(
        self, feature_map: tf.Tensor, target_class: tf.Tensor, films: tf.Tensor
    ) -> list[tf.Tensor]:
        """`_tail_of_one`'s outputs for a batch: in one call, or with XLA one image at a time.

        Past the Grad-CAM layer the work is many small operations (the transformer's forward
        pass and its gradient, the map's smoothing, the overlay's blend), which TensorFlow runs
        one kernel at a time and XLA fuses. One image at a time, the compiled shape is always
        the same: XLA compiles once per process (seconds), in the warmup, instead of once per
        batch size a client happens to send. The convolutions before the layer stay outside,
        where oneDNN is faster than XLA.
        """
        if not self._gradcam_xla:
            return self._tail_of_one(feature_map, target_class, films)
        specs = [
            tf.TensorSpec([self._image_size, self._image_size], tf.float32),
            tf.TensorSpec([self._overlay_size, self._overlay_size, 3], tf.uint8),
            tf.TensorSpec([self._num_classes], tf.float32),
            tf.TensorSpec([], tf.int32),
            *[
                tf.TensorSpec(output.shape[1:], output.dtype)
                for output in self._explainer.tail_extra_outputs
            ],
        ]
        return tf.map_fn(
            lambda item: [
                output[0] for output in self._tail_one(item[0][None], item[1][None], item[2][None])
            ],
            (feature_map, target_class, films),
            fn_output_signature=specs,
        )

    def _tail_of_one(
        self, feature_map: tf.Tensor, target_class: tf.Tensor, films: tf.Tensor
    ) -> list[tf.Tensor]:
        """From the layer's feature map on: the heatmap at the input size, the overlay on
        `films` (uint8, at the overlay size), the probabilities, the explained class and the
        extra outputs the tail computes."""
        result = self._explainer.explain_features(feature_map, target_class)
        heatmap = upsample_heatmap(result.heatmap, self._image_size)
        if self._overlay_size == self._image_size:
            display_heat = heatmap
        else:
            # The layer's map upsampled once, straight to the display size.
            display_heat = upsample_heatmap(result.heatmap, self._overlay_size)
        return [
            heatmap,
            blend_overlay(films, display_heat),
            result.probabilities,
            result.target_class,
            *result.extras,
        ]

    def _inputs_and_display_films(
        self, image_bytes: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """The model's inputs [B, S, S, 1] and, when the overlay has another size D, the
        equalised films [B, D, D] (uint8) under it; None when D = S (the input is the film).

        Both come from the shared preprocessing (decode, grayscale, centre crop, resize,
        equalise), so the film is what the model saw at another size. They are made per image
        in one map_fn so that grappler's common-subexpression elimination merges the two
        decodes of the same bytes: measured on a 2048 px PNG, 61 ms of CPU instead of 99 ms
        with two map_fns (decoding dominates on full-size X-rays).
        """
        size, display = self._image_size, self._overlay_size
        if display == size:
            return preprocess_batch(image_bytes, size), None
        images, films = tf.map_fn(
            lambda item: (
                preprocess_image_bytes(item, size),
                equalized_image_bytes(item, display),
            ),
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec((size, size, 1), tf.float32),
                tf.TensorSpec((display, display), tf.uint8),
            ),
        )
        return images, films

    def explain_overlay(
        self, image_bytes: tf.Tensor, target_class: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """`explain` without the heatmap (the overlay is still drawn from it, in-graph)."""
        outputs = dict(self.explain_function(image_bytes, target_class))
        del outputs[HEATMAP_OUTPUT]
        return outputs


def _temperature(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"temperature must be a number, not {value!r}")
    if not (math.isfinite(value) and 0.05 <= value <= 20.0):
        raise ValueError(f"temperature must be between 0.05 and 20, not {value!r}")
    return float(value)


def _refer_threshold(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"refer_threshold must be a number, not {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"refer_threshold must be between 0 and 1, not {value!r}")
    return float(value)


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
    overlay_size: int | None = None,
    gradcam_xla: bool = True,
    training_metadata: Mapping[str, Any] | None = None,
    warmup_images: Sequence[bytes] | None = None,
    temperature: float = 1.0,
    calibration: Mapping[str, Any] | None = None,
    refer_threshold: float = 0.0,
    abstention: Mapping[str, Any] | None = None,
    ood: OodStatistics | None = None,
    ood_report: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Write `model` as a SavedModel with the `serving_default`, `gradcam` and
    `gradcam_overlay` signatures.

    The identity asset names `model_name`, version 0 (not yet published) and `run_id`.
    `compute_dtype="bfloat16"` exports a twin computing in bfloat16 with the same weights
    rounded to bfloat16 (faster on CPUs with AMX or AVX512-BF16 and on GPUs; slower elsewhere,
    so the deployment chooses).
    `overlay_size` is the Grad-CAM overlay's side in pixels (default max(S, 256)); the
    `heatmap` output stays S x S, at the model's input size.
    `gradcam_xla` compiles Grad-CAM past its layer with XLA (jit_compile): on the seed model
    the Grad-CAM signatures answer about 10 ms sooner (bench/REPORT.md), but TF Serving then
    needs `--xla_cpu_compilation_enabled=true`, without which it refuses to load the version
    (its warmup calls the Grad-CAM signatures). The model info says which was chosen.
    Warmup records for every signature use `warmup_images` (default: `default_warmup_images`,
    a small film drawn by the warmup module).
    `temperature` divides the logits of every signature (calibration; 1 = none); `calibration`
    (how it was fitted and what it changed) goes into the model info with it.
    `refer_threshold` is served as the `refer_threshold` output of every signature: the
    calibrated confidence below which an answer is to be referred (0: never); `abstention`
    (how it was chosen) goes into the model info with it. `ood` (fitted by the training job)
    turns on the out-of-distribution checks (`cnn_vit/ood.py`): without it `ood_score` is 0
    and `ood_reason` empty; `ood_report` (what was measured) goes into the model info.
    `export_dir` must not exist or be empty.
    """
    target = Path(export_dir)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty; export into a fresh folder")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, not {compute_dtype!r}")
    _check_model(model, config)
    temperature = _temperature(temperature)
    refer_threshold = _refer_threshold(refer_threshold)
    layer = gradcam_layer or config.gradcam_layer
    display_size = _overlay_size(config.image_size, overlay_size)
    identity = ModelIdentity(name=model_name, version=0, run_id=run_id)
    served = model if compute_dtype == "float32" else bfloat16_twin(model, config)

    with tempfile.TemporaryDirectory(prefix="identity-") as staging:
        identity_file = Path(staging) / IDENTITY_FILE_NAME
        identity_file.write_text(identity.to_text(), encoding="utf-8")
        table = _identity_table(identity_file)
        functions = ServingFunctions(
            served,
            config,
            layer,
            table,
            overlay_size=display_size,
            temperature=temperature,
            refer_threshold=refer_threshold,
            ood=ood,
            gradcam_xla=bool(gradcam_xla),
        )

        archive = keras.export.ExportArchive()
        archive.track(served)
        archive.track(table)
        image_bytes_spec = tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT)
        archive.add_endpoint(SERVING_SIGNATURE, functions.predict, [image_bytes_spec])
        target_class_spec = tf.TensorSpec([None], tf.int32, name=TARGET_CLASS_INPUT)
        gradcam_inputs = [image_bytes_spec, target_class_spec]
        archive.add_endpoint(GRADCAM_SIGNATURE, functions.explain_function)
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
        "input": {"name": IMAGE_BYTES_INPUT, "dtype": "string", "content": "PNG or JPEG bytes"},
        "gradcam_layer": layer,
        "gradcam_weighting": functions.explainer.weighting,
        "gradcam_smoothing": functions.explainer.smoothing,
        "gradcam_score": (
            "centred logit"
            if functions.explainer.reference_class is None
            else f"logit minus {config.classes[functions.explainer.reference_class]}'s "
            "(centred logit for that class)"
        ),
        "compute_dtype": compute_dtype,
        "overlay_size": display_size,
        "gradcam_xla": bool(gradcam_xla),
        "calibration": {
            "method": "temperature" if temperature != 1.0 else "none",
            "temperature": temperature,
            **dict(calibration or {}),
        },
        "abstention": {"refer_threshold": refer_threshold, **dict(abstention or {})},
        "ood": (
            {"enabled": True, **ood.to_json(), **dict(ood_report or {})}
            if ood is not None
            else {"enabled": False}
        ),
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
        overlay_size=display_size,
        model_info=model_info,
        gradcam_xla=bool(gradcam_xla),
    )
