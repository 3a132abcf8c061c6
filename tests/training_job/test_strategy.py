"""Strategy and precision plans for `--strategy auto`, TF_CONFIG parsing and the chief, and the
strategies built on this CPU (the two-worker run lives in test_train.py, through the same plan)."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from training_job.strategy import (
    create_strategy,
    is_chief_task,
    parse_tf_config,
    plan_precision,
    plan_strategy,
)


def _tf_config(task_type: str, index: int, *, chief: bool = False) -> str:
    cluster: dict[str, list[str]] = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    if chief:
        cluster["chief"] = ["127.0.0.1:3"]
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize(
    ("requested", "gpus", "tf_config", "kind"),
    [
        ("auto", 0, None, "default"),
        ("auto", 1, None, "default"),
        ("auto", 4, None, "mirrored"),
        ("auto", 0, _tf_config("worker", 0), "multi-worker"),
        ("auto", 4, _tf_config("worker", 1), "multi-worker"),
        ("default", 4, None, "default"),
        ("mirrored", 0, None, "mirrored"),
        ("multi-worker", 0, _tf_config("worker", 1), "multi-worker"),
    ],
)
def test_plan_strategy_auto_follows_cluster_then_gpus(
    requested: str, gpus: int, tf_config: str | None, kind: str
) -> None:
    assert plan_strategy(requested, gpu_count=gpus, tf_config=tf_config).kind == kind


@pytest.mark.parametrize(
    ("tf_config", "is_chief"),
    [
        (None, True),
        (_tf_config("worker", 0), True),
        (_tf_config("worker", 1), False),
        (_tf_config("chief", 0, chief=True), True),
        (_tf_config("worker", 0, chief=True), False),
    ],
)
def test_plan_strategy_chief_is_chief_task_or_worker_zero(
    tf_config: str | None, is_chief: bool
) -> None:
    assert plan_strategy("auto", gpu_count=0, tf_config=tf_config).is_chief is is_chief


def test_plan_strategy_multi_worker_without_tf_config_raises() -> None:
    with pytest.raises(ValueError):
        plan_strategy("multi-worker", gpu_count=0, tf_config=None)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"task": {"type": "worker", "index": 0}}',
        '{"cluster": {"worker": ["a:1"]}}',
        '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
    ],
)
def test_parse_tf_config_invalid_raises(text: str) -> None:
    with pytest.raises(ValueError):
        parse_tf_config(text)


@pytest.mark.parametrize(
    ("requested", "capabilities", "policy"),
    [
        ("auto", [], "float32"),
        ("auto", [(8, 0), (9, 0)], "mixed_bfloat16"),
        ("auto", [(8, 0), (7, 5)], "float32"),
        ("auto", [None], "float32"),
        ("mixed_bfloat16", [], "mixed_bfloat16"),
        ("float32", [(9, 0)], "float32"),
    ],
)
def test_plan_precision_mixed_bfloat16_only_where_every_gpu_has_it(
    requested: str, capabilities: list[tuple[int, int] | None], policy: str
) -> None:
    assert plan_precision(requested, capabilities).policy == policy


def test_create_strategy_default_and_mirrored_on_cpu() -> None:
    default = create_strategy(plan_strategy("default", gpu_count=0))
    mirrored = create_strategy(plan_strategy("mirrored", gpu_count=0))

    assert default is tf.distribute.get_strategy()
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 1


@pytest.mark.parametrize(
    ("tf_config", "is_chief"),
    [(None, True), (_tf_config("worker", 0), True), (_tf_config("worker", 1), False)],
)
def test_is_chief_task_without_tensorflow_matches_the_plan(
    tf_config: str | None, is_chief: bool
) -> None:
    assert is_chief_task(tf_config) is is_chief
