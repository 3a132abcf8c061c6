"""Smoke tests of the benchmark machinery (no timings asserted: timings live in `make bench`).

The load generator against a tiny HTTP server, the statistics, the history records and their
window, the report from a minimal results document, and the monolith's preprocessing against
the shared in-graph preprocessing (both systems must see the same input tensor).
"""

from __future__ import annotations

import http.server
import json
import math
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.history import HISTORY_USER, WINDOW_DAY, WINDOW_RECORDS, history_request, record_items
from bench.loadgen import HttpRequest, http_client_factory, multipart_body, run_closed_loop
from bench.stats import latency_summary, over_repetitions, percentile


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = 200 if b"filename=" in body else 400
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_closed_loop_run_is_bounded_by_count_and_counts_every_status(echo_server: str) -> None:
    body, content_type = multipart_body("file", "x.png", b"\x89PNG fake", "image/png")
    requests = [
        HttpRequest("POST", "/predict", body, {"Content-Type": content_type}),
        HttpRequest("POST", "/predict", b"no file", {"Content-Type": "text/plain"}),
    ]

    run = run_closed_loop(
        http_client_factory(echo_server, requests), 3, seconds=5.0, max_requests=20
    )

    assert sum(run.statuses.values()) == 20
    assert run.statuses[200] == 10
    assert run.statuses[400] == 10
    assert run.answered == 10
    assert run.summary()["errors"] == 10
    assert run.to_json()["clients"] == 3


def test_percentiles_and_medians_over_repetitions() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert math.isnan(percentile([], 0.5))
    assert latency_summary([10.0] * 5)["p99"] == 10.0

    summary = over_repetitions([{"p50": 1.0}, {"p50": 3.0}, {"p50": 2.0, "p90": math.nan}])

    assert summary["p50"] == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3.0}
    assert "p90" not in summary


def test_history_records_follow_the_schema_and_fill_the_window_first() -> None:
    from storage import keys

    items = record_items(0, WINDOW_RECORDS + 20)
    window = keys.inference_window(HISTORY_USER, WINDOW_DAY, WINDOW_DAY + timedelta(days=1))

    inside = [key for key, _ in items if window.start_after < key < window.end_before]
    record = json.loads(items[0][1])

    assert len(inside) == WINDOW_RECORDS
    assert record["schema"] == 1
    assert keys.inference_record(record["user_id"], record["id"]) == items[0][0]
    assert set(record["probabilities"]) == set(record["class_names"])
    assert items == record_items(0, WINDOW_RECORDS + 20)  # deterministic
    assert "user=history-user" in history_request("token").path


def _series(level: int, p50: float, throughput: float) -> dict[str, Any]:
    """A load series in the results document's shape: one level, one run of each statistic."""
    stat = {"p50": p50, "p90": p50, "p99": p50, "throughput": throughput}
    return {
        str(level): {
            "stats": {k: {"median": v, "min": v, "max": v, "runs": 1} for k, v in stat.items()}
        }
    }


def _written_report(
    tmp_path: Path,
    figures: dict[str, Any],
    *,
    machine: dict[str, Any] | None = None,
    plan: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
) -> str:
    """REPORT.md written into `tmp_path` from a quick run's results holding `figures`."""
    from bench.report import write_report

    meta: dict[str, Any] = {"quick": True, "machine": {"cpu_model": "test", **(machine or {})}}
    if plan is not None:
        meta["plan"] = plan
    write_report({"meta": meta, **figures, "sections": sections or {}, "errors": {}}, tmp_path)
    return (tmp_path / "REPORT.md").read_text()


def test_report_is_written_from_a_partial_results_document(tmp_path: Path) -> None:
    def series(p50: float, throughput: float) -> dict[str, Any]:
        return _series(1, p50, throughput)

    report = _written_report(
        tmp_path,
        {"predict": {"monolith": series(100.0, 10.0), "gateway-bfloat16": series(30.0, 33.0)}},
        plan={"client_levels": [1]},
        sections={"floor": {"seconds": 1.0, "load_before": [0, 0, 0], "load_after": None}},
    )
    assert "## Targets" in report
    assert "3.3x faster" in report
    assert (tmp_path / "latency_vs_clients.png").stat().st_size > 0


def test_monolith_preprocessing_gives_the_served_model_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    monkeypatch.setenv("BENCH_MONOLITH_DIR", str(tmp_path))
    monkeypatch.setenv("BENCH_MONOLITH_PRESET", "small")  # builds in a second at import
    import tensorflow as tf

    from bench import monolith
    from bench.stack import bench_images
    from cnn_vit.preprocessing import preprocess_image_bytes

    for image in bench_images(3, 256):
        expected = preprocess_image_bytes(tf.constant(image), 256).numpy()
        np.testing.assert_array_equal(monolith.preprocess(image, 256), expected)


def test_soak_slope_and_trends_follow_the_samples() -> None:
    from bench.soak import SoakResult, slope

    assert slope([0, 1, 2, 3], [5, 7, 9, 11]) == pytest.approx(2.0)
    assert slope([1], [3]) == 0.0
    growing = [(t * 10.0, 100 + t * 0.5, 20 + t) for t in range(30)]  # 3 MiB/min, 6 fds/min
    flat = [(t * 10.0, 200.0, 8) for t in range(30)]
    result = SoakResult(seconds=300, samples={"leaky": growing, "steady": flat})

    trends = result.trends()

    assert trends["leaky"]["rss_mib_per_minute"] == pytest.approx(3.0)
    assert trends["leaky"]["fds_per_minute"] == pytest.approx(6.0)
    assert trends["steady"] == {
        "rss_mib_per_minute": 0.0,
        "fds_per_minute": 0.0,
        "rss_mib_first": 200.0,
        "rss_mib_last": 200.0,
        "fds_first": 8,
        "fds_last": 8,
    }


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_soak_group_usage_reads_this_process_group() -> None:
    import os

    from bench.soak import group_usage

    rss, descriptors = group_usage(os.getpgrp())

    assert rss > 10  # MiB: at least this Python process
    assert descriptors >= 3


def test_soak_refusing_server_and_refusal_timing() -> None:
    from bench.soak import always_503_server, time_refusals

    server = always_503_server()
    try:
        # The refusing server stands in for the gateway here: every answer is a 503.
        figures = time_refusals(server.url, "token", b"png", 5)
    finally:
        server.stop()

    assert figures["statuses"] == {"503": 5}
    assert server.calls == 5
    assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def test_dicom_costs_are_measured_and_reported(tmp_path: Path) -> None:
    from bench.dicom import measure_dicom_costs

    figures = measure_dicom_costs(sizes=(64,), calls=2)
    entry = figures["sizes"]["64"]
    assert set(entry["median_ms"]) == {"png16", "dicom", "dicom_jpeg_ls", "dicom_jpeg_2000"}
    assert entry["ratio_to_png"]["png16"] == 1.0
    assert all(value > 0 for value in entry["median_ms"].values())
    report = _written_report(tmp_path, {"dicom": figures}, plan={"client_levels": [1]})
    assert "## What a DICOM upload costs" in report
    assert "| 64 px | DICOM, JPEG 2000 lossless |" in report


def test_delay_proxy_holds_each_request_and_counts_them(echo_server: str) -> None:
    import time
    from urllib.parse import urlsplit

    from bench.delay_proxy import DelayProxy

    target = urlsplit(echo_server)
    proxy = DelayProxy(target.hostname or "127.0.0.1", target.port or 80, 0.05).start()
    try:
        body, content_type = multipart_body("file", "x.png", b"\x89PNG fake", "image/png")
        request = HttpRequest("POST", "/", body, {"Content-Type": content_type})
        started = time.perf_counter()
        run = run_closed_loop(
            http_client_factory(proxy.url, [request]),
            1,
            seconds=60.0,
            max_requests=3,
            warmup_per_client=0,
        )
        elapsed = time.perf_counter() - started
    finally:
        proxy.stop()
    assert run.answered == 3
    assert proxy.requests == 3
    assert elapsed >= 0.15  # three requests, one after another on one connection


def test_report_shows_the_ceiling_and_the_history_round_trips(tmp_path: Path) -> None:
    def series(level: int, throughput: float) -> dict[str, Any]:
        return _series(level, 10.0, throughput)

    one = {"median": 20.0, "min": 20.0, "max": 20.0, "runs": 1}
    figures = {
        "floor": {
            "seed-float32": {
                "series": {**series(1, 25.0), **series(8, 30.0)},
                "batch_8": {"images_per_second": {**one, "median": 32.0}},
            },
            "ceiling": {
                "sizes": [1024],
                "best_gflops": {"numpy_float32": 190.0, "tensorflow_float32": 200.0},
                "sgemm_gflops": 200.0,
                "bf16_gemm_gflops": 400.0,
                "model_gflop_per_image": 5.0,
                "ceiling_images_per_second": {"float32": 40.0, "bfloat16": 80.0},
            },
        },
        "predict": {"gateway-float32": series(8, 27.0)},
        "history_s3_latency": {
            "delay_ms": 50.0,
            "records": 100,
            "default_threads": 8,
            "threads-1": {
                "p50_ms": 5500.0,
                "min_ms": 5400.0,
                "max_ms": 5600.0,
                "p50_ms_without_delay": 500.0,
                "requests": 101,
                "round_trips_in_sequence": 100.0,
            },
        },
    }

    report = _written_report(tmp_path, figures, machine={"simd_flags": ["avx2", "fma"]})
    assert "## Compute against the machine's ceiling" in report
    assert "| float32 | 40.0 | 25.0 (62 %) | 30.0 (75 %) | 32.0 (80 %) | 27.0 (68 %) | 0.90x |" in (
        report
    )
    assert "CPU flags (vector and matrix): avx2 fma" in report
    assert "| 1 | 5500 (5400-5600) | 500 | 101 | 100.0 |" in report


def test_report_splits_gradcams_extra_time_against_the_ratio_target(tmp_path: Path) -> None:
    def one_client(p50: float) -> dict[str, Any]:
        return _series(1, p50, 1000 / p50)

    def median(value: float) -> dict[str, float]:
        return {"median": value, "min": value, "max": value, "runs": 3}

    figures = {
        "floor": {
            "seed-bfloat16": {"series": one_client(24.0)},
            "seed-bfloat16-gradcam_overlay": one_client(32.0),
            "seed-bfloat16-png": {"ms_p50": 3.5, "bytes_mean": 93_000.0, "side": 256.0},
        },
        "gradcam": {
            "gateway-bfloat16": one_client(40.0),
            "paired-bfloat16": {
                "stats": {
                    "baseline_p50": median(30.0),
                    "other_p50": median(40.0),
                    "ratio": median(40.0 / 30.0),
                }
            },
        },
    }

    report = _written_report(tmp_path, figures)
    # 10 ms more through the stack; 8 at the floor: 3.5 the PNG, 4.5 the gradient; 2 carrying
    # the answer; 1.2x allows 6; the PNG and its carriage alone give (30 + 5.5) / 30.
    assert "costs 10.0 ms more than predict (40.0 against 30.0 ms, interleaved)" in report
    assert "the difference is 8.0 ms (32.0 against 24.0 ms), of which" in report
    assert "encoding the PNG is 3.5 ms" in report
    assert "93 KB for a 256 px overlay" in report
    assert "the gradient, smoothing and blend the other 4.5 ms" in report
    assert "the stack adds 2.0 ms carrying" in report
    assert "1.2x predict allows 6.0 ms" in report
    assert "with a free gradient Grad-CAM would still be 1.18x predict" in report


def test_png_encoding_cost_reencodes_the_signatures_overlays() -> None:
    import tensorflow as tf

    from bench.floor import png_encoding_cost
    from bench.stack import bench_images
    from cnn_vit.gradcam import PNG_COMPRESSION, blend_overlay, encode_png_batch

    images = bench_images(2, 64)

    def overlay_signature(image_bytes: tf.Tensor, target_class: tf.Tensor) -> dict[str, tf.Tensor]:
        # The signature's output contract over the real blend and encoder: a heat ramp on the film.
        films = tf.map_fn(
            lambda data: tf.io.decode_png(data, channels=1)[..., 0],
            image_bytes,
            fn_output_signature=tf.TensorSpec([64, 64], tf.uint8),
        )
        heat = tf.broadcast_to(tf.linspace(0.0, 1.0, 64), [tf.shape(films)[0], 64, 64])
        return {"overlay_png_bytes": encode_png_batch(blend_overlay(films, heat))}

    cost = png_encoding_cost(overlay_signature, images, rounds=2)

    drawn = overlay_signature(tf.constant(images), tf.constant([-1, -1]))["overlay_png_bytes"]
    sizes = [
        len(tf.io.encode_png(tf.io.decode_png(png), compression=PNG_COMPRESSION).numpy())
        for png in drawn
    ]
    assert cost["side"] == 64.0
    assert cost["ms_p50"] > 0.0
    assert cost["bytes_mean"] == sum(sizes) / 2
