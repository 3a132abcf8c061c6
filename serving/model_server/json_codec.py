"""TF Serving's REST JSON: request parsing, JSON-to-tensor rules, tensor-to-JSON writing.

Follows `util/json_tensor.cc` (see reference/tfserving.md §1.6-1.8): the same acceptance rules
per dtype, the same error texts and their order, `{"b64": ...}` strings in and out (out only
for `*_bytes` aliases), row and columnar layouts, and TF's number formatting (`%.6g` when it
round-trips, else `%.9g`/`%.17g`; `.0` on whole numbers; bare `NaN`/`Infinity`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import numpy as np

from serving.model_server.dtypes import DataType, numpy_dtype
from serving.model_server.errors import ServingError

__all__ = [
    "columnar_response",
    "decode_base64",
    "format_float_values",
    "inputs_to_tensors",
    "instances_to_tensors",
    "json_type_name",
    "json_value_text",
    "parse_request_json",
    "row_response",
]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_ERROR_VALUE_LIMIT = 256  # TF Serving cuts echoed JSON values in messages to 256 bytes

# -- parsing --------------------------------------------------------------------------------------

_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
_DECODER = json.JSONDecoder()
_BARE_INF = re.compile(r"-?Inf(?!inity)")


def _rapidjson_message(error: json.JSONDecodeError) -> str:
    if error.msg == "Expecting ',' delimiter":
        # rapidjson names the container; the nearest unclosed bracket tells which one.
        text = error.doc[: error.pos]
        if text.rfind("{") > text.rfind("["):
            return "Missing a comma or '}' after an object member."
        return "Missing a comma or ']' after an array element."
    return _RAPIDJSON_MESSAGES.get(error.msg, error.msg + ".")


def parse_request_json(body: bytes) -> dict[str, Any]:
    """The request's top-level object; text after the first complete value is ignored.

    `NaN`, `Infinity`, `-Infinity`, `Inf` and `-Inf` are numbers, as with rapidjson's
    kParseNanAndInfFlag.
    """
    if not body:
        raise ServingError.invalid_argument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServingError.invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}"
        ) from None
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise ServingError.invalid_argument(
            f"JSON Parse error: The document is empty. at offset: {start}"
        )
    for _ in range(64):
        try:
            value, _end = _DECODER.raw_decode(text, start)
            break
        except json.JSONDecodeError as error:
            # Python spells infinity only `Infinity`; rapidjson also accepts `Inf`.
            match = _BARE_INF.match(text, error.pos)
            if error.msg == "Expecting value" and match:
                text = text[: match.end()] + "inity" + text[match.end() :]
                continue
            raise ServingError.invalid_argument(
                f"JSON Parse error: {_rapidjson_message(error)} at offset: {error.pos}"
            ) from None
    else:
        raise ServingError.invalid_argument("JSON Parse error: Invalid value.")
    if not isinstance(value, dict):
        raise ServingError.invalid_argument(f"JSON Value: {json_value_text(value)} Is not object")
    return value


def json_type_name(value: Any) -> str:
    """rapidjson's type names, as TF Serving prints them in errors."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def json_value_text(value: Any) -> str:
    """A JSON value echoed in an error message (pretty, cut to 256 bytes)."""
    if isinstance(value, float):
        text = _format_double(value)
    else:
        text = json.dumps(value, indent=4, ensure_ascii=False, default=str)
    encoded = text.encode("utf-8")
    if len(encoded) > _ERROR_VALUE_LIMIT:
        text = encoded[:_ERROR_VALUE_LIMIT].decode("utf-8", "ignore") + "..."
    return text


# -- JSON to tensors ------------------------------------------------------------------------------


def _type_error(value: Any, dtype: DataType) -> ServingError:
    return ServingError.invalid_argument(
        f"JSON Value: {json_value_text(value)} Type: {json_type_name(value)} "
        f"is not of expected type: {dtype.type_string}"
    )


def _is_base64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_base64(value: Any) -> bytes:
    if not _is_base64_object(value):
        raise ServingError.invalid_argument(
            f"JSON Value: {json_value_text(value)} not formatted correctly for base64 data"
        )
    text: str = value["b64"]
    try:
        # Standard alphabet only (web-safe `-`/`_` fail, as in TF Serving); padding optional.
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ServingError.invalid_argument("Unable to base64 decode") from None


