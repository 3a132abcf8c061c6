"""Upload validation with Pillow and NumPy only: what reaches the model is a bounded, real image.

Checked in order, cheapest first and before any pixel is decoded: size, non-empty, declared type
against the magic bytes (PNG and JPEG only), nothing after a PNG's last chunk (polyglots),
Pillow opening with a format allowlist, the pixel cap (decompression-bomb warnings are errors),
then integrity: a PNG's chunk checksums (`verify()`) and its compressed image stream inflated
to the end (output counted and dropped, never held: a stream cut short under valid checksums is
caught here, not by the model), or a JPEG's whole entropy stream decoded at 1/8 scale (JPEG has
no checksums).

The bytes go to the model unchanged (it decodes and preprocesses in-graph, DESIGN decision 2),
with two exceptions the model could not handle as the user means them, re-encoded losslessly as
PNG: CMYK/YCCK JPEGs (TensorFlow's JPEG decoder takes 1 or 3 channels only) and JPEGs whose EXIF
orientation is not "upright" (applied so that the prediction and the Grad-CAM overlay match the
image as every viewer shows it).
"""

from __future__ import annotations

import array
import hashlib
import io
import math
import struct
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from functions.errors import (
    InvalidImage,
    InvalidParameter,
    PayloadTooLarge,
    TooManyPixels,
    UnsupportedMediaType,
)

__all__ = ["ValidatedImage", "image_statistics", "normalise_content_type", "validate_image"]

# Pillow only warns between MAX_IMAGE_PIXELS and twice that (reliability.md §2.1); its security
# handbook says to treat the warning as an error. A process-wide filter, set once: a
# `catch_warnings` block per request would not be thread-safe.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DECLARED_FORMATS = {
    "image/png": "PNG",
    "image/x-png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
}
# Declared types that say nothing about the format: the magic bytes decide.
_UNTYPED = {"", "application/octet-stream"}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ValidatedImage:
    data: bytes  # what the model receives
    content_type: str  # of `data`
    format: str  # of the upload: "PNG" or "JPEG"
    width: int  # as viewers show it (EXIF orientation applied)
    height: int
    mode: str  # Pillow's mode of the upload ("L", "RGB", "I;16", "CMYK"...)
    size_bytes: int  # of the upload
    sha256: str  # of the upload
    transformation: str | None = None  # why `data` differs from the upload, if it does
    # How a converted upload was read (a DICOM file: functions.dicom), recorded as `dicom`.
    source: Mapping[str, object] | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def describe(self, stats: Mapping[str, float] | None = None) -> dict[str, object]:
        """The facts recorded with an inference (never the bytes); `stats`: the grey-level
        statistics of `data` (`image_statistics`), when they were taken."""
        return {
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "width": self.width,
            "height": self.height,
            "pixels": self.pixels,
            "format": self.format,
            "mode": self.mode,
            "transformation": self.transformation,
            **({"stats": dict(stats)} if stats is not None else {}),
            **({"dicom": dict(self.source)} if self.source is not None else {}),
        }


# Statistics are taken on at most this many pixels a side (box-averaged): cheap, and stable
# across resolutions, so a 2,048 px film and its 256 px copy describe alike.
_STATS_SIDE = 128


