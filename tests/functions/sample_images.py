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


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a PNG."""
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        chunks.append(
            (data[position + 4 : position + 8], data[position + 8 : position + 8 + length])
        )
        position += 12 + length
    return chunks


def png_with_stream(data: bytes, transform: object) -> bytes:
    """The PNG with its joined IDAT stream replaced by `transform(stream)` in one IDAT chunk,
    every chunk's CRC valid (so only inflating the stream can tell it is broken)."""
    chunks = png_chunks(data)
    stream = b"".join(body for kind, body in chunks if kind == b"IDAT")
    out, written = [b"\x89PNG\r\n\x1a\n"], False
    for kind, body in chunks:
        if kind != b"IDAT":
            out.append(_chunk(kind, body))
        elif not written:
            out.append(_chunk(b"IDAT", transform(stream)))  # type: ignore[operator]
            written = True
    return b"".join(out)


def interlaced_png(width: int = 37, height: int = 23) -> bytes:
    """A valid Adam7-interlaced 8-bit grey PNG (Pillow cannot write one)."""
    rows = [bytes((x * 7 + y * 3) % 256 for x in range(width)) for y in range(height)]
    raw = b""
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
        columns = range(x0, width, dx)
        if not columns:
            continue
        for y in range(y0, height, dy):
            raw += b"\x00" + bytes(rows[y][x] for x in columns)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )
