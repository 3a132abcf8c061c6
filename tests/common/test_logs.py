"""One JSON log line format for every deployable: the same first fields in the same order, the
context's id, the event's fields, JSON-safe values; the functions, the model sync, the model
server and the training job all write it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from common.logs import (
    LINE_FIELDS,
    JsonLineFormatter,
    configure_json_logging,
    format_line,
    format_time,
    log_event,
)
from training_job.joblog import JobLog


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    name = "tests.common.logs"
    yield logging.getLogger(name)
    target = logging.getLogger(name)
    target.handlers.clear()
    target.propagate = True
    target.setLevel(logging.NOTSET)


def test_format_line_starts_with_the_fixed_fields_in_order() -> None:
    line = json.loads(
        format_line(
            level="WARNING",
            logger="serving.sync",
            event="version_installed",
            message="installed",
            fields={"version": 3, "ratio": float("nan")},
            epoch_seconds=0.25,
        )
    )

    assert list(line)[: len(LINE_FIELDS)] == list(LINE_FIELDS)
    assert line["time"] == "1970-01-01T00:00:00.250Z"
    assert (line["level"], line["event"], line["version"]) == ("warning", "version_installed", 3)
    assert line["ratio"] is None  # NaN is not JSON


def test_format_line_field_may_not_overwrite_the_lines_own() -> None:
    with pytest.raises(ValueError, match="event"):
        format_line(level="info", logger="x", event="a", fields={"event": "b"})


def test_format_time_has_milliseconds_and_z() -> None:
    assert format_time(1_796_612_082.5) == "2026-12-07T02:54:42.500Z"


def test_log_event_through_the_formatter_carries_context_fields_and_traceback(
    logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter(context=lambda: {"request_id": "r-1"}))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    log_event(logger, "model_unreachable", logging.WARNING, "model server unreachable", tries=3)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("unexpected error", extra={"event": "unexpected_error"})
    logger.info("plain %s", "text")

    first, second, third = (json.loads(text) for text in stream.getvalue().splitlines())
    assert first["event"] == "model_unreachable"
    assert (first["message"], first["request_id"], first["tries"]) == (
        "model server unreachable",
        "r-1",
        3,
    )
    assert second["event"] == "unexpected_error"
    assert "RuntimeError: boom" in second["traceback"]
    assert (third["event"], third["message"]) == ("log", "plain text")


def test_configure_json_logging_split_streams_and_idempotent(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        configure_json_logging("INFO", logger_name=logger.name, split_streams=True)

    log_event(logger, "fine")
    log_event(logger, "bad", logging.ERROR)

    out, err = capsys.readouterr()
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["fine"]
    assert [json.loads(line)["event"] for line in err.splitlines()] == ["bad"]


def test_every_deployable_writes_the_same_line_shape(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    from functions.logs import configure_logging

    configure_json_logging("INFO", logger_name=logger.name)  # the sync's and server's set-up
    log_event(logger, "sync_started", model="cnn_vit")
    configure_logging("INFO")  # the functions' set-up
    log_event(logging.getLogger("functions.access"), "request", message="GET / 200", status=200)
    job = io.StringIO()
    JobLog("20261207T000000Z-abcdef", job).event("epoch", loss=0.5)

    out, err = capsys.readouterr()
    lines = [json.loads(text) for text in (err + out + job.getvalue()).splitlines()]
    assert [line["event"] for line in lines] == ["sync_started", "request", "epoch"]
    for line in lines:
        assert list(line)[: len(LINE_FIELDS)] == list(LINE_FIELDS)
    assert lines[2]["run_id"] == "20261207T000000Z-abcdef"
