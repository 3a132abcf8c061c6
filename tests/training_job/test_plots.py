"""The run's plots render as PNGs of a readable size, with or without validation data."""

from __future__ import annotations

import io
import math

from PIL import Image

from training_job.plots import plot_confusion_matrix, plot_training_curves


def _history(epochs: int, *, validation: bool) -> list[dict[str, float | int]]:
    nan = math.nan
    return [
        {
            "epoch": epoch,
            "loss": 1.1 - 0.05 * epoch,
            "accuracy": 0.3 + 0.05 * epoch,
            "val_loss": 1.1 - 0.04 * epoch if validation else nan,
            "val_accuracy": 0.3 + 0.04 * epoch if validation else nan,
            "val_macro_f1": 0.25 + 0.05 * epoch if validation else nan,
            "images_per_second": 500.0,
            "seconds": 1.0,
        }
        for epoch in range(1, epochs + 1)
    ]


def test_plot_training_curves_png_with_and_without_validation() -> None:
    for validation in (True, False):
        png = plot_training_curves(_history(12, validation=validation), title="run", best_epoch=10)

        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG"
        assert image.width >= 1000
        assert image.height >= 400


def test_plot_confusion_matrix_png_with_an_empty_class() -> None:
    png = plot_confusion_matrix(
        [[5, 1, 0], [0, 0, 0], [1, 0, 4]], ["normal", "covid", "no-covid"], title="model"
    )

    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.width >= 500
