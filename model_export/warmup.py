"""TF Serving warmup records: one PredictionLog per signature, replayed when a version loads.

TF Serving runs these requests against a version before it becomes AVAILABLE, so the first
real request does not pay for graph initialisation; a failing record fails the load, which
makes the file a small smoke test of the signatures too (reference/tfserving.md section 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from model_contract.artifact import (
    GRADCAM_OVERLAY_SIGNATURE,
    GRADCAM_SIGNATURE,
    IMAGE_BYTES_INPUT,
    PREDICTED_CLASS,
    SERVING_SIGNATURE,
    TARGET_CLASS_INPUT,
    WARMUP_PATH,
)

__all__ = [
    "MAX_WARMUP_RECORDS",
    "WARMUP_IMAGE_SIZE",
    "default_warmup_images",
    "read_warmup_records",
    "warmup_requests",
    "write_warmup_records",
]

# TF Serving refuses a warmup file with more records than this.
MAX_WARMUP_RECORDS = 1000
# The side of the default warmup film: the full-size preset's input, so the records exercise the
# same decode and resize path as a typical upload.
WARMUP_IMAGE_SIZE = 256


def default_warmup_images(size: int = WARMUP_IMAGE_SIZE) -> list[bytes]:
    """One small grey film as PNG: two dark lung fields in a brighter chest, a soft gradient.

    Warmup needs a decodable image of the kind the model takes, not a realistic one: what it
    exercises is the graph (decode, preprocessing, model, Grad-CAM), the same for any pixels.
    Drawn here, deterministically, so exporting a model needs no data set.
    """
    coordinates = tf.linspace(-1.0, 1.0, size)
    y, x = tf.meshgrid(coordinates, coordinates, indexing="ij")
    chest = 0.55 + 0.25 * (1.0 - y) / 2.0
    for centre in (-0.42, 0.42):
        lung = ((x - centre) / 0.3) ** 2 + (y / 0.62) ** 2
        chest -= 0.35 * tf.clip_by_value(1.0 - lung, 0.0, 1.0)
    levels = tf.cast(tf.round(tf.clip_by_value(chest, 0.0, 1.0) * 255.0), tf.uint8)
    return [bytes(tf.io.encode_png(levels[..., tf.newaxis]).numpy())]


def warmup_requests(
    image_bytes_list: Sequence[bytes], model_name: str = "warmup"
) -> list[predict_pb2.PredictRequest]:
    """One request per signature (`serving_default`, `gradcam`, `gradcam_overlay`), each over
    all the images."""
    images = [bytes(image) for image in image_bytes_list]
    if not images:
        raise ValueError("warmup needs at least one image")
    batch = tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)])
    targets = tf.make_tensor_proto([PREDICTED_CLASS] * len(images), dtype=tf.int32)
    requests = []
    gradcam_inputs = {IMAGE_BYTES_INPUT: batch, TARGET_CLASS_INPUT: targets}
    for signature, inputs in (
        (SERVING_SIGNATURE, {IMAGE_BYTES_INPUT: batch}),
        (GRADCAM_SIGNATURE, gradcam_inputs),
        (GRADCAM_OVERLAY_SIGNATURE, gradcam_inputs),
    ):
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
        )
        for name, tensor in inputs.items():
            request.inputs[name].CopyFrom(tensor)
        requests.append(request)
    return requests


def write_warmup_records(export_dir: str | Path, image_bytes_list: Sequence[bytes]) -> Path:
    """Write `assets.extra/tf_serving_warmup_requests` (TFRecord of PredictionLog)."""
    path = Path(export_dir) / WARMUP_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in warmup_requests(image_bytes_list):
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_records(path: str | Path) -> list[prediction_log_pb2.PredictionLog]:
    """Parse a warmup file; raises ValueError past TF Serving's record limit."""
    logs: list[prediction_log_pb2.PredictionLog] = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        if len(logs) == MAX_WARMUP_RECORDS:
            raise ValueError(f"{path} holds more than {MAX_WARMUP_RECORDS} warmup records")
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs
