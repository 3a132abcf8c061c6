"""One loaded model version: its signatures, how to run them, and its warmup replay.

A version is a SavedModel folder. Its SignatureDefs (for metadata, dtypes and validation) come
from the MetaGraphDef in `saved_model.pb`; its runnable functions from `tf.saved_model.load`.
Each signature is called as a concrete function (no retracing whatever the batch size), and
TensorFlow releases the GIL while it computes, so requests run in parallel across threads.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_log_pb2

from common.logs import log_event
from serving.model_server.batching import SchedulerClosed
from serving.model_server.dtypes import DataType, numpy_dtype
from serving.model_server.errors import Code, ServingError
from serving.model_server.tensors import tensor_proto_to_ndarray

__all__ = [
    "CLASSIFY_METHOD",
    "DEFAULT_SIGNATURE",
    "REGRESS_METHOD",
    "LoadedVersion",
    "Signature",
    "load_version",
]

logger = logging.getLogger("serving.model_server")

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000

Tensors = dict[str, np.ndarray]
Runner = Callable[[Tensors, float | None], Tensors]


@dataclass(frozen=True)
class Signature:
    """A SignatureDef and the function that computes it."""

    key: str
    method_name: str
    input_types: Mapping[str, DataType]
    output_types: Mapping[str, DataType]
    function: Any  # the restored concrete function; None for non-callable entries
    # Set when the function needs XLA and the server runs without it: the error every call
    # answers (upstream fails the first compilation, which is every call: none succeeds).
    xla_refusal: str | None = None

    def run(self, inputs: Tensors) -> Tensors:
        """Call the function on `inputs` (keyed by alias); errors become ServingError."""
        if self.function is None:
            raise ServingError.failed_precondition(
                f'Serving signature key "{self.key}" has no function to run.'
            )
        if self.xla_refusal is not None:
            raise ServingError(Code.INTERNAL, self.xla_refusal)
        arguments = {}
        for alias, array in inputs.items():
            expected = self.input_types[alias]
            arguments[alias] = tf.constant(array, dtype=tf.as_dtype(int(expected)))
        try:
            result = self.function(**arguments)
        except tf.errors.OpError as error:
            raise ServingError(Code(error.error_code), error.message) from None
        except (TypeError, ValueError) as error:
            raise ServingError.invalid_argument(str(error)) from None
        return {alias: tensor.numpy() for alias, tensor in result.items()}


class LoadedVersion:
    """A model version ready to serve: signatures by key, metadata, an optional batcher."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        signatures: dict[str, Signature],
        signature_def_map: get_model_metadata_pb2.SignatureDefMap,
        keep_alive: object,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signatures = signatures
        self.signature_def_map = signature_def_map
        self._keep_alive = keep_alive  # the restored object owns the variables
        self._runners: dict[str, Runner] = {}
        self._close_hooks: list[Callable[[], None]] = []
        # The REST metadata answer, computed on first request.
        self.metadata_json: str | None = None
        # Requests holding this version (TF Serving's ServableHandle): an unload waits for them.
        self._users = 0
        self._idle = threading.Condition()

    def acquire(self) -> None:
        with self._idle:
            self._users += 1

    def release(self) -> None:
        with self._idle:
            self._users -= 1
            if self._users == 0:
                self._idle.notify_all()

    def wait_idle(self) -> None:
        """Block until no request holds this version."""
        with self._idle:
            while self._users:
                self._idle.wait()

    def set_runner(self, key: str, runner: Runner, close: Callable[[], None]) -> None:
        """Route a signature through `runner` (the batcher) instead of calling it directly."""
        self._runners[key] = runner
        self._close_hooks.append(close)

    def signature(self, key: str) -> Signature | None:
        return self.signatures.get(key or DEFAULT_SIGNATURE)

    def run(self, key: str, inputs: Tensors, timeout: float | None = None) -> Tensors:
        runner = self._runners.get(key)
        if runner is not None:
            try:
                return runner(inputs, timeout)
            except SchedulerClosed:
                pass  # unloaded since this request resolved it: finish on it, unbatched
        return self.signatures[key].run(inputs)

    def close(self) -> None:
        self._runners.clear()
        for hook in self._close_hooks:
            hook()
        self._close_hooks.clear()


# -- loading --------------------------------------------------------------------------------------