def _in_range(value: Any, bounds: tuple[int, int]) -> bool:
    return type(value) is int and bounds[0] <= value <= bounds[1]


def _convert_leaf(value: Any, dtype: DataType) -> Any:
    """One JSON scalar as the Python value NumPy will store for `dtype` (AddValueToTensor)."""
    kind = type(value)
    if dtype in (DataType.DT_FLOAT, DataType.DT_DOUBLE):
        if kind is float:
            return value
        if kind is int:
            try:
                return float(value)
            except OverflowError:  # rapidjson reads huge integers as doubles: inf
                return math.copysign(math.inf, value)
        raise _type_error(value, dtype)
    if dtype in (DataType.DT_INT32, DataType.DT_INT16, DataType.DT_INT8, DataType.DT_UINT8):
        if _in_range(value, _INT32):
            return value
        raise _type_error(value, dtype)
    if dtype == DataType.DT_STRING:
        if kind is str:
            return value.encode("utf-8", "surrogatepass")
        raise _type_error(value, dtype)
    if dtype == DataType.DT_INT64:
        if _in_range(value, _INT64):
            return value
        raise _type_error(value, dtype)
    if dtype == DataType.DT_BOOL:
        if kind is bool:
            return value
        raise _type_error(value, dtype)
    if dtype == DataType.DT_UINT32:
        if _in_range(value, _UINT32):
            return value
        raise _type_error(value, dtype)
    if dtype == DataType.DT_UINT64:
        if _in_range(value, _UINT64):
            return value
        raise _type_error(value, dtype)
    raise ServingError.unimplemented(
        f"Conversion of JSON Value: {json_value_text(value)} to type: {dtype.type_string}"
    )


def _dense_shape(value: Any) -> list[int]:
    """Shape read from the first element at each level (GetDenseTensorShape)."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: DataType, out: list[Any]) -> None:
    """Append every leaf in order, checking nesting against `shape` (FillTensorProto)."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise ServingError.invalid_argument(
                f"JSON Value: {json_value_text(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != DataType.DT_STRING:
                raise _type_error(value, dtype)
            out.append(decode_base64(value))
        else:
            out.append(_convert_leaf(value, dtype))
        return
    if level >= rank:
        raise ServingError.invalid_argument(
            f"Encountered list at unexpected level: {level} expected < {rank}"
        )
    if len(value) != shape[level]:
        raise ServingError.invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    if (
        level == rank - 1
        and dtype in (DataType.DT_FLOAT, DataType.DT_DOUBLE)
        and all(type(item) is float or type(item) is int for item in value)
    ):
        # Fast path for the innermost list of a float tensor: plain numbers need no checks.
        out.extend(value)
        return
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _to_array(leaves: list[Any], shape: list[int], dtype: DataType) -> np.ndarray:
    target = numpy_dtype(dtype)
    if target is None:
        raise ServingError.unimplemented(f"Conversion to type: {dtype.type_string}")
    if dtype == DataType.DT_STRING:
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    if dtype in (DataType.DT_FLOAT, DataType.DT_DOUBLE):
        with np.errstate(over="ignore"):
            # Integers beyond 2**53 go through a double first, as rapidjson reads them.
            values = np.array([float(v) if type(v) is int else v for v in leaves], np.float64)
            return values.astype(target).reshape(shape)
    if dtype in (DataType.DT_INT16, DataType.DT_INT8, DataType.DT_UINT8):
        # TF Serving does not range-check narrow integer types: the value wraps.
        return np.array(leaves, dtype=np.int64).astype(target).reshape(shape)
    return np.array(leaves, dtype=target).reshape(shape)


def json_to_tensor(value: Any, dtype: DataType) -> tuple[np.ndarray, list[int], int]:
    """A JSON value (scalar, nested list or b64 object) as an array; with its shape and size."""
    shape = _dense_shape(value)
    leaves: list[Any] = []
    _fill(value, 0, shape, dtype, leaves)
    return _to_array(leaves, shape, dtype), shape, len(leaves)


