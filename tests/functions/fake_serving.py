"""A fake TF Serving REST server on 127.0.0.1: answers like the real one, or fails on demand.

It checks each request the way TF Serving would (path, signature, row format, `{"b64": ...}`),
answers per docs/CONTRACTS.md, and records what it received. Behaviours: `ok()`, `status(code)`,
`hang(seconds)`, `garbage()`, `wrong_shape()`, `non_finite()`, `drop(times)` (close the
connection without answering), each optionally for the next `times` requests only; `version`
can be changed at any time (a model version swap). The versions in `versions_without_overlay`
were "exported before `gradcam_overlay` existed": asked for it, they answer TF Serving's 400.
The labels in `unassigned_labels` are not assigned to any version yet (the first model sync, a
version that failed to load): asked for by label, they answer TF Serving's 400 `Unrecognized
servable version label: <label>`.

Run as a process (`python -m tests.functions.fake_serving --port N`), it is told what to do over
HTTP: `POST /_control` with `{"action": "hang", "seconds": 5, "times": 1}` (any method above, or
`{"action": "set", "version": 4}`, also `versions_without_overlay`, `unassigned_labels`), and
`GET /_control`
reports what it has seen.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

CLASS_NAMES = ["normal", "covid", "no-covid"]
_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:predict$")


# The fake's overlay is larger than its heatmap, as a real model's display overlay is.
OVERLAY_SIZE = 16
HEATMAP_SIZE = 8
_GRADCAM_SIGNATURES = ("gradcam", "gradcam_overlay")


def overlay_png(size: int = OVERLAY_SIZE) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class ReceivedRequest:
    path: str
    model: str
    version: str | None
    label: str | None
    signature: str
    images: list[bytes]
    target_classes: list[int]
    version_answered: int = 0
    refused: bool = False  # answered 400: the version lacks the signature


@dataclass
class _Behaviour:
    kind: str = "ok"
    times: int | None = None  # None: until changed
    status: int = 500
    body: bytes = b'{"error": "INTERNAL: boom"}'
    seconds: float = 0.0


@dataclass
class FakeTFServing:
    version: int = 3
    model_name: str = "cnn_vit"
    run_id: str = "20261127T101500Z-ab12cd"
    predicted_index: int = 1
    # The refer_threshold output; None: a version exported before abstention (no such output).
    refer_threshold: float | None = None
    # The ood_reason and ood_score outputs; None: a version exported before the check.
    ood_reason: str | None = None
    ood_score: float = 0.0
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    heatmap_size: int = HEATMAP_SIZE
    overlay_size: int = OVERLAY_SIZE
    versions_without_overlay: set[int] = field(default_factory=set)
    unassigned_labels: set[str] = field(default_factory=set)
    # Per version label (canary tests): the version that answers it, the class it predicts,
    # a delay before answering, and a status it answers instead (503...).
    label_versions: dict[str, int] = field(default_factory=dict)
    label_predicted: dict[str, int] = field(default_factory=dict)
    label_delay: dict[str, float] = field(default_factory=dict)
    label_status: dict[str, int] = field(default_factory=dict)
    requests: list[ReceivedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._behaviours: list[_Behaviour] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        # Bumped by ok(): a request hung under an earlier behaviour (an earlier test) is
        # dropped when its hang ends instead of being recorded as if it came from the next one.
        self._generation = 0
        self._server: ThreadingHTTPServer | None = None
        self.attempts = 0  # every HTTP request, answered or not

    # -- control -------------------------------------------------------------------------------

    def _push(self, behaviour: _Behaviour) -> FakeTFServing:
        with self._lock:
            if behaviour.times is None:
                self._behaviours = [behaviour]
            else:
                self._behaviours.insert(0, behaviour)
        return self

    def ok(self) -> FakeTFServing:
        with self._lock:
            self._behaviours = []
            self._generation += 1
        return self

    def status(
        self, code: int, body: bytes | None = None, times: int | None = None
    ) -> FakeTFServing:
        default = json.dumps({"error": f"status {code} from the fake"}).encode()
        return self._push(_Behaviour("status", times, code, body or default))

    def hang(self, seconds: float, times: int | None = None) -> FakeTFServing:
        return self._push(_Behaviour("hang", times, seconds=seconds))

    def garbage(self, times: int | None = None) -> FakeTFServing:
        return self._push(_Behaviour("raw", times, 200, b"<html>not json</html>"))

    def raw(self, body: bytes, times: int | None = None) -> FakeTFServing:
        return self._push(_Behaviour("raw", times, 200, body))

    def wrong_shape(self, times: int | None = None) -> FakeTFServing:
        return self._push(_Behaviour("wrong_shape", times))

    def non_finite(self, times: int | None = None) -> FakeTFServing:
        return self._push(_Behaviour("non_finite", times))

    def drop(self, times: int | None = None) -> FakeTFServing:
        return self._push(_Behaviour("drop", times))

    def _next_behaviour(self) -> _Behaviour:
        with self._lock:
            if not self._behaviours:
                return _Behaviour()
            behaviour = self._behaviours[0]
            if behaviour.times is not None:
                behaviour.times -= 1
                if behaviour.times <= 0:
                    self._behaviours.pop(0)
            return behaviour

    # -- server --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> FakeTFServing:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY, delayed ACKs
            # stall every kept-alive answer by about 40 ms.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_POST(self) -> None:
                if self.path == "/_control":
                    fake._control(self)
                    return
                fake._handle(self)

            def do_GET(self) -> None:
                if self.path == "/_control":
                    fake._report(self)
                    return
                fake._send(self, 404, b"<html>not found</html>", "text/html")

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str = "application/json",
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _control(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        command = json.loads(handler.rfile.read(length) or b"{}")
        action = command.pop("action")
        if action == "set":
            for name in (
                "version",
                "predicted_index",
                "run_id",
                "refer_threshold",
                "ood_reason",
                "ood_score",
            ):
                if name in command:
                    setattr(self, name, command[name])
            if "versions_without_overlay" in command:
                self.versions_without_overlay = set(command["versions_without_overlay"])
            if "unassigned_labels" in command:
                self.unassigned_labels = set(command["unassigned_labels"])
        elif action == "reset":
            self.ok()
            with self._lock:
                self.requests.clear()
                self.attempts = 0
        elif action == "status":
            body = command.get("body")
            self.status(command["code"], body.encode() if body else None, command.get("times"))
        else:
            getattr(self, action)(**command)  # ok, hang, garbage, wrong_shape, non_finite, drop
        self._report(handler)

    def _report(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            report = {
                "attempts": self.attempts,
                "answered": sum(not request.refused for request in self.requests),
                "version": self.version,
                "versions_answered": [
                    request.version_answered for request in self.requests if not request.refused
                ],
            }
        self._send(handler, 200, json.dumps(report).encode())

    def _error(self, handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
        self._send(handler, status, json.dumps({"error": message}).encode())

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        with self._lock:
            self.attempts += 1
        behaviour = self._next_behaviour()
        if behaviour.kind == "drop":
            handler.close_connection = True
            handler.connection.close()
            return
        if behaviour.kind == "hang":
            with self._lock:
                generation = self._generation
            self._release.wait(behaviour.seconds)
            with self._lock:
                stale = generation != self._generation
            if stale:
                handler.close_connection = True
                handler.connection.close()
                return
        if behaviour.kind == "status":
            self._send(handler, behaviour.status, behaviour.body)
            return
        if behaviour.kind == "raw":
            self._send(handler, behaviour.status, behaviour.body)
            return
        match = _PATH.match(handler.path)
        if not match:
            self._error(handler, 400, f"Malformed request: POST {handler.path}")
            return
        try:
            request = json.loads(raw)
        except ValueError as exc:
            self._error(handler, 400, f"JSON Parse error: {exc}")
            return
        label = match.group(3)
        if label is not None and label in self.unassigned_labels:
            # TF Serving resolves the label after parsing, before the signature (tfserving.md).
            self._error(handler, 400, f"Unrecognized servable version label: {label}")
            return
        if label is not None and label in self.label_status:
            self._error(handler, self.label_status[label], f"status for label {label}")
            return
        if label is not None and label in self.label_delay:
            time.sleep(self.label_delay[label])
        try:
            received = self._parse(handler.path, match, request)
        except (ValueError, KeyError, TypeError) as exc:
            self._error(handler, 400, f"INVALID_ARGUMENT: {exc}")
            return
        with self._lock:
            # One version per answer, read once: a swap never splits a batch.
            received.version_answered = self.label_versions.get(label or "", self.version)
            received.refused = (
                received.signature == "gradcam_overlay"
                and self.version in self.versions_without_overlay
            )
            self.requests.append(received)
        if received.refused:
            # TF Serving checks the signature before the inputs (reference/tfserving.md).
            self._error(
                handler,
                400,
                f'Serving signature name: "{received.signature}" not found in signature def',
            )
            return
        rows = [self._row(received, index, behaviour.kind) for index in range(len(received.images))]
        self._send(handler, 200, json.dumps({"predictions": rows}).encode())

    def _parse(self, path: str, match: re.Match[str], request: dict[str, Any]) -> ReceivedRequest:
        signature = request.get("signature_name", "serving_default")
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise ValueError("No values in 'instances' array")
        images: list[bytes] = []
        targets: list[int] = []
        for instance in instances:
            if signature == "serving_default":
                if set(instance) != {"b64"}:
                    raise ValueError("expecting {'b64': ...}")
                images.append(base64.b64decode(instance["b64"], validate=True))
            elif signature in _GRADCAM_SIGNATURES:
                if set(instance) != {"image_bytes", "target_class"}:
                    raise ValueError("keys must be equal to: image_bytes,target_class")
                images.append(base64.b64decode(instance["image_bytes"]["b64"], validate=True))
                target = instance["target_class"]
                if not isinstance(target, int) or isinstance(target, bool):
                    raise ValueError("target_class is not an int")
                targets.append(target)
            else:
                raise ValueError(
                    f'Serving signature name: "{signature}" not found in signature def'
                )
        return ReceivedRequest(
            path=path,
            model=match.group(1),
            version=match.group(2),
            label=match.group(3),
            signature=signature,
            images=images,
            target_classes=targets,
        )

    def _row(self, received: ReceivedRequest, index: int, kind: str) -> dict[str, Any]:
        count = len(self.class_names)
        predicted = self.label_predicted.get(received.label or "", self.predicted_index)
        probabilities = [0.1 / (count - 1)] * count
        probabilities[predicted] = 0.9
        row: dict[str, Any] = {
            "probabilities": probabilities,
            "class_index": predicted,
            "class_name": self.class_names[predicted],
            "class_names": list(self.class_names),
            "model_name": self.model_name,
            "model_version": received.version_answered,
            "model_run_id": self.run_id,
        }
        if self.refer_threshold is not None:
            row["refer_threshold"] = self.refer_threshold
        if self.ood_reason is not None:
            row["ood_reason"] = self.ood_reason
            row["ood_score"] = self.ood_score
        if received.signature in _GRADCAM_SIGNATURES:
            target = received.target_classes[index]
            if received.signature == "gradcam":
                size = self.heatmap_size
                row["heatmap"] = [[(x + y) / (2 * size) for x in range(size)] for y in range(size)]
            overlay = overlay_png(self.overlay_size)
            row["overlay_png_bytes"] = {"b64": base64.b64encode(overlay).decode()}
            row["target_class_index"] = predicted if target == -1 else target
        if kind == "wrong_shape":
            row["probabilities"] = probabilities[:-1]
        if kind == "non_finite":
            row["probabilities"] = [float("nan")] * count
        return row


def main(argv: list[str] | None = None) -> None:
    """Serve a fake until killed; prints `ready <url>` once listening."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m tests.functions.fake_serving")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--version", type=int, default=3)
    arguments = parser.parse_args(argv)
    fake = FakeTFServing(version=arguments.version)
    fake.start(port=arguments.port)
    print(f"ready {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
