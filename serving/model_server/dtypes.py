"""TensorFlow's DataType enum as plain numbers and names, with the NumPy type of each.

Kept free of TensorFlow imports so the JSON codec (and its unit tests) stay light.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["DataType", "numpy_dtype"]


class DataType(enum.IntEnum):
    """tensorflow.DataType numbers (types.proto); `.type_string` is TF's DataTypeString."""

    DT_INVALID = 0
    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_COMPLEX64 = 8
    DT_INT64 = 9
    DT_BOOL = 10
    DT_QINT8 = 11
    DT_QUINT8 = 12
    DT_QINT32 = 13
    DT_BFLOAT16 = 14
    DT_QINT16 = 15
    DT_QUINT16 = 16
    DT_UINT16 = 17
    DT_COMPLEX128 = 18
    DT_HALF = 19
    DT_RESOURCE = 20
    DT_VARIANT = 21
    DT_UINT32 = 22
    DT_UINT64 = 23

    @property
    def type_string(self) -> str:
        return self.name[3:].lower()

    @classmethod
    def of(cls, value: int) -> DataType:
        try:
            return cls(value)
        except ValueError:
            return cls.DT_INVALID


_NUMPY: dict[DataType, np.dtype] = {
    DataType.DT_FLOAT: np.dtype(np.float32),
    DataType.DT_DOUBLE: np.dtype(np.float64),
    DataType.DT_INT32: np.dtype(np.int32),
    DataType.DT_UINT8: np.dtype(np.uint8),
    DataType.DT_INT16: np.dtype(np.int16),
    DataType.DT_INT8: np.dtype(np.int8),
    DataType.DT_STRING: np.dtype(object),
    DataType.DT_COMPLEX64: np.dtype(np.complex64),
    DataType.DT_INT64: np.dtype(np.int64),
    DataType.DT_BOOL: np.dtype(np.bool_),
    DataType.DT_UINT16: np.dtype(np.uint16),
    DataType.DT_COMPLEX128: np.dtype(np.complex128),
    DataType.DT_HALF: np.dtype(np.float16),
    DataType.DT_UINT32: np.dtype(np.uint32),
    DataType.DT_UINT64: np.dtype(np.uint64),
}


def numpy_dtype(dtype: DataType) -> np.dtype | None:
    """The NumPy dtype holding `dtype` (strings as object arrays of bytes); None if none."""
    return _NUMPY.get(dtype)
