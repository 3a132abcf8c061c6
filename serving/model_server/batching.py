"""Server-side batching, as TF Serving's `--enable_batching`: concurrent requests become one run.

Each (model, version, signature) gets a queue. A task is one request's inputs; a batch takes
queued tasks in order while their summed dimension-0 sizes fit `max_batch_size`, waiting at most
`batch_timeout_micros` after the oldest task for more to arrive. Inputs are concatenated along
dimension 0, run once, and the outputs are split back. `num_batch_threads` batches run at once
across all queues; a full queue answers UNAVAILABLE (HTTP 503), as TF Serving does.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from serving.model_server.errors import Code, ServingError

__all__ = ["BatchScheduler", "BatchingParameters", "SchedulerClosed"]

Tensors = dict[str, np.ndarray]

logger = logging.getLogger("serving.model_server")


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's BatchingParameters (the fields this server honours), with its defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 4
    allowed_batch_sizes: tuple[int, ...] = ()

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be positive")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must be non-negative")
        if self.max_enqueued_batches < 1 or self.num_batch_threads < 1:
            raise ValueError("max_enqueued_batches and num_batch_threads must be positive")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes must be positive and increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    "The last entry in allowed_batch_sizes must match max_batch_size; last "
                    f"entry was {sizes[-1]}; expected {self.max_batch_size}"
                )


class SchedulerClosed(ServingError):
    """The version this scheduler belonged to was unloaded; its caller runs the request itself
    (a request keeps the version it resolved, batched or not)."""

    def __init__(self) -> None:
        super().__init__(Code.UNAVAILABLE, "The batch scheduler is shutting down")


@dataclass(eq=False)
class _Task:
    inputs: Tensors
    size: int
    enqueued_at: float
    done: threading.Event = field(default_factory=threading.Event)
    outputs: Tensors | None = None
    error: ServingError | None = None
    abandoned: bool = False


def _task_size(inputs: Tensors) -> int:
    """The task's dimension-0 size, checked as TF Serving's ComputeTensorBatchSize does."""
    if not inputs:
        raise ServingError.invalid_argument("Batching Run() must have at least one input tensor")
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise ServingError.invalid_argument(
                "Batching Run() input tensors must have at least one dimension"
            )
        sizes.add(array.shape[0])
        if len(sizes) != 1:
            raise ServingError.invalid_argument(
                "Batching Run() input tensors must have equal 0th-dimension size"
            )
    return sizes.pop()


class BatchScheduler:
    """One queue of tasks for one signature of one version, drained by worker threads."""

    def __init__(
        self,
        run: Callable[[Tensors], Tensors],
        parameters: BatchingParameters,
        limiter: threading.Semaphore,
        name: str,
        on_batch: Callable[[int], None] | None = None,
        input_names: Mapping[str, str] | None = None,
        output_names: Mapping[str, str] | None = None,
    ) -> None:
        """`input_names`/`output_names`: the SignatureDef's tensor name of each alias (TF
        Serving's batching session sees tensor names, not aliases); an alias stands for itself
        when missing."""
        self._run = run
        self._input_names = dict(input_names or {})
        self._output_names = dict(output_names or {})
        self._parameters = parameters
        self._limiter = limiter
        self._on_batch = on_batch
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued_size = 0
        self._condition = threading.Condition()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"batch-{name}-{index}", daemon=True)
            for index in range(parameters.num_batch_threads)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, inputs: Tensors, timeout: float | None = None) -> Tensors:
        """Queue one request and wait for its share of a batch's outputs."""
        size = _task_size(inputs)
        maximum = self._parameters.max_batch_size
        if size > maximum:
            raise ServingError.invalid_argument(
                f"Task size {size} is larger than maximum input batch size {maximum}"
            )
        task = _Task(inputs=inputs, size=size, enqueued_at=time.monotonic())
        with self._condition:
            if self._closed:
                raise SchedulerClosed()
            batches = -(-(self._queued_size + size) // maximum)
            if batches > self._parameters.max_enqueued_batches:
                raise ServingError.unavailable(
                    "The batch scheduling queue to which this task was submitted is full"
                )
            self._queue.append(task)
            self._queued_size += size
            self._condition.notify()
        if not task.done.wait(timeout):
            task.abandoned = True
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def close(self) -> None:
        """Finish the queued tasks, then stop the workers."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    # -- workers -------------------------------------------------------------------------------

    def _next_batch(self) -> list[_Task] | None:
        maximum = self._parameters.max_batch_size
        timeout = self._parameters.batch_timeout_micros / 1e6
        with self._condition:
            while not self._queue:
                if self._closed:
                    return None
                self._condition.wait()
            # Wait for the batch to fill, up to the timeout counted from its oldest task.
            while self._queued_size < maximum and not self._closed:
                remaining = self._queue[0].enqueued_at + timeout - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
                if not self._queue:
                    return []
            batch: list[_Task] = []
            total = 0
            while self._queue and total + self._queue[0].size <= maximum:
                task = self._queue.popleft()
                self._queued_size -= task.size
                total += task.size
                if not task.abandoned:
                    batch.append(task)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                with self._limiter:
                    self._execute(batch)

    def _padded_size(self, size: int) -> int:
        for allowed in self._parameters.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size

    def _execute(self, batch: list[_Task]) -> None:
        sizes = [task.size for task in batch]
        total = sum(sizes)
        padded = self._padded_size(total)
        try:
            # Recorded as TF Serving does: the size after padding, before the inputs are merged
            # (so also for a batch that fails afterwards).
            if self._on_batch is not None:
                self._on_batch(padded)
            merged = _merge_inputs(batch, padded - total, self._input_names)
            outputs = self._run(merged)
            # SplitOutputTensors checks the outputs in the order of their tensor names.
            for alias in sorted(outputs, key=lambda alias: self._output_names.get(alias, alias)):
                array = outputs[alias]
                if array.ndim == 0:
                    raise ServingError.failed_precondition("Batched output tensor has 0 dimensions")
                if array.shape[0] != padded:
                    raise ServingError.failed_precondition(
                        "Batched output tensor's 0th dimension does not equal the sum of the "
                        "0th dimension sizes of the input tensors"
                    )
            offsets = np.cumsum([0, *sizes]).tolist()
            for index, task in enumerate(batch):
                start, end = offsets[index], offsets[index + 1]
                task.outputs = {alias: array[start:end] for alias, array in outputs.items()}
        except ServingError as error:
            for task in batch:
                task.error = error
        except Exception as error:  # a bug must not leave requests waiting forever
            logger.exception("batch failed")
            for task in batch:
                task.error = ServingError.internal(f"Batch failed: {type(error).__name__}")
        finally:
            for task in batch:
                task.done.set()


def _merge_inputs(batch: list[_Task], padding: int, names: Mapping[str, str]) -> Tensors:
    """BatchingSession::MergeInputTensors without pad_variable_length_inputs.

    Every task's tensor must have the first task's shape past dimension 0; `padding` rows are
    copies of the first row of the last task's tensor.
    """
    reference = batch[0].inputs
    for task in batch[1:]:
        for alias, array in task.inputs.items():
            if array.shape[1:] != reference[alias].shape[1:]:
                name = names.get(alias, alias)
                raise ServingError.failed_precondition(
                    f"Tensors with name '{name}' from different tasks have different shapes "
                    "and padding is turned off. Set pad_variable_length_inputs to true, or "
                    "ensure that all tensors with the same name have equal dimensions starting "
                    "with the first dim."
                )
    if len(batch) == 1 and not padding:
        return reference
    merged = {}
    for alias in reference:
        parts = [task.inputs[alias] for task in batch]
        if padding:
            parts.append(np.repeat(parts[-1][:1], padding, axis=0))
        merged[alias] = _concatenate(parts)
    return merged


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    if parts[0].dtype == object:
        total = sum(part.shape[0] for part in parts)
        merged = np.empty((total, *parts[0].shape[1:]), dtype=object)
        offset = 0
        for part in parts:
            merged[offset : offset + part.shape[0]] = part
            offset += part.shape[0]
        return merged
    try:
        return np.concatenate(parts, axis=0)
    except ValueError as error:  # not expected: shapes and dtypes were checked before
        raise ServingError.internal(f"Tensor concat operation failed: {error}") from None
