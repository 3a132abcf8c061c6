"""Every kind of upload, good or hostile, gets its defined answer (a result or a JSON 4xx) and
never a 500; refusals reach neither the model nor the store; file names never reach a key.

One table, run through the predict function as a client sends it: a raw body with a content
type, a multipart `file` part (with a part type and a file name), or either one chunked without
Content-Length (as gunicorn hands a chunked request to the app: `wsgi.input_terminated`).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from functions.users import parse_users_csv
from storage import keys
from tests.functions.conftest import Stack
from tests.functions.sample_images import (
    bomb_png,
    gif_bytes,
    jpeg_bytes,
    jpeg_declaring,
    palette_png_with_transparency,
    png_16bit_rgb,
    png_bytes,
    zip_bytes,
)

CAP = 10 * 1024 * 1024


def _corrupt_crc() -> bytes:
    data = bytearray(png_bytes(128, 96, "RGB"))
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


@dataclass(frozen=True)
class Upload:
    body: Callable[[], bytes]
    declared: str | None = "image/png"  # the raw Content-Type, or the multipart part's type
    how: str = "raw"  # raw, multipart, raw-chunked, multipart-chunked
    filename: str = "xray.png"
    status: int = 200
    code: str | None = None  # the error code, for refusals
    check: Callable[[dict[str, Any]], bool] = lambda record: True  # for results


def _facts(**expected: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda record: all(record["input"][name] == value for name, value in expected.items())


UPLOADS: dict[str, Upload] = {
    # -- supported images: a result, the bytes reach the model unchanged --------------------
    "png grey": Upload(lambda: png_bytes(mode="L"), check=_facts(mode="L", format="PNG")),
    "png rgb": Upload(lambda: png_bytes(mode="RGB"), check=_facts(mode="RGB")),
    "png rgba": Upload(lambda: png_bytes(mode="RGBA"), check=_facts(mode="RGBA")),
    "png grey+alpha": Upload(lambda: png_bytes(mode="LA"), check=_facts(mode="LA")),
    "png palette": Upload(lambda: png_bytes(mode="P"), check=_facts(mode="P")),
    "png palette with tRNS": Upload(palette_png_with_transparency, check=_facts(mode="P")),
    "png 1-bit": Upload(lambda: png_bytes(mode="1"), check=_facts(mode="1")),
    "png 16-bit grey": Upload(lambda: png_bytes(mode="I;16"), check=_facts(mode="I;16")),
    "png 16-bit rgb": Upload(png_16bit_rgb, check=_facts(width=32, height=24)),
    "png as octet-stream": Upload(png_bytes, "application/octet-stream"),
    "png with charset param": Upload(png_bytes, "image/png; charset=binary"),
    "png upper-case type": Upload(png_bytes, "IMAGE/PNG"),
    "jpeg grey": Upload(lambda: jpeg_bytes(mode="L"), "image/jpeg", check=_facts(format="JPEG")),
    "jpeg rgb as image/jpg": Upload(lambda: jpeg_bytes(mode="RGB"), "image/jpg"),
    "jpeg with zip trailer": Upload(lambda: jpeg_bytes() + zip_bytes(), "image/jpeg"),
    "jpeg upright exif": Upload(
        lambda: jpeg_bytes(orientation=1), "image/jpeg", check=_facts(transformation=None)
    ),
    # -- accepted, but re-encoded for the model (and the record says so) --------------------
    "jpeg cmyk": Upload(
        lambda: jpeg_bytes(mode="CMYK"), "image/jpeg", check=_facts(transformation="cmyk_to_rgb")
    ),
    "jpeg exif rotated 90": Upload(
        lambda: jpeg_bytes(64, 48, orientation=6),
        "image/jpeg",
        check=_facts(transformation="exif_orientation", width=48, height=64),
    ),
    "jpeg exif rotated 180": Upload(
        lambda: jpeg_bytes(64, 48, orientation=3),
        "image/jpeg",
        check=_facts(transformation="exif_orientation", width=64, height=48),
    ),
    # -- transports ------------------------------------------------------------------------
    "multipart png": Upload(png_bytes, how="multipart"),
    "multipart part without type": Upload(png_bytes, None, how="multipart"),
    "chunked raw png": Upload(png_bytes, how="raw-chunked"),
    "chunked multipart jpeg": Upload(jpeg_bytes, "image/jpeg", how="multipart-chunked"),
    # -- file names never reach a key ------------------------------------------------------
    "traversal file name": Upload(
        png_bytes, how="multipart", filename="../../input/db_auth/authentication.csv"
    ),
    "absolute file name": Upload(png_bytes, how="multipart", filename="/etc/passwd"),
    "windows file name": Upload(png_bytes, how="multipart", filename="C:\\x\\..\\..\\boot.ini"),
    "nul in file name": Upload(png_bytes, how="multipart", filename="a\0b.png"),
    "long file name": Upload(png_bytes, how="multipart", filename="n" * 5000 + ".png"),
    "unicode file name": Upload(png_bytes, how="multipart", filename="рентген 🫁.png"),
    # -- empty -----------------------------------------------------------------------------
    "zero bytes": Upload(lambda: b"", status=400, code="empty_image"),
    "zero bytes without type": Upload(lambda: b"", None, status=400, code="empty_image"),
    "zero-byte multipart file": Upload(
        lambda: b"", how="multipart", status=400, code="empty_image"
    ),
    "zero bytes chunked": Upload(lambda: b"", how="raw-chunked", status=400, code="empty_image"),
    # -- wrong or missing types ------------------------------------------------------------
    "no content type": Upload(png_bytes, None, status=415, code="unsupported_media_type"),
    "text/plain": Upload(png_bytes, "text/plain", status=415, code="unsupported_media_type"),
    "text/html": Upload(png_bytes, "text/html", status=415, code="unsupported_media_type"),
    "json type": Upload(png_bytes, "application/json", status=415, code="unsupported_media_type"),
    "gif": Upload(gif_bytes, "image/gif", status=415, code="unsupported_media_type"),
    "gif declared png": Upload(gif_bytes, status=415, code="unsupported_media_type"),
    "svg": Upload(
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        "image/svg+xml",
        status=415,
        code="unsupported_media_type",
    ),
    "png declared jpeg": Upload(png_bytes, "image/jpeg", status=415, code="content_type_mismatch"),
    "jpeg declared png": Upload(jpeg_bytes, status=415, code="content_type_mismatch"),
    "multipart part text/html": Upload(
        png_bytes, "text/html", how="multipart", status=415, code="unsupported_media_type"
    ),
    "zip": Upload(zip_bytes, "application/zip", status=415, code="unsupported_media_type"),
    # -- polyglots -------------------------------------------------------------------------
    "png + zip": Upload(lambda: png_bytes() + zip_bytes(), status=422, code="invalid_image"),
    "png + html": Upload(
        lambda: png_bytes() + b"<html><script>alert(1)</script></html>",
        status=422,
        code="invalid_image",
    ),
    "png header on gif": Upload(
        lambda: b"\x89PNG\r\n\x1a\n" + gif_bytes(), status=422, code="invalid_image"
    ),
    "jpeg header on gif": Upload(
        lambda: b"\xff\xd8\xff" + gif_bytes(), "image/jpeg", status=422, code="invalid_image"
    ),
    # -- truncated and corrupt -------------------------------------------------------------
    "png truncated in IDAT": Upload(lambda: png_bytes()[:300], status=422, code="invalid_image"),
    "png without IEND": Upload(lambda: png_bytes()[:-12], status=422, code="invalid_image"),
    "png bad crc": Upload(_corrupt_crc, status=422, code="invalid_image"),
    "png magic only": Upload(lambda: b"\x89PNG\r\n\x1a\n", status=422, code="invalid_image"),
    "png zero width": Upload(lambda: bomb_png(0, 10), status=422, code="invalid_image"),
    "jpeg truncated": Upload(
        lambda: jpeg_bytes(256, 256)[:600], "image/jpeg", status=422, code="invalid_image"
    ),
    "jpeg magic and zeros": Upload(
        lambda: b"\xff\xd8\xff" + b"\0" * 100, "image/jpeg", status=422, code="invalid_image"
    ),
    # -- pixel floods and decompression bombs (refused before any pixel is decoded) --------
    "png bomb 400 MP": Upload(lambda: bomb_png(20_000, 20_000), status=422, code="too_many_pixels"),
    "png bomb 100 MP (pillow's warning zone)": Upload(
        lambda: bomb_png(10_000, 10_000), status=422, code="too_many_pixels"
    ),
    "png over MAX_PIXELS": Upload(
        lambda: bomb_png(8_000, 7_000), status=422, code="too_many_pixels"
    ),
    "jpeg bomb 3.6 GP": Upload(
        lambda: jpeg_declaring(60_000, 60_000), "image/jpeg", status=422, code="too_many_pixels"
    ),
    "multipart png bomb": Upload(
        lambda: bomb_png(20_000, 20_000), how="multipart", status=422, code="too_many_pixels"
    ),
    # -- too large -------------------------------------------------------------------------
    "over the cap": Upload(
        lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * CAP, status=413, code="payload_too_large"
    ),
    "over the cap chunked": Upload(
        lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * (CAP + 200_000),
        how="raw-chunked",
        status=413,
        code="payload_too_large",
    ),
    "over the cap multipart chunked": Upload(
        lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * (CAP + 200_000),
        how="multipart-chunked",
        status=413,
        code="payload_too_large",
    ),
}


def _multipart(body: bytes, declared: str | None, filename: str) -> tuple[bytes, str]:
    boundary = "----upload-table-boundary"
    safe_name = filename.replace('"', "%22").encode("utf-8", "surrogatepass")
    part = [
        f"--{boundary}\r\n".encode(),
        b'Content-Disposition: form-data; name="file"; filename="' + safe_name + b'"\r\n',
    ]
    if declared is not None:
        part.append(f"Content-Type: {declared}\r\n".encode())
    payload = b"".join([*part, b"\r\n", body, f"\r\n--{boundary}--\r\n".encode()])
    return payload, f"multipart/form-data; boundary={boundary}"


def _send(stack: Stack, upload: Upload, body: bytes) -> Any:
    headers = stack.bearer()
    if upload.how.startswith("multipart"):
        payload, content_type = _multipart(body, upload.declared, upload.filename)
        headers["Content-Type"] = content_type
    else:
        payload = body
        if upload.declared is not None:
            headers["Content-Type"] = upload.declared
    client = stack.client("predict")
    if upload.how.endswith("chunked"):
        return client.post(
            "/",
            input_stream=io.BytesIO(payload),
            headers={**headers, "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
        )
    return client.post("/", data=payload, headers=headers)


# A file left open by a refused upload (ResourceWarning when collected) fails the row; Pillow's
# bomb warning is an error, as functions.images makes it in production.
@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", list(UPLOADS), ids=list(UPLOADS))
def test_upload_table_each_upload_gets_its_defined_answer(stack: Stack, name: str) -> None:
    upload = UPLOADS[name]
    body = upload.body()
    users_file = stack.auth_store.get_bytes(keys.USERS_FILE)

    response = _send(stack, upload, body)

    assert response.status_code == upload.status, response.get_data()[:300]
    assert response.mimetype == "application/json"  # never HTML, even for 413
    answer = response.get_json()
    written = stack.root.list_keys("output/")
    if upload.status == 200:
        assert answer["input"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert upload.check(answer), answer["input"]
        assert written == [keys.inference_record("1", answer["id"])]
        # One request, or more if the client retried a slow answer (the test stack's read
        # timeout is 1 s, which a loaded machine can exceed): each carries the same bytes.
        received = stack.fake.requests
        assert received
        assert all(request.images == received[0].images for request in received)
        if answer["input"]["transformation"] is None:
            assert received[0].images == [body]  # unchanged bytes reach the model
        else:
            assert received[0].images[0].startswith(b"\x89PNG")
    else:
        assert set(answer) >= {"error", "message"}
        assert answer["error"] == upload.code
        assert written == []
        assert stack.fake.requests == []
    # Whatever the name said, only the record's key was written and the users file is intact.
    assert set(stack.root.list_keys("")) == {*written, "input/db_auth/authentication.csv"}
    assert stack.auth_store.get_bytes(keys.USERS_FILE) == users_file
    assert parse_users_csv(users_file).users


def test_upload_table_gradcam_refuses_alike(stack: Stack) -> None:
    # The gradcam function shares the validation: a few rows through it, nothing stored.
    for name in ("png + zip", "png bomb 400 MP", "zero bytes", "gif", "jpeg truncated"):
        upload = UPLOADS[name]
        response = stack.client("gradcam").post(
            "/",
            data=upload.body(),
            headers={**stack.bearer(), "Content-Type": upload.declared or ""},
        )
        assert (response.status_code, response.get_json()["error"]) == (upload.status, upload.code)
    assert stack.root.list_keys("output/") == []
    assert stack.fake.requests == []
