"""Which `tf.distribute` strategy and which precision a run trains with (DESIGN.md decision 9).

`auto` picks MultiWorkerMirroredStrategy when `TF_CONFIG` describes a cluster, MirroredStrategy
when several GPUs are visible, and the default strategy otherwise; on GPUs with bfloat16 units
(compute capability 8.0 and later) the model computes in `mixed_bfloat16`. The choices are pure
functions of what was asked and what the machine has, so they are tested without the hardware;
`create_strategy` turns a plan into the real engine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "PRECISIONS",
    "STRATEGIES",
    "PrecisionPlan",
    "StrategyPlan",
    "create_strategy",
    "is_chief_task",
    "parse_tf_config",
    "plan_precision",
    "plan_strategy",
    "visible_gpus",
]

StrategyName = Literal["auto", "default", "mirrored", "multi-worker"]
STRATEGIES: tuple[str, ...] = ("auto", "default", "mirrored", "multi-worker")
PrecisionName = Literal["auto", "float32", "mixed_bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_bfloat16")
# bfloat16 tensor cores arrived with Ampere (compute capability 8.0).
_BFLOAT16_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class StrategyPlan:
    """The strategy to build, why, and whether this process is the one that writes results."""

    kind: Literal["default", "mirrored", "multi-worker"]
    reason: str
    is_chief: bool = True
    task: str = ""  # "worker:1" under a cluster
    cluster: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "is_chief": self.is_chief,
            "task": self.task,
        }


@dataclass(frozen=True)
class PrecisionPlan:
    policy: Literal["float32", "mixed_bfloat16"]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "reason": self.reason}


def parse_tf_config(text: str | None) -> dict[str, Any] | None:
    """The `TF_CONFIG` document, or None when unset; ValueError when it is not valid."""
    if text is None or not text.strip():
        return None
    try:
        document = json.loads(text)
    except ValueError:
        raise ValueError("TF_CONFIG is not valid JSON") from None
    if not isinstance(document, dict):
        raise ValueError("TF_CONFIG is not a JSON object")
    cluster, task = document.get("cluster"), document.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError("TF_CONFIG has no cluster")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError("TF_CONFIG has no task (type and index)")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError("TF_CONFIG's task is not a member of its cluster")
    return document


def indexed_job_tf_config(
    *, index: int, workers: int, job_name: str, service: str, port: int = 2222
) -> str:
    """`TF_CONFIG` for a pod of a Kubernetes Indexed Job (no Training Operator).

    Kubernetes names the pod of completion index i `<job name>-<i>` and, with the Job's headless
    Service as the pod's `subdomain`, resolves `<job name>-<i>.<service>` inside the namespace.
    Worker 0 is the chief.
    """
    if workers < 1 or not 0 <= index < workers:
        raise ValueError(f"completion index {index} is not one of {workers} workers")
    if not job_name or not service:
        raise ValueError("the job name and the worker Service must be given")
    if not 0 < port < 65536:
        raise ValueError(f"invalid worker port {port}")
    hosts = [f"{job_name}-{each}.{service}:{port}" for each in range(workers)]
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


def _is_chief(document: Mapping[str, Any]) -> bool:
    task_type, index = document["task"]["type"], int(document["task"]["index"])
    if task_type == "chief":
        return True
    # Without a dedicated chief, worker 0 is the chief (as TensorFlow's own convention).
    return task_type == "worker" and index == 0 and "chief" not in document["cluster"]


def is_chief_task(tf_config: str | None) -> bool:
    """Whether this process writes the results: always, unless TF_CONFIG names another chief."""
    document = parse_tf_config(tf_config)
    return document is None or _is_chief(document)


def plan_strategy(requested: str, *, gpu_count: int, tf_config: str | None = None) -> StrategyPlan:
    """The strategy for `requested` (auto|default|mirrored|multi-worker) on this machine."""
    if requested not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {requested!r}")
    document = parse_tf_config(tf_config)
    if requested == "multi-worker" or (requested == "auto" and document is not None):
        if document is None:
            raise ValueError("the multi-worker strategy needs TF_CONFIG (cluster and task)")
        task = f"{document['task']['type']}:{document['task']['index']}"
        workers = sum(len(members) for members in document["cluster"].values())
        return StrategyPlan(
            kind="multi-worker",
            reason=f"TF_CONFIG describes a cluster of {workers} tasks; this is {task}",
            is_chief=_is_chief(document),
            task=task,
            cluster=document["cluster"],
        )
    if requested == "mirrored" or (requested == "auto" and gpu_count > 1):
        devices = f"{gpu_count} GPUs" if gpu_count else "the CPU"
        return StrategyPlan(kind="mirrored", reason=f"MirroredStrategy over {devices}")
    reason = "one device" if requested == "auto" else "asked for"
    return StrategyPlan(kind="default", reason=f"default strategy ({reason})")


def plan_precision(
    requested: str, gpu_capabilities: Sequence[tuple[int, int] | None]
) -> PrecisionPlan:
    """`auto`: mixed_bfloat16 when every visible GPU has bfloat16 units, float32 otherwise."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested != "auto":
        return PrecisionPlan(policy=requested, reason="asked for")  # type: ignore[arg-type]
    if not gpu_capabilities:
        return PrecisionPlan(policy="float32", reason="no GPU: CPUs train in float32")
    if all(
        capability is not None and tuple(capability) >= _BFLOAT16_CAPABILITY
        for capability in gpu_capabilities
    ):
        return PrecisionPlan(
            policy="mixed_bfloat16",
            reason="every GPU has bfloat16 units (compute capability 8.0+): mixed_bfloat16",
        )
    # float16 would need loss scaling, which the training loop does not do; bfloat16 does not.
    return PrecisionPlan(
        policy="float32",
        reason="a GPU without bfloat16 units (compute capability below 8.0): float32",
    )


