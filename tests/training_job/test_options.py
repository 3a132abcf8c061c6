"""The one options object of a training run: defaults, validation, the environment and the
command line read from the same fields."""

from __future__ import annotations

import pytest

from training_job.options import TrainingOptions


def test_training_config_defaults_are_the_original_systems() -> None:
    config = TrainingOptions()

    assert (config.batch_size, config.epochs, config.learning_rate) == (32, 100, None)
    assert config.learning_rate_for(fine_tuning=False) == 1e-3
    assert config.learning_rate_for(fine_tuning=True) == 5e-4
    assert (config.weight_decay, config.label_smoothing) == (1e-4, 0.1)
    assert (config.patience, config.min_delta, config.monitor) == (5, 0.005, "val_loss")
    assert (config.augment, config.rotation_degrees, config.zoom) == (True, 10.0, 0.2)


def test_training_config_unknown_monitor_raises() -> None:
    with pytest.raises(ValueError, match="monitor"):
        TrainingOptions(monitor="loss")  # type: ignore[arg-type]


def test_options_command_line_over_environment_over_default() -> None:
    from training_job.cli import parser

    arguments = parser().parse_args(["--epochs", "7", "--no-augment", "--dry-run"])
    environ = {"TRAINING_EPOCHS": "3", "TRAINING_BATCH_SIZE": "8", "TRAINING_PRESET": "seed"}

    options = TrainingOptions.from_sources(arguments, environ)

    assert (options.epochs, options.batch_size, options.preset) == (7, 8, "seed")
    assert (options.augment, options.dry_run, options.force) == (False, True, False)
    assert options.model.name == "seed"


def test_options_every_field_but_the_model_shape_is_an_option_and_a_variable() -> None:
    import dataclasses

    from training_job.cli import parser

    help_text = parser().format_help()
    names = [
        item.name for item in dataclasses.fields(TrainingOptions) if item.name != "model_config"
    ]
    for name in names:
        assert f"--{name.replace('_', '-')}" in help_text
        assert f"TRAINING_{name.upper()}" in help_text
    assert TrainingOptions.from_env({f"TRAINING_{n.upper()}": "" for n in names}) == (
        TrainingOptions()
    )


def test_options_bad_environment_values_are_all_reported() -> None:
    from common.settings import SettingsError

    with pytest.raises(SettingsError) as caught:
        TrainingOptions.from_env(
            {"TRAINING_EPOCHS": "many", "TRAINING_PRESET": "huge", "TRAINING_AUGMENT": "perhaps"}
        )
    assert len(caught.value.problems) == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 0},
        {"learning_rate": -1.0},
        {"label_smoothing": 1.0},
        {"strategy": "magic"},
        {"compute_dtype": "float16"},
        {"run_id": "../x"},
        {"promotion_margin": 2.0},
    ],
    ids=repr,
)
def test_options_inconsistent_values_raise(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrainingOptions(**changes)  # type: ignore[arg-type]


def test_options_hyperparameters_and_json_name_the_shape() -> None:
    options = TrainingOptions(epochs=3)

    assert options.hyperparameters()["epochs"] == 3
    assert "promotion_margin" not in options.hyperparameters()
    assert options.to_json()["preset"] == "small"
    assert options.policy().margin == options.promotion_margin