def instances_to_tensors(
    instances: list[Any], input_types: Mapping[str, DataType]
) -> dict[str, np.ndarray]:
    """The row format: one entry per batch element, stacked along a new dimension 0."""
    first = instances[0]
    if not isinstance(first, dict) and len(input_types) > 1:
        raise ServingError.invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )

    def is_element_object(value: Any) -> bool:
        return isinstance(value, dict) and not _is_base64_object(value)

    elements_are_objects = is_element_object(first)
    input_names = sorted(input_types)
    rows: dict[str, list[np.ndarray]] = {}
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}

    def add_item(item: Any, name: str) -> None:
        if name not in input_types:
            raise ServingError.invalid_argument(f"JSON object: does not have named input: {name}")
        array, shape, size = json_to_tensor(item, input_types[name])
        if name not in sizes:
            sizes[name], shapes[name] = size, shape
        elif sizes[name] != size:
            raise ServingError.invalid_argument(
                f"Expecting tensor size: {sizes[name]} but got: {size}"
            )
        elif shapes[name] != shape:
            raise ServingError.invalid_argument(
                f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(shape)}"
            )
        rows.setdefault(name, []).append(array)

    for index, element in enumerate(instances):
        if elements_are_objects:
            if not is_element_object(element):
                raise ServingError.invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, item in element.items():
                try:
                    add_item(item, name)
                except ServingError as error:
                    raise ServingError.invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {error.status_string()}"
                    ) from None
            if sorted(element) != input_names:
                raise ServingError.invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_value_text(element)} keys must be equal to: {','.join(input_names)}"
                )
        else:
            if is_element_object(element):
                raise ServingError.invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                add_item(element, input_names[0])
            except ServingError as error:
                raise ServingError.invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {error.status_string()}"
                ) from None
    return {name: _stack(arrays, input_types[name]) for name, arrays in rows.items()}


def _stack(arrays: list[np.ndarray], dtype: DataType) -> np.ndarray:
    if dtype == DataType.DT_STRING:
        stacked = np.empty((len(arrays), *arrays[0].shape), dtype=object)
        for index, array in enumerate(arrays):
            # A 0-d object array would be stored as an object itself: store its item.
            stacked[index] = array if array.ndim else array.item()
        return stacked
    return np.stack(arrays)


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]"


def inputs_to_tensors(inputs: Any, input_types: Mapping[str, DataType]) -> dict[str, np.ndarray]:
    """The columnar format: each input's tensor in its natural nesting; extra keys ignored."""
    if not isinstance(inputs, dict) or _is_base64_object(inputs):
        if len(input_types) > 1:
            raise ServingError.invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = next(iter(sorted(input_types)))
        return {name: json_to_tensor(inputs, input_types[name])[0]}
    tensors: dict[str, np.ndarray] = {}
    for name in sorted(input_types):
        if name not in inputs:
            raise ServingError.invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_to_tensor(inputs[name], input_types[name])[0]
    return tensors


# -- tensors to JSON ------------------------------------------------------------------------------

_WRITABLE_FLOATS = {np.dtype(np.float32): False, np.dtype(np.float64): True}


def _format_double(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:.6g}"
    if float(text) != value:
        text = f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def format_float_values(array: np.ndarray) -> list[str]:
    """Each element of a float32/float64 array as TF Serving writes it (WriteDecimal).

    `%.6g` when that text reads back as the same value (`strtof`/`strtod`), else `%.9g`
    (float32) or `%.17g` (float64); `.0` on whole numbers; bare `NaN`/`Infinity`. Float32
    arrays of more than a few elements take a vectorised path with the same result.
    """
    flat = array.ravel()
    if flat.dtype == np.float32 and flat.size >= _VECTORISED_MINIMUM:
        return _float32_texts(flat)
    return _float_texts_one_by_one(flat)


def _float_texts_one_by_one(flat: np.ndarray) -> list[str]:
    values = flat.tolist()
    texts = [f"{value:.6g}" for value in values]
    with np.errstate(invalid="ignore", over="ignore"):
        parsed = np.array(texts, dtype=np.float64).astype(flat.dtype)
        differs = parsed != flat
    wide = ".17g" if flat.dtype == np.float64 else ".9g"
    for index in np.flatnonzero(differs).tolist():
        value = values[index]
        if value == value and not math.isinf(value):  # NaN differs from itself: not a retry
            texts[index] = format(value, wide)
    result = []
    for text in texts:
        if "." in text or "e" in text:
            result.append(text)
        elif text[-1] in "nf":  # nan, inf, -inf
            result.append("NaN" if text.endswith("nan") else text[:-3] + "Infinity")
        else:
            result.append(text + ".0")
    return result


