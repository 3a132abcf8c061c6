"""Fitting the out-of-distribution check (NumPy) and the not-a-chest-film images it is measured
on: the threshold comes from scores the fit did not see, far points score far, every kind of
image is made without a download."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from training_job.not_chest import NOT_CHEST_KINDS, generate_not_chest, not_chest_images
from training_job.ood import fit_ood, mahalanobis


def _gaussian(rows: int, seed: int, dims: int = 12) -> np.ndarray:
    """Draws from one correlated Gaussian (the same for every seed)."""
    mixing = np.random.default_rng(99).normal(size=(dims, dims))
    return np.random.default_rng(seed).normal(size=(rows, dims)) @ mixing + 5.0


def test_threshold_refuses_about_the_quantile_of_new_in_distribution_points() -> None:
    ood = fit_ood(_gaussian(600, 0), _gaussian(100, 1))
    fresh = mahalanobis(_gaussian(5_000, 2), ood.mean, ood.precision)

    refused = float((fresh > ood.threshold).mean())

    assert refused < 0.02  # 0.5 % targeted; the shrinkage and sampling move it a little


def test_far_points_score_far_above_the_threshold() -> None:
    ood = fit_ood(_gaussian(600, 0), _gaussian(100, 1))
    far = _gaussian(50, 3) * 3.0 + 40.0

    assert (mahalanobis(far, ood.mean, ood.precision) > ood.threshold).all()


def test_cross_fitting_sets_a_higher_threshold_than_in_sample_scores_would() -> None:
    train = _gaussian(100, 4, dims=30)  # few points for their dimensions: in-sample is biased
    ood = fit_ood(train, np.zeros((0, 30)))
    in_sample = mahalanobis(train, ood.mean, ood.precision)

    assert ood.threshold > np.quantile(in_sample, 0.995)


@pytest.mark.parametrize(
    ("train", "quantile", "message"),
    [(np.ones((5, 3)), 0.995, "at least 10"), (np.ones((20, 3)), 0.995, "do not vary")],
)
def test_fit_refuses_what_it_cannot_fit(train: np.ndarray, quantile: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_ood(train, np.zeros((0, 3)), quantile=quantile)


def test_every_kind_is_an_image_and_the_set_is_deterministic() -> None:
    film = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (240, 1))
    first = list(not_chest_images(2, 7, [film]))
    again = list(not_chest_images(2, 7, [film]))

    assert [kind for kind, _ in first] == [kind for kind in NOT_CHEST_KINDS for _ in range(2)]
    assert first == again
    for _, data in first:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    # Without films, the kinds made from films are left out.
    kinds = {kind for kind, _ in not_chest_images(1, 7, [])}
    assert kinds == set(NOT_CHEST_KINDS) - {"turned_film", "wide"}


def test_film_kinds_need_a_film_and_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="chest film"):
        generate_not_chest("wide", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown kind"):
        generate_not_chest("cat", np.random.default_rng(0))
