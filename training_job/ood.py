"""Fitting the out-of-distribution check the export bakes in (cnn_vit/ood.py), in NumPy.

The encoder statistics of the training split give the mean and a shrunk covariance (5 % of the
way to a scaled identity: 160 features from a few hundred films would otherwise give an inverse
that trusts directions the films barely span). The threshold is a high quantile (99.5 %) of
in-distribution scores that were not fitted on: the training split's scores cross-fitted over
5 folds (each fold scored by statistics fitted on the other four) together with the validation
split's. A quantile of in-sample scores would sit too low (the fit pulls its own films in) and
refuse more real films than the quantile says.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cnn_vit.ood import OodStatistics

__all__ = ["SHRINKAGE", "THRESHOLD_QUANTILE", "fit_ood", "mahalanobis"]

SHRINKAGE = 0.05
THRESHOLD_QUANTILE = 0.995
_FOLDS = 5

FloatArray = npt.NDArray[np.float64]


def _gaussian(features: FloatArray, shrinkage: float) -> tuple[FloatArray, FloatArray]:
    mean = features.mean(axis=0)
    centred = features - mean
    covariance = centred.T @ centred / max(1, features.shape[0])
    scale = float(np.trace(covariance)) / covariance.shape[0]
    if not scale > 0:
        raise ValueError("the features do not vary: nothing to fit")
    shrunk = (1 - shrinkage) * covariance + shrinkage * scale * np.eye(covariance.shape[0])
    return mean, np.linalg.inv(shrunk)


def mahalanobis(features: FloatArray, mean: FloatArray, precision: FloatArray) -> FloatArray:
    """Squared Mahalanobis distance of each row of `features`."""
    centred = np.asarray(features, np.float64) - mean
    distances: FloatArray = np.einsum("ni,ij,nj->n", centred, precision, centred)
    return distances


def fit_ood(
    train: FloatArray,
    held_out: FloatArray,
    *,
    shrinkage: float = SHRINKAGE,
    quantile: float = THRESHOLD_QUANTILE,
) -> OodStatistics:
    """Mean and precision from `train`; the threshold from cross-fitted `train` scores and the
    `held_out` (validation) scores."""
    train = np.asarray(train, np.float64)
    held_out = np.asarray(held_out, np.float64).reshape(-1, train.shape[1])
    if train.ndim != 2 or train.shape[0] < 2 * _FOLDS:
        raise ValueError(f"need at least {2 * _FOLDS} training images to fit, not {len(train)}")
    if not 0.5 <= quantile < 1:
        raise ValueError(f"the quantile must lie in [0.5, 1), not {quantile}")
    folds = np.arange(train.shape[0]) % _FOLDS
    cross: list[FloatArray] = []
    for fold in range(_FOLDS):
        mean, precision = _gaussian(train[folds != fold], shrinkage)
        cross.append(mahalanobis(train[folds == fold], mean, precision))
    mean, precision = _gaussian(train, shrinkage)
    scores = np.concatenate([*cross, mahalanobis(held_out, mean, precision)])
    return OodStatistics(mean, precision, float(np.quantile(scores, quantile)))
