"""Test images made on the spot with Pillow and NumPy, including hostile ones built by hand."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(width: int = 64, height: int = 48, mode: str = "L") -> bytes:
    rng = np.random.default_rng(width * 1000 + height)
    if mode == "I;16":
        array = (rng.random((height, width)) * 4095).astype(np.uint16)
        image = Image.fromarray(array)
    else:
        image = Image.new(mode, (width, height))
        if mode in ("L", "RGB", "RGBA", "LA"):
            channels = len(mode)
            shape = (height, width) if channels == 1 else (height, width, channels)
            image = Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(
    width: int = 64, height: int = 48, mode: str = "L", orientation: int | None = None
) -> bytes:
    rng = np.random.default_rng(width + height)
    if mode == "CMYK":
        image = Image.new("CMYK", (width, height), (20, 40, 60, 10))
    else:
        channels = len(mode)
        shape = (height, width) if channels == 1 else (height, width, channels)
        image = Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode)
    buffer = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(buffer, format="JPEG", exif=exif)
    else:
        image.save(buffer, format="JPEG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of zero rows declaring `width` x `height`: tiny file, huge image."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def png_16bit_rgb(width: int = 32, height: int = 24) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one, so it is built by hand)."""
    rng = np.random.default_rng(16)
    pixels = (rng.random((height, width, 3)) * 65535).astype(">u2")
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def palette_png_with_transparency(width: int = 64, height: int = 48) -> bytes:
    image = Image.new("P", (width, height))
    image.putpalette([value for index in range(256) for value in (index, index, index)])
    image.putdata([(x + y) % 256 for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims `width` x `height` (a JPEG bomb)."""
    data = bytearray(jpeg_bytes(16, 16))
    start = data.index(b"\xff\xc0")  # baseline frame header: marker, length, precision, H, W
    struct.pack_into(">HH", data, start + 5, height, width)
    return bytes(data)


def zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.txt", "not an image")
    return buffer.getvalue()
