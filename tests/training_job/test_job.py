"""The training job end to end on synthetic X-rays: first run promotes, unchanged data does
nothing, a better model is promoted and served, a worse one (trained on mislabelled images) is
kept out with the reason recorded, corrupt images are skipped and named, a database in another
bucket works, and every run leaves its outputs.

One chain of runs on one local store is shared by most tests (module fixture), so the models are
trained once; a mini CNN-ViT (32 px) keeps each run to seconds.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf

from cnn_vit.config import get_preset
from model_contract.registry import ModelRegistry
from storage import LocalStore, StorageAreas, StorageSettings, Store, keys, open_areas
from synthetic.xrays import (
    COVID_QU_EX_CLASS_FOLDERS,
    encode_png,
    generate_dataset,
    write_covid_qu_ex_to_store,
)
from tests.conftest import new_bucket
from tests.model_contract.helpers import write_fake_saved_model
from tests.stores import InterceptingStore
from training_job.discovery import DatasetError
from training_job.job import JobResult, run_job
from training_job.options import TrainingOptions
from training_job.settings import TrainingJobSettings

pytestmark = pytest.mark.slow

# The small preset at 32 px with one transformer block: learns the synthetic task to a macro-F1
# around 0.8 in a dozen short epochs, and stays near chance after one.
MINI = get_preset("small").replace(
    name="mini",
    image_size=32,
    encoder_filters=(8, 16),
    projection_dim=16,
    transformer_layers=1,
    num_heads=2,
    key_dim=8,
    transformer_mlp_units=(32, 16),
    mlp_head_units=(32,),
    gradcam_layer="encoder_conv_2",
)
MODEL = "cnn_vit"
CORRUPT_TRAIN = "b1/Train/Normal/images/corrupt.png"
CORRUPT_TEST = "b1/Test/COVID-19/images/empty.png"
# Each class's images filed under the next class's folder: labels that are systematically wrong.
MISLABELLED_AS = {"normal": "covid", "covid": "no-covid", "no-covid": "normal"}


@dataclass
class Run:
    result: JobResult
    events: list[dict[str, Any]]


def _run(settings: TrainingJobSettings, areas: StorageAreas | None = None, **options: Any) -> Run:
    stream = io.StringIO()
    defaults: dict[str, Any] = {"model_config": MINI, "batch_size": 16, "min_macro_f1": 0.0}
    job_options = TrainingOptions(**(defaults | options))
    result = run_job(settings, job_options, stream=stream, areas=areas)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    return Run(result, events)


def _read_json(store: Store, key: str) -> Any:
    return json.loads(store.get_bytes(key))


def _decision(store: Store, run: Run) -> dict[str, Any]:
    return _read_json(store, keys.learning_file(run.result.run_id, "decision.json"))


def _write_mislabelled_batch(store: Store, per_class: int, seed: int) -> None:
    for _, index, film in generate_dataset({"train": per_class}, seed):
        folder = COVID_QU_EX_CLASS_FOLDERS[MISLABELLED_AS[film.class_name]]
        key = f"input/db/mislabelled/Train/{folder}/images/{film.class_name}_{index:04d}.png"
        store.put(key, encode_png(film.image))


@dataclass
class Chain:
    store: LocalStore
    settings: TrainingJobSettings
    first: Run
    unchanged: Run
    better: Run
    worse: Run


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    folder = tmp_path_factory.mktemp("job-chain")
    store = LocalStore(folder / "store")
    settings = TrainingJobSettings(
        storage=StorageSettings(url=str(folder / "store")), cache_dir=folder / "cache"
    )
    write_covid_qu_ex_to_store(store, keys.db_prefix("b1"), {"train": 30, "val": 8, "test": 15})
    store.put("input/db/" + CORRUPT_TRAIN, b"\x89PNG\r\n\x1a\n but not a PNG after all")
    store.put("input/db/" + CORRUPT_TEST, b"")

    # A first model after one epoch: barely better than chance, but above the minimum of 0.
    first = _run(settings, epochs=1)  # 24 validation images: too few to calibrate on
    unchanged = _run(settings, epochs=1)
    # New data; fine-tuned at a brisker rate for a dozen epochs: clearly better.
    write_covid_qu_ex_to_store(store, keys.db_prefix("b2"), {"train": 30}, seed=1, layout="plain")
    better = _run(settings, epochs=12, learning_rate=3e-3, patience=4, calibration_min_images=20)
    # Twice as many mislabelled images as correct ones: the challenger learns the wrong classes.
    _write_mislabelled_batch(store, per_class=120, seed=2)
    worse = _run(
        settings, epochs=6, learning_rate=3e-3, from_scratch=True, calibration_min_images=10_000
    )
    return Chain(store, settings, first, unchanged, better, worse)


def _events(run: Run, name: str) -> list[dict[str, Any]]:
    return [event for event in run.events if event["event"] == name]


# -- the chain ------------------------------------------------------------------------------------


def test_run_job_first_run_publishes_and_promotes_version_1(chain: Chain) -> None:
    result = chain.first.result
    entry = ModelRegistry(chain.store, MODEL).load().versions[1]
    decision = _decision(chain.store, chain.first)

    assert (result.verdict, result.promoted, result.published_version) == ("promote", True, 1)
    assert entry.run_id == result.run_id
    assert entry.parent_version is None
    assert entry.preset == "mini"
    assert entry.dataset_fingerprint == decision["dataset"]["fingerprint"]
    assert entry.metrics["macro_f1"] == pytest.approx(result.metrics["candidate"]["macro_f1"])
    assert decision["verdict"] == "promote"
    assert [check["name"] for check in decision["checks"]] == ["minimum_macro_f1"]


def test_run_job_rerun_with_unchanged_data_does_nothing(chain: Chain) -> None:
    result = chain.unchanged.result
    decision = _decision(chain.store, chain.unchanged)

    assert (result.verdict, result.promoted, result.stable_version) == ("unchanged", False, 1)
    assert decision["verdict"] == "unchanged"
    assert "unchanged" in decision["reason"]
    assert sorted(result.artefacts) == ["decision.json", "job.log"]
    assert not any(event["event"] == "training_started" for event in chain.unchanged.events)


def test_run_job_better_model_promoted_and_its_version_answers(
    chain: Chain, tmp_path: Path
) -> None:
    result = chain.better.result
    registry = ModelRegistry(chain.store, MODEL)
    decision = _decision(chain.store, chain.better)

    assert (result.verdict, result.promoted, result.published_version) == ("promote", True, 2)
    assert decision["checks"]
    assert all(check["passed"] for check in decision["checks"])
    assert decision["training"]["starting_weights"]["source"] == "stable"
    assert registry.load().versions[2].parent_version == 1
    assert registry.load().previous_stable[0] == 1
    served = registry.download_version(2, tmp_path / "v2")
    answer = tf.saved_model.load(str(served)).signatures["serving_default"](
        image_bytes=tf.constant(
            [chain.store.get_bytes("input/db/b1/Test/Normal/images/normal_00001.png")]
        )
    )
    assert int(answer["model_version"][0]) == 2
    assert answer["model_run_id"][0].numpy().decode() == result.run_id


def test_run_job_worse_challenger_kept_and_decision_says_why(chain: Chain) -> None:
    result = chain.worse.result
    registry = ModelRegistry(chain.store, MODEL).load()
    decision = _decision(chain.store, chain.worse)

    assert (result.verdict, result.promoted, result.published_version) == ("keep", False, None)
    assert registry.stable == 2
    assert sorted(registry.versions) == [1, 2]
    assert decision["promoted"] is False
    assert decision["compared"]["stable"]["model"]["version"] == 2
    assert (
        decision["compared"]["candidate"]["macro_f1"] < decision["compared"]["stable"]["macro_f1"]
    )
    failed = {check["name"] for check in decision["checks"] if not check["passed"]}
    assert "macro_f1_margin" in failed
    assert decision["reason"].startswith("the stable version 2 model stays")


def test_run_job_corrupt_images_skipped_counted_and_named(chain: Chain) -> None:
    decision = _decision(chain.store, chain.first)
    candidate_report = _read_json(
        chain.store, keys.learning_file(chain.first.result.run_id, "report_candidate.json")
    )

    assert decision["dataset"]["unreadable"] == sorted([CORRUPT_TEST, CORRUPT_TRAIN])
    assert decision["dataset"]["unreadable_count"] == 2
    assert candidate_report["images"] == 3 * 15  # the empty test file is not evaluated
    (warning,) = _events(chain.first, "unreadable_images")
    assert warning["level"] == "warning"
    assert warning["count"] == 2


@pytest.mark.parametrize("run_name", ["first", "worse"])
def test_run_job_outputs_written_promoted_or_not(chain: Chain, run_name: str) -> None:
    run: Run = getattr(chain, run_name)
    prefix = keys.learning_run_prefix(run.result.run_id)
    files = {key[len(prefix) :] for key in chain.store.list_keys(prefix)}
    history = list(
        csv.DictReader(io.StringIO(chain.store.get_bytes(prefix + "history.csv").decode()))
    )
    report = _read_json(chain.store, prefix + "report_candidate.json")

    expected = {
        "history.csv",
        "dataset.csv",
        "report_candidate.json",
        "confusion_matrix_candidate.png",
        "training_curves.png",
        "reliability_diagram.png",
        "model.keras",
        "candidate/saved_model.pb",
        "candidate/assets/model_identity.txt",
        "decision.json",
        "job.log",
    }
    if run_name == "worse":
        expected |= {"report_stable.json", "confusion_matrix_stable.png"}
    assert expected <= files
    assert len(history) == len(_events(run, "epoch")) >= 1
    assert float(history[0]["images_per_second"]) > 0
    assert set(report["per_class"]["covid"]) == {"precision", "recall", "f1", "support", "roc_auc"}
    assert len(report["confusion_matrix"]["counts"]) == 3
    assert chain.store.get_bytes(prefix + "training_curves.png").startswith(b"\x89PNG")
    log_lines = chain.store.get_bytes(prefix + "job.log").decode().splitlines()
    assert [json.loads(line)["event"] for line in log_lines][-1] == "job_finished"


def test_run_job_calibrates_on_the_validation_split_and_serves_and_reports_it(
    chain: Chain,
) -> None:
    run = chain.better
    prefix = keys.learning_run_prefix(run.result.run_id)
    report = _read_json(chain.store, prefix + "report_candidate.json")["calibration"]
    info = _read_json(chain.store, prefix + "candidate/assets.extra/model_info.json")
    assert run.result.published_version is not None
    entry = ModelRegistry(chain.store, MODEL).load().versions[run.result.published_version]
    (calibrated,) = _events(run, "calibrated")
    (measured,) = _events(run, "calibration_measured")

    temperature = report["temperature"]
    assert 0.05 <= temperature <= 20
    assert report["fitted_on"] == {"split": "val", "images": calibrated["val_images"]}
    assert calibrated["val_images"] == 24
    # The fit minimises the validation NLL, with T = 1 among its candidates.
    validation = report["validation"]
    assert validation["after"]["nll"] <= validation["before"]["nll"] + 1e-9
    for moment in ("before", "after"):
        measures = report["test"][moment]
        assert set(measures["per_class_ece"]) == {"normal", "covid", "no-covid"}
        assert set(measures["per_class_brier"]) == {"normal", "covid", "no-covid"}
        assert measures["images"] == _decision(chain.store, run)["test_images"]
    # What the SavedModel serves, the model info and the registry entry say the same T.
    assert info["calibration"]["temperature"] == pytest.approx(temperature)
    assert info["calibration"]["method"] == ("temperature" if temperature != 1.0 else "none")
    assert entry.metrics["temperature"] == pytest.approx(temperature)
    assert entry.metrics["ece"] == pytest.approx(report["test"]["after"]["ece"])
    assert entry.metrics["ece_uncalibrated"] == pytest.approx(report["test"]["before"]["ece"])
    assert entry.metrics["brier"] == pytest.approx(report["test"]["after"]["brier"])
    assert measured["temperature"] == pytest.approx(temperature, abs=1e-4)
    # Abstention: the threshold chosen on validation, served, measured on test, registered.
    abstention = _read_json(chain.store, prefix + "report_candidate.json")["abstention"]
    threshold = abstention["validation"]["threshold"]
    assert abstention["target_accuracy"] == 0.95
    assert 0.0 <= threshold <= 1.0
    assert info["abstention"]["refer_threshold"] == pytest.approx(threshold)
    assert entry.metrics["refer_threshold"] == pytest.approx(threshold)
    assert entry.metrics["coverage"] == pytest.approx(abstention["test"]["coverage"])
    if abstention["validation"]["reached"]:
        assert abstention["validation"]["accuracy"] >= 0.95
    (chosen,) = _events(run, "refer_threshold_chosen")
    assert chosen["threshold"] == pytest.approx(threshold, abs=1e-4)


def test_run_job_measures_explanations_on_masked_films_and_compares_them(chain: Chain) -> None:
    run = chain.better  # a stable model exists: both are measured on the same films
    prefix = keys.learning_run_prefix(run.result.run_id)
    candidate = _read_json(chain.store, prefix + "report_candidate.json")["explanations"]
    stable = _read_json(chain.store, prefix + "report_stable.json")["explanations"]
    decision = _decision(chain.store, run)

    # The first batch's test films of covid and no-covid have lesion masks (normal has none).
    assert set(candidate["per_class"]) == {"covid", "no-covid"}
    for name, scores in candidate["per_class"].items():
        assert scores["films"] == 15, name
        assert 0.0 <= scores["pointing_game"] <= 1.0
        assert 0.0 <= scores["heat_share_in_mask"] <= 1.0
    (check,) = [c for c in decision["checks"] if c["name"] == "explanation_pointing_game"]
    assert check["value"] == pytest.approx(stable["pointing_game"] - candidate["pointing_game"])
    assert check["threshold"] == 0.1
    assert len(_events(run, "explanations_measured")) == 2


@pytest.mark.parametrize("run_name", ["first", "better", "worse"])
def test_run_job_fits_the_ood_check_and_measures_both_sets(chain: Chain, run_name: str) -> None:
    run: Run = getattr(chain, run_name)
    prefix = keys.learning_run_prefix(run.result.run_id)
    report = _read_json(chain.store, prefix + "report_candidate.json")["ood"]
    info = _read_json(chain.store, prefix + "candidate/assets.extra/model_info.json")["ood"]
    test, not_chest = report["test"], report["not_chest"]

    assert info["enabled"] is True
    assert info["threshold"] > 0
    assert report["fitted_on"]["split"] == "train"
    assert test["images"] == _decision(chain.store, run)["test_images"]
    assert test["false_refusals"] == sum(test["reasons"].values())
    assert not_chest["images"] == 9 * 12
    assert set(not_chest["per_kind"]) == {
        "noise", "flat", "photo", "drawing", "hand", "skull", "mri", "turned_film", "wide"
    }  # fmt: skip
    # Whatever the features learnt, the cheap checks alone refuse these.
    assert not_chest["per_kind"]["flat"]["refused"] == 12
    assert not_chest["per_kind"]["wide"]["refused"] == 12
    (measured,) = _events(run, "ood_measured")
    assert measured["not_chest_refusal_rate"] == pytest.approx(not_chest["refusal_rate"], abs=1e-4)
    if run.result.published_version is not None:
        entry = ModelRegistry(chain.store, MODEL).load().versions[run.result.published_version]
        assert entry.metrics["ood_refusal_rate"] == pytest.approx(not_chest["refusal_rate"])
        assert entry.metrics["ood_false_refusal_rate"] == pytest.approx(test["false_refusal_rate"])
    assert chain.store.get_bytes(prefix + "reliability_diagram.png").startswith(b"\x89PNG")


def test_run_job_too_few_validation_images_serves_uncalibrated_and_says_why(chain: Chain) -> None:
    run = chain.worse
    prefix = keys.learning_run_prefix(run.result.run_id)
    report = _read_json(chain.store, prefix + "report_candidate.json")["calibration"]
    info = _read_json(chain.store, prefix + "candidate/assets.extra/model_info.json")
    first = _read_json(
        chain.store, keys.learning_run_prefix(chain.first.result.run_id) + "report_candidate.json"
    )["calibration"]

    assert "fewer than the 30 a fit needs" in first["skipped"]
    assert "fewer than the 10000 a fit needs" in report["skipped"]
    assert report["temperature"] == 1.0
    assert report["test"]["before"] == report["test"]["after"]
    assert info["calibration"]["method"] == "none"
    assert _events(run, "calibrated") == []
    assert info["abstention"]["refer_threshold"] == 0.0
    assert (
        "never referred"
        in _read_json(chain.store, prefix + "report_candidate.json")["abstention"]["skipped"]
    )
    assert len(_events(run, "calibration_skipped")) == 1


def test_run_job_log_one_json_line_per_step_with_epoch_throughput(chain: Chain) -> None:
    names = [event["event"] for event in chain.better.events]

    for step in (
        "job_started",
        "data_discovered",
        "data_cached",
        "splits",
        "evaluated",
        "starting_weights",
        "training_started",
        "epoch",
        "training_finished",
        "exported",
        "decided",
        "outputs_written",
        "published",
        "promoted",
        "job_finished",
    ):
        assert step in names, step
    epochs = _events(chain.better, "epoch")
    assert all(event["images_per_second"] > 0 for event in epochs)
    assert [event["role"] for event in _events(chain.better, "evaluated")] == [
        "stable",
        "candidate",
    ]


# -- single runs ----------------------------------------------------------------------------------


def test_run_job_database_in_another_bucket_promotes_then_rerun_does_nothing(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    endpoint = s3_env["S3_ENDPOINT_URL"]
    root_bucket, db_bucket = new_bucket(endpoint), new_bucket(endpoint)
    settings = TrainingJobSettings(
        storage=StorageSettings(
            url=f"s3://{root_bucket}/root",
            db_url=f"s3://{db_bucket}/xray-db",
            s3_endpoint_url=endpoint,
            s3_region="us-east-1",
        ),
        cache_dir=tmp_path / "cache",
    )
    areas = open_areas(settings.storage)
    written = write_covid_qu_ex_to_store(areas.db, "", {"train": 6, "val": 2, "test": 3})

    first = _run(settings, epochs=1)  # 24 validation images: too few to calibrate on
    again = _run(settings, epochs=1)

    assert first.result.promoted
    assert ModelRegistry(areas.root, MODEL).load().stable == 1
    assert areas.root.exists(keys.learning_file(first.result.run_id, "decision.json"))
    assert not any(True for _ in areas.db.list("output/"))
    (cached,) = _events(first, "data_cached")
    assert cached["downloaded"] == sum(item.is_image for item in written)
    assert not cached["in_place"]
    assert first.result.report.startswith(f"s3://{root_bucket}/root/output/learning/")
    assert again.result.verdict == "unchanged"


@pytest.mark.parametrize(
    ("options", "verdict"),
    [({"dry_run": True}, "promote"), ({"min_macro_f1": 1.0}, "keep")],
)
def test_run_job_first_model_dry_run_or_below_minimum_publishes_nothing(
    tmp_path: Path, options: dict[str, Any], verdict: str
) -> None:
    store = LocalStore(tmp_path / "store")
    write_covid_qu_ex_to_store(store, keys.db_prefix("b1"), {"train": 4, "val": 1, "test": 2})
    settings = TrainingJobSettings(
        storage=StorageSettings(url=str(tmp_path / "store")), cache_dir=tmp_path / "cache"
    )

    run = _run(settings, epochs=1, **options)

    assert (run.result.verdict, run.result.promoted) == (verdict, False)
    assert ModelRegistry(store, MODEL).load().versions == {}
    assert store.exists(keys.learning_candidate_prefix(run.result.run_id) + "saved_model.pb")
    assert _decision(store, run)["dry_run"] is options.get("dry_run", False)


def test_run_job_promoted_candidate_is_uploaded_once_and_copied_into_its_version(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    write_covid_qu_ex_to_store(store, keys.db_prefix("b1"), {"train": 4, "val": 1, "test": 2})
    settings = TrainingJobSettings(
        storage=StorageSettings(url=str(tmp_path / "store")), cache_dir=tmp_path / "cache"
    )
    root = InterceptingStore(store)
    areas = StorageAreas(root=root, auth=root.child(keys.AUTH_AREA), db=root.child(keys.DB_AREA))

    run = _run(settings, areas, epochs=1)

    assert (run.result.verdict, run.result.published_version) == ("promote", 1)
    version = keys.model_version_prefix(MODEL, 1)
    candidate = keys.learning_candidate_prefix(run.result.run_id)
    uploaded = [key for key in root.puts if key.startswith(version)]
    assert uploaded == [version + "assets/model_identity.txt", version + "manifest.json"]
    copied = sorted(key[len(version) :] for key in root.copies)
    assert copied == sorted(
        key[len(candidate) :] for key in store.list_keys(candidate) if "model_identity" not in key
    )
    assert ModelRegistry(store, MODEL).download_version(1, tmp_path / "served").is_dir()


def test_run_job_stable_promoted_by_someone_else_during_publish_keeps_theirs(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    write_covid_qu_ex_to_store(store, keys.db_prefix("b1"), {"train": 4, "val": 1, "test": 2})
    settings = TrainingJobSettings(
        storage=StorageSettings(url=str(tmp_path / "store")), cache_dir=tmp_path / "cache"
    )
    # Version 1 exists but is not stable: the run compares against "no stable version".
    someone = ModelRegistry(store, MODEL)
    someone.publish(
        write_fake_saved_model(tmp_path / "other"),
        run_id="other-run",
        metrics={},
        dataset_fingerprint="",
        parent_version=None,
        preset="small",
    )
    root = InterceptingStore(store)

    def promote_during_upload(key: str, options: dict[str, Any]) -> None:
        # The run's version 2 is uploaded but not yet promoted: someone promotes version 1.
        if key == keys.model_version_manifest(MODEL, 2):
            root.before_put = None
            someone.promote(1)

    root.before_put = promote_during_upload
    areas = StorageAreas(root=root, auth=root.child(keys.AUTH_AREA), db=root.child(keys.DB_AREA))

    run = _run(settings, areas, epochs=1)

    assert (run.result.verdict, run.result.promoted) == ("keep", False)
    assert (run.result.published_version, run.result.stable_version) == (2, 1)
    final = someone.load()
    assert (final.stable, final.previous_stable) == (1, ())
    assert final.versions[2].status == "published"
    decision = _decision(store, run)
    assert (decision["verdict"], decision["promoted"]) == ("keep", False)
    assert "stale comparison" in decision["reason"]
    (stale,) = _events(run, "stale_comparison")
    assert (stale["compared_stable"], stale["current_stable"]) == (None, 1)
    assert not _events(run, "promoted")


def test_run_job_empty_database_fails_and_records_why(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put("input/db/b1/readme.txt", b"images come later")
    settings = TrainingJobSettings(
        storage=StorageSettings(url=str(tmp_path / "store")), cache_dir=tmp_path / "cache"
    )
    stream = io.StringIO()

    with pytest.raises(DatasetError):
        run_job(settings, TrainingOptions(run_id="run-1"), stream=stream)

    decision = _read_json(store, keys.learning_file("run-1", "decision.json"))
    assert decision["verdict"] == "failed"
    assert decision["error"]["type"] == "DatasetError"
    assert json.loads(stream.getvalue().splitlines()[-1])["event"] == "job_failed"
    assert store.exists(keys.learning_file("run-1", "job.log"))