def _read_meta_graph(path: Path, tags: Iterable[str]) -> meta_graph_pb2.MetaGraphDef:
    saved_model = saved_model_pb2.SavedModel()
    binary, text = path / "saved_model.pb", path / "saved_model.pbtxt"
    try:
        if binary.is_file():
            saved_model.ParseFromString(binary.read_bytes())
        elif text.is_file():
            text_format.Parse(text.read_text(encoding="utf-8"), saved_model)
        else:
            raise ServingError.not_found(
                f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}"
            )
    except (DecodeError, text_format.ParseError) as error:
        raise ServingError(Code.DATA_LOSS, f"Cannot parse SavedModel at {path}: {error}") from None
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    available = [sorted(graph.meta_info_def.tags) for graph in saved_model.meta_graphs]
    raise ServingError.not_found(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}. "
        f"Available tags: {available}"
    )


def load_version(
    name: str,
    version: int,
    path: Path,
    *,
    tags: Iterable[str] = ("serve",),
    warmup: bool = True,
    warmup_iterations: int = 1,
    xla_enabled: bool = False,
) -> LoadedVersion:
    """Load the SavedModel at `path` and replay its warmup records (any failure fails the load).

    Without `xla_enabled` (TF Serving's --xla_cpu_compilation_enabled) a signature whose
    functions are compiled with XLA fails every call, its warmup records included, so such a
    version does not load when its warmup calls that signature, as upstream.
    """
    started = time.monotonic()
    tags = tuple(tags)
    meta_graph = _read_meta_graph(path, tags)
    try:
        restored = tf.saved_model.load(str(path), tags=list(tags))
    except (tf.errors.OpError, ValueError, OSError) as error:
        code = Code(error.error_code) if isinstance(error, tf.errors.OpError) else Code.UNKNOWN
        message = error.message if isinstance(error, tf.errors.OpError) else str(error)
        raise ServingError(code, f"Failed to load SavedModel at {path}: {message}") from None
    functions = getattr(restored, "signatures", {})
    needing_xla = {} if xla_enabled else xla_requirements(meta_graph)
    signatures: dict[str, Signature] = {}
    for key, definition in meta_graph.signature_def.items():
        signatures[key] = Signature(
            key=key,
            method_name=definition.method_name,
            input_types={a: DataType.of(i.dtype) for a, i in definition.inputs.items()},
            output_types={a: DataType.of(i.dtype) for a, i in definition.outputs.items()},
            function=functions.get(key) if key in functions else None,
            xla_refusal=needing_xla.get(key),
        )
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in meta_graph.signature_def.items():
        signature_def_map.signature_def[key].CopyFrom(definition)
    loaded = LoadedVersion(name, version, path, signatures, signature_def_map, restored)
    records = replay_warmup(loaded, iterations=warmup_iterations) if warmup else 0
    log_event(
        logger,
        "version_loaded",
        model=name,
        version=version,
        signatures=sorted(key for key, sig in signatures.items() if sig.function is not None),
        warmup_records=records,
        seconds=round(time.monotonic() - started, 3),
    )
    return loaded


