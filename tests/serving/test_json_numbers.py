"""The vectorised float32 number writer gives TF Serving's texts, element for element.

`format_float_values` writes large float32 tensors (Grad-CAM heatmaps) through a NumPy path that
decides `%.6g` or `%.9g` for the whole array; the one-by-one path is the reference it must equal.
"""

from __future__ import annotations

import numpy as np
import pytest

from serving.model_server.json_codec import (
    _float32_texts,
    _float_texts_one_by_one,
    format_float_values,
    row_response,
)

_RNG = np.random.default_rng(20261127)


def _edge_values() -> np.ndarray:
    powers = np.float32(10.0) ** np.arange(-38, 39).astype(np.float32)
    special = np.array(
        [
            *(0.0, -0.0, 1.0, -1.0, 3.0, 0.5, 0.1, 1 / 3, 9e6, 999999, 3e-4, 3e-5, 555557.5),
            # dyadic values whose seventh digit is an exact tie (round half to even)
            *(1234.125, 2.5, 123456.5, 0.99999994, 999999.94, 99999.99),
            *(1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38, 16777216, 16777215),
            *(4194304.5, 1e9, 3e9, 1e10, np.nan, np.inf, -np.inf),
        ],
        dtype=np.float32,
    )
    return np.concatenate(
        [
            special,
            powers,
            np.nextafter(powers, np.float32(np.inf)),
            np.nextafter(powers, np.float32(0)),
        ]
    )


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(_RNG.random(20_000).astype(np.float32), id="unit interval"),
        pytest.param(
            (_RNG.random(20_000) ** 3).astype(np.float32).reshape(1, 100, 200), id="heatmap-like"
        ),
        pytest.param(
            _RNG.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
            id="every bit pattern",
        ),
        pytest.param((np.arange(1, 40_001) / 8).astype(np.float32), id="eighths (ties)"),
        pytest.param((np.arange(1, 40_001) / 1024 + 1000).astype(np.float32), id="fine ties"),
        pytest.param(_edge_values(), id="edges"),
    ],
)
def test_vectorised_float32_texts_equal_the_one_by_one_texts(values: np.ndarray) -> None:
    flat = values.ravel()
    with np.errstate(all="ignore"):
        expected = _float_texts_one_by_one(flat)

    assert _float32_texts(flat) == expected
    assert format_float_values(values) == expected


def test_format_float_values_documented_examples_in_a_large_array() -> None:
    documented = np.array([9000000, 999999, 0.5, 0.0003, 0.00003, 555557.5, 3, 0.1, 1 / 3])
    values = np.tile(documented.astype(np.float32), 8)  # large enough for the vectorised path

    texts = format_float_values(values)

    assert texts[:9] == [
        "9e+06",
        "999999.0",
        "0.5",
        "0.0003",
        "3e-05",
        "555557.5",
        "3.0",
        "0.1",
        "0.333333343",
    ]


def test_row_response_of_a_heatmap_reads_back_as_the_same_float32_values() -> None:
    import json

    heatmap = (_RNG.random((2, 16, 16)) ** 2).astype(np.float32)

    document = json.loads(row_response({"heatmap": heatmap}))

    np.testing.assert_array_equal(np.array(document["predictions"], np.float32), heatmap)
