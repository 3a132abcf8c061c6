"""DICOM to the 8-bit picture a viewer shows: the one conversion serving and training share.

Lean (pydicom, its pylibjpeg decoders, NumPy, Pillow; never TensorFlow), so the functions convert
an upload and the training job converts its `.dcm` files with the same code, and the model sees
the same pixels in training and in serving (tests/imaging proves it).

Checked in order, before any pixel is decoded: the file parses, its transfer syntax has a decoder
here, it is a projection X-ray (CR, DX, DR or a Secondary Capture; CT, MR, US, segmentations and
the rest are refused), it has pixel data and a monochrome or colour layout we know, and Rows x
Columns x frames is within the pixel cap. Then only the first frame is decoded and shown as a
viewer would: Modality LUT (rescale or LUT), VOI LUT or the first window (or the frame's own
min..max when the file has neither), MONOCHROME1 inverted, scaled to 8 bits whatever the stored
depth. Colour images come out as RGB (the model greys them as it greys a colour PNG). The result
is PNG bytes and the facts of how they were made; the identifiers (`DicomSource`) are returned
for the caller to hash or use, never recorded here. pydicom is imported on first use only.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset

__all__ = [
    "DicomError",
    "DicomImage",
    "DicomSource",
    "DicomTooManyPixels",
    "InvalidDicom",
    "MissingPixelData",
    "UnsupportedDicomImage",
    "UnsupportedModality",
    "UnsupportedTransferSyntax",
    "convert_dicom",
    "has_dicom_magic",
]


# -- what refuses a file (the functions map each to its HTTP error) ---------------------------


class DicomError(ValueError):
    """A DICOM file this conversion will not show; the message is safe to show a person (it
    never quotes the file's text beyond a UID or a code string)."""


class InvalidDicom(DicomError):
    """Not a readable DICOM file: no Part 10 header, truncated, corrupt attributes or pixels."""


class MissingPixelData(DicomError):
    """A DICOM object without an image."""


class UnsupportedTransferSyntax(DicomError):
    """Encoded in a way no decoder here reads (video, JPIP, a private syntax)."""


class UnsupportedModality(DicomError):
    """Not a projection X-ray (CT, MR, US, a segmentation...)."""


class UnsupportedDicomImage(DicomError):
    """An image laid out in a way not read here (1-bit, float, unknown photometric...)."""


class DicomTooManyPixels(DicomError):
    """Rows x Columns x frames over the cap (checked before any pixel is decoded)."""


_MAGIC_OFFSET = 128
_MAGIC = b"DICM"

# Projection radiography and what is made from it. Secondary Capture covers a film digitised or
# exported by a workstation (its Modality is often OT, so the SOP class decides).
_ACCEPTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.7": "SC",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.1": "SC",  # Multi-frame Single Bit SC (refused below: 1 bit)
    "1.2.840.10008.5.1.4.1.1.7.2": "SC",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3": "SC",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4": "SC",  # Multi-frame True Color SC
}
# Modalities of a projection X-ray (DR is retired in favour of DX but still written).
_XRAY_MODALITIES = {"CR", "DX", "DR"}
# A Secondary Capture whose Modality names a cross-sectional or other non-radiograph source.
_REFUSED_MODALITIES = {
    "CT", "MR", "US", "PT", "NM", "SEG", "RTIMAGE", "RTDOSE", "RTSTRUCT", "RTPLAN", "MG", "XA",
    "RF", "IVUS", "OCT", "OP", "SM", "ECG", "SR", "KO", "PR", "REG", "ES", "XC", "IO", "PX",
}  # fmt: skip
# Transfer syntaxes decoded here (pydicom natively, pylibjpeg-libjpeg, pylibjpeg-openjpeg).
_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}
_MONOCHROME = {"MONOCHROME1", "MONOCHROME2"}
_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR"}
# The Pixel Data tag (7FE0,0010) as it is written little and big endian.
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_PIXEL_DATA_TAG_BIG = b"\x7f\xe0\x00\x10"


