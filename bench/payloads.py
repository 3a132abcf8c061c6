"""The requests each system under test is measured with, built once per run.

The same PNG files go to every system: as a multipart upload with a bearer token to the gateway
and the monolith (what the original clients send), and as TF Serving REST JSON with
`{"b64": ...}` image bytes straight to the model server (what the functions send).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from bench.loadgen import HttpRequest, multipart_body
from model_contract.artifact import (
    IMAGE_BYTES_INPUT,
    PREDICTED_CLASS,
    SERVING_SIGNATURE,
    TARGET_CLASS_INPUT,
)

__all__ = ["model_server_requests", "upload_requests"]


def upload_requests(
    path: str, images: Sequence[bytes], token: str, *, query: str = ""
) -> list[HttpRequest]:
    """One multipart `file` upload per image, authorised with `token`."""
    requests = []
    for index, image in enumerate(images):
        body, content_type = multipart_body("file", f"xray-{index}.png", image, "image/png")
        requests.append(
            HttpRequest(
                "POST",
                path + (f"?{query}" if query else ""),
                body,
                {"Content-Type": content_type, "Authorization": f"Bearer {token}"},
            )
        )
    return requests


def model_server_requests(
    model_name: str, version: int, signature: str, images: Sequence[bytes]
) -> list[HttpRequest]:
    """REST row-format predict requests (one image each) for `signature` of one version."""
    requests = []
    for image in images:
        encoded = {"b64": base64.b64encode(image).decode("ascii")}
        instance: object = (
            encoded
            if signature == SERVING_SIGNATURE
            else {IMAGE_BYTES_INPUT: encoded, TARGET_CLASS_INPUT: PREDICTED_CLASS}
        )
        body = json.dumps({"signature_name": signature, "instances": [instance]}).encode()
        requests.append(
            HttpRequest(
                "POST",
                f"/v1/models/{model_name}/versions/{version}:predict",
                body,
                {"Content-Type": "application/json"},
            )
        )
    return requests
