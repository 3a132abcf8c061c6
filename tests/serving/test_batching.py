"""The batch scheduler in-process: merging along dimension 0, splitting back, limits."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from serving.model_server.batching import BatchingParameters, BatchScheduler
from serving.model_server.errors import Code, ServingError
from serving.model_server.options import parse_options
from serving.model_server.server import ModelServer
from tests.serving.models import save_half_plus_two

Tensors = dict[str, np.ndarray]


class GatedModel:
    """Doubles `x`; the first call waits on a gate so that later requests pile up."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def __call__(self, inputs: Tensors) -> Tensors:
        if not self.entered.is_set():
            self.entered.set()
            self.gate.wait(10)
        self.batch_sizes.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 2, "n": np.full(inputs["x"].shape[0], 7, np.int32)}


def make_scheduler(model: GatedModel, **overrides: int) -> BatchScheduler:
    parameters = BatchingParameters(
        **{
            "max_batch_size": 8,
            "batch_timeout_micros": 0,
            "max_enqueued_batches": 4,
            "num_batch_threads": 1,
            **overrides,
        }
    )
    return BatchScheduler(model, parameters, threading.Semaphore(1), "test")


def test_batch_scheduler_concurrent_requests_merge_and_split_back() -> None:
    model = GatedModel()
    scheduler = make_scheduler(model)
    results: dict[int, Tensors] = {}

    def submit(index: int, rows: int) -> None:
        x = np.full((rows, 1), float(index), np.float32)
        results[index] = scheduler.submit({"x": x}, timeout=10)

    first = threading.Thread(target=submit, args=(0, 1))
    first.start()
    assert model.entered.wait(10)  # the first request runs alone and blocks the worker
    others = [threading.Thread(target=submit, args=(i, i)) for i in (1, 2, 3)]
    for thread in others:
        thread.start()
    for _ in range(10_000):
        if scheduler._queued_size == 6:
            break
        threading.Event().wait(0.001)
    model.gate.set()
    for thread in [first, *others]:
        thread.join(10)
    scheduler.close()

    assert model.batch_sizes == [1, 6]  # three queued requests ran as one batch of 1+2+3 rows
    for index, rows in ((0, 1), (1, 1), (2, 2), (3, 3)):
        np.testing.assert_array_equal(results[index]["y"], np.full((rows, 1), 2.0 * index))
        assert results[index]["n"].tolist() == [7] * rows


def test_batch_scheduler_task_larger_than_max_batch_size_is_invalid() -> None:
    scheduler = make_scheduler(GatedModel(), max_batch_size=2)

    with pytest.raises(ServingError) as raised:
        scheduler.submit({"x": np.zeros((3, 1), np.float32)})
    scheduler.close()

    assert raised.value.code == Code.INVALID_ARGUMENT
    assert "Task size 3 is larger than maximum input batch size 2" in raised.value.message


def test_batch_scheduler_full_queue_answers_unavailable() -> None:
    model = GatedModel()
    scheduler = make_scheduler(model, max_batch_size=1, max_enqueued_batches=1)
    blocked = threading.Thread(
        target=scheduler.submit, args=({"x": np.zeros((1, 1), np.float32)}, 10)
    )
    blocked.start()
    assert model.entered.wait(10)
    queued = threading.Thread(
        target=scheduler.submit, args=({"x": np.zeros((1, 1), np.float32)}, 10)
    )
    queued.start()
    for _ in range(10_000):
        if scheduler._queued_size == 1:
            break
        threading.Event().wait(0.001)

    with pytest.raises(ServingError) as raised:
        scheduler.submit({"x": np.zeros((1, 1), np.float32)})
    model.gate.set()
    blocked.join(10)
    queued.join(10)
    scheduler.close()

    assert raised.value.code == Code.UNAVAILABLE
    assert Code.UNAVAILABLE.http_status == 503


def test_batching_parameters_allowed_sizes_must_end_at_max_batch_size() -> None:
    with pytest.raises(ValueError, match="must match max_batch_size"):
        BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2, 4)).validate()


def wait_for_queued(scheduler: BatchScheduler, rows: int) -> None:
    for _ in range(10_000):
        if scheduler._queued_size == rows:
            return
        threading.Event().wait(0.001)
    raise AssertionError(f"queue never held {rows} rows")