def visible_gpus() -> list[tuple[int, int] | None]:
    """The compute capability of each GPU TensorFlow sees (None where it does not say)."""
    import tensorflow as tf

    capabilities: list[tuple[int, int] | None] = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except (ValueError, RuntimeError):  # a device that reports nothing
            details = {}
        capability = details.get("compute_capability")
        capabilities.append((int(capability[0]), int(capability[1])) if capability else None)
    return capabilities


_SHARED_TEXT_BYTES = 128


def create_strategy(plan: StrategyPlan, collective_timeout: float = 0.0) -> tf.distribute.Strategy:
    """Build the strategy of `plan` (the multi-worker one joins the cluster it names; each of
    its collectives fails after `collective_timeout` seconds, 0: never)."""
    import tensorflow as tf

    if plan.kind == "multi-worker":
        assert plan.cluster is not None
        task_type, task_index = plan.task.split(":")
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(dict(plan.cluster)),
            task_type=task_type,
            task_id=int(task_index),
            rpc_layer="grpc",
        )
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout or None
        )
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )
    if plan.kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [device.name for device in gpus] or ["/cpu:0"]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def chief_text(strategy: tf.distribute.Strategy, text: str, *, is_chief: bool) -> str:
    """The chief's `text` on every worker (one all-reduce; at most 128 UTF-8 bytes).

    The workers of one cluster agree this way on the run id, so every log line of a run names
    the same one even when the orchestrator could not hand them a common `--run-id`.
    """
    import numpy as np
    import tensorflow as tf

    encoded = text.encode("utf-8")
    if len(encoded) > _SHARED_TEXT_BYTES:
        raise ValueError(f"at most {_SHARED_TEXT_BYTES} bytes can be shared, not {len(encoded)}")
    values = np.zeros(_SHARED_TEXT_BYTES, np.int32)
    if is_chief:
        values[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    contribution = tf.constant(values)
    # Every local replica of the chief adds its copy: divide by the replicas per worker.
    total = strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(contribution)), axis=None
    )
    shared = total.numpy() // len(strategy.extended.worker_devices)
    return bytes(shared[shared > 0].astype(np.uint8).tolist()).decode("utf-8")
