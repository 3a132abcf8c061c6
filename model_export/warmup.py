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

from model_export.artifact import (
    GRADCAM_OVERLAY_SIGNATURE,
    GRADCAM_SIGNATURE,
    IMAGE_BYTES_INPUT,
    SERVING_SIGNATURE,
    TARGET_CLASS_INPUT,
    WARMUP_PATH,
)

__all__ = [
    "MAX_WARMUP_RECORDS",
    "default_warmup_images",
    "read_warmup_records",
    "warmup_requests",
    "write_warmup_records",
]

# TF Serving refuses a warmup file with more records than this.
MAX_WARMUP_RECORDS = 1000
_PREDICTED_CLASS = -1


def default_warmup_images() -> list[bytes]:
    """One synthetic chest X-ray PNG (no data set needed to export a model)."""
    from training_job.synthetic import encode_png, generate_xray

    return [encode_png(generate_xray("covid", 0, height=256, width=256).image)]


def warmup_requests(
    image_bytes_list: Sequence[bytes], model_name: str = "warmup"
) -> list[predict_pb2.PredictRequest]:
    """One request per signature (`serving_default`, `gradcam`, `gradcam_overlay`), each over
    all the images."""
    images = [bytes(image) for image in image_bytes_list]
    if not images:
        raise ValueError("warmup needs at least one image")
    batch = tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)])
    targets = tf.make_tensor_proto([_PREDICTED_CLASS] * len(images), dtype=tf.int32)
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
