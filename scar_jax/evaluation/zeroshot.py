"""Zero-shot diagnosis (METHOD §8): prompt embeddings once, cosine scores, macro AUROC + bootstrap.

AUROC is the Mann-Whitney statistic with average ranks for ties, which is exactly
`sklearn.metrics.roc_auc_score` (tested); bootstrap resamples are scored as weighted
Mann-Whitney statistics over one sort per class, so a thousand resamples of every
condition stay cheap.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import jax
import numpy as np
import scipy.stats

from scar_jax.models import scar as scar_model


def tokenize_prompts(
    text_checkpoint: str, prompts: Sequence[str], max_len: int
) -> dict[str, np.ndarray]:
    """Prompt (or report) token ids [K, max_len] with the same tokenizer training used.

    scar_jax.models.scar.text_tokenizer: the checkpoint's tokenizer, or the hash tokenizer
    of the random tiny BERT.
    """
    return dict(scar_model.text_tokenizer(text_checkpoint, int(max_len))(list(prompts)))


def prompt_embeddings(model: Any, variables: Any, tokens: dict[str, np.ndarray]) -> np.ndarray:
    """Class prompt embeddings [K, E] (L2-normalised), computed once per model."""
    fn = jax.jit(lambda v, t: model.apply(v, t, method=scar_model.Model.embed_text)[0])
    return np.asarray(fn(variables, {k: jax.numpy.asarray(v) for k, v in tokens.items()}))


def scores(z_ecg: np.ndarray, z_cls: np.ndarray) -> np.ndarray:
    """Cosine scores [..., N, K] of ECG embeddings [..., N, E] against prompts [K, E]."""
    a = z_ecg / np.maximum(np.linalg.norm(z_ecg, axis=-1, keepdims=True), 1e-12)
    b = z_cls / np.maximum(np.linalg.norm(z_cls, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def auroc(labels: np.ndarray, scores_: np.ndarray) -> np.ndarray:
    """Per-column AUROC of labels [..., N, K] bool vs scores [..., N, K]; NaN without both classes.

    Mann-Whitney U with average ranks for ties (= sklearn.metrics.roc_auc_score).
    """
    labels = np.asarray(labels, bool)
    ranks = scipy.stats.rankdata(scores_, axis=-2)
    n_pos = labels.sum(-2)
    n_neg = labels.shape[-2] - n_pos
    u = np.sum(ranks * labels, axis=-2) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = u / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def valid_classes(labels: np.ndarray) -> np.ndarray:
    """Bool [K]: classes with at least one positive and one negative example."""
    labels = np.asarray(labels, bool)
    n_pos = labels.sum(0)
    return (n_pos > 0) & (n_pos < labels.shape[0])


def macro_auroc(
    labels: np.ndarray, scores_: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Macro AUROC over valid classes: {'auroc', 'per_class', 'skipped'} (skipped = class names)."""
    labels = np.asarray(labels, bool)
    k = labels.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    per = auroc(labels, scores_)
    ok = valid_classes(labels)
    return {
        "auroc": float(np.mean(per[ok])) if ok.any() else float("nan"),
        "per_class": {n: float(a) for n, a, v in zip(names, per, ok) if v},
        "skipped": [n for n, v in zip(names, ok) if not v],
    }


def bootstrap_indices(n: int, num_samples: int, seed: int) -> np.ndarray:
    """Resampled example indices [num_samples, n] (with replacement), seeded."""
    return np.random.default_rng(seed).integers(0, n, size=(num_samples, n))


def bootstrap_macro_auroc(
    labels: np.ndarray,
    scores_: np.ndarray,
    indices: np.ndarray,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Macro AUROC of each resample [num_samples]: indices [R, N] from bootstrap_indices.

    Averaged over `classes` (bool [K]; default the classes valid on the full set) that
    still have both labels in the resample. Each resample is its multiplicities
    w [R, N] (how often each example was drawn), and its AUROC the weighted Mann-Whitney
    statistic: with the negatives sorted by score once per class and C their cumulative
    weights, a positive of score s beats the negatives below s (C at searchsorted left)
    and ties half of those equal to s, so U = sum over positives of
    w_pos * (C[left] + C[right]) / 2, over w_pos * w_neg. That equals `auroc` on the
    materialised resample (ties, duplicates included) at a fraction of the cost of
    ranking every resample.
    """
    labels = np.asarray(labels, bool)
    if classes is None:
        classes = valid_classes(labels)
    labels, scores_ = labels[:, classes], np.asarray(scores_)[:, classes]
    indices = np.asarray(indices)
    r, n = indices.shape[0], labels.shape[0]
    if r == 0:
        return np.zeros((0,))
    rows = np.repeat(np.arange(r), indices.shape[1])
    w = np.bincount(rows * n + indices.ravel(), minlength=r * n).reshape(r, n).astype(np.float64)
    per = np.full((r, labels.shape[1]), np.nan)
    for k in range(labels.shape[1]):
        pos = np.flatnonzero(labels[:, k])
        neg = np.flatnonzero(~labels[:, k])
        neg = neg[np.argsort(scores_[neg, k], kind="stable")]
        s_neg = scores_[neg, k]
        c_neg = np.zeros((r, neg.size + 1))
        np.cumsum(w[:, neg], axis=1, out=c_neg[:, 1:])  # weight of the i lowest negatives
        left = np.searchsorted(s_neg, scores_[pos, k], side="left")  # negatives below
        right = np.searchsorted(s_neg, scores_[pos, k], side="right")  # ... or tied
        w_pos = w[:, pos]
        u = 0.5 * np.sum(w_pos * (c_neg[:, left] + c_neg[:, right]), axis=1)
        n_pos, n_neg = w_pos.sum(1), c_neg[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            per[:, k] = np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any valid class
        return np.nanmean(per, -1)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval (lo, hi) of bootstrap samples (NaNs ignored)."""
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return float(lo), float(hi)


def evaluate(
    labels: np.ndarray,
    scores_: np.ndarray,
    class_names: Sequence[str],
    *,
    indices: np.ndarray | None = None,
) -> dict[str, Any]:
    """Macro AUROC with its 95 % bootstrap interval (when `indices` are given) for one condition."""
    out = macro_auroc(labels, scores_, class_names)
    if indices is not None and len(indices):
        out["ci"] = list(interval(bootstrap_macro_auroc(labels, scores_, indices)))
    return out
