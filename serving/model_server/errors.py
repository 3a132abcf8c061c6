"""TF Serving's status vocabulary: canonical codes, their HTTP statuses, and one error type.

Every failure inside the model server is a `ServingError(code, message)`; REST maps the code to
HTTP with TF Serving's table (http_server.cc ToHTTPStatusCode) and gRPC passes it through.
"""

from __future__ import annotations

import enum

__all__ = ["Code", "ServingError"]


class Code(enum.IntEnum):
    """tensorflow.error.Code (the same numbers as gRPC's status codes)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self, 500)


_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
}


class ServingError(Exception):
    """A failed request or load, with TF Serving's code and message."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def status_string(self) -> str:
        """`INVALID_ARGUMENT: message`, as TF's Status::ToString prints a nested status."""
        return f"{self.code.name}: {self.message}"

    @classmethod
    def invalid_argument(cls, message: str) -> ServingError:
        return cls(Code.INVALID_ARGUMENT, message)

    @classmethod
    def not_found(cls, message: str) -> ServingError:
        return cls(Code.NOT_FOUND, message)

    @classmethod
    def failed_precondition(cls, message: str) -> ServingError:
        return cls(Code.FAILED_PRECONDITION, message)

    @classmethod
    def unimplemented(cls, message: str) -> ServingError:
        return cls(Code.UNIMPLEMENTED, message)

    @classmethod
    def unavailable(cls, message: str) -> ServingError:
        return cls(Code.UNAVAILABLE, message)

    @classmethod
    def internal(cls, message: str) -> ServingError:
        return cls(Code.INTERNAL, message)
