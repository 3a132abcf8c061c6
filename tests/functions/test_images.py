"""Upload validation: every bad image gets its defined refusal; good ones pass unchanged."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from functions.errors import ApiError
from functions.images import validate_image
from tests.functions.sample_images import (
    bomb_png,
    gif_bytes,
    interlaced_png,
    jpeg_bytes,
    png_bytes,
    png_with_stream,
)

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 50_000_000}


def _refusal(data: bytes, declared: str | None = "image/png", **limits: int) -> tuple[int, str]:
    with pytest.raises(ApiError) as caught:
        validate_image(data, declared, **{**LIMITS, **limits})
    return caught.value.status, caught.value.code


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (png_bytes(mode="L"), "image/png"),
        (png_bytes(mode="RGB"), "image/png"),
        (png_bytes(mode="RGBA"), "image/png"),
        (png_bytes(mode="LA"), "image/png"),
        (png_bytes(mode="P"), "image/png"),
        (png_bytes(mode="1"), "image/png"),
        (png_bytes(mode="I;16"), "image/png"),
        (png_bytes(), "application/octet-stream"),
        (png_bytes(), None),
        (jpeg_bytes(mode="L"), "image/jpeg"),
        (jpeg_bytes(mode="RGB"), "image/jpg"),
        (jpeg_bytes(orientation=1), "image/jpeg"),
    ],
)
def test_validate_image_supported_images_pass_unchanged(data: bytes, declared: str | None) -> None:
    image = validate_image(data, declared, **LIMITS)
    assert image.data is data  # the model gets the very bytes
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.size_bytes == len(data)
    assert (image.width, image.height) == (64, 48)
    assert image.transformation is None


def test_validate_image_cmyk_jpeg_is_reencoded_as_rgb_png() -> None:
    data = jpeg_bytes(mode="CMYK")
    image = validate_image(data, "image/jpeg", **LIMITS)
    assert image.transformation == "cmyk_to_rgb"
    assert image.content_type == "image/png"
    assert image.sha256 == hashlib.sha256(data).hexdigest()  # of what the user sent
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert (decoded.format, decoded.mode, decoded.size) == ("PNG", "RGB", (64, 48))


def test_validate_image_exif_rotated_jpeg_is_turned_upright() -> None:
    image = validate_image(jpeg_bytes(64, 48, orientation=6), "image/jpeg", **LIMITS)
    assert image.transformation == "exif_orientation"
    assert (image.width, image.height) == (48, 64)
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.size == (48, 64)


@pytest.mark.parametrize(
    ("data", "declared", "status", "code"),
    [
        (b"", "image/png", 400, "empty_image"),
        (gif_bytes(), "image/gif", 415, "unsupported_media_type"),
        (gif_bytes(), "application/octet-stream", 415, "unsupported_media_type"),
        (b"%PDF-1.4 not an image", "image/png", 415, "unsupported_media_type"),
        (png_bytes(), "image/jpeg", 415, "content_type_mismatch"),
        (jpeg_bytes(), "image/png", 415, "content_type_mismatch"),
        (png_bytes(), "text/plain", 415, "unsupported_media_type"),
        (png_bytes()[:200], "image/png", 422, "invalid_image"),
        (png_bytes()[:-5], "image/png", 422, "invalid_image"),
        (jpeg_bytes(256, 256)[:600], "image/jpeg", 422, "invalid_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", 422, "invalid_image"),
        (b"\xff\xd8\xff" + b"\x00" * 40, "image/jpeg", 422, "invalid_image"),
    ],
)
def test_validate_image_bad_uploads_get_their_defined_refusal(
    data: bytes, declared: str, status: int, code: str
) -> None:
    assert _refusal(data, declared) == (status, code)


def test_validate_image_corrupted_png_byte_is_refused() -> None:
    data = bytearray(png_bytes(256, 256, "RGB"))
    data[len(data) // 2] ^= 0xFF
    assert _refusal(bytes(data)) == (422, "invalid_image")


@pytest.mark.parametrize(
    "data",
    [
        png_bytes(256, 256, "L"),
        png_bytes(256, 256, "RGB"),
        png_bytes(256, 256, "I;16"),
        png_bytes(256, 256, "P"),
        png_bytes(256, 256, "1"),
        interlaced_png(),
    ],
    ids=["L", "RGB", "I;16", "P", "1", "interlaced"],
)
def test_validate_image_png_stream_cut_short_under_valid_checksums_is_422(data: bytes) -> None:
    assert validate_image(data, "image/png", **LIMITS).data is data  # whole: it passes

    for cut in (
        png_with_stream(data, lambda stream: stream[: len(stream) // 2]),  # cut off
        png_with_stream(data, lambda stream: stream[: -5 - len(stream) // 10]),  # the end lost
        png_with_stream(data, lambda stream: stream[:2] + bytes(len(stream) - 2)),  # garbled
    ):
        assert _refusal(cut) == (422, "invalid_image")


def test_validate_image_png_stream_whole_with_extra_idat_splits_passes() -> None:
    data = png_bytes(256, 256, "RGB")
    # Pillow's own decoder accepts the same stream split over several IDAT chunks.
    image = validate_image(png_with_stream(data, lambda stream: stream), "image/png", **LIMITS)

    assert (image.width, image.height) == (256, 256)


def test_validate_image_pixel_cap_is_enforced_before_decoding() -> None:
    assert _refusal(png_bytes(64, 48), max_pixels=64 * 48 - 1) == (422, "too_many_pixels")


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")  # the module's policy
@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (20_000, 20_000)])
def test_validate_image_decompression_bombs_are_refused(width: int, height: int) -> None:
    # 100 MP sits in Pillow's warning-only zone; 400 MP is past its own error threshold.
    data = bomb_png(width, height)
    assert len(data) < 100_000
    assert _refusal(data, max_pixels=89_478_485) == (422, "too_many_pixels")


def test_validate_image_over_the_size_cap_is_413() -> None:
    assert _refusal(png_bytes(), max_bytes=100) == (413, "payload_too_large")


def _numpy_statistics(data: bytes) -> dict[str, float]:
    """The statistics as NumPy computes them (the function's former body), for comparison."""
    import numpy as np

    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            image.draft("L", (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
        image.load()
        sixteen = image.mode in ("I;16", "I;16B", "I;16L", "I")
        if sixteen:
            grey = image.convert("I")
        elif image.mode in ("RGBA", "LA"):
            grey = image.convert("RGB").convert("L")
        else:
            grey = image.convert("L")
        factor = max(1, -(-max(grey.size) // 128))
        grey = grey.reduce(factor) if factor > 1 else grey
        values = np.clip(np.asarray(grey, np.float64) / (65535.0 if sixteen else 255.0), 0, 1)
    return {"mean": round(float(values.mean()), 5), "std": round(float(values.std()), 5)}


@pytest.mark.parametrize(
    ("mode", "fmt", "side"),
    [
        ("L", "PNG", 256),
        ("L", "PNG", 97),
        ("I;16", "PNG", 300),
        ("RGB", "PNG", 200),
        ("RGBA", "PNG", 129),
        ("LA", "PNG", 64),
        ("L", "JPEG", 512),
        ("RGB", "JPEG", 256),
    ],
)
def test_image_statistics_agree_with_numpy_without_importing_it(
    mode: str, fmt: str, side: int
) -> None:
    import numpy as np

    from functions.images import image_statistics

    rng = np.random.default_rng(side)
    if mode == "I;16":
        pixels = rng.integers(0, 65536, (side, side), dtype=np.uint16)
        image = Image.fromarray(pixels)  # mode I;16
    else:
        channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (side, side, channels), dtype=np.uint8)
        image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = buffer.getvalue()
    stats = image_statistics(data)
    expected = _numpy_statistics(data)
    assert abs(stats["mean"] - expected["mean"]) <= 1e-5
    assert abs(stats["std"] - expected["std"]) <= 1e-5
    assert 0 < stats["mean"] < 1
    assert 0 < stats["std"] < 0.5
