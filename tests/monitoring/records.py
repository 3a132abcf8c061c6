"""Generated inference records (the functions' format) with a controllable population, written
with the real key functions; published model versions and a training run's data for them."""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from functions.images import image_statistics
from functions.records import iso_time
from model_contract.registry import ModelRegistry
from storage import Store, keys
from tests.model_contract.helpers import write_fake_saved_model

CLASSES = ("normal", "covid", "no-covid")
MODEL_NAME = "cnn_vit"


@dataclass(frozen=True)
class Population:
    """What the answers and the inputs of a population look like."""

    class_mix: Mapping[str, float] = field(
        default_factory=lambda: {"normal": 0.5, "covid": 0.2, "no-covid": 0.3}
    )
    # Confidence ~ 1/3 + 2/3 * Beta(a, b).
    confidence_beta: tuple[float, float] = (6.0, 2.0)
    refer_below: float = 0.5
    refusal_rate: float = 0.02
    # The input facts of the films users send (`film_facts`); drawn with replacement.
    films: Sequence[Mapping[str, float]] = ()
    latency_ms: tuple[float, float] = (40.0, 0.3)  # lognormal median, sigma
    with_stats: bool = True


def shifted(population: Population, films: Sequence[Mapping[str, float]]) -> Population:
    """A clearly different population: other classes, less sure, other films."""
    return replace(
        population,
        class_mix={"normal": 0.15, "covid": 0.6, "no-covid": 0.25},
        confidence_beta=(2.0, 3.0),
        refusal_rate=0.15,
        films=films,
    )


_DEFAULT_FILM = {"width": 1024, "height": 1024, "size_bytes": 600_000, "mean": 0.5, "std": 0.2}


def model(version: int, run_id: str | None = None) -> dict[str, Any]:
    return {"name": MODEL_NAME, "version": version, "run_id": run_id or f"run-{version}"}


def _answer(rng: random.Random, population: Population) -> dict[str, Any]:
    names = list(population.class_mix)
    predicted = rng.choices(names, weights=[population.class_mix[n] for n in names])[0]
    confidence = 1 / 3 + 2 / 3 * rng.betavariate(*population.confidence_beta)
    rest = (1 - confidence) / 2
    probabilities = {name: (confidence if name == predicted else rest) for name in CLASSES}
    decision = "refer" if confidence < population.refer_below else predicted
    return {
        "predicted_class": predicted,
        "probabilities": probabilities,
        "confidence": confidence,
        "decision": decision,
    }


def make_record(
    rng: random.Random,
    moment: datetime,
    user_id: str,
    model_identity: Mapping[str, Any],
    population: Population = Population(),
    *,
    routed_to: str | None = None,
) -> dict[str, Any]:
    """One record as functions/inference.py writes it."""
    inference_id = keys.new_inference_id(moment, f"{rng.getrandbits(128):032x}")
    answer = _answer(rng, population)
    facts = rng.choice(list(population.films)) if population.films else _DEFAULT_FILM
    width, height = int(facts["width"]), int(facts["height"])
    refused = rng.random() < population.refusal_rate
    model_ms = rng.lognormvariate(math.log(population.latency_ms[0]), population.latency_ms[1])
    record: dict[str, Any] = {
        "schema": 1,
        "id": inference_id,
        "kind": "predict",
        "user_id": user_id,
        "created_at": iso_time(keys.inference_id_time(inference_id)),
        "model": dict(model_identity),
        "predicted_class": answer["predicted_class"],
        "class_index": CLASSES.index(answer["predicted_class"]),
        "class_names": list(CLASSES),
        "probabilities": answer["probabilities"],
        "decision": "not_a_chest_xray" if refused else answer["decision"],
        "abstention": {
            "confidence": answer["confidence"],
            "threshold": population.refer_below,
            "source": "model",
        },
        "input": {
            "sha256": f"{rng.getrandbits(256):064x}",
            "size_bytes": int(facts["size_bytes"]),
            "width": width,
            "height": height,
            "pixels": width * height,
            "format": "PNG",
            "mode": "L",
            "transformation": None,
        },
        "latency_ms": {"model": round(model_ms, 3), "total": round(model_ms + 8, 3)},
        "ood": {"checked": True, "reason": "features" if refused else "", "score": 0.1},
    }
    if population.with_stats:
        record["input"]["stats"] = {"mean": facts["mean"], "std": facts["std"]}
    if routed_to is not None:
        record["routed_to"] = routed_to
    return record