@dataclass(frozen=True)
class DicomSource:
    """What a DICOM answer needs from the upload: its identifiers, held in memory for the one
    request and never recorded or logged (the record has their keyed hashes only)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    pixel_spacing: tuple[float, float] | None


@dataclass(frozen=True)
class DicomImage:
    png: bytes  # 8-bit grey (or RGB) PNG of the first frame, as a viewer shows it
    facts: dict[str, Any]  # how it was converted (no identifier, no patient attribute)
    source: DicomSource


def has_dicom_magic(data: bytes) -> bool:
    """The Part 10 preamble's `DICM` at offset 128."""
    return data[_MAGIC_OFFSET : _MAGIC_OFFSET + 4] == _MAGIC


def convert_dicom(data: bytes, *, max_pixels: int) -> DicomImage:
    """The first frame of a projection X-ray as PNG bytes, or the DicomError that refuses it."""
    started = time.perf_counter()
    dataset = _parse(data)
    facts, source = _check(dataset, data, max_pixels)
    pixels, display = _pixels(dataset, facts)
    png = _png(pixels)
    facts.update(display)
    facts["conversion_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return DicomImage(png, facts, source)


# -- parsing and checks (no pixel decoded) ----------------------------------------------------


def _pydicom() -> Any:
    """pydicom, imported on first use and set to read without validating values: attributes we
    never look at (names, dates) are never converted, so never warned about in logs."""
    import pydicom
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    return pydicom


def _parse(data: bytes) -> Dataset:
    if not has_dicom_magic(data):
        raise InvalidDicom("the bytes are not a DICOM file (no DICM magic at offset 128)")
    pydicom = _pydicom()
    try:
        dataset: Dataset = pydicom.dcmread(io.BytesIO(data))
        # Parse every top-level element now (they are read lazily): a header cut short or
        # corrupt fails here, not half-way through the conversion.
        tags = list(dataset.keys())
        _ = dataset.file_meta.TransferSyntaxUID
    except Exception:  # pydicom raises many kinds (EOFError, ValueError, struct.error...)
        raise InvalidDicom("the DICOM file is truncated or corrupt") from None
    if tags and _cut_short(dataset, tags[-1]):
        raise InvalidDicom("the DICOM file is truncated")
    return dataset


def _cut_short(dataset: Dataset, last: Any) -> bool:
    """Whether the file ends inside its last element (pydicom keeps what it could read of a
    value and says nothing): its declared length is more than the bytes it holds."""
    raw = dataset.get_item(last)
    length = getattr(raw, "length", None)
    value = getattr(raw, "value", None)
    if not isinstance(length, int) or length == 0xFFFFFFFF or not isinstance(value, bytes):
        return False
    return len(value) < length


def _text(dataset: Dataset, name: str) -> str:
    value = dataset.get(name)
    return str(value).strip().upper() if value is not None else ""


def _integer(dataset: Dataset, name: str, default: int | None = None) -> int:
    value = dataset.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidDicom(f"the DICOM attribute {name} is missing or invalid") from None


def _check(dataset: Dataset, data: bytes, max_pixels: int) -> tuple[dict[str, Any], DicomSource]:
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    if syntax not in _TRANSFER_SYNTAXES:
        raise UnsupportedTransferSyntax(
            f"the transfer syntax {_shown(syntax, _UID_TEXT)} is not supported; send "
            "uncompressed, RLE, JPEG, JPEG-LS or JPEG 2000"
        )
    stored_class = dataset.file_meta.get("MediaStorageSOPClassUID", "")
    sop_class = str(dataset.get("SOPClassUID", stored_class))
    modality = _text(dataset, "Modality")
    accepted = sop_class in _ACCEPTED_SOP_CLASSES
    if modality in _REFUSED_MODALITIES or not (accepted or modality in _XRAY_MODALITIES):
        raise UnsupportedModality(
            f"modality {_shown(modality, _CODE_TEXT)} is not a projection X-ray; send CR, DX "
            "or a Secondary Capture of a chest film",
        )
    if not any(name in dataset for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if _PIXEL_DATA_TAG in data or _PIXEL_DATA_TAG_BIG in data:
            # pydicom drops an encapsulated Pixel Data cut before its end (with a warning).
            raise InvalidDicom("the DICOM pixel data is truncated or corrupt")
        raise MissingPixelData("the DICOM file has no pixel data")
    if "PixelData" not in dataset:
        raise UnsupportedDicomImage("float pixel data is not a radiograph")
    rows, columns = _integer(dataset, "Rows"), _integer(dataset, "Columns")
    frames = _integer(dataset, "NumberOfFrames", 1)
    samples = _integer(dataset, "SamplesPerPixel", 1)
    bits_allocated = _integer(dataset, "BitsAllocated")
    bits_stored = _integer(dataset, "BitsStored", bits_allocated)
    photometric = _text(dataset, "PhotometricInterpretation")
    if rows < 1 or columns < 1 or frames < 1:
        raise InvalidDicom("the DICOM image has no pixels")
    # Caps before decoding: every frame counts, as every pixel of a PNG does.
    if rows * columns * frames > max_pixels:
        raise DicomTooManyPixels(f"the image has more than {max_pixels} pixels")
    if bits_allocated not in (8, 16, 32) or not 1 <= bits_stored <= bits_allocated:
        raise UnsupportedDicomImage(f"{bits_allocated}-bit pixels are not supported")
    if not (
        (photometric in _MONOCHROME and samples == 1)
        or (photometric in _COLOUR and samples == (1 if photometric == "PALETTE COLOR" else 3))
    ):
        raise UnsupportedDicomImage(
            f"photometric interpretation {_shown(photometric, _CODE_TEXT)} with {samples} samples "
            "per pixel is not supported"
        )
    spacing = _pixel_spacing(dataset)
    facts: dict[str, Any] = {
        "modality": modality or None,
        "sop_class": _ACCEPTED_SOP_CLASSES.get(sop_class, "other"),
        "sop_class_uid": sop_class,  # a standard UID (the kind of object), not an instance
        "transfer_syntax": {"uid": syntax, "name": _TRANSFER_SYNTAXES[syntax]},
        "photometric_interpretation": photometric,
        "samples_per_pixel": samples,
        "bits_allocated": bits_allocated,
        "bits_stored": bits_stored,
        "pixel_representation": (
            "signed" if _integer(dataset, "PixelRepresentation", 0) else "unsigned"
        ),
        "rows": rows,
        "columns": columns,
        "frames": frames,
        "frame_used": 0,
        "pixel_spacing_mm": list(spacing) if spacing else None,
    }
    source = DicomSource(
        study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
        series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
        sop_class_uid=sop_class,
        modality=modality,
        pixel_spacing=spacing,
    )
    return facts, source


# What of the file's own text an error message may quote: a UID, or a code string (PS3.5 VRs
# UI and CS); anything else is not echoed.
_UID_TEXT = re.compile(r"[0-9.]{1,64}")
_CODE_TEXT = re.compile(r"[A-Z0-9 _]{1,16}")


def _shown(value: str, allowed: re.Pattern[str]) -> str:
    if not value:
        return "(none)"
    return value if allowed.fullmatch(value) else "(unreadable)"


def _pixel_spacing(dataset: Dataset) -> tuple[float, float] | None:
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        value = dataset.get(name)
        try:
            if value is not None and len(value) == 2:
                row, column = float(value[0]), float(value[1])
                if row > 0 and column > 0:
                    return (round(row, 6), round(column, 6))
        except (TypeError, ValueError):
            continue
    return None


# -- pixels -----------------------------------------------------------------------------------


def _pixels(dataset: Dataset, facts: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The first frame as a viewer shows it, 8 bits; and how it was made."""
    from pydicom.pixels import pixel_array

    try:
        frame = pixel_array(dataset, index=0)
    except Exception:  # decoders raise anything from ValueError to RuntimeError
        raise InvalidDicom("the DICOM pixel data is truncated or corrupt") from None
    expected = (facts["rows"], facts["columns"])
    if frame.shape[:2] != expected:
        raise InvalidDicom("the DICOM pixel data does not match its Rows and Columns")
    try:
        if facts["photometric_interpretation"] in _MONOCHROME:
            return _grey(frame, dataset, facts)
        return _colour(frame, dataset, facts)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        raise InvalidDicom("the DICOM LUT or window attributes are invalid") from None


def _grey(
    frame: np.ndarray, dataset: Dataset, facts: Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    import numpy as np
    from pydicom.dataset import Dataset as PydicomDataset
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    display: dict[str, Any] = {}
    if dataset.get("ModalityLUTSequence"):
        display["modality_lut"] = {"kind": "lut"}
    elif "RescaleSlope" in dataset or "RescaleIntercept" in dataset:
        display["modality_lut"] = {
            "kind": "rescale",
            "slope": float(dataset.get("RescaleSlope", 1.0)),
            "intercept": float(dataset.get("RescaleIntercept", 0.0)),
        }
    else:
        display["modality_lut"] = None
    modality_values = apply_modality_lut(frame, dataset)
    values = modality_values.astype(np.float64, copy=False)
    if dataset.get("VOILUTSequence"):
        # The first VOI LUT (a viewer's default view); its output range is the LUT's entry depth.
        # A LUT is indexed by whole values: a rescaled (float) frame is rounded first.
        lut = dataset.VOILUTSequence[0]
        depth = int(lut.LUTDescriptor[2])
        indices = (
            np.rint(modality_values).astype(np.int64)
            if modality_values.dtype.kind == "f"
            else modality_values
        )
        shown = apply_voi(indices, dataset, index=0) / float(2**depth - 1)
        display["window"] = {"source": "voi_lut", "lut_entries": int(lut.LUTDescriptor[0] or 65536)}
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        # pydicom's windowing (LINEAR, LINEAR_EXACT, SIGMOID per PS3.3 C.11.2) onto 0..255: a
        # view of the VOI attributes whose output range is 8 bits unsigned.
        view = PydicomDataset()
        for name in ("WindowCenter", "WindowWidth", "VOILUTFunction", "PhotometricInterpretation"):
            if name in dataset:
                view[name] = dataset[name]
        view.BitsStored, view.PixelRepresentation = 8, 0
        shown = apply_windowing(values, view, index=0) / 255.0
        center, width = _first(dataset.WindowCenter), _first(dataset.WindowWidth)
        display["window"] = {
            "source": "window",
            "center": center,
            "width": width,
            "function": _text(dataset, "VOILUTFunction") or "LINEAR",
        }
    else:
        # No VOI in the file: the frame's own range, as viewers open such images.
        low, high = float(values.min()), float(values.max())
        span = high - low
        shown = (values - low) / span if span > 0 else np.zeros_like(values)
        display["window"] = {
            "source": "min_max",
            "center": round((low + high) / 2, 3),
            "width": round(span, 3),
        }
    grey = np.rint(np.clip(shown, 0.0, 1.0) * 255.0).astype(np.uint8)
    inverted = facts["photometric_interpretation"] == "MONOCHROME1"
    if inverted:
        grey = 255 - grey  # MONOCHROME1: the minimum is white
    display["inverted"] = inverted
    display["output"] = "grey8"
    return grey, display


def _first(value: Any) -> float:
    """The first of a DS value that may hold several (alternative windows)."""
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return round(float(value), 3)
    return round(float(next(iter(value))), 3)


def _colour(
    frame: np.ndarray, dataset: Dataset, facts: Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    import numpy as np
    from pydicom.pixels import apply_color_lut

    if facts["photometric_interpretation"] == "PALETTE COLOR":
        rgb = apply_color_lut(frame, dataset)
        depth = int(dataset.RedPaletteColorLookupTableDescriptor[2])
    else:
        rgb = frame  # pydicom converts YBR to RGB when decoding
        depth = int(facts["bits_stored"])
    scaled = rgb.astype(np.float64) / float(2**depth - 1) * 255.0
    colour = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return colour, {"modality_lut": None, "window": None, "inverted": False, "output": "rgb8"}


def _png(pixels: np.ndarray) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels), "L" if pixels.ndim == 2 else "RGB")
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