# Below this many elements the one-by-one path is as fast (probabilities, scores).
_VECTORISED_MINIMUM = 32
# Relative error bound of a float64 product of two correctly rounded factors, with room to
# spare: a scaled value closer than this to a rounding boundary is decided exactly instead.
_RELATIVE_SLACK = 1e-14
_SIX_DIGITS, _SEVEN_DIGITS = 1e5, 1e6


def _bulk_format(spec: str, values: list[float]) -> list[str]:
    """`spec % value` for every value in one C-level formatting call (no per-element bytecode)."""
    if not values:
        return []
    return ((spec + "\x00") * len(values) % tuple(values)).split("\x00")[:-1]


def _reads_back_exactly(text: str, magnitude: float, below: float, above: float) -> bool:
    """Whether `strtof(text)` is `magnitude` (a float32 value, as float64), decided exactly.

    `below`/`above` are the float32 neighbours of `magnitude`; a text exactly halfway rounds to
    the neighbour with an even significand (IEEE round-half-even, as strtof does).
    """
    decimal = Decimal(text.lstrip("-"))
    exact = Decimal(magnitude)
    low, high = (exact + Decimal(below)) / 2, (exact + Decimal(above)) / 2
    if low < decimal < high:
        return True
    if decimal in (low, high):
        bits = int(np.array(magnitude, np.float32).view(np.uint32))
        return bits % 2 == 0
    return False


# NaN payloads and the neighbour above the largest float32 (infinity) are expected here.
@np.errstate(all="ignore")
def _float32_texts(flat: np.ndarray) -> list[str]:
    """`format_float_values` for a float32 vector, deciding `%.6g` or `%.9g` with NumPy.

    A value's 6-digit decimal is its magnitude scaled into [1e5, 1e6) and rounded; it reads
    back as the same float32 when it lies strictly between the midpoints to the neighbouring
    float32 values. Both questions are answered in float64 for the whole array, and exactly
    (Python's own formatting and `Decimal`) for the rare values within rounding error of a
    boundary. The texts themselves come from one C-level `%` call per precision.
    """
    count = flat.size
    values = flat.astype(np.float64)
    magnitude = np.abs(values)
    finite = np.isfinite(values)
    regular = np.flatnonzero(finite & (magnitude > 0))

    # -- which values round-trip with six digits ------------------------------------------
    size = magnitude[regular]
    exponent = np.floor(np.log10(size)).astype(np.int64)
    scaled = size * np.power(10.0, 5 - exponent)
    # log10 can be one off next to powers of ten; bring the scaled value into [1e5, 1e6).
    exponent += (scaled >= _SEVEN_DIGITS).astype(np.int64) - (scaled < _SIX_DIGITS)
    power = np.power(10.0, 5 - exponent)
    scaled = size * power
    mantissa = np.rint(scaled)
    slack = scaled * _RELATIVE_SLACK
    uncertain = (np.abs(scaled - np.floor(scaled) - 0.5) <= slack) | (
        np.abs(scaled - _SIX_DIGITS) <= slack
    )
    uncertain |= np.abs(scaled - _SEVEN_DIGITS) <= slack
    # 999999.7 rounds to 1e6: the decimal is 1 x 10^(exponent + 1).
    carried = mantissa >= _SEVEN_DIGITS
    mantissa[carried] = _SIX_DIGITS
    exponent[carried] += 1
    power[carried] /= 10.0
    single = flat[regular]
    above = np.nextafter(np.abs(single), np.float32(np.inf)).astype(np.float64)
    below = np.nextafter(np.abs(single), np.float32(0)).astype(np.float64)
    high = (size + above) / 2 * power
    low = (size + below) / 2 * power
    margin = mantissa * _RELATIVE_SLACK
    short = (mantissa < high - margin) & (mantissa > low + margin)
    near = (np.abs(mantissa - high) <= margin) | (np.abs(mantissa - low) <= margin)
    uncertain |= near & ~short

    # -- the texts ------------------------------------------------------------------------
    texts = np.empty(count, dtype=object)
    exact = np.flatnonzero(uncertain)
    decided = ~uncertain
    six = regular[decided & short]
    nine = regular[decided & ~short]
    texts[six] = _bulk_format("%.6g", values[six].tolist())
    texts[nine] = _bulk_format("%.9g", values[nine].tolist())
    # Whole numbers get ".0": a six-digit text is whole when its last (5 - exponent) digits
    # are zeros; a float32 below 1e9 needing nine digits is whole only if it is an integer.
    is_six = decided & short
    six_exponent = exponent[is_six]
    six_mantissa = mantissa[is_six]
    fraction_digits = np.clip(5 - six_exponent, 0, 5)
    whole_six = (six_exponent >= 0) & (six_exponent <= 5)
    whole_six &= np.fmod(six_mantissa, np.power(10.0, fraction_digits)) == 0
    nine_values = values[nine]
    whole_nine = (np.floor(nine_values) == nine_values) & (np.abs(nine_values) < 1e9)
    for index in (*six[whole_six].tolist(), *nine[whole_nine].tolist()):
        texts[index] += ".0"
    for position in exact.tolist():
        index = int(regular[position])
        value = float(values[index])
        text = f"{value:.6g}"
        if not _reads_back_exactly(
            text, float(size[position]), float(below[position]), float(above[position])
        ):
            text = f"{value:.9g}"
        texts[index] = text if ("." in text or "e" in text) else text + ".0"
    zeros = np.flatnonzero(magnitude == 0)
    texts[zeros] = "0.0"
    texts[zeros[np.signbit(values[zeros])]] = "-0.0"
    for index in np.flatnonzero(~finite).tolist():
        value = float(values[index])
        texts[index] = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return texts.tolist()


