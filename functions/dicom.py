"""DICOM uploads: converted by the shared conversion (imaging.dicom) to the 8-bit PNG a viewer
would show, then checked like any PNG upload; never stored raw.

An upload is DICOM when it is declared `application/dicom` or, untyped, carries the Part 10
`DICM` magic at offset 128. `imaging.dicom.convert_dicom` checks it before decoding a pixel
(transfer syntax, projection X-ray modality or SOP class, pixel data, Rows x Columns x frames
within MAX_PIXELS) and shows the first frame as a viewer would; the training job converts its
`.dcm` files with the same function, so the model sees the same pixels in training and serving.
Each refusal becomes its own HTTP error here.

The PNG then goes through `validate_image` like any upload, so the model receives the same kind
of bytes. What is recorded (`input.dicom`) is how the pixels were converted and the Study, Series
and SOP Instance UIDs as keyed hashes (HMAC-SHA256 under a key derived from SECRET_KEY): never a
name, an ID, a date or any other attribute of the patient or the study. pydicom is imported on
the first DICOM upload only (it costs about 0.2 s), so a function that never sees one never pays.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace

from functions.errors import (
    ApiError,
    InvalidDicom,
    MissingPixelData,
    TooManyPixels,
    UnsupportedDicomImage,
    UnsupportedModality,
    UnsupportedTransferSyntax,
)
from functions.images import ValidatedImage, normalise_content_type, validate_image
from imaging import dicom as conversion
from imaging.dicom import DicomSource

__all__ = [
    "DICOM_CONTENT_TYPE",
    "DicomSource",
    "DicomUpload",
    "is_dicom_upload",
    "read_dicom",
    "uid_digest",
]

DICOM_CONTENT_TYPE = "application/dicom"
_UNTYPED = {"", "application/octet-stream"}
_UID_KEY_LABEL = b"dicom-uid/v1"
# Each refusal of the conversion, as the API answers it.
_API_ERRORS: dict[type[conversion.DicomError], type[ApiError]] = {
    conversion.InvalidDicom: InvalidDicom,
    conversion.MissingPixelData: MissingPixelData,
    conversion.UnsupportedTransferSyntax: UnsupportedTransferSyntax,
    conversion.UnsupportedModality: UnsupportedModality,
    conversion.UnsupportedDicomImage: UnsupportedDicomImage,
    conversion.DicomTooManyPixels: TooManyPixels,
}


@dataclass(frozen=True)
class DicomUpload:
    image: ValidatedImage  # the PNG for the model; `image.source` is the record's `input.dicom`
    source: DicomSource


def is_dicom_upload(data: bytes, declared_type: str | None) -> bool:
    """Declared `application/dicom`, or untyped with the Part 10 magic at offset 128."""
    declared = normalise_content_type(declared_type)
    if declared == DICOM_CONTENT_TYPE:
        return True
    return declared in _UNTYPED and conversion.has_dicom_magic(data)


def uid_key(secret_key: str) -> bytes:
    """The key of the UID hashes, derived from SECRET_KEY (one key, one purpose)."""
    return hmac.new(secret_key.encode("utf-8"), _UID_KEY_LABEL, hashlib.sha256).digest()


def uid_digest(key: bytes, uid: str) -> str:
    """A UID as the record keeps it: HMAC-SHA256 under `uid_key`, 128 bits in hex. The same
    study gives the same digest in one deployment; without the key it cannot be reversed."""
    return hmac.new(key, uid.encode("ascii", "replace"), hashlib.sha256).hexdigest()[:32]


def read_dicom(data: bytes, *, max_bytes: int, max_pixels: int, key: bytes) -> DicomUpload:
    """The DICOM upload as the model will receive it (PNG), or the ApiError that refuses it."""
    try:
        converted = conversion.convert_dicom(data, max_pixels=max_pixels)
    except conversion.DicomError as exc:
        raise _API_ERRORS.get(type(exc), InvalidDicom)(str(exc)) from None
    png, source = converted.png, converted.source
    image = validate_image(png, "image/png", max_bytes=len(png), max_pixels=max_pixels)
    facts = dict(converted.facts)
    facts["uid_hashes"] = {
        name: uid_digest(key, uid)
        for name, uid in (
            ("study", source.study_instance_uid),
            ("series", source.series_instance_uid),
            ("sop_instance", source.sop_instance_uid),
        )
        if uid
    }
    image = replace(
        image,
        format="DICOM",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        transformation="dicom_to_png",
        source=facts,
    )
    return DicomUpload(image, source)
