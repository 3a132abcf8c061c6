"""The whole benchmark run, section by section, into one results document.

Order matters on a small machine: only the processes a section measures are running while it
measures, so the systems never compete with each other for the cores. A section that fails is
recorded with its error and the run goes on; every process started is stopped by its own id.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

from bench import soak, stack
from bench.cold_start import measure_cold_starts
from bench.floor import (
    load_signature,
    measure_floor_in_child,
    signature_client_factory,
)
from bench.history import measure_history, put_items_into_store
from bench.loadgen import HttpRequest, http_client_factory
from bench.machine import describe_machine, load_average
from bench.measure import Plan, interleaved_pair, interleaved_windows, load_series, section
from bench.payloads import model_server_requests, upload_requests
from model_contract.artifact import (
    GRADCAM_OVERLAY_SIGNATURE,
    GRADCAM_SIGNATURE,
    SERVING_SIGNATURE,
)

__all__ = ["run_benchmarks"]

IMAGE_COUNT = 16
IMAGE_SIZE = 256


class _Run:
    """State shared by the sections of one run."""

    def __init__(self, plan: Plan, work: stack.WorkFolder) -> None:
        self.plan = plan
        self.work = work
        self.secret = stack.new_secret()
        self.password = stack.new_secret()[:24]
        self.images = stack.bench_images(IMAGE_COUNT, IMAGE_SIZE)
        self.results: dict[str, Any] = {"sections": {}, "errors": {}}
        self.seed: stack.BenchModel | None = None
        self.small: stack.BenchModel | None = None

    def attempt(self, name: str, body: Callable[[], None]) -> None:
        with section(name, self.results["sections"]):
            try:
                body()
            except Exception as error:  # one failed section must not lose the others
                print(f"[bench] {name} FAILED: {error}", flush=True)
                self.results["errors"][name] = traceback.format_exc(limit=8)

    # -- helpers ---------------------------------------------------------------------------------

    def version_dir(self, model: stack.BenchModel, dtype: str) -> Path:
        return self.work.models / model.name / str(model.versions[dtype])

    def gateway_env(
        self, serving_url: str, model: stack.BenchModel, dtype: str, storage_url: str | None = None
    ) -> dict[str, str]:
        return stack.function_env(
            storage_url or str(self.work.store),
            self.secret,
            serving_url,
            model.name,
            model.versions[dtype],
        )

    def predict_requests(self, token: str, path: str = "/predict") -> list[HttpRequest]:
        return upload_requests(path, self.images, token)


# -- sections ------------------------------------------------------------------------------------


def _setup(run: _Run) -> None:
    from storage.local import LocalStore

    run.seed = stack.prepare_model(
        run.work,
        "seed",
        0,
        run.images[0],
        dtypes=("float32", "bfloat16"),
        plain_gradcam=("float32", "bfloat16"),
    )
    run.small = stack.prepare_model(run.work, "small", 0, run.images[0], dtypes=("float32",))
    stack.prepare_users(run.work, run.secret, run.password, [LocalStore(run.work.store)])
    run.results["setup"] = {
        model.preset: {
            "versions": dict(model.versions),
            "build_seconds": round(model.build_seconds, 2),
            "export_seconds": {k: round(v, 2) for k, v in model.export_seconds.items()},
        }
        for model in (run.seed, run.small)
    }
    run.results["setup"]["images"] = {"count": IMAGE_COUNT, "size": IMAGE_SIZE}


def _compute_floor(run: _Run) -> None:
    assert run.seed is not None
    assert run.small is not None
    plan = run.plan
    floor: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        # Each dtype in a fresh process (bench/floor.py says why).
        floor.update(
            measure_floor_in_child(
                {key: run.version_dir(run.seed, key) for key in (dtype, f"{dtype}-plain")},
                dtype,
                IMAGE_COUNT,
                IMAGE_SIZE,
                plan,
            )
        )
    floor["small-float32"] = {
        "series": load_series(
            signature_client_factory(
                load_signature(run.version_dir(run.small, "float32")), run.images
            ),
            [1, 8],
            plan,
            seconds=plan.seconds * 0.7,
            label="floor small float32",
        )
    }
    # TensorFlow's CPU allocator, malloc against BFC, each in a child process (bench/allocator.py).
    from bench.allocator import compare_allocators

    floor["allocator"] = compare_allocators(
        run.version_dir(run.seed, "float32"), pairs=1 if plan.quick else 3
    )
    for setting, figures in floor["allocator"]["median"].items():
        print(
            f"[bench]   allocator {setting}: one image {figures['one_p50_ms']:.1f} ms, batch of 8 "
            f"{figures['batch8_images_per_second']:.1f} images/s, "
            f"{figures['minor_faults_per_batch']:.0f} page faults a batch",
            flush=True,
        )
    # The compute-bound ceiling the float32 floor is compared with (bench/ceiling.py).
    from bench.ceiling import measure_ceiling

    floor["ceiling"] = measure_ceiling("seed", quick=plan.quick)
    print(
        f"[bench]   ceiling: sgemm {floor['ceiling']['sgemm_gflops']} GFLOP/s, "
        f"{floor['ceiling']['model_gflop_per_image']} GFLOP/image, "
        f"{floor['ceiling']['ceiling_images_per_second']['float32']} images/s",
        flush=True,
    )
    run.results["floor"] = floor
    gc.collect()


def _serving_unbatched(run: _Run) -> None:
    """Gateway and model server without batching: predict, gradcam, function cold starts."""
    assert run.seed is not None
    assert run.small is not None
    plan, work = run.plan, run.work
    server = stack.start_model_server(work, [run.seed, run.small], name="model-server")
    gateways: list[stack.ServerHandle] = []
    try:
        run.results.setdefault("model_server_start", {})["unbatched"] = server.extra
        envs = {
            "bfloat16": run.gateway_env(server.url, run.seed, "bfloat16"),
            "float32": run.gateway_env(server.url, run.seed, "float32"),
            "small-float32": run.gateway_env(server.url, run.small, "float32"),
            # The same versions exported without XLA on Grad-CAM's tail: its before.
            "bfloat16-plain": run.gateway_env(server.url, run.seed, "bfloat16-plain"),
            "float32-plain": run.gateway_env(server.url, run.seed, "float32-plain"),
        }
        handles = {
            name: stack.start_gateway(work, env, name=f"gateway-{name}")
            for name, env in envs.items()
        }
        gateways.extend(handles.values())
        token = stack.login(handles["bfloat16"].url, "/auth/token", run.password)
        predict: dict[str, Any] = run.results.setdefault("predict", {})
        gradcam: dict[str, Any] = run.results.setdefault("gradcam", {})
        for name in ("bfloat16", "float32"):
            predict[f"gateway-{name}"] = load_series(
                http_client_factory(handles[name].url, run.predict_requests(token)),
                plan.client_levels,
                plan,
                label=f"gateway {name}",
            )
        predict["gateway-small-float32"] = load_series(
            http_client_factory(handles["small-float32"].url, run.predict_requests(token)),
            [1, 8],
            plan,
            label="gateway small float32",
        )
        for dtype, direct_levels in (("bfloat16", (1, 8, 16)), ("float32", (1, 16))):
            version = run.seed.versions[dtype]
            predict[f"model-server-{dtype}"] = load_series(
                http_client_factory(
                    server.url,
                    model_server_requests(stack.MODEL_NAME, version, SERVING_SIGNATURE, run.images),
                ),
                direct_levels,
                plan,
                label=f"model server REST {dtype}",
            )
            for key in (dtype, f"{dtype}-plain"):
                gradcam[f"gateway-{key}"] = load_series(
                    http_client_factory(handles[key].url, run.predict_requests(token, "/gradcam")),
                    [1],
                    plan,
                    label=f"gradcam gateway {key}",
                )
                # Grad-CAM against predict, one request of each in turn (issue 21's ratio).
                gradcam[f"paired-{key}"] = interleaved_pair(
                    http_client_factory(handles[dtype].url, run.predict_requests(token)),
                    http_client_factory(handles[key].url, run.predict_requests(token, "/gradcam")),
                    plan,
                    label=f"gradcam gateway {key} interleaved with predict",
                )
            for signature in (GRADCAM_SIGNATURE, GRADCAM_OVERLAY_SIGNATURE):
                gradcam[f"model-server-{dtype}-{signature}"] = load_series(
                    http_client_factory(
                        server.url,
                        model_server_requests(stack.MODEL_NAME, version, signature, run.images),
                    ),
                    [1],
                    plan,
                    label=f"model server REST {dtype} {signature}",
                )
            # The opt-in path: JSON with the S x S heatmap (the function then calls `gradcam`).
            gradcam[f"gateway-{dtype}-heatmap"] = load_series(
                http_client_factory(
                    handles[dtype].url,
                    [
                        HttpRequest(
                            request.method,
                            request.path,
                            request.body,
                            {**request.headers, "Accept": "application/json"},
                        )
                        for request in upload_requests(
                            "/gradcam", run.images, token, query="heatmap=true"
                        )
                    ],
                ),
                [1],
                plan,
                label=f"gradcam gateway {dtype}, JSON with heatmap",
            )
        for handle in gateways:
            handle.stop()
        gateways.clear()

        # Cold starts with the model server up: one function alone, and the whole gateway,
        # serving the float32 export (the deployment files' default; bfloat16 only pays on
        # hardware with bfloat16 units, infra/tfserving/README.md).
        cold: dict[str, Any] = run.results.setdefault("cold_start", {})
        cold["dtype"] = "float32"
        request = run.predict_requests(token, "/")[0]
        cold["function-predict"], _ = measure_cold_starts(
            lambda attempt: stack.start_function(
                work, envs["float32"], "predict", name=f"cold-function-{attempt}"
            ),
            request,
            plan.cold_starts_function,
        )
        gateway_request = run.predict_requests(token)[0]
        cold["gateway"], _ = measure_cold_starts(
            lambda attempt: stack.start_gateway(
                work, envs["float32"], name=f"cold-gateway-{attempt}", wait=False
            ),
            gateway_request,
            plan.cold_starts_function,
        )
    finally:
        for handle in gateways:
            handle.stop()
        server.stop()


def _serving_batched(run: _Run) -> None:
    """The same stack with server-side batching: the curve for bfloat16, 16 clients for both."""
    assert run.seed is not None
    plan, work = run.plan, run.work
    server = stack.start_model_server(
        work, [run.seed], batching=stack.DEFAULT_BATCHING, name="model-server-batching"
    )
    gateways: list[stack.ServerHandle] = []
    try:
        run.results.setdefault("model_server_start", {})["batching"] = server.extra
        run.results["batching_parameters"] = stack.DEFAULT_BATCHING
        handles = {
            dtype: stack.start_gateway(
                work,
                run.gateway_env(server.url, run.seed, dtype),
                name=f"gateway-batching-{dtype}",
            )
            for dtype in ("bfloat16", "float32")
        }
        gateways.extend(handles.values())
        token = stack.login(handles["bfloat16"].url, "/auth/token", run.password)
        predict: dict[str, Any] = run.results.setdefault("predict", {})
        for dtype, levels, direct_levels in (
            ("bfloat16", plan.client_levels, (1, 8, 16)),
            ("float32", (8, 16), (16,)),
        ):
            predict[f"gateway-{dtype}-batching"] = load_series(
                http_client_factory(handles[dtype].url, run.predict_requests(token)),
                levels,
                plan,
                label=f"gateway {dtype} batching",
            )
            predict[f"model-server-{dtype}-batching"] = load_series(
                http_client_factory(
                    server.url,
                    model_server_requests(
                        stack.MODEL_NAME, run.seed.versions[dtype], SERVING_SIGNATURE, run.images
                    ),
                ),
                direct_levels,
                plan,
                label=f"model server REST {dtype} batching",
            )
    finally:
        for handle in gateways:
            handle.stop()
        server.stop()
    # The deployment's own CPU batching file (TF Serving's advice: a batch thread per core), for
    # comparison with the parameters above.
    infra_file = stack.REPO_ROOT / "infra" / "tfserving" / "batching_parameters.txt"
    if infra_file.is_file():
        text = infra_file.read_text(encoding="utf-8")
        server = stack.start_model_server(
            work, [run.seed], batching=text, name="model-server-batching-infra"
        )
        gateway = None
        try:
            run.results["batching_parameters_infra"] = text
            # Issue 21's "whole stack at 8 clients within 10 % of the floor at 8", drift-free:
            # the floor (in this process, the model server idle meanwhile) and the gateway
            # (float32, the deployment's batching file) in alternating windows.
            gateway = stack.start_gateway(
                work,
                run.gateway_env(server.url, run.seed, "float32"),
                name="gateway-batching-infra-float32",
            )
            token = stack.login(gateway.url, "/auth/token", run.password)
            floor_function = load_signature(run.version_dir(run.seed, "float32"))
            run.results["stack_against_floor"] = {
                "float32": interleaved_windows(
                    signature_client_factory(floor_function, run.images),
                    http_client_factory(gateway.url, run.predict_requests(token)),
                    8,
                    plan,
                    seconds=plan.seconds * 3,
                    label="gateway float32 (infra batching file) against the floor, 8 clients, "
                    "alternating",
                ),
                "batching_parameters": text,
            }
            del floor_function
            gateway.stop()
            gateway = None
            run.results["predict"]["model-server-bfloat16-batching-infra"] = load_series(
                http_client_factory(
                    server.url,
                    model_server_requests(
                        stack.MODEL_NAME,
                        run.seed.versions["bfloat16"],
                        SERVING_SIGNATURE,
                        run.images,
                    ),
                ),
                [8, 16],
                plan,
                label="model server REST bfloat16, infra batching file",
            )
        finally:
            if gateway is not None:
                gateway.stop()
            server.stop()


def _monolith(run: _Run) -> None:
    import jwt

    plan, work = run.plan, run.work
    # The monolith signs its own tokens; one minted with its key is what /token would return.
    token = jwt.encode(
        {"sub": stack.BENCH_EMAIL, "exp": int(time.time()) + 3600}, run.secret, algorithm="HS256"
    )
    request = upload_requests("/x-ray", run.images, token)[0]
    figures, monolith = measure_cold_starts(
        lambda attempt: stack.start_monolith(work, run.secret),
        request,
        plan.cold_starts_monolith,
        timeout=300,
        keep_last=True,
    )
    run.results.setdefault("cold_start", {})["monolith"] = figures
    assert monolith is not None
    try:
        # The real login works too (bcrypt, as the original).
        stack.login(monolith.url, "/token", run.password)
        run.results.setdefault("predict", {})["monolith"] = load_series(
            http_client_factory(monolith.url, upload_requests("/x-ray", run.images, token)),
            plan.client_levels,
            plan,
            label="monolith",
        )
        run.results.setdefault("gradcam", {})["monolith"] = load_series(
            http_client_factory(monolith.url, upload_requests("/grad_cam", run.images, token)),
            [1],
            plan,
            label="monolith grad_cam",
        )
    finally:
        monolith.stop()


def _history_local(run: _Run) -> None:
    from storage.local import LocalStore

    root = run.work.root / "history-local"
    store = LocalStore(root, fsync=False)
    stack.prepare_users(run.work, run.secret, run.password, [store])
    env = stack.function_env(str(root), run.secret, "http://127.0.0.1:9", "cnn_vit", 1)
    gateway = stack.start_gateway(run.work, env, name="gateway-history-local")
    try:
        token = stack.login(gateway.url, "/auth/token", run.password)
        run.results.setdefault("history", {})["local"] = measure_history(
            lambda items: put_items_into_store(store, items),
            gateway.url,
            token,
            run.plan.history_sizes,
            run.plan,
            "history local",
            store=store,
        )
    finally:
        gateway.stop()


def _history_moto(run: _Run) -> None:
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    from storage import StorageSettings, open_areas

    # moto's server logs every request through werkzeug: not what is measured.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = stack.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    gateway: stack.ServerHandle | None = None
    bucket = "bench-history"
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with mock.patch.dict(os.environ, credentials):
        try:
            endpoint = f"http://127.0.0.1:{port}"
            storage_env = {"STORAGE_URL": f"s3://{bucket}", "S3_ENDPOINT_URL": endpoint}
            areas = open_areas(StorageSettings.from_env({**storage_env, **credentials}))
            areas.root.create_bucket()  # type: ignore[attr-defined]
            stack.prepare_users(run.work, run.secret, run.password, [areas.root])
            backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]

            def seed(items: Any) -> None:
                for key, data in items:
                    backend.put_object(bucket, key, data)

            env = stack.function_env(
                f"s3://{bucket}",
                run.secret,
                "http://127.0.0.1:9",
                "cnn_vit",
                1,
                {**credentials, "S3_ENDPOINT_URL": endpoint},
            )
            gateway = stack.start_gateway(run.work, env, name="gateway-history-moto")
            token = stack.login(gateway.url, "/auth/token", run.password)
            run.results.setdefault("history", {})["s3-moto"] = measure_history(
                seed,
                gateway.url,
                token,
                run.plan.moto_history_sizes,
                run.plan,
                "history moto",
                store=areas.root,
            )
        finally:
            if gateway is not None:
                gateway.stop()
            server.stop()


# The round trip the delaying proxy adds to every S3 request: a small GET from S3 takes tens of
# milliseconds to its first byte. 50 ms, more than moto's own few milliseconds per request times
# the fetch threads, so the round trips show through moto (one process, requests served one
# after another) instead of hiding behind it.
S3_ROUND_TRIP_SECONDS = 0.05


def _history_s3_latency(run: _Run) -> None:
    """A page of 100 records from an S3 store with a fixed per-request latency (a delaying
    proxy in front of moto's server): the history service's fetch threads (1 against the
    default) in-process, and the gateway's whole query at the default."""
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    from bench.delay_proxy import DelayProxy
    from bench.history import measure_page_fetch, page_items, page_request
    from functions import history as history_module
    from storage import StorageSettings, open_areas

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = stack.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = DelayProxy("127.0.0.1", port, S3_ROUND_TRIP_SECONDS).start()
    gateway: stack.ServerHandle | None = None
    bucket = "bench-history-latency"
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with mock.patch.dict(os.environ, credentials):
        try:
            storage_env = {"STORAGE_URL": f"s3://{bucket}", "S3_ENDPOINT_URL": proxy.url}
            areas = open_areas(StorageSettings.from_env({**storage_env, **credentials}))
            areas.root.create_bucket()  # type: ignore[attr-defined]
            stack.prepare_users(run.work, run.secret, run.password, [areas.root])
            backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
            for key, data in page_items():
                backend.put_object(bucket, key, data)
            default_threads = history_module._FETCH_THREADS
            figures = measure_page_fetch(
                areas.root,
                proxy,
                2 if run.plan.quick else 5,
                thread_counts=sorted({1, 8, default_threads, 32}),
            )
            figures["default_threads"] = default_threads
            env = stack.function_env(
                f"s3://{bucket}",
                run.secret,
                "http://127.0.0.1:9",
                "cnn_vit",
                1,
                {**credentials, "S3_ENDPOINT_URL": proxy.url},
            )
            gateway = stack.start_gateway(run.work, env, name="gateway-history-latency")
            token = stack.login(gateway.url, "/auth/token", run.password)
            figures["gateway"] = load_series(
                http_client_factory(gateway.url, [page_request(token)]),
                [1],
                run.plan,
                seconds=run.plan.seconds,
                warmup_per_client=2,
                label="history page of 100, S3 with a round trip",
            )["1"]
            run.results["history_s3_latency"] = figures
        finally:
            if gateway is not None:
                gateway.stop()
            proxy.stop()
            server.stop()


def _training(run: _Run) -> None:
    from bench.training import measure_input_pipeline, measure_training_steps

    quick = run.plan.quick
    figures: dict[str, Any] = {
        "input_pipeline": measure_input_pipeline(
            run.work.root / "train-images", 256 if quick else 384, 1 if quick else 2
        ),
        "steps": [
            measure_training_steps("small", 256, 32, 3),
            measure_training_steps("seed", 32 if quick else 48, 16, 2 if quick else 3),
        ],
    }
    run.results["training"] = figures


def _agreement(run: _Run) -> None:
    from bench.quality import agreement, measure_trained_agreement

    assert run.seed is not None
    figures = {
        "small_trained": measure_trained_agreement(run.work.exports, 60 if run.plan.quick else 200),
        "seed_untrained": agreement(
            load_signature(run.version_dir(run.seed, "float32")),
            load_signature(run.version_dir(run.seed, "bfloat16")),
            stack.bench_images(48, IMAGE_SIZE, seed=13),
        ),
    }
    run.results["bf16_agreement"] = figures
    gc.collect()


def _formatting(run: _Run) -> None:
    from bench.formatting import measure_formatting

    assert run.seed is not None
    run.results["formatting"] = measure_formatting(
        run.version_dir(run.seed, "bfloat16"), run.images[0]
    )


def _breaker(run: _Run) -> None:
    """How fast the gateway refuses while the model server answers 503 to everything: with the
    circuit breaker (it opens after five failed calls) and, as the baseline in the same run,
    with it kept closed (every request makes its three retried calls)."""
    assert run.small is not None
    refusing = soak.always_503_server()
    try:
        figures: dict[str, Any] = run.results.setdefault("breaker", {})
        for name, extra in (
            ("breaker", {}),
            (
                "no-breaker",
                {
                    "TF_SERVING_BREAKER_FAILURES": "1000",
                    "TF_SERVING_BREAKER_MIN_CALLS": "1000",
                    "TF_SERVING_BREAKER_WINDOW": "1000",
                },
            ),
        ):
            env = {**run.gateway_env(refusing.url, run.small, "float32"), **extra}
            gateway = stack.start_gateway(run.work, env, name=f"gateway-{name}")
            try:
                token = stack.login(gateway.url, "/auth/token", run.password)
                before = refusing.calls
                figures[name] = soak.time_refusals(
                    gateway.url, token, run.images[0], 40 if run.plan.quick else 200
                )
                figures[name]["upstream_calls"] = refusing.calls - before
            finally:
                gateway.stop()
        if figures["breaker"]["p50_ms"]:
            figures["ratio_p50"] = round(
                figures["no-breaker"]["p50_ms"] / figures["breaker"]["p50_ms"], 1
            )
    finally:
        refusing.stop()


def _soak(run: _Run) -> None:
    """The whole stack (model server, gateway) under steady mixed load; memory and open files
    of each process sampled every 10 s (`bench/soak.py`)."""
    assert run.small is not None
    server = stack.start_model_server(run.work, [run.small], name="model-server-soak")
    gateway = None
    try:
        env = run.gateway_env(server.url, run.small, "float32")
        gateway = stack.start_gateway(run.work, env, name="gateway-soak")
        token = stack.login(gateway.url, "/auth/token", run.password)
        groups = {"model-server": server.process.pid, "gateway": gateway.process.pid}
        result = soak.run_soak(
            gateway.url, token, run.images, groups, seconds=run.plan.soak_seconds, clients=4
        )
        run.results["soak"] = result.to_json()
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop()


def _trust(run: _Run) -> None:
    """What calibration, the refer threshold and the out-of-distribution check cost per call,
    on the full-size seed model (`bench/trust.py`)."""
    from bench.trust import measure_trust_costs

    assert run.seed is not None
    run.results["trust"] = measure_trust_costs(
        "seed",
        run.seed.weights_file,
        run.work.exports,
        run.images,
        calls=40 if run.plan.quick else 200,
        fit_images=stack.bench_images(48, IMAGE_SIZE, seed=21),
    )
    gc.collect()


def _observability(run: _Run) -> None:
    """What metrics and tracing cost per request and at import (`bench/observability.py`)."""
    from bench.observability import measure_import_costs, measure_request_costs

    folder = run.work.root / "observability"
    folder.mkdir(parents=True, exist_ok=True)
    figures = measure_request_costs(folder, run.images[0], 100 if run.plan.quick else 500)
    figures["import_ms"] = measure_import_costs()
    run.results["observability"] = figures


def _dicom(run: _Run) -> None:
    """A DICOM upload's own cost against the same film as a PNG (`bench/dicom.py`)."""
    from bench.dicom import measure_dicom_costs

    run.results["dicom"] = measure_dicom_costs(calls=5 if run.plan.quick else 15)


SECTIONS: tuple[tuple[str, Callable[[_Run], None]], ...] = (
    ("floor", _compute_floor),
    ("serving", _serving_unbatched),
    ("batching", _serving_batched),
    ("monolith", _monolith),
    ("history-local", _history_local),
    ("history-moto", _history_moto),
    ("history-s3-latency", _history_s3_latency),
    ("training", _training),
    ("agreement", _agreement),
    ("formatting", _formatting),
    ("trust", _trust),
    ("breaker", _breaker),
    ("observability", _observability),
    ("dicom", _dicom),
    ("soak", _soak),
)


def run_benchmarks(
    plan: Plan, *, keep_work: bool = False, only: set[str] | None = None
) -> dict[str, Any]:
    """Run every section (or those named in `only`); returns the results document."""
    started = time.perf_counter()
    work = stack.WorkFolder(Path(tempfile.mkdtemp(prefix="xray-bench-")))
    work.create()
    run = _Run(plan, work)
    run.results["meta"] = {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": plan.quick,
        "plan": {
            "repetitions": plan.repetitions,
            "seconds_per_run": plan.seconds,
            "client_levels": list(plan.client_levels),
        },
        "machine": describe_machine(),
        "load_before": load_average(),
        "work_folder": str(work.root),
    }
    try:
        run.attempt("setup", lambda: _setup(run))
        if "setup" not in run.results["errors"]:
            for name, body in SECTIONS:
                if only is None or name in only:
                    run.attempt(name, lambda body=body: body(run))  # type: ignore[misc]
    finally:
        run.results["meta"]["load_after"] = load_average()
        run.results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
        run.results["meta"]["finished_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if not keep_work:
            shutil.rmtree(work.root, ignore_errors=True)
    return run.results