def add_shadow(
    rng: random.Random,
    record: dict[str, Any],
    canary_identity: Mapping[str, Any],
    *,
    agreement: float,
    population: Population = Population(),
    status: str = "ok",
    latency_ms: tuple[float, float] = (45.0, 0.3),
) -> dict[str, Any]:
    """The canary's answer to the record's image: the same class with probability
    `agreement`, else another one."""
    elapsed = round(rng.lognormvariate(math.log(latency_ms[0]), latency_ms[1]), 3)
    if status == "late":
        record["shadow"] = {"label": "canary", "status": "late", "budget_ms": 200.0}
        return record
    if status != "ok":
        record["shadow"] = {
            "label": "canary",
            "status": status,
            "error": "model_unavailable",
            "latency_ms": elapsed,
        }
        return record
    answer = _answer(rng, population)
    if rng.random() < agreement:
        predicted = record["predicted_class"]
    else:
        predicted = rng.choice([name for name in CLASSES if name != record["predicted_class"]])
    rest = (1 - answer["confidence"]) / 2
    record["shadow"] = {
        "label": "canary",
        "status": "ok",
        "model": dict(canary_identity),
        "predicted_class": predicted,
        "probabilities": {
            name: (answer["confidence"] if name == predicted else rest) for name in CLASSES
        },
        "confidence": answer["confidence"],
        "decision": "refer" if answer["confidence"] < population.refer_below else predicted,
        "latency_ms": elapsed,
    }
    return record


def spread(rng: random.Random, start: datetime, hours: float, count: int) -> list[datetime]:
    """`count` times within `hours` after `start`."""
    return sorted(
        start + timedelta(microseconds=rng.randrange(int(hours * 3_600_000_000)))
        for _ in range(count)
    )


def write_records(store: Store, records: Iterable[Mapping[str, Any]]) -> int:
    """Each record under its real key, create-only, as the functions write them."""
    items = list(records)

    def put(record: Mapping[str, Any]) -> None:
        key = keys.inference_record(str(record["user_id"]), str(record["id"]))
        store.put_json(key, dict(record), if_none_match=True)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, items))
    return len(items)


def publish_versions(
    store: Store, folder: Path, count: int, *, stable: int, canary: int | None
) -> ModelRegistry:
    """`count` complete fake versions (run ids `run-<n>`), labelled stable and canary."""
    registry = ModelRegistry(store, MODEL_NAME)
    for number in range(1, count + 1):
        export = write_fake_saved_model(folder / f"export-{number}", payload=b"v%d" % number)
        registry.publish(
            export,
            run_id=f"run-{number}",
            metrics={"macro_f1": 0.8},
            dataset_fingerprint="fp",
            parent_version=None,
            preset="seed",
        )
    registry.promote(stable, "stable")
    if canary is not None:
        registry.promote(canary, "canary")
    return registry


def film(rng: np.random.Generator, side: int, mean: float) -> bytes:
    """A grey PNG of `side` pixels a side with about this grey-level mean."""
    pixels = np.clip(rng.normal(mean, 0.2, (side, side)), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def film_facts(data: bytes) -> dict[str, float]:
    """What a record says of a film: its size and the functions' grey-level statistics."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return {"width": width, "height": height, "size_bytes": len(data), **image_statistics(data)}


def films(
    count: int, *, sides: Sequence[int], grey_mean: float, seed: int
) -> list[tuple[bytes, dict[str, float]]]:
    rng = np.random.default_rng(seed)
    made = []
    for index in range(count):
        data = film(rng, int(sides[index % len(sides)]), float(rng.normal(grey_mean, 0.03)))
        made.append((data, film_facts(data)))
    return made


def write_training_data(
    root: Store,
    db: Store,
    run_ids: Sequence[str],
    made: Sequence[tuple[bytes, Mapping[str, float]]],
    class_mix: Mapping[str, int],
) -> None:
    """The films as a training database, and each run's `dataset.csv` (the job's columns)
    listing them; `class_mix`: how many films of each class (in order)."""
    rows = []
    position = 0
    for class_name, count in class_mix.items():
        for index in range(count):
            split = "train" if index % 5 else "test"
            key = f"batch-1/{split}/{class_name}/images/{class_name}-{index:04d}.png"
            rows.append((key, split, class_name, made[position][0]))
            position += 1
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda row: db.put(row[0], row[3], content_type="image/png"), rows))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["key", "batch", "split", "split_given", "class", "etag", "readable"])
    for key, split, class_name, _ in rows:
        writer.writerow([key, "batch-1", split, True, class_name, "etag", True])
    for run_id in run_ids:
        root.put(
            keys.learning_file(run_id, "dataset.csv"),
            buffer.getvalue().encode("utf-8"),
            content_type="text/csv",
        )
