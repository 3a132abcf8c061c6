"""The storage hierarchy's key functions: pure, so plain table tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from storage import keys


def test_keys_model_layout_matches_tf_serving_base_path() -> None:
    assert keys.model_prefix("cnn_vit") == "input/model/cnn_vit/"
    assert keys.model_version_prefix("cnn_vit", 12) == "input/model/cnn_vit/12/"
    assert keys.model_version_manifest("cnn_vit", 3) == "input/model/cnn_vit/3/manifest.json"
    assert keys.model_registry("cnn_vit") == "input/model/cnn_vit/registry.json"
    assert keys.model_version_from_key("cnn_vit", "input/model/cnn_vit/7/saved_model.pb") == 7
    assert keys.model_version_from_key("cnn_vit", "input/model/cnn_vit/registry.json") is None
    assert keys.model_version_from_key("cnn_vit", "input/model/other/7/x") is None


@pytest.mark.parametrize("version", [0, -1, True, 1.5, "3"])
def test_keys_model_version_must_be_a_positive_integer(version: object) -> None:
    with pytest.raises(ValueError, match="version"):
        keys.model_version_prefix("m", version)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["", "..", "a/b", "a b", "../x", ".hidden", "x" * 200, "é", "2\n", "u\n\n"]
)
def test_keys_names_that_could_escape_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        keys.model_prefix(name)
    with pytest.raises(ValueError, match="invalid"):
        keys.inference_user_prefix(name)


def test_keys_original_areas_are_kept() -> None:
    assert keys.users_file() == "input/db_auth/authentication.csv"
    assert keys.db_prefix() == "input/db/"
    assert keys.db_prefix("batch-2026") == "input/db/batch-2026/"
    assert keys.sample_image("covid_01.png") == "input/data/covid_01.png"
    assert keys.learning_file("run1", "decision.json") == "output/learning/run1/decision.json"
    assert keys.learning_candidate_prefix("run1") == "output/learning/run1/candidate/"


def test_keys_inference_id_round_trips_its_time_and_is_random() -> None:
    moment = datetime(2026, 11, 27, 8, 56, 54, 123456, tzinfo=UTC)
    first, second = keys.new_inference_id(moment), keys.new_inference_id(moment)
    assert first != second
    assert keys.inference_id_time(first) == moment
    assert len(first) == len("20261127T085654123456Z") + 32


def test_keys_inference_id_converts_to_utc() -> None:
    moment = datetime(2026, 11, 27, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    assert keys.inference_id_time(keys.new_inference_id(moment)).hour == 8


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x",
        "20261127T085654123456Z",
        "20261327T085654123456Z" + "0" * 32,
        "../../etc",
        "20261127T085654123456Z" + "0" * 32 + "\n",
    ],
)
def test_keys_bad_inference_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"inference id|month|does not match"):
        keys.inference_record("alice", bad)


def test_keys_records_of_later_times_sort_first() -> None:
    base = datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)
    later = base + timedelta(microseconds=1)  # the next day, month
    older = keys.inference_record("u", keys.new_inference_id(base))
    newer = keys.inference_record("u", keys.new_inference_id(later))
    assert newer < older


def test_keys_inference_id_round_trips_through_its_record_key() -> None:
    iid = keys.new_inference_id(datetime(2026, 11, 27, 8, 56, 54, tzinfo=UTC))
    assert keys.inference_id_from_record(keys.inference_record("alice", iid)) == iid


def test_keys_gradcam_image_lives_under_its_user_and_date() -> None:
    iid = keys.new_inference_id(datetime(2026, 11, 27, tzinfo=UTC))
    assert keys.gradcam_image("alice", iid) == f"output/grad_cam/alice/2026-11-27/{iid}.png"


def test_keys_login_failures_sort_newest_first_and_round_trip_time() -> None:
    digest = "ab" * 32
    older = keys.login_failure(digest, 1_800_000_000.0, "00ff00ff")
    newer = keys.login_failure(digest, 1_800_000_001.5, "00ff00ff")
    assert newer < older
    assert older.startswith("login_failures/" + digest + "/")
    assert keys.login_failure_time(newer) == 1_800_000_001.5
    assert keys.login_failure_time("login_failures/x/not-a-time") is None
    with pytest.raises(ValueError, match="digest"):
        keys.login_failures_prefix("../users")
