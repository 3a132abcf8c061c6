"""The batch scheduler in-process: merging along dimension 0, splitting back, limits."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from serving.model_server.batching import BatchingParameters, BatchScheduler
from serving.model_server.errors import Code, ServingError

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
    for _ in range(10_000):
        if scheduler._queued_size == 3:
            break
        threading.Event().wait(0.001)
    model.gate.set()
    for thread in [first, *others]:
        thread.join(10)
    scheduler.close()

    assert model.batch_sizes == [1, 3]
    assert batches == [1, 3]  # the batch metric sees each batch once, with its row count
    assert sorted(errors) == [0, 1, 2]
    assert {error.code for error in errors.values()} == {Code.INTERNAL}
    assert errors[0].message == "Batched output tensor bad has 0th dimension 2, expected 1"
    for index in (1, 2):
        assert errors[index].message == "Batched output tensor bad has 0th dimension 4, expected 3"
