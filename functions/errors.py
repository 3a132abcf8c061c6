"""One error vocabulary for the functions: a machine code, an HTTP status and a message each.

Cores raise these; `functions.web` turns them into JSON in one place. Three shapes exist because
three standards ask for them: the API's `{"error", "message"}`, RFC 6749's `{"error",
"error_description"}` on the token endpoint, and RFC 6750's `WWW-Authenticate` challenge on
bearer-protected routes (its body still uses the API shape). Messages are written for the caller:
never a storage key, bucket, upstream URL, secret or exception text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "BEARER_REALM",
    "ApiError",
    "BadGateway",
    "BearerChallenge",
    "InvalidDicom",
    "InvalidImage",
    "InvalidParameter",
    "MethodNotAllowed",
    "MissingPixelData",
    "ModelTimeout",
    "ModelUnavailable",
    "NotAChestXray",
    "NotFound",
    "OAuthError",
    "PayloadTooLarge",
    "StorageUnavailableError",
    "TooManyPixels",
    "UnsupportedDicomImage",
    "UnsupportedMediaType",
    "UnsupportedModality",
    "UnsupportedTransferSyntax",
    "bearer_challenge",
]

BEARER_REALM = "xray"

# RFC 6749 §5.2 / RFC 6750 §3: error_description is printable ASCII without '"' and '\'.
_DESCRIPTION_ALLOWED = re.compile(r"^[\x20\x21\x23-\x5B\x5D-\x7E]*$")


def _checked_description(text: str) -> str:
    if not _DESCRIPTION_ALLOWED.match(text):
        raise ValueError(f"error description is not RFC 6749 safe: {text!r}")
    return text


class ApiError(Exception):
    """A failure the caller is told about: `{"error": code, "message": message}` with `status`."""

    status: int = 500
    code: str = "internal"
    default_message: str = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})
        # Extra, safe fields merged into the JSON body (e.g. the valid class names).
        self.details: dict[str, object] = dict(details or {})
        super().__init__(self.message)

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, **self.details}


class InvalidParameter(ApiError):
    status = 400
    code = "invalid_parameter"
    default_message = "a request parameter is invalid"


class NotFound(ApiError):
    status = 404
    code = "not_found"
    default_message = "no such resource"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"
    default_message = "method not allowed on this resource"

    def __init__(self, allowed: list[str], message: str | None = None) -> None:
        self.allowed = sorted(set(allowed))
        super().__init__(message, headers={"Allow": ", ".join(self.allowed)})


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    default_message = "the request body is too large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"
    default_message = "only PNG, JPEG and DICOM images are accepted"


class UnsupportedTransferSyntax(UnsupportedMediaType):
    """A DICOM file encoded in a way no decoder here reads (video, JPIP, a private syntax)."""

    code = "unsupported_transfer_syntax"
    default_message = "the DICOM transfer syntax is not supported"


class InvalidImage(ApiError):
    status = 422
    code = "invalid_image"
    default_message = "the image cannot be decoded"


class InvalidDicom(ApiError):
    """Not a readable DICOM file: no Part 10 header, truncated, corrupt attributes or pixels."""

    status = 422
    code = "invalid_dicom"
    default_message = "the DICOM file cannot be read"


class MissingPixelData(ApiError):
    status = 422
    code = "missing_pixel_data"
    default_message = "the DICOM file has no pixel data"


class UnsupportedModality(ApiError):
    """A DICOM object that is not a projection X-ray (CT, MR, US, a segmentation...)."""

    status = 422
    code = "unsupported_modality"
    default_message = "only projection X-rays (CR, DX, Secondary Capture) are accepted"


class UnsupportedDicomImage(ApiError):
    """A DICOM image laid out in a way not read here (1-bit, unknown photometric...)."""

    status = 422
    code = "unsupported_dicom_image"
    default_message = "this DICOM image layout is not supported"


class NotAChestXray(ApiError):
    """The model says the image is not a frontal chest X-ray of the kind it was trained on."""

    status = 422
    code = "not_a_chest_xray"
    default_message = "this does not look like a frontal chest X-ray"


class TooManyPixels(ApiError):
    status = 422
    code = "too_many_pixels"
    default_message = "the image has too many pixels"


class ModelUnavailable(ApiError):
    status = 503
    code = "model_unavailable"
    default_message = "the model server is unavailable; retry later"

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ModelTimeout(ApiError):
    status = 504
    code = "model_timeout"
    default_message = "the model server did not answer in time"


class BadGateway(ApiError):
    """The model server answered with an error or with something that is not a valid answer."""

    status = 502
    code = "model_error"
    default_message = "the model server answered with an error"


class StorageUnavailableError(ApiError):
    status = 503
    code = "storage_unavailable"
    default_message = "storage is unavailable; retry later"

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class OAuthError(ApiError):
    """An RFC 6749 §5.2 token-endpoint error: `{"error": code, "error_description": ...}`."""

    status = 400

    def __init__(
        self,
        code: str,
        description: str,
        *,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(_checked_description(description), code=code, status=status)
        self.headers.update(headers or {})

    def body(self) -> dict[str, object]:
        return {"error": self.code, "error_description": self.message}


def bearer_challenge(error: str | None = None, description: str | None = None) -> str:
    """The `WWW-Authenticate` value of RFC 6750 §3 (no error attributes without credentials)."""
    parts = [f'realm="{BEARER_REALM}"']
    if error:
        parts.append(f'error="{error}"')
        if description:
            parts.append(f'error_description="{_checked_description(description)}"')
    return "Bearer " + ", ".join(parts)


class BearerChallenge(ApiError):
    """A refused bearer request (RFC 6750 §3.1): the API body plus `WWW-Authenticate`.

    `error=None` is the no-credentials case: 401 with a bare challenge and no error attribute.
    """

    def __init__(self, error: str | None, description: str) -> None:
        status = {None: 401, "invalid_request": 400, "invalid_token": 401}.get(error, 403)
        code = error or "authentication_required"
        super().__init__(
            _checked_description(description),
            code=code,
            status=status,
            headers={"WWW-Authenticate": bearer_challenge(error, description)},
        )
