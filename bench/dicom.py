"""What a DICOM upload costs against the same image as a PNG (issue 20).

The model receives the same PNG either way (the functions convert DICOM to the PNG a viewer
would show, then validate it like an upload), so the difference between the two requests is
the function's own work before the model call: `read_dicom` (parse, check, decode the first
frame, window, PNG-encode, validate) against `validate_image` of the same film saved as a
16-bit grey PNG. A synthetic film at two sizes, stored 16-bit (12 bits used) uncompressed,
JPEG-LS lossless and JPEG 2000 lossless; calls interleaved so drift hits every variant alike;
medians, and the ratio to the PNG's.
"""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

import numpy as np

__all__ = ["measure_dicom_costs"]

_VARIANTS = ("png16", "dicom", "dicom_jpeg_ls", "dicom_jpeg_2000")
_SYNTAXES = {
    "dicom_jpeg_ls": "1.2.840.10008.1.2.4.80",
    "dicom_jpeg_2000": "1.2.840.10008.1.2.4.90",
}


def _film(size: int) -> np.ndarray:
    from synthetic.xrays import generate_xray

    image = generate_xray("covid", 3, height=size, width=size).image
    return np.rint(image.astype(np.float64) / 255.0 * 4095).astype(np.uint16)


def _png16(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels * 16).save(buffer, format="PNG")  # 12 bits spread over 16
    return buffer.getvalue()


def _dicom(pixels: np.ndarray, syntax: str | None) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    dx = UID("1.2.840.10008.5.1.4.1.1.1.1")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = dx
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = dx, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if syntax is not None:
        ds.compress(syntax, generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def measure_dicom_costs(sizes: tuple[int, ...] = (512, 2048), calls: int = 15) -> dict[str, Any]:
    """Median milliseconds of the function's own work per upload, per size and variant."""
    from functions.dicom import read_dicom, uid_key
    from functions.images import validate_image

    key = uid_key("bench-" + "k" * 40)
    limit = 64 * 1024 * 1024
    figures: dict[str, Any] = {"calls": calls, "sizes": {}}
    for size in sizes:
        pixels = _film(size)
        payloads = {"png16": _png16(pixels), "dicom": _dicom(pixels, None)}
        for variant, syntax in _SYNTAXES.items():
            payloads[variant] = _dicom(pixels, syntax)

        def call(variant: str, data: bytes) -> None:
            if variant == "png16":
                validate_image(data, "image/png", max_bytes=limit, max_pixels=limit)
            else:
                read_dicom(data, max_bytes=limit, max_pixels=limit, key=key)

        for variant in _VARIANTS:  # warm: imports, decoder plugins
            call(variant, payloads[variant])
        times: dict[str, list[float]] = {variant: [] for variant in _VARIANTS}
        for _ in range(calls):
            for variant in _VARIANTS:
                started = time.perf_counter()
                call(variant, payloads[variant])
                times[variant].append((time.perf_counter() - started) * 1000)
        medians = {variant: statistics.median(values) for variant, values in times.items()}
        figures["sizes"][str(size)] = {
            "bytes": {variant: len(data) for variant, data in payloads.items()},
            "median_ms": {variant: round(value, 2) for variant, value in medians.items()},
            "ratio_to_png": {
                variant: round(value / medians["png16"], 2) for variant, value in medians.items()
            },
        }
    return figures
