"""TensorProto <-> NumPy for the gRPC API and warmup records.

Inputs accept both encodings (typed `*_val` fields or packed `tensor_content`); outputs use the
typed fields, as TF Serving does unless `--enable_serialization_as_tensor_content` is given.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

from serving.model_server.dtypes import DataType, numpy_dtype
from serving.model_server.errors import ServingError

__all__ = ["ndarray_to_tensor_proto", "tensor_proto_to_ndarray"]

_VALUE_FIELD = {
    DataType.DT_FLOAT: "float_val",
    DataType.DT_DOUBLE: "double_val",
    DataType.DT_INT32: "int_val",
    DataType.DT_INT16: "int_val",
    DataType.DT_INT8: "int_val",
    DataType.DT_UINT8: "int_val",
    DataType.DT_UINT16: "int_val",
    DataType.DT_STRING: "string_val",
    DataType.DT_INT64: "int64_val",
    DataType.DT_BOOL: "bool_val",
    DataType.DT_HALF: "half_val",
    DataType.DT_UINT32: "uint32_val",
    DataType.DT_UINT64: "uint64_val",
}

# The output types: each one with a value field, keyed by its NumPy dtype (strings: object).
_FROM_NUMPY = {
    dtype: data_type for data_type in _VALUE_FIELD if (dtype := numpy_dtype(data_type)) is not None
}


def tensor_proto_to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The array a TensorProto holds; INVALID_ARGUMENT if it is malformed or unsupported."""
    dtype = DataType.of(proto.dtype)
    target = numpy_dtype(dtype)
    field = _VALUE_FIELD.get(dtype)
    if target is None or field is None:
        raise ServingError.invalid_argument(
            f"Unsupported tensor dtype in request: {dtype.type_string or proto.dtype}"
        )
    if proto.tensor_shape.unknown_rank:
        raise ServingError.invalid_argument("Request tensor has unknown rank")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise ServingError.invalid_argument(f"Request tensor has a negative dimension: {shape}")
    count = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content and dtype != DataType.DT_STRING:
        flat = np.frombuffer(proto.tensor_content, dtype=target.newbyteorder("<"))
        if flat.size != count:
            raise ServingError.invalid_argument(
                f"tensor_content holds {flat.size} values, shape {shape} needs {count}"
            )
        return flat.astype(target).reshape(shape)
    values = list(getattr(proto, field))
    if dtype == DataType.DT_HALF:
        flat = np.array(values, dtype=np.uint16).view(np.float16)
    elif dtype == DataType.DT_STRING:
        flat = np.empty(len(values), dtype=object)
        flat[:] = values
    else:
        flat = np.array(values, dtype=target)
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size == 1 or (flat.size == 0 and count == 0):
        # A single value fills the whole shape (TF's Tensor::FromProto does the same).
        return np.full(shape, flat[0] if flat.size else 0, dtype=target)
    if flat.size < count and flat.size > 0:
        # ...and fewer values repeat the last one.
        padded = np.concatenate([flat, np.full(count - flat.size, flat[-1], dtype=target)])
        return padded.reshape(shape)
    raise ServingError.invalid_argument(
        f"Tensor holds {flat.size} values, more than its shape {shape} allows"
    )


def ndarray_to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """An output array as a TensorProto with typed value fields."""
    dtype = _FROM_NUMPY.get(array.dtype)
    if dtype is None and array.dtype.kind in "SU":
        dtype = DataType.DT_STRING
    if dtype is None:
        raise ServingError.internal(f"Cannot serialise output of type {array.dtype}")
    proto = tensor_pb2.TensorProto(
        dtype=int(dtype),
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        ),
    )
    flat = array.ravel()
    if dtype == DataType.DT_STRING:
        proto.string_val.extend(
            item if isinstance(item, bytes) else str(item).encode() for item in flat.tolist()
        )
    elif dtype == DataType.DT_HALF:
        proto.half_val.extend(flat.view(np.uint16).tolist())
    else:
        getattr(proto, _VALUE_FIELD[dtype]).extend(flat.tolist())
    return proto
