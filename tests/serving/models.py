"""Small SavedModels for the model server tests, built with tf.Module + tf.saved_model.save.

- `save_half_plus_two`: TF Serving's test model: serving_default x -> y = 0.5x + offset, plus
  `classify_x_to_y` and `regress_x_to_y` over serialized tf.Examples (method names patched in,
  since tf.saved_model.save writes every signature as predict).
- `save_multi`: two inputs (float `a`, int32 `b`), outputs of four dtypes, one `*_bytes`.
- `save_echo`: a string input; its bytes back under `echo_bytes` and as plain text.
- `save_slow`: answers `offset` after computing for `seconds` (a busy wait on tf.timestamp), so
  a request, or a warmup record, can be held in flight for as long as a test needs.
- `write_warmup` / `write_broken_warmup`: the assets.extra warmup file, valid or not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def _patch_method_names(path: Path, methods: dict[str, str]) -> None:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    for meta_graph in proto.meta_graphs:
        for key, method in methods.items():
            meta_graph.signature_def[key].method_name = method
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())


class _HalfPlusTwo(tf.Module):
    def __init__(self, offset: float) -> None:
        super().__init__()
        self.slope = tf.Variable(0.5)
        self.offset = tf.Variable(offset)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.slope * x + self.offset}

    def _parse(self, serialized: tf.Tensor) -> tf.Tensor:
        features = tf.io.parse_example(
            serialized, {"x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
        )
        return self.slope * features["x"] + self.offset

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="tf_example")])
    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self._parse(inputs)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="tf_example")])
    def regress(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self._parse(inputs)}


def save_half_plus_two(path: Path, offset: float = 2.0) -> Path:
    """y = 0.5 * x + offset; offset 2.0 is TF Serving's half_plus_two."""
    module = _HalfPlusTwo(offset)
    signatures = {
        "serving_default": module.predict,
        "classify_x_to_y": module.classify.get_concrete_function(),
        "regress_x_to_y": module.regress.get_concrete_function(),
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    _patch_method_names(path, {"classify_x_to_y": CLASSIFY, "regress_x_to_y": REGRESS})
    return path


class _Multi(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="a"),
            tf.TensorSpec([None], tf.int32, name="b"),
        ]
    )
    def predict(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
        total = a + tf.cast(b, tf.float32)
        text = tf.strings.as_string(b)
        return {
            "sum": total,
            "product": tf.cast(a, tf.float64) * tf.cast(b, tf.float64),
            "label": tf.strings.join(["n", text]),
            "raw_bytes": tf.strings.join([text, tf.constant(b"\x00\xff")]),
            "count": tf.cast(b, tf.int64) * 2,
            "positive": total > 0,
        }


def save_multi(path: Path) -> Path:
    module = _Multi()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.predict})
    return path


class _Echo(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def predict(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "echo_bytes": text,
            "upper": tf.strings.upper(text),
            "length": tf.strings.length(text),
        }


def save_echo(path: Path) -> Path:
    module = _Echo()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.predict})
    return path


class _Slow(tf.Module):
    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = tf.Variable(offset, dtype=tf.float64)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float64, name="seconds")])
    def predict(self, seconds: tf.Tensor) -> dict[str, tf.Tensor]:
        start = tf.timestamp()
        wanted = tf.reduce_max(seconds)
        (elapsed,) = tf.while_loop(
            lambda elapsed: elapsed < wanted,
            lambda elapsed: [tf.timestamp() - start],
            [tf.constant(0.0, tf.float64)],
        )
        return {"y": seconds * 0.0 + self.offset + elapsed * 0.0}


def save_slow(path: Path, offset: float = 1.0) -> Path:
    module = _Slow(offset)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.predict})
    return path


def write_warmup_records(path: Path, logs: list[prediction_log_pb2.PredictionLog]) -> Path:
    """The warmup file of a version, holding exactly `logs`."""
    target = path / "assets.extra" / "tf_serving_warmup_requests"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return target


def slow_warmup_log(seconds: float) -> prediction_log_pb2.PredictionLog:
    """A warmup record that keeps a `save_slow` version loading for `seconds`."""
    request = predict_pb2.PredictRequest()
    request.inputs["seconds"].CopyFrom(tf.make_tensor_proto(np.array([seconds], np.float64)))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def write_warmup(path: Path, count: int = 2) -> Path:
    """A valid warmup file for a half_plus_two version: `count` predict requests."""
    target = path / "assets.extra" / "tf_serving_warmup_requests"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for index in range(count):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name="ignored", signature_name="serving_default")
            )
            request.inputs["x"].CopyFrom(
                tf.make_tensor_proto(np.array([[float(index)]], dtype=np.float32))
            )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return target


def write_broken_warmup(path: Path) -> Path:
    """A warmup file that is not TFRecord at all: the version must fail to load."""
    target = path / "assets.extra" / "tf_serving_warmup_requests"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"this is not a TFRecord file, so the load of this version fails")
    return target


def write_failing_warmup(path: Path) -> Path:
    """A well-formed warmup file whose request fails (an unknown input alias)."""
    target = path / "assets.extra" / "tf_serving_warmup_requests"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        request = predict_pb2.PredictRequest()
        request.inputs["nope"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        writer.write(log.SerializeToString())
    return target


def write_unsupported_warmup(path: Path) -> Path:
    """A warmup file whose record is a session_run_log: TF Serving refuses it (UNIMPLEMENTED)."""
    return write_warmup_records(
        path,
        [prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog())],
    )


def write_warmup_with_empty_record(path: Path) -> Path:
    """A warmup file whose first record sets no log_type (it runs nothing), then a valid one."""
    request = predict_pb2.PredictRequest()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], dtype=np.float32)))
    return write_warmup_records(
        path,
        [
            prediction_log_pb2.PredictionLog(),
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            ),
        ],
    )
