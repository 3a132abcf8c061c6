"""Where training starts: the stable model's weights (fine-tuning) or none (from scratch).

The stable version's Keras model file is the one its training run saved under
`output/learning/<run_id>/`; a preset or shape that no longer matches means starting from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from cnn_vit.config import ModelConfig
from cnn_vit.model import build_model, load_model
from model_contract.documents import VersionEntry
from storage import ObjectNotFound, Store, keys
from training_job.outputs import MODEL_FILE

__all__ = ["StartingWeights", "load_starting_weights"]

Weights = list[npt.NDArray[Any]]


@dataclass(frozen=True)
class StartingWeights:
    """Where training starts: the stable model's weights (fine-tuning) or none (scratch)."""

    weights: Weights | None
    source: str  # "stable" or "scratch"
    reason: str
    parent_version: int | None = None

    @property
    def fine_tuning(self) -> bool:
        return self.weights is not None


def _same_shapes(weights: Weights, config: ModelConfig) -> bool:
    expected = [tuple(weight.shape) for weight in build_model(config).get_weights()]
    return expected == [tuple(weight.shape) for weight in weights]


def load_starting_weights(
    root: Store,
    stable: VersionEntry | None,
    config: ModelConfig,
    workdir: Path,
    *,
    from_scratch: bool,
) -> StartingWeights:
    """The stable version's weights to fine-tune from, or why training starts from scratch."""
    if stable is None:
        return StartingWeights(None, "scratch", "no stable model yet")
    version = stable.version
    if from_scratch:
        return StartingWeights(None, "scratch", "asked to train from scratch", version)
    if stable.preset and stable.preset != config.name:
        return StartingWeights(
            None,
            "scratch",
            f"stable version {version} is preset {stable.preset!r}; this run trains "
            f"{config.name!r}",
            version,
        )
    if not stable.run_id:
        return StartingWeights(
            None,
            "scratch",
            f"stable version {version} has no Keras model file (its registry entry names no run)",
            version,
        )
    key = keys.learning_file(stable.run_id, MODEL_FILE)
    path = workdir / "stable-model.keras"
    try:
        root.download_file(key, path)
    except (ObjectNotFound, ValueError):
        return StartingWeights(
            None,
            "scratch",
            f"stable version {version} has no Keras model file ({key})",
            version,
        )
    weights = load_model(path).get_weights()
    if not _same_shapes(weights, config):
        return StartingWeights(
            None,
            "scratch",
            f"stable version {version}'s model does not have the shape of preset {config.name!r}",
            version,
        )
    return StartingWeights(
        weights,
        "stable",
        f"fine-tuning from stable version {version} (run {stable.run_id})",
        version,
    )
