"""The monitoring keys, the walk over the users with records, and the PSI's arithmetic."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from monitoring.records import list_users
from monitoring.stats import EPSILON, categorical_psi, numeric_psi
from storage import LocalStore, keys


def test_monitoring_keys_spell_the_layout() -> None:
    assert keys.monitoring_day_file(date(2026, 12, 7), "summary.json") == (
        "output/monitoring/2026-12-07/summary.json"
    )
    moment = datetime(2026, 12, 7, 13, 4, 5, 999, tzinfo=UTC)
    assert keys.monitoring_compare_file(moment, "report.json") == (
        "output/monitoring/compare/20261207T130405Z/report.json"
    )
    assert keys.monitoring_reference("run-1") == "output/monitoring/reference/run-1.json"
    with pytest.raises(ValueError, match="invalid"):
        keys.monitoring_day_file(date(2026, 12, 7), "../x")
    with pytest.raises(ValueError, match="day"):
        keys.monitoring_day_file(moment, "summary.json")


def test_users_are_walked_one_key_each_in_key_order(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    moment = datetime(2026, 12, 7, 12, tzinfo=UTC)
    # "-" and "." sort before "/", "0" after it: the walk must not skip or repeat a user.
    users = ["alice", "alice-b", "alice.c", "alice0", "bob"]
    for user in users:
        for _ in range(3):
            store.put_json(keys.inference_record(user, keys.new_inference_id(moment)), {})
    store.put(keys.LEGACY_HISTORY_FILE, b"id\n")

    assert sorted(list_users(store)) == sorted(users)
    assert keys.inference_user_from_key(keys.LEGACY_HISTORY_FILE) is None


def test_psi_is_zero_for_the_same_sample_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0.5, 0.05, 2000)

    same, bins = numeric_psi(reference, rng.normal(0.5, 0.05, 500))
    shifted, _ = numeric_psi(reference, rng.normal(0.4, 0.05, 500))

    assert bins == 10
    assert same < 0.05
    assert shifted > 1.0
    assert numeric_psi([256.0] * 100, [256.0] * 100)[0] == 0.0
    assert numeric_psi([256.0] * 100, [512.0] * 100)[0] > 5


def test_psi_of_categories_takes_an_empty_share_as_epsilon() -> None:
    expected = (0.1 - EPSILON) * math.log(0.1 / EPSILON) + (0.4 - 0.5) * math.log(0.4 / 0.5)

    value = categorical_psi({"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.5, "c": 0.1})

    assert value == pytest.approx(expected, abs=1e-5)
    assert categorical_psi({"a": 1.0}, {"a": 1.0}) == 0.0