def _function_references(node: Any) -> list[str]:
    """The functions a NodeDef calls through its attributes (f, body, cond, branches...)."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        elif value.HasField("list"):
            names.extend(item.name for item in value.list.func)
    return names


def xla_requirements(meta_graph: meta_graph_pb2.MetaGraphDef) -> dict[str, str]:
    """Signature key -> the error TF Serving answers without XLA, for each signature that
    reaches a function compiled with XLA (`_XlaMustCompile`, what jit_compile=True writes).

    The message is upstream's (DeviceCompiler: Internal "XLA compilation disabled") with the
    node context TensorFlow appends: the function and the node that asked for compilation.
    """
    library = {
        function.signature.name: function for function in meta_graph.graph_def.library.function
    }
    found: dict[str, tuple[str, str] | None] = {}

    def must_compile(attributes: Any) -> bool:
        value = attributes.get("_XlaMustCompile")
        return value is not None and value.b

    def node_reason(function_name: str, node: Any) -> tuple[str, str] | None:
        """(function, node) when `node` (in `function_name`, "" for the top graph) asks for XLA
        itself, calls a function marked for it, or calls one that reaches such a node."""
        if must_compile(node.attr):
            return function_name, node.name
        for callee in _function_references(node):
            if callee in library and must_compile(library[callee].attr):
                return function_name, node.name
            reached = search(callee)
            if reached is not None:
                return reached
        return None

    def search(name: str) -> tuple[str, str] | None:
        if name not in found:
            found[name] = None  # a cycle (recursion) cannot ask for more than its members do
            function = library.get(name)
            nodes_of = function.node_def if function is not None else ()
            found[name] = next(
                (reason for node in nodes_of if (reason := node_reason(name, node))), None
            )
        return found[name]

    nodes = {node.name: node for node in meta_graph.graph_def.node}
    requirements: dict[str, str] = {}
    for key, definition in meta_graph.signature_def.items():
        pending = [info.name.split(":")[0] for info in definition.outputs.values()]
        seen: set[str] = set()
        reason: tuple[str, str] | None = None
        while pending and reason is None:
            node_name = pending.pop().lstrip("^")
            if node_name in seen or node_name not in nodes:
                continue
            seen.add(node_name)
            reason = node_reason("", nodes[node_name])
            pending.extend(item.split(":")[0] for item in nodes[node_name].input)
        if reason is not None:
            function, node_name = reason
            context = f"{{{{function_node {function}}}}}" if function else ""
            requirements[key] = (
                f"XLA compilation disabled\n\t [[{context}{{{{node {node_name}}}}}]]"
            )
    return requirements


# -- warmup ---------------------------------------------------------------------------------------


def _read_warmup_records(path: Path) -> list[bytes]:
    records: list[bytes] = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            records.append(record.numpy())
            if len(records) > MAX_WARMUP_RECORDS:
                raise ServingError.invalid_argument(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
    except tf.errors.OpError as error:
        # The record reader's own words, without tf.data's "{{function_node ...}}" and
        # "[Op:...]" wrapping; any code but DATA_LOSS passes through unchanged.
        message = re.sub(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", error.message)
        if error.error_code != Code.DATA_LOSS:
            raise ServingError(Code(error.error_code), message) from None
        raise ServingError(
            Code.DATA_LOSS, f"{message}. Please verify your warmup data is in TFRecord format."
        ) from None
    return records


def replay_warmup(loaded: LoadedVersion, iterations: int = 1) -> int:
    """Run every warmup request against `loaded`; returns the number of records read."""
    path = loaded.path / WARMUP_FILE
    if not path.is_file():
        log_event(
            logger,
            "warmup_absent",
            model=loaded.name,
            detail=f"No warmup data file found at {path}",
        )
        return 0
    log_event(logger, "warmup_started", model=loaded.name, version=loaded.version)
    records = _read_warmup_records(path)
    for raw in records:
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(raw)
        except DecodeError:
            raise ServingError.invalid_argument(
                f"Failed to parse warmup record: {raw.decode('utf-8', 'replace')} from {path}"
            ) from None
        kind = log.WhichOneof("log_type")
        repeats = max(1, iterations)
        if kind is None:
            continue  # a record with no log_type runs nothing (saved_model_warmup.cc, default)
        if kind == "predict_log":
            _key, signature, inputs = predict_request_inputs(loaded, log.predict_log.request)
            for _ in range(repeats):
                signature.run(inputs)
        elif kind in ("classify_log", "regress_log"):
            request = getattr(log, kind).request
            key = request.model_spec.signature_name or DEFAULT_SIGNATURE
            examples = examples_from_input(request.input)
            run = classify if kind == "classify_log" else regress
            for _ in range(repeats):
                run(loaded, key, examples)
        else:
            # multi_inference_log runs in TF Serving; the stand-in has no MultiInference. The
            # others are refused upstream too, which prints the oneof's field number.
            number = log.DESCRIPTOR.fields_by_name[kind].number
            raise ServingError.unimplemented(f"Unsupported log_type for warmup: {number}")
    log_event(
        logger, "warmup_finished", model=loaded.name, version=loaded.version, records=len(records)
    )
    return len(records)


def predict_request_inputs(
    loaded: LoadedVersion, request: predict_pb2.PredictRequest
) -> tuple[str, Signature, Tensors]:
    """A PredictRequest's signature key, signature and checked inputs (gRPC and warmup)."""
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = loaded.signature(key)
    if signature is None:
        raise ServingError.failed_precondition(f'Serving signature key "{key}" not found.')
    inputs = {alias: tensor_proto_to_ndarray(tensor) for alias, tensor in request.inputs.items()}
    check_predict_inputs(signature, inputs)
    return key, signature, inputs


