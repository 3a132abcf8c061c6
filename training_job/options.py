"""Every choice of a training run, each written once with its default: `TrainingOptions`.

Each field is a hyperparameter or a run choice with its default, its help text and its group.
The command line (`python -m training_job --epochs 20`) and the environment (`TRAINING_EPOCHS=20`:
`TRAINING_` and the field's name in capitals) are both read from these fields, so no option is
copied field by field anywhere. Precedence: command line, then environment, then the default.
The job, the training loop and the demo trainer all take this one object. No TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cnn_vit.config import PRESETS, ModelConfig
from common.settings import EnvReader
from model_contract.artifact import COMPUTE_DTYPES
from storage import keys
from training_job.decision import PromotionPolicy
from training_job.strategy import PRECISIONS, STRATEGIES

__all__ = [
    "ENV_PREFIX",
    "GROUPS",
    "MONITORS",
    "TrainingOptions",
    "add_option_arguments",
    "env_name",
]

ENV_PREFIX = "TRAINING_"
MODEL_AND_TRAINING = "model and training"
PROMOTION = "promotion"
ENGINE = "engine"
GROUPS: tuple[str, ...] = (MODEL_AND_TRAINING, PROMOTION, ENGINE)

# The metrics early stopping can watch, and whether a larger value is better.
MONITORS: dict[str, bool] = {"val_loss": False, "val_macro_f1": True, "val_accuracy": True}

# The learning rate when none is given: the original system's AdamW rate from scratch, and half
# of it when fine-tuning from the stable model's weights.
_SCRATCH_LEARNING_RATE = 1e-3
_FINE_TUNING_LEARNING_RATE = 5e-4

_POLICY = PromotionPolicy()


def _option(
    default: Any,
    help_text: str,
    group: str = MODEL_AND_TRAINING,
    *,
    kind: type | None = None,
    choices: Sequence[str] | None = None,
) -> Any:
    """A field that the command line and the environment set (`kind` when default is None)."""
    return field(
        default=default,
        metadata={
            "help": help_text,
            "group": group,
            "kind": kind or type(default),
            "choices": tuple(choices) if choices is not None else None,
        },
    )


@dataclass(frozen=True)
class TrainingOptions:
    """One run's choices. Defaults are the original system's (batch 32, up to 100 epochs, AdamW
    at 1e-3, half that when fine-tuning, weight decay 1e-4, label smoothing 0.1, early stopping
    after 5 epochs without a 0.005 improvement)."""

    preset: str = _option("small", "model preset", choices=sorted(PRESETS))
    # A model shape outside PRESETS (Python callers and tests only); overrides `preset`.
    model_config: ModelConfig | None = None
    epochs: int = _option(100, "maximum epochs")
    batch_size: int = _option(32, "global batch size (split across replicas)")
    learning_rate: float | None = _option(
        None,
        f"AdamW learning rate (default {_SCRATCH_LEARNING_RATE:g} from scratch, "
        f"{_FINE_TUNING_LEARNING_RATE:g} when fine-tuning)",
        kind=float,
    )
    weight_decay: float = _option(1e-4, "AdamW weight decay")
    label_smoothing: float = _option(0.1, "label smoothing of the cross-entropy")
    patience: int = _option(5, "early stopping: epochs without improvement before stopping")
    min_delta: float = _option(0.005, "early stopping: smallest change that is an improvement")
    monitor: str = _option("val_loss", "early stopping watches this", choices=tuple(MONITORS))
    augment: bool = _option(True, "augment training images (flip, rotation, zoom)")
    rotation_degrees: float = _option(10.0, "augmentation: largest rotation in degrees")
    zoom: float = _option(0.2, "augmentation: largest zoom in or out (a fraction)")
    seed: int = _option(0, "training seed")
    split_seed: int = _option(0, "seed of the split of batches that come without split folders")
    from_scratch: bool = _option(False, "do not fine-tune from the stable model's weights")
    run_id: str | None = _option(None, "run id (default: UTC time and a random tail)", kind=str)
    calibration_min_images: int = _option(
        30,
        "fewest validation images a temperature is fitted on (fewer: served uncalibrated, "
        "said in the report)",
    )
    ood_check_per_kind: int = _option(
        12,
        "not-a-chest-film images of each kind (synthetic/not_chest.py) the exported model is "
        "measured on for the report (0: none)",
    )
    refer_target_accuracy: float = _option(
        0.95,
        "abstention: the served refer threshold is the lowest confidence at which the "
        "validation answers kept reach this accuracy",
    )

    promotion_margin: float = _option(
        _POLICY.margin, "macro-F1 gain over the stable model needed to promote", PROMOTION
    )
    per_class_tolerance: float = _option(
        _POLICY.per_class_tolerance, "largest per-class F1 drop allowed", PROMOTION
    )
    min_macro_f1: float = _option(
        _POLICY.min_macro_f1, "macro-F1 a first model must reach", PROMOTION
    )
    explanation_tolerance: float = _option(
        _POLICY.explanation_tolerance,
        "largest drop of the Grad-CAM pointing game (on masked test films) allowed",
        PROMOTION,
    )
    dry_run: bool = _option(
        False, "train, evaluate and write the outputs, but publish and promote nothing", PROMOTION
    )
    force: bool = _option(False, "train even when the data is unchanged", PROMOTION)

    strategy: str = _option(
        "auto",
        "tf.distribute strategy (auto: multi-worker with TF_CONFIG, mirrored with several "
        "GPUs, else default)",
        ENGINE,
        choices=STRATEGIES,
    )
    precision: str = _option(
        "auto",
        "training precision (auto: mixed_bfloat16 on GPUs that have it, else float32)",
        ENGINE,
        choices=PRECISIONS,
    )
    compute_dtype: str = _option(
        "float32",
        "compute dtype of the exported model (bfloat16 also stores the weights in bfloat16)",
        ENGINE,
        choices=COMPUTE_DTYPES,
    )
    gradcam_xla: bool = _option(
        True,
        "compile Grad-CAM past its layer with XLA in the export (faster Grad-CAM; TF Serving "
        "then needs --xla_cpu_compilation_enabled=true)",
        ENGINE,
    )
    collective_timeout_seconds: float = _option(
        600.0,
        "multi-worker: a collective that waits longer fails the run (a dead worker ends the "
        "job instead of hanging it); 0 waits forever",
        ENGINE,
    )

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _problems(self) -> list[str]:
        problems = [
            f"{item.name} must be one of {', '.join(item.metadata['choices'])}, "
            f"not {getattr(self, item.name)!r}"
            for item in _settable_fields()
            if item.metadata["choices"] and getattr(self, item.name) not in item.metadata["choices"]
        ]
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch size must be at least 1")
        if self.learning_rate is not None and not self.learning_rate > 0:
            problems.append("the learning rate must be positive")
        if self.patience < 0 or self.min_delta < 0 or self.weight_decay < 0:
            problems.append("patience, min delta and weight decay must not be negative")
        if not 0 <= self.label_smoothing < 1:
            problems.append("label smoothing must lie in [0, 1)")
        if self.ood_check_per_kind < 0:
            problems.append("ood check images per kind must not be negative")
        if not 0 < self.refer_target_accuracy <= 1:
            problems.append("the refer target accuracy must lie in (0, 1]")
        if self.calibration_min_images < 1:
            problems.append("calibration needs at least 1 validation image")
        if self.collective_timeout_seconds < 0:
            problems.append("the collective timeout must not be negative")
        if self.rotation_degrees < 0 or not 0 <= self.zoom < 1:
            problems.append("the rotation must not be negative and the zoom must lie in [0, 1)")
        if self.run_id is not None:
            try:
                keys.check_run_id(self.run_id)
            except ValueError:
                problems.append(f"invalid run id {self.run_id!r}")
        try:
            self.policy()
        except ValueError as exc:
            problems.append(str(exc))
        return problems

    # -- derived values ---------------------------------------------------------------------------

    @property
    def model(self) -> ModelConfig:
        """The model shape this run trains: `model_config`, else the preset."""
        return self.model_config or PRESETS[self.preset]

    def learning_rate_for(self, *, fine_tuning: bool) -> float:
        """The learning rate asked for, else the original's rule (half when fine-tuning)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return _FINE_TUNING_LEARNING_RATE if fine_tuning else _SCRATCH_LEARNING_RATE

    def policy(self) -> PromotionPolicy:
        return PromotionPolicy(
            margin=self.promotion_margin,
            per_class_tolerance=self.per_class_tolerance,
            min_macro_f1=self.min_macro_f1,
            explanation_tolerance=self.explanation_tolerance,
        )

    def replace(self, **changes: Any) -> TrainingOptions:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        document = {item.name: getattr(self, item.name) for item in _settable_fields()}
        document["preset"] = self.model.name
        return document

    def hyperparameters(self) -> dict[str, Any]:
        """The model and training options (what shapes the trained weights)."""
        return {
            item.name: getattr(self, item.name)
            for item in _settable_fields()
            if item.metadata["group"] == MODEL_AND_TRAINING
        }

    # -- reading the command line and the environment -------------------------------------------

    @classmethod
    def read_environment(cls, env: EnvReader) -> dict[str, Any]:
        """The options the environment sets (`TRAINING_<NAME>`), read into `env` so that bad
        values are reported with the deployable's other settings."""
        values: dict[str, Any] = {}
        for item in _settable_fields():
            name = env_name(item.name)
            if env.raw(name) is None:
                continue
            kind, default = item.metadata["kind"], cast(Any, item.default)
            choices = item.metadata["choices"]
            if choices:
                values[item.name] = env.choice(name, default, choices)
            elif kind is bool:
                values[item.name] = env.boolean(name, bool(default))
            elif kind is int:
                values[item.name] = env.integer(name, int(default))
            elif kind is float:
                values[item.name] = env.number(name, 0.0 if default is None else float(default))
            else:
                values[item.name] = env.string(name, default or "")
        return values

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TrainingOptions:
        """Options from the defaults overridden by the environment (`TRAINING_<NAME>`)."""
        return cls.from_sources(environ=environ)

    @classmethod
    def from_sources(
        cls,
        arguments: argparse.Namespace | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> TrainingOptions:
        """Options from the defaults, overridden by the environment, then by the parsed command
        line (`add_option_arguments`), then by `overrides`. SettingsError lists every bad value
        of the environment; ValueError every inconsistent option."""
        values: dict[str, Any] = {}
        if environ is not None:
            env = EnvReader(environ, "training_job")
            values.update(cls.read_environment(env))
            env.check()
        if arguments is not None:
            names = {item.name for item in _settable_fields()}
            values.update({k: v for k, v in vars(arguments).items() if k in names})
        values.update(overrides)
        return cls(**values)


def env_name(field_name: str) -> str:
    """The environment variable of an option: `epochs` -> `TRAINING_EPOCHS`."""
    return ENV_PREFIX + field_name.upper()


def _settable_fields() -> list[dataclasses.Field[Any]]:
    """The fields the command line and the environment set (all but `model_config`)."""
    return [item for item in dataclasses.fields(TrainingOptions) if "help" in item.metadata]


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One command-line option per field, in its group; an option not given stays unset, so
    the environment or the default decides (see `TrainingOptions.from_sources`)."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for item in _settable_fields():
        flag = "--" + item.name.replace("_", "-")
        kind, default = item.metadata["kind"], item.default
        help_text = item.metadata["help"]
        if default is not None and kind is not bool:
            help_text += f" (default {default}; env {env_name(item.name)})"
        else:
            help_text += f" (env {env_name(item.name)})"
        arguments: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            arguments["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            arguments["type"] = kind
            if item.metadata["choices"]:
                arguments["choices"] = item.metadata["choices"]
        groups[item.metadata["group"]].add_argument(flag, **arguments)
