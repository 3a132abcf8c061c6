"""DICOM test files made on the spot with pydicom from the synthetic films (nothing downloaded).

Every file carries fake patient data (`FAKE_PHI`) unless asked not to, so any test can check
that none of it reaches the store or the logs. Encoders: pydicom's own (uncompressed, RLE),
pylibjpeg-openjpeg (JPEG 2000), pyjpegls (JPEG-LS), Pillow (JPEG baseline, wrapped by hand) and
the small lossless JPEG (process 14, first-order prediction) encoder below, since no installed
package encodes that one.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    generate_uid,
)

from synthetic.xrays import generate_xray

CR = "1.2.840.10008.5.1.4.1.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
CT = "1.2.840.10008.5.1.4.1.1.2"

# Values no real record would hold, each long and distinctive enough to grep for.
FAKE_PHI: dict[str, str] = {
    "PatientName": "Zyxwu^Qorvath^Imelda",
    "PatientID": "PID-93827461-ZQ",
    "PatientBirthDate": "19431127",
    "PatientSex": "F",
    "PatientAddress": "17 Glimmerquay Lane, Vostrand",
    "InstitutionName": "Saint Obadiah Quillfeather Hospital",
    "ReferringPhysicianName": "Pemberlock^Ulrich",
    "AccessionNumber": "ACC77123098",
    "StudyDate": "20190612",
    "StudyTime": "134702",
    "StudyID": "STUDY-5521907",
    "OtherPatientIDs": "OPID-4412-XX",
    "OperatorsName": "Trundleby^Mavis",
}
STUDY_UID = "1.2.826.0.1.3680043.8.498.11111111111111111111"
SERIES_UID = "1.2.826.0.1.3680043.8.498.22222222222222222222"
INSTANCE_UID = "1.2.826.0.1.3680043.8.498.33333333333333333333"


def film(height: int = 96, width: int = 80, seed: int = 7) -> np.ndarray:
    """A synthetic chest film, 8-bit grey."""
    return generate_xray("covid", seed, height=height, width=width).image


def scaled(image: np.ndarray, bits: int) -> np.ndarray:
    """An 8-bit film spread over `bits` (unsigned)."""
    top = 2**bits - 1
    return np.rint(image.astype(np.float64) / 255.0 * top).astype(
        np.uint8 if bits <= 8 else np.uint16
    )


def dataset(
    pixels: np.ndarray,
    *,
    bits_stored: int | None = None,
    photometric: str = "MONOCHROME2",
    modality: str = "DX",
    sop_class: str = DX,
    phi: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Dataset:
    """An uncompressed DICOM dataset (Explicit VR Little Endian) holding `pixels`.

    `pixels`: (rows, columns) grey, (rows, columns, 3) RGB, or (frames, rows, columns)
    with `extra={"NumberOfFrames": n}`.
    """
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    bits_allocated = pixels.dtype.itemsize * 8
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(INSTANCE_UID)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = UID(INSTANCE_UID)
    ds.StudyInstanceUID = UID(STUDY_UID)
    ds.SeriesInstanceUID = UID(SERIES_UID)
    ds.Modality = modality
    if phi:
        for name, value in FAKE_PHI.items():
            setattr(ds, name, value)
    multi = extra is not None and "NumberOfFrames" in extra
    shape = pixels.shape[1:] if multi else pixels.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.ImagerPixelSpacing = [0.143, 0.143]
    for name, value in (extra or {}).items():
        setattr(ds, name, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def multi_frame(frames: np.ndarray) -> Dataset:
    """A Multi-frame Grayscale Byte Secondary Capture of (frames, rows, columns) 8-bit grey."""
    return dataset(
        frames,
        sop_class="1.2.840.10008.5.1.4.1.1.7.2",
        modality="OT",
        extra={"NumberOfFrames": len(frames)},
    )


def to_bytes(ds: Dataset, *, implicit: bool = False, big_endian: bool = False) -> bytes:
    if big_endian:
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.2")
        array = np.frombuffer(ds.PixelData, dtype=f"<u{ds.BitsAllocated // 8}")
        ds.PixelData = array.astype(f">u{ds.BitsAllocated // 8}").tobytes()
    elif implicit:
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2")
    buffer = io.BytesIO()
    ds.save_as(
        buffer,
        implicit_vr=implicit,
        little_endian=not big_endian,
        enforce_file_format=True,
    )
    return buffer.getvalue()


def compressed(ds: Dataset, syntax: str, **options: Any) -> bytes:
    """`ds` compressed with the encoder pydicom has for `syntax` (RLE, JPEG-LS, JPEG 2000)."""
    ds.compress(syntax, generate_instance_uid=False, **options)
    return to_bytes(ds)


def jpeg_baseline(ds: Dataset, quality: int = 95) -> bytes:
    """8-bit grey `ds` as JPEG baseline (encoded by Pillow, encapsulated by pydicom)."""
    buffer = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buffer, format="JPEG", quality=quality)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return to_bytes(ds)


def jpeg_lossless(ds: Dataset) -> bytes:
    """Grey `ds` as JPEG Lossless, first-order prediction (process 14, selection value 1)."""
    pixels = ds.pixel_array.astype(np.int64)
    ds.PixelData = encapsulate([_lossless_jpeg(pixels, int(ds.BitsStored))])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    return to_bytes(ds)


def _lossless_jpeg(pixels: np.ndarray, precision: int) -> bytes:
    """ITU T.81 process 14: predictor 1 (left), first row from the left, first column from
    above, the first sample from 2^(P-1); one Huffman table giving every category 5 bits."""
    rows, columns = pixels.shape
    prediction = np.empty_like(pixels)
    prediction[0, 0] = 1 << (precision - 1)
    prediction[0, 1:] = pixels[0, :-1]
    prediction[1:, 0] = pixels[:-1, 0]
    prediction[1:, 1:] = pixels[1:, :-1]
    differences = ((pixels - prediction + 32768) % 65536 - 32768).ravel()
    bits: list[str] = []
    for difference in differences.tolist():
        category = 16 if difference == -32768 else abs(difference).bit_length()
        bits.append(format(category, "05b"))
        if 0 < category < 16:
            value = difference if difference > 0 else difference - 1
            bits.append(format(value & ((1 << category) - 1), f"0{category}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    entropy = bytearray()
    for start in range(0, len(stream), 8):
        byte = int(stream[start : start + 8], 2)
        entropy.append(byte)
        if byte == 0xFF:
            entropy.append(0)
    counts = [0] * 16
    counts[4] = 17  # 17 symbols (categories 0..16) of length 5

    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">HH", marker, len(body) + 2) + body

    huffman = bytes([0x00, *counts, *range(17)])
    frame = struct.pack(">BHHB", precision, rows, columns, 1) + bytes([1, 0x11, 0])
    scan = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0, Ss=1 (predictor), Se, Ah/Al
    return (
        b"\xff\xd8"
        + segment(0xFFC4, huffman)
        + segment(0xFFC3, frame)
        + segment(0xFFDA, scan)
        + bytes(entropy)
        + b"\xff\xd9"
    )


def new_uid() -> str:
    return str(generate_uid())