def check_predict_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """gRPC/warmup input checks: aliases, count and dtypes against the SignatureDef."""
    expected = set(signature.input_types)
    sent = set(inputs)
    if sent != expected and len(sent) != len(expected):
        extra = ",".join(sorted(sent - expected))
        missing = ",".join(sorted(expected - sent))
        raise ServingError.invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{extra}}}. Missing but required: {{{missing}}}."
        )
    for alias, array in inputs.items():
        if alias not in signature.input_types:
            raise ServingError.invalid_argument(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be in "
                f"the set {{{','.join(sorted(expected))}}}."
            )
        wanted = numpy_dtype(signature.input_types[alias])
        if wanted is not None and array.dtype != wanted:
            have = "string" if array.dtype == object else str(array.dtype)
            raise ServingError.invalid_argument(
                f"Expects arg[{alias}] to be {signature.input_types[alias].type_string} but "
                f"{have} is provided"
            )


# -- classify and regress --------------------------------------------------------------------------


def serialize_examples(
    examples: Iterable[example_pb2.Example], context: example_pb2.Example | None
) -> list[bytes]:
    """Each example serialized, with `context`'s features merged under it when given."""
    serialized = []
    for example in examples:
        if context is not None:
            merged = example_pb2.Example()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            example = merged
        serialized.append(example.SerializeToString())
    return serialized


def examples_from_input(request_input: Any) -> list[bytes]:
    """Serialized tf.Examples of an `Input` proto; context features merged into each example."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return serialize_examples(request_input.example_list.examples, None)
    if kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        return serialize_examples(listed.examples, listed.context)
    raise ServingError.invalid_argument("Input is empty")


def _example_signature(loaded: LoadedVersion, key: str, method: str, what: str) -> Signature:
    signature = loaded.signature(key)
    if signature is None:
        raise ServingError.invalid_argument(f"No signature was found with the name: {key}")
    if signature.method_name != method:
        raise ServingError.invalid_argument(
            f"Expected {what} signature method_name to be {method}. Was: {signature.method_name}"
        )
    if len(signature.input_types) != 1:
        raise ServingError.invalid_argument(f"Expected one input Tensor, got {signature.key}")
    return signature


def _run_examples(loaded: LoadedVersion, signature: Signature, examples: list[bytes]) -> Tensors:
    if not examples:
        raise ServingError.invalid_argument("Input is empty")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    (alias,) = signature.input_types
    return loaded.run(signature.key, {alias: array})


def classify(
    loaded: LoadedVersion, key: str, examples: list[bytes]
) -> list[list[tuple[str, float]]]:
    """Per example, its (label, score) pairs from a classify signature."""
    signature = _example_signature(loaded, key, CLASSIFY_METHOD, "classification")
    outputs = _run_examples(loaded, signature, examples)
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is None and scores is None:
        raise ServingError.invalid_argument("Expected classes or scores output")
    results = []
    for row in range(len(examples)):
        row_classes = [] if classes is None else np.atleast_1d(classes[row]).tolist()
        row_scores = [] if scores is None else np.atleast_1d(scores[row]).tolist()
        count = max(len(row_classes), len(row_scores))
        results.append(
            [
                (
                    row_classes[i].decode("utf-8", "replace") if row_classes else "",
                    float(row_scores[i]) if row_scores else 0.0,
                )
                for i in range(count)
            ]
        )
    return results


def regress(loaded: LoadedVersion, key: str, examples: list[bytes]) -> list[float]:
    """One value per example from a regress signature."""
    signature = _example_signature(loaded, key, REGRESS_METHOD, "regression")
    outputs = _run_examples(loaded, signature, examples)
    values = outputs.get("outputs")
    if values is None:
        raise ServingError.invalid_argument("Expected output Tensor named outputs")
    flat = np.asarray(values, dtype=np.float32).reshape(len(examples), -1)
    if flat.shape[1] != 1:
        raise ServingError.invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(values.shape)}"
        )
    return [float(value) for value in flat[:, 0].tolist()]