def _json_string(data: bytes) -> str:
    # No UTF-8 check in TF Serving: invalid bytes pass through raw (surrogateescape keeps them
    # until the body is encoded with the same handler).
    return json.dumps(data.decode("utf-8", "surrogateescape"), ensure_ascii=False)


def _format_elements(name: str, array: np.ndarray) -> list[str]:
    kind = array.dtype.kind
    if array.dtype in _WRITABLE_FLOATS:
        return format_float_values(array)
    if kind == "b":
        return ["true" if value else "false" for value in array.ravel().tolist()]
    if kind in "iu":
        return [str(value) for value in array.ravel().tolist()]
    if kind in "OSU":
        items = array.ravel().tolist()
        as_bytes = [item if isinstance(item, bytes) else str(item).encode() for item in items]
        if name.endswith("_bytes"):
            return [
                '{"b64": "' + base64.b64encode(item).decode("ascii") + '"}' for item in as_bytes
            ]
        return [_json_string(item) for item in as_bytes]
    type_name = {"f": "half", "c": "complex64"}.get(kind, str(array.dtype))
    if array.dtype == np.complex128:
        type_name = "complex128"
    raise ServingError.invalid_argument(f"Failed to write JSON value for tensor type: {type_name}")


def _nest(items: list[str], dims: tuple[int, ...], groups: int) -> list[str]:
    """Wrap flat element texts into nested JSON arrays over `dims`; returns `groups` texts."""
    for position in range(len(dims) - 1, -1, -1):
        size = dims[position]
        if size == 0:
            items = ["[]"] * (groups * math.prod(dims[:position]))
        else:
            items = ["[" + ", ".join(items[i : i + size]) + "]" for i in range(0, len(items), size)]
    return items


def row_response(outputs: Mapping[str, np.ndarray]) -> str:
    """`{"predictions": [...]}`: outputs split along dimension 0, one entry per batch row."""
    batch_size = -1
    for name in sorted(outputs):
        array = outputs[name]
        if array.ndim == 0:
            raise ServingError.invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch_size >= 0 and array.shape[0] != batch_size:
            raise ServingError.invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch_size}"
            )
        batch_size = array.shape[0]
    per_output = {
        name: _nest(_format_elements(name, outputs[name]), outputs[name].shape[1:], batch_size)
        for name in sorted(outputs)
    }
    if len(per_output) == 1:
        (rows,) = per_output.values()
    else:
        rows = [
            "{" + ", ".join(f'"{name}": {texts[row]}' for name, texts in per_output.items()) + "}"
            for row in range(batch_size)
        ]
    return '{\n    "predictions": [' + ", ".join(rows) + "]\n}"


def columnar_response(outputs: Mapping[str, np.ndarray]) -> str:
    """`{"outputs": ...}`: each output whole; a single output is not wrapped in an object."""
    texts = {
        name: _nest(_format_elements(name, outputs[name]), outputs[name].shape, 1)[0]
        for name in sorted(outputs)
    }
    if len(texts) == 1:
        (body,) = texts.values()
    else:
        body = "{" + ", ".join(f'"{name}": {text}' for name, text in texts.items()) + "}"
    return '{\n    "outputs": ' + body + "\n}"
