"""CMRS, our definition (METHOD §8; the paper's formula is not public).

With s_c(x) the zero-shot score of class c, the diagnostic margin is
  Delta(x) = mean_{c positive} s_c(x) - mean_{c negative} s_c(x)
(defined when x has at least one positive and one negative class). For the
counterfactual x~ (x with its primary evidence removed at budget rho):
  CMRS_rho = mean over examples with Delta(x) > 0 of clip(Delta(x~) / Delta(x), 0, 1)
and the headline CMRS is the mean of CMRS_rho over rho in {0.1, 0.2, 0.3}.
Beside it:
  drift ratio     = mean_x (1 - cos(z(x), z(x~_critical))) / mean_x (1 - cos(z(x), z(x~_random)))
                    (random removal of the same unit and budget)
  rank retention  = among (x, positive c) pairs ranked above every negative class of x on the
                    clean input, the share still ranked above every negative class on x~.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def margin(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Delta [N] from scores [N, K] and labels [N, K]; NaN where x lacks positives or negatives."""
    labels = np.asarray(labels, bool)
    n_pos = labels.sum(-1)
    n_neg = labels.shape[-1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        mp = np.sum(scores * labels, -1) / n_pos
        mn = np.sum(scores * ~labels, -1) / n_neg
    return np.where((n_pos > 0) & (n_neg > 0), mp - mn, np.nan)


def cmrs_rho(scores_clean: np.ndarray, scores_cf: np.ndarray, labels: np.ndarray) -> float:
    """CMRS at one budget: mean over Delta(x) > 0 of clip(Delta(x~) / Delta(x), 0, 1)."""
    d0 = margin(scores_clean, labels)
    d1 = margin(scores_cf, labels)
    ok = np.isfinite(d0) & (d0 > 0)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.clip(d1[ok] / d0[ok], 0.0, 1.0)))


def headline(by_rho: Mapping[float, float]) -> float:
    """Headline CMRS: mean of CMRS_rho over the budgets given (METHOD: 0.1, 0.2, 0.3)."""
    vals = [v for v in by_rho.values() if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def drift(z: np.ndarray, z_cf: np.ndarray) -> np.ndarray:
    """Embedding drift 1 - cos(z, z~) per example: [N, E] x [N, E] -> [N]."""
    a = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    b = z_cf / np.maximum(np.linalg.norm(z_cf, axis=-1, keepdims=True), 1e-12)
    return 1.0 - np.sum(a * b, -1)


def drift_ratio(z: np.ndarray, z_critical: np.ndarray, z_random: np.ndarray) -> float:
    """Mean drift under critical removal over mean drift under random removal (same budget)."""
    den = float(np.mean(drift(z, z_random)))
    num = float(np.mean(drift(z, z_critical)))
    return num / den if den > 0 else float("nan")


def ranked_above_negatives(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Bool [N, K]: positive class c of x scores above every negative class of x."""
    labels = np.asarray(labels, bool)
    max_neg = np.max(np.where(labels, -np.inf, scores), -1, keepdims=True)
    return labels & (scores > max_neg)


def rank_retention(scores_clean: np.ndarray, scores_cf: np.ndarray, labels: np.ndarray) -> float:
    """Share of (x, positive c) pairs above every negative on x that stay there on x~."""
    labels = np.asarray(labels, bool)
    has_neg = (~labels).any(-1, keepdims=True)
    before = ranked_above_negatives(scores_clean, labels) & has_neg
    after = ranked_above_negatives(scores_cf, labels)
    n = before.sum()
    return float((before & after).sum() / n) if n else float("nan")
