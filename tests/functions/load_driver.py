"""A bounded load driver for the gateway over real HTTP, reusable for the full-stack load test.

It logs several users in, sends a fixed number of predictions (or Grad-CAMs) from a fixed number
of client threads, stops at a time cap whatever happens, and reports every outcome: status,
latency, inference id, the model version that answered. `midway` runs once when half the
requests are done (e.g. publish and promote a new model version). `verify_records` then proves
against the store that every answered inference has exactly one record and nothing else exists.

    python -m tests.functions.load_driver --url http://127.0.0.1:8080 \\
        --user alice@example.com:secret --user bob@example.com:secret \\
        --requests 500 --concurrency 8 --max-seconds 120 [--image xray.png] [--path /predict]

prints a JSON summary (counts per status, p50/p90/p99/max latency, versions seen) and exits 1
if any request did not get a 200. Loopback only; keep concurrency low on small machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

__all__ = ["LoadReport", "Outcome", "login", "run_load", "verify_records"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Outcome:
    user: str  # the username the request was sent as
    status: int  # 0: no HTTP answer (connection error or client timeout)
    latency_ms: float
    user_id: str | None = None
    inference_id: str | None = None
    model_version: int | None = None
    error: str | None = None


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    planned: int = 0

    @property
    def answered(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == 200]

    @property
    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status != 200]

    def summary(self) -> dict[str, Any]:
        latencies = sorted(outcome.latency_ms for outcome in self.answered)

        def percentile(fraction: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, int(fraction * len(latencies)))], 2)

        return {
            "planned": self.planned,
            "sent": len(self.outcomes),
            "seconds": round(self.seconds, 2),
            "requests_per_second": round(len(self.outcomes) / self.seconds, 2)
            if self.seconds
            else None,
            "statuses": dict(Counter(str(outcome.status) for outcome in self.outcomes)),
            "errors": dict(Counter(outcome.error for outcome in self.failed if outcome.error)),
            "latency_ms": {
                "p50": percentile(0.50),
                "p90": percentile(0.90),
                "p99": percentile(0.99),
                "max": round(latencies[-1], 2) if latencies else None,
                "mean": round(statistics.fmean(latencies), 2) if latencies else None,
            },
            "model_versions": dict(
                Counter(str(outcome.model_version) for outcome in self.answered)
            ),
        }


def _check_loopback(base_url: str) -> None:
    host = urlparse(base_url).hostname or ""
    if host not in _LOOPBACK and not host.startswith("127."):
        raise ValueError(f"load is only driven against loopback, not {host!r}")


def login(
    base_url: str,
    username: str,
    password: str,
    token_path: str = "/auth/token",  # noqa: S107 - a path, not a secret
) -> str:
    response = requests.post(
        base_url.rstrip("/") + token_path,
        data={"grant_type": "password", "username": username, "password": password},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def run_load(
    base_url: str,
    tokens: Mapping[str, str],
    image: bytes,
    *,
    total: int,
    concurrency: int,
    path: str = "/predict",
    content_type: str = "image/png",
    max_seconds: float = 120.0,
    request_timeout: float = 30.0,
    midway: Callable[[], object] | None = None,
) -> LoadReport:
    """Send `total` uploads spread over the users of `tokens` from `concurrency` threads."""
    _check_loopback(base_url)
    if not tokens:
        raise ValueError("at least one user is needed")
    url = base_url.rstrip("/") + path
    users = list(tokens)
    report = LoadReport(planned=total)
    lock = threading.Lock()
    local = threading.local()
    started = time.monotonic()

    def one(index: int) -> None:
        if time.monotonic() - started > max_seconds:
            return  # the time cap: the rest is not sent
        user = users[index % len(users)]
        session: requests.Session | None = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        headers = {"Authorization": f"Bearer {tokens[user]}", "Content-Type": content_type}
        sent = time.perf_counter()
        try:
            response = session.post(url, data=image, headers=headers, timeout=request_timeout)
            outcome = _outcome(user, response, (time.perf_counter() - sent) * 1000)
        except requests.RequestException as exc:
            outcome = Outcome(
                user, 0, (time.perf_counter() - sent) * 1000, error=type(exc).__name__
            )
        with lock:
            report.outcomes.append(outcome)
            done = len(report.outcomes)
        if midway is not None and done == max(1, total // 2):
            midway()  # exactly one thread completes the middle request

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="load") as pool:
        for future in [pool.submit(one, index) for index in range(total)]:
            future.result()
    report.seconds = time.monotonic() - started
    return report


def _outcome(user: str, response: requests.Response, latency_ms: float) -> Outcome:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict):
        return Outcome(
            user,
            200,
            latency_ms,
            user_id=body.get("user_id"),
            inference_id=body.get("id"),
            model_version=(body.get("model") or {}).get("version"),
        )
    if response.status_code == 200:
        # A Grad-CAM PNG: the naming headers say the same.
        version = response.headers.get("X-Model-Version")
        return Outcome(
            user,
            200,
            latency_ms,
            inference_id=response.headers.get("X-Inference-Id"),
            model_version=int(version) if version and version.isdigit() else None,
        )
    error = body.get("error") if isinstance(body, dict) else f"http_{response.status_code}"
    return Outcome(user, response.status_code, latency_ms, error=str(error))


def verify_records(root_store: Any, report: LoadReport, user_ids: Sequence[str]) -> list[str]:
    """Problems found in the store (empty when all is well): each answered inference has exactly
    one record naming the answered model version, and no user has a record nobody was told of.
    `root_store` is the store root (`storage.open_areas(...).root`)."""
    from storage import keys

    problems: list[str] = []
    answered_ids = {outcome.inference_id for outcome in report.answered}
    if len(answered_ids) != len(report.answered):
        problems.append("two answers carried the same inference id")
    stored: dict[str, str] = {}
    for user_id in user_ids:
        for key in root_store.list_keys(keys.inference_user_prefix(user_id)):
            inference_id = keys.inference_id_from_record(key)
            if inference_id in stored:
                problems.append(f"inference {inference_id} is recorded twice")
            stored[inference_id] = key
    for outcome in report.answered:
        key = stored.get(outcome.inference_id or "")
        if key is None:
            problems.append(f"answered inference {outcome.inference_id} has no record")
            continue
        record = root_store.get_json(key)
        if outcome.model_version is not None and record["model"]["version"] != (
            outcome.model_version
        ):
            problems.append(f"record {outcome.inference_id} names another model version")
    for inference_id in set(stored) - answered_ids:
        problems.append(f"record {inference_id} was never answered")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.functions.load_driver")
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", action="append", required=True, help="username:password")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--image", type=Path, help="PNG or JPEG (default: a generated PNG)")
    arguments = parser.parse_args(argv)
    if arguments.image is not None:
        image = arguments.image.read_bytes()
        content_type = "image/jpeg" if image.startswith(b"\xff\xd8") else "image/png"
    else:
        from tests.functions.sample_images import png_bytes

        image, content_type = png_bytes(256, 256), "image/png"
    tokens = {}
    for pair in arguments.user:
        username, _, password = pair.partition(":")
        tokens[username] = login(arguments.url, username, password)
    report = run_load(
        arguments.url,
        tokens,
        image,
        total=arguments.requests,
        concurrency=arguments.concurrency,
        path=arguments.path,
        content_type=content_type,
        max_seconds=arguments.max_seconds,
    )
    print(json.dumps(report.summary(), indent=2))
    return 0 if not report.failed and len(report.outcomes) == arguments.requests else 1


if __name__ == "__main__":
    sys.exit(main())
