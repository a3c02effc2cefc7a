"""Linear probing (METHOD §8): logistic regression on frozen pooled ECG features.

One binary logistic regression per class (scikit-learn, lbfgs) on standardised
features; the training set is a seeded subset (1 %, 10 %, 100 %) of the training
labels; the inverse regularisation C is chosen by macro AUROC on the validation
split only, then the chosen probe scores the test features (clean or under any
missingness condition). A class with a single label value in the training subset
gets a constant score (its test AUROC is then 0.5).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from absl import logging

from scar_jax.evaluation import zeroshot


def subset_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted seeded subset of round(fraction * n) (at least 1) of range(n)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"probe label fraction {fraction} must be in (0, 1].")
    m = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).permutation(n)[:m])


@dataclasses.dataclass
class Probe:
    """A fitted probe: feature standardisation + one (w, b) per class (w = 0 for constant ones)."""

    mean: np.ndarray  # [D]
    scale: np.ndarray  # [D]
    coef: np.ndarray  # [K, D]
    intercept: np.ndarray  # [K]
    c: float  # chosen inverse regularisation strength
    val_auroc: float  # validation macro AUROC at c
    val_by_c: dict[float, float]  # validation macro AUROC per candidate C

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Features [..., N, D] -> logits [..., N, K]."""
        return ((x - self.mean) / self.scale) @ self.coef.T + self.intercept


def fit_classes(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 1000):
    """Standardised features [N, D], labels [N, K] -> (coef [K, D], intercept [K]).

    One L2 logistic regression per class (inverse strength c); the package's only one.
    """
    from sklearn.linear_model import LogisticRegression

    k, d = y.shape[1], x.shape[1]
    coef, intercept = np.zeros((k, d)), np.zeros((k,))
    for j in range(k):
        yj = y[:, j]
        if yj.all() or not yj.any():
            intercept[j] = 1.0 if yj.all() else -1.0  # constant score
            continue
        clf = LogisticRegression(C=c, max_iter=max_iter)
        clf.fit(x, yj)
        coef[j], intercept[j] = clf.coef_[0], clf.intercept_[0]
    return coef, intercept


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    max_iter: int = 1000,
) -> Probe:
    """Fit one probe per C on train, keep the C with the best validation macro AUROC."""
    x_train = np.asarray(x_train, np.float64)
    y_train = np.asarray(y_train, bool)
    mean = x_train.mean(0)
    scale = np.maximum(x_train.std(0), 1e-6)
    xs = (x_train - mean) / scale
    if not zeroshot.valid_classes(y_val).any():
        raise ValueError(
            "The validation split has no class with both positives and negatives; the probe's "
            "C cannot be chosen. Use a larger validation split."
        )
    best, val_by_c = None, {}
    for c in cs:
        coef, intercept = fit_classes(xs, y_train, float(c), max_iter)
        probe = Probe(mean, scale, coef, intercept, float(c), float("nan"), val_by_c)
        val = zeroshot.macro_auroc(y_val, probe.decision(np.asarray(x_val, np.float64)))["auroc"]
        val_by_c[float(c)] = val
        if best is None or val > best.val_auroc:
            probe.val_auroc = val
            best = probe
    logging.info("linear probe: C=%g chosen on validation (macro AUROC %.4f)", best.c,
                 best.val_auroc)
    return best


def fit_fractions(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    seed: int = 0,
) -> dict[float, Probe]:
    """One probe per label fraction, each on a seeded training subset: {fraction: Probe}."""
    out = {}
    for f in fractions:
        idx = subset_indices(len(x_train), float(f), seed)
        out[float(f)] = fit(x_train[idx], y_train[idx], x_val, y_val, cs)
    return out