def test_batch_scheduler_bad_output_shape_fails_every_task_of_the_batch() -> None:
    class BadOutputModel(GatedModel):
        """As GatedModel, plus an output one row longer than the batch."""

        def __call__(self, inputs: Tensors) -> Tensors:
            outputs = super().__call__(inputs)
            return {**outputs, "bad": np.zeros(inputs["x"].shape[0] + 1, np.float32)}

    model = BadOutputModel()
    batches: list[int] = []
    parameters = BatchingParameters(max_batch_size=8, num_batch_threads=1)
    scheduler = BatchScheduler(
        model, parameters, threading.Semaphore(1), "test", on_batch=batches.append
    )
    errors: dict[int, ServingError] = {}

    def submit(index: int, rows: int) -> None:
        try:
            scheduler.submit({"x": np.zeros((rows, 1), np.float32)}, timeout=10)
        except ServingError as error:
            errors[index] = error

    first = threading.Thread(target=submit, args=(0, 1))
    first.start()
    assert model.entered.wait(10)
    others = [threading.Thread(target=submit, args=(i, i)) for i in (1, 2)]
    for thread in others:
        thread.start()
    wait_for_queued(scheduler, 3)
    model.gate.set()
    for thread in [first, *others]:
        thread.join(10)
    scheduler.close()

    assert model.batch_sizes == [1, 3]
    assert batches == [1, 3]  # the batch metric sees each batch once, with its row count
    assert sorted(errors) == [0, 1, 2]
    # batching_session.cc SplitOutputTensors: FAILED_PRECONDITION (HTTP 400), one text.
    for error in errors.values():
        assert error.code == Code.FAILED_PRECONDITION
        assert error.message == (
            "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension "
            "sizes of the input tensors"
        )
    assert Code.FAILED_PRECONDITION.http_status == 400


def test_batch_scheduler_output_without_dimensions_fails_the_batch() -> None:
    class ScalarOutputModel(GatedModel):
        def __call__(self, inputs: Tensors) -> Tensors:
            return {**super().__call__(inputs), "total": np.float32(inputs["x"].sum())}

    model = ScalarOutputModel()
    model.gate.set()
    scheduler = make_scheduler(model)

    with pytest.raises(ServingError) as raised:
        scheduler.submit({"x": np.zeros((2, 1), np.float32)}, timeout=10)
    scheduler.close()

    assert raised.value.code == Code.FAILED_PRECONDITION
    assert raised.value.message == "Batched output tensor has 0 dimensions"


def test_batch_scheduler_tasks_of_different_inner_shapes_fail_their_batch() -> None:
    model = GatedModel()
    batches: list[int] = []
    parameters = BatchingParameters(max_batch_size=8, num_batch_threads=1)
    scheduler = BatchScheduler(
        model,
        parameters,
        threading.Semaphore(1),
        "test",
        on_batch=batches.append,
        input_names={"x": "serving_default_x:0"},
    )
    results: dict[int, Tensors | ServingError] = {}

    def submit(index: int, shape: tuple[int, ...]) -> None:
        try:
            results[index] = scheduler.submit({"x": np.ones(shape, np.float32)}, timeout=10)
        except ServingError as error:
            results[index] = error

    first = threading.Thread(target=submit, args=(0, (1, 1)))
    first.start()
    assert model.entered.wait(10)
    narrow = threading.Thread(target=submit, args=(1, (1, 1)))
    narrow.start()
    wait_for_queued(scheduler, 1)
    wide = threading.Thread(target=submit, args=(2, (2, 3)))
    wide.start()
    wait_for_queued(scheduler, 3)
    model.gate.set()
    for thread in (first, narrow, wide):
        thread.join(10)
    scheduler.close()

    assert not isinstance(results[0], ServingError)  # it ran alone
    assert model.batch_sizes == [1]  # the mixed batch never reached the model
    assert batches == [1, 3]  # recorded before the inputs are merged, as upstream
    for index in (1, 2):
        error = results[index]
        assert isinstance(error, ServingError)
        assert error.code == Code.FAILED_PRECONDITION
        assert error.message == (
            "Tensors with name 'serving_default_x:0' from different tasks have different shapes "
            "and padding is turned off. Set pad_variable_length_inputs to true, or ensure that "
            "all tensors with the same name have equal dimensions starting with the first dim."
        )


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        pytest.param({}, "Batching Run() must have at least one input tensor", id="no input"),
        pytest.param(
            {"x": np.float32(1)},
            "Batching Run() input tensors must have at least one dimension",
            id="scalar input",
        ),
        pytest.param(
            {"x": np.zeros((1, 1), np.float32), "z": np.zeros((2, 1), np.float32)},
            "Batching Run() input tensors must have equal 0th-dimension size",
            id="unequal sizes",
        ),
    ],
)
def test_batch_scheduler_task_input_checks_use_batching_util_texts(
    inputs: Tensors, message: str
) -> None:
    scheduler = make_scheduler(GatedModel())

    with pytest.raises(ServingError) as raised:
        scheduler.submit(inputs, timeout=10)
    scheduler.close()

    assert raised.value.code == Code.INVALID_ARGUMENT
    assert raised.value.message == message