def image_statistics(data: bytes) -> dict[str, float]:
    """The grey-level mean and standard deviation of a PNG or JPEG, in [0, 1].

    What the drift monitor compares between live traffic and the training data (one function
    for both, so both sides are measured alike): colour reduced to luma as Pillow does (ITU-R
    601), 16-bit grey scaled by its full depth, the image box-averaged to at most 128 px a side
    first (JPEG decoded at reduced scale). Raises OSError/ValueError for bytes Pillow cannot read.

    The sums are exact integers (an 8-bit image's from Pillow's histogram, in C), so no NumPy:
    every prediction calls this, and importing NumPy would cost a function's cold start 70 ms.
    """
    with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as image:
        width, height = image.size
        if image.format == "JPEG":
            image.draft("L", (max(1, width // 8), max(1, height // 8)))
        image.load()
        sixteen = image.mode in ("I;16", "I;16B", "I;16L", "I")
        if sixteen:
            grey_image = image.convert("I") if image.mode != "I" else image
        elif image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            grey_image = image.convert("RGBA").convert("RGB").convert("L")
        else:
            grey_image = image.convert("L") if image.mode != "L" else image
        factor = max(1, -(-max(grey_image.size) // _STATS_SIDE))
        if factor > 1:
            grey_image = grey_image.reduce(factor)  # box average, in C
        if sixteen:
            top = 65535
            # Mode "I" is 32-bit signed pixels in native byte order (Pillow's raw layout).
            pixels = array.array("i", grey_image.tobytes())
            levels = [min(max(value, 0), top) for value in pixels]
            count, total, squares = len(levels), sum(levels), sum(v * v for v in levels)
        else:
            top = 255
            histogram = grey_image.histogram()
            count = sum(histogram)
            total = sum(level * n for level, n in enumerate(histogram))
            squares = sum(level * level * n for level, n in enumerate(histogram))
    mean = total / (count * top)
    # Population variance from exact sums: (n * sum(x^2) - sum(x)^2) / n^2, never negative.
    std = math.sqrt(count * squares - total * total) / (count * top)
    return {"mean": round(mean, 5), "std": round(std, 5)}


def normalise_content_type(value: str | None) -> str:
    """`Image/PNG; charset=x` -> `image/png`; None -> ''."""
    return (value or "").split(";", 1)[0].strip().lower()


def _sniff(data: bytes) -> str | None:
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    return None


def _png_end(data: bytes) -> int | None:
    """Where a PNG's IEND chunk ends, walking the chunk lengths; None if it never ends."""
    position = len(_PNG_MAGIC)
    while position + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, position)
        end = position + 12 + length  # length, type, data, CRC
        if length > 0x7FFFFFFF or end > len(data):
            return None
        if data[position + 4 : position + 8] == b"IEND":
            return end
        position = end
    return None


# Samples per pixel of each PNG colour type (PNG specification, IHDR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (first column, first row, column step, row step).
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_INFLATE_STEP = 1 << 16


def _png_image_bytes(data: bytes) -> int:
    """How many bytes the PNG's image stream inflates to (filter bytes included), from IHDR."""
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    bits = _PNG_CHANNELS[colour] * depth

    def stream(columns: int, rows: int) -> int:
        return rows * (1 + (columns * bits + 7) // 8) if columns and rows else 0

    if not interlace:
        return stream(width, height)
    return sum(
        stream((width - x + dx - 1) // dx, (height - y + dy - 1) // dy) for x, y, dx, dy in _ADAM7
    )


def _png_stream_complete(data: bytes) -> bool:
    """Whether the IDAT chunks inflate to at least the whole image (the output is counted in
    64 KiB steps and dropped, so memory stays bounded whatever the stream claims)."""
    expected = _png_image_bytes(data)
    inflater = zlib.decompressobj()
    produced = 0
    position = len(_PNG_MAGIC)
    try:
        while position + 8 <= len(data) and produced < expected:
            (length,) = struct.unpack_from(">I", data, position)
            if data[position + 4 : position + 8] == b"IDAT":
                pending = data[position + 8 : position + 8 + length]
                while pending and produced < expected:
                    produced += len(inflater.decompress(pending, _INFLATE_STEP))
                    pending = inflater.unconsumed_tail
            position += 12 + length
        while produced < expected and not inflater.eof:
            step = inflater.decompress(b"", _INFLATE_STEP)
            if not step:
                break
            produced += len(step)
    except zlib.error:
        return False
    return produced >= expected


def validate_image(
    data: bytes, declared_type: str | None, *, max_bytes: int, max_pixels: int
) -> ValidatedImage:
    """The upload as the model will receive it, or the ApiError that refuses it."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the image is larger than {max_bytes} bytes")
    if not data:
        raise InvalidParameter("the image is empty", code="empty_image")
    declared = normalise_content_type(declared_type)
    if declared not in _UNTYPED and declared not in _DECLARED_FORMATS:
        raise UnsupportedMediaType(
            f"content type {declared or 'none'} is not accepted; send image/png, image/jpeg or "
            "application/dicom"
        )
    detected = _sniff(data)
    if detected is None:
        raise UnsupportedMediaType("the bytes are not a PNG or JPEG image")
    if declared in _DECLARED_FORMATS and _DECLARED_FORMATS[declared] != detected:
        raise UnsupportedMediaType(
            f"the declared type {declared} does not match the image bytes ({detected})",
            code="content_type_mismatch",
        )
    if detected == "PNG":
        end = _png_end(data)
        if end is not None and end != len(data):
            # A polyglot (PNG + ZIP, PNG + HTML...): nothing may follow IEND. (JPEG trailers are
            # common in camera files and ignored by decoders; they pass.)
            raise InvalidImage("data follows the end of the PNG image")
    try:
        image = Image.open(io.BytesIO(data), formats=[detected])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels(f"the image has more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidImage("the image cannot be read") from None
    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidImage("the image has no pixels")
        if width * height > max_pixels:
            raise TooManyPixels(f"the image has more than {max_pixels} pixels")
        return _checked(image, data, detected, width, height)


def _checked(
    image: Image.Image, data: bytes, detected: str, width: int, height: int
) -> ValidatedImage:
    upload_mode = image.mode

    def validated(
        model_bytes: bytes, shown_width: int, shown_height: int, transformation: str | None = None
    ) -> ValidatedImage:
        return ValidatedImage(
            data=model_bytes,
            content_type="image/png" if transformation or detected == "PNG" else "image/jpeg",
            format=detected,
            width=shown_width,
            height=shown_height,
            mode=upload_mode,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            transformation=transformation,
        )

    try:
        if detected == "PNG":
            image.verify()  # every chunk's CRC and the chunk structure
            if not _png_stream_complete(data):
                raise InvalidImage("the PNG image data is cut short or corrupt")
            return validated(data, width, height)
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        needs_rgb = upload_mode == "CMYK"
        rotated = orientation in range(2, 9)
        if not needs_rgb and not rotated:
            # JPEG has no checksums: decoding is the only integrity check. At 1/8 scale the
            # whole entropy stream is still read, for a fraction of the work.
            image.draft(upload_mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
            return validated(data, width, height)
        image.load()
        fixed: Image.Image = ImageOps.exif_transpose(image) if rotated else image
        if fixed.mode == "CMYK":
            fixed = fixed.convert("RGB")
        buffer = io.BytesIO()
        fixed.save(buffer, format="PNG", compress_level=1)
        reasons = [
            name
            for name, done in (("cmyk_to_rgb", needs_rgb), ("exif_orientation", rotated))
            if done
        ]
        return validated(buffer.getvalue(), fixed.width, fixed.height, "+".join(reasons))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidImage("the image is truncated or corrupt") from None
