"""The original system's `.hdf5` weights as a published model version (TensorFlow).

The original saved its CNN-ViT (reference section 5) with Keras 2's `model.save_weights(...)` in
HDF5: one group per layer, in the model's layer order, each naming its weights in order. That
architecture is the `seed` preset layer for layer, so the weights are read with h5py and given to
the preset's variables in the same order (the one difference: the original's patch encoder holds
its projection before its position embedding). Every shape is checked before anything is set; a
file of another architecture is refused naming the first weight that does not fit, and nothing is
published. The model is then exported (both signatures, warmup) and published through the
registry, with its test metrics when the destination has an image database; promoted only when
asked.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import numpy.typing as npt

from cnn_vit.config import CLASS_NAMES, ModelConfig, get_preset
from cnn_vit.model import build_model
from migration.report import StepReport
from model_contract.registry import ModelRegistry
from storage import Store, keys

__all__ = [
    "LegacyWeight",
    "WeightsMismatch",
    "import_weights",
    "load_legacy_weights",
    "migrate_weights",
    "read_legacy_weights",
]

PRESET = "seed"


class WeightsMismatch(ValueError):
    """The weights file is not the original architecture (or not a Keras 2 weights file)."""


@dataclass(frozen=True)
class LegacyWeight:
    layer: str  # the layer's name in the file
    name: str  # the weight's name in the file (e.g. `conv2d_3/kernel:0`)
    value: npt.NDArray[Any]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_legacy_weights(path: str | Path) -> list[LegacyWeight]:
    """Every weight of a Keras 2 `save_weights` HDF5 file, in the model's order."""
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsMismatch(f"not an HDF5 weights file: {exc}") from None
    with handle:
        group = handle.get("model_weights", handle)
        if "layer_names" not in group.attrs:
            raise WeightsMismatch("not a Keras weights file (no layer_names)")
        weights = []
        for layer in (_text(name) for name in group.attrs["layer_names"]):
            for name in (_text(item) for item in group[layer].attrs.get("weight_names", [])):
                weights.append(LegacyWeight(layer, name, np.asarray(group[layer][name])))
    return weights


def _preset_variables(model: keras.Model) -> list[tuple[str, Any]]:
    """The preset's variables in the original file's order."""
    ordered: list[tuple[str, Any]] = []
    for layer in model.layers:
        variables = list(layer.weights)
        if layer.name == "patch_encoder":
            # Keras 3 lists the layer's own embedding before its projection sublayer's.
            variables.sort(key=lambda variable: variable.path.endswith("position_embedding"))
        ordered += [(variable.path, variable) for variable in variables]
    return ordered


def load_legacy_weights(model: keras.Model, weights: Sequence[LegacyWeight]) -> None:
    """Set `model`'s variables from the file's weights; WeightsMismatch (nothing set) unless
    every shape fits, in order."""
    variables = _preset_variables(model)
    for index, (path, variable) in enumerate(variables):
        if index >= len(weights):
            raise WeightsMismatch(
                f"the file has {len(weights)} weights; the original architecture has "
                f"{len(variables)} (the first missing one is {path})"
            )
        weight = weights[index]
        if tuple(weight.value.shape) != tuple(variable.shape):
            raise WeightsMismatch(
                f"layer {weight.layer!r} of the file does not match: its weight {weight.name} "
                f"has shape {tuple(weight.value.shape)}, the original architecture's {path} "
                f"needs {tuple(variable.shape)}"
            )
    if len(weights) > len(variables):
        extra = weights[len(variables)]
        raise WeightsMismatch(
            f"layer {extra.layer!r} of the file does not match: the original architecture has "
            f"no weight for {extra.name} ({len(weights)} weights in the file, "
            f"{len(variables)} expected)"
        )
    for (_, variable), weight in zip(variables, weights, strict=True):
        variable.assign(weight.value.astype(np.float32))


def import_weights(path: str | Path, config: ModelConfig | None = None) -> keras.Model:
    """A float32 model of the original architecture holding the file's weights."""
    model = build_model(config or get_preset(PRESET))
    load_legacy_weights(model, read_legacy_weights(path))
    return model


def _published_from(registry: ModelRegistry, digest: str) -> int | None:
    for version, entry in registry.load().versions.items():
        if entry.extra.get("weights_sha256") == digest:
            return version
    return None


def _test_metrics(db: Store, model_dir: Path, cache: Path) -> tuple[dict[str, float], str]:
    """Macro-F1 and the rest on the database's test split, and its fingerprint; ({}, "")
    without a test split."""
    from training_job.discovery import DatasetError, discover_dataset
    from training_job.evaluation import predict_saved_model
    from training_job.image_cache import ImageCache
    from training_job.metrics import classification_report

    try:
        dataset = discover_dataset(db)
    except DatasetError:
        return {}, ""
    test = dataset.split("test")
    if not test:
        return {}, dataset.fingerprint
    local = ImageCache(cache, db).synchronise(test)
    paths = [str(local.path(record.key)) for record in test]
    predictions = predict_saved_model(model_dir, paths)
    report = classification_report(
        [record.label for record in test], predictions.probabilities, CLASS_NAMES
    )
    return report.metrics(), dataset.fingerprint


def migrate_weights(
    source: Store,
    registry: ModelRegistry,
    db: Store,
    step: StepReport,
    *,
    dry_run: bool,
    promote: bool,
) -> None:
    """Each `input/model/*.hdf5` of `source` as a published version of `registry`'s model."""
    from model_export.export import export_saved_model

    found = [
        info.key
        for info in source.list(keys.MODEL_AREA)
        if info.key.endswith(".hdf5") and "/" not in info.key[len(keys.MODEL_AREA) :]
    ]
    if not found:
        step.notes.append(f"no {keys.MODEL_AREA}*.hdf5 in the source")
        return
    for key in found:
        with tempfile.TemporaryDirectory(prefix="migrate-weights-") as scratch:
            work = Path(scratch)
            local = work / "weights.hdf5"
            source.download_file(key, local)
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
            version = _published_from(registry, digest)
            if version is not None:
                step.counts["already_published"] += 1
                step.notes.append(f"{key} is version {version} already")
                continue
            try:
                model = import_weights(local)
            except WeightsMismatch as exc:
                step.counts["refused"] += 1
                step.problems.append(f"{key}: {exc}; nothing published")
                continue
            if dry_run:
                step.counts["to_publish"] += 1
                step.notes.append(f"{key} fits the original architecture")
                continue
            run_id = f"legacy-{digest[:12]}"
            export_dir = work / "export"
            export_saved_model(
                model,
                get_preset(PRESET),
                export_dir,
                model_name=registry.name,
                run_id=run_id,
                training_metadata={"origin": "the original system", "weights": key},
            )
            metrics, fingerprint = _test_metrics(db, export_dir, work / "images")
            version = registry.publish(
                export_dir,
                run_id=run_id,
                metrics=metrics,
                dataset_fingerprint=fingerprint,
                parent_version=None,
                preset=PRESET,
                extra={"migrated_from": key, "weights_sha256": digest},
            )
            step.counts["published"] += 1
            macro_f1 = metrics.get("macro_f1")
            step.notes.append(
                f"{key} published as version {version}"
                + (f" (test macro-F1 {macro_f1:.4f})" if macro_f1 is not None else "")
            )
            if promote:
                registry.promote(version, "stable")
                step.notes.append(f"version {version} promoted to stable")