def test_batch_scheduler_pads_with_the_last_tasks_first_row_and_records_the_padded_size() -> None:
    class CapturingModel(GatedModel):
        def __init__(self) -> None:
            super().__init__()
            self.merged: list[list[float]] = []

        def __call__(self, inputs: Tensors) -> Tensors:
            outputs = super().__call__(inputs)
            self.merged.append(inputs["x"][:, 0].tolist())
            return outputs

    model = CapturingModel()
    batches: list[int] = []
    parameters = BatchingParameters(
        max_batch_size=8, num_batch_threads=1, allowed_batch_sizes=(4, 8)
    )
    scheduler = BatchScheduler(
        model, parameters, threading.Semaphore(1), "test", on_batch=batches.append
    )
    results: dict[int, Tensors] = {}

    def submit(index: int, values: list[float]) -> None:
        x = np.array(values, np.float32).reshape(-1, 1)
        results[index] = scheduler.submit({"x": x}, timeout=10)

    first = threading.Thread(target=submit, args=(0, [5.0]))
    first.start()
    assert model.entered.wait(10)
    one = threading.Thread(target=submit, args=(1, [1.0]))
    one.start()
    wait_for_queued(scheduler, 1)
    two = threading.Thread(target=submit, args=(2, [2.0, 3.0]))
    two.start()
    wait_for_queued(scheduler, 3)
    model.gate.set()
    for thread in (first, one, two):
        thread.join(10)
    scheduler.close()

    # 1 row padded to 4, then 1 + 2 rows padded to 4 with the first row of the last task.
    assert model.merged == [[5.0, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 2.0]]
    assert batches == [4, 4]  # processed_batch_size is the size after padding
    assert results[0]["y"][:, 0].tolist() == [10.0]
    assert results[1]["y"][:, 0].tolist() == [2.0]
    assert results[2]["y"][:, 0].tolist() == [4.0, 6.0]


def test_model_server_batches_by_the_signatures_tensor_names(tmp_path: Path) -> None:
    """The server's schedulers name inputs as the SignatureDef does (TF Serving's batching
    session runs on tensor names, not aliases), so a mixed batch names `serving_default_x:0`."""
    path = save_half_plus_two(tmp_path / "half_plus_two" / "1")
    parameters = tmp_path / "batching_parameters.txt"
    parameters.write_text(
        "max_batch_size { value: 2 }\n"
        "batch_timeout_micros { value: 10000000 }\n"
        "num_batch_threads { value: 1 }\n"
    )
    server = ModelServer(
        parse_options(
            [
                f"--model_base_path={path.parent}",
                "--enable_batching",
                f"--batching_parameters_file={parameters}",
            ]
        )
    )
    loaded = server._load("half_plus_two", 1, path)
    name = loaded.signature_def_map.signature_def["serving_default"].inputs["x"].name
    assert name == "serving_default_x:0"
    errors: list[ServingError] = []

    def run(width: int) -> None:
        try:
            loaded.run("serving_default", {"x": np.ones((1, width), np.float32)}, 10)
        except ServingError as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(width,)) for width in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    loaded.close()

    assert len(errors) == 2  # one batch of both tasks (max_batch_size 2), refused as a whole
    for error in errors:
        assert error.code == Code.FAILED_PRECONDITION
        assert error.message.startswith(
            "Tensors with name 'serving_default_x:0' from different tasks have different shapes"
        )
