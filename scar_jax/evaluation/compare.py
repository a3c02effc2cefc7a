"""Differences between two methods with their uncertainty across seeds and test examples.

The demo trains every method at several seeds and scores all of them on the same test
split under the same masks. A difference "SCAR - other" per condition is then reported
with a paired, two-level bootstrap (METHOD §8; issue 19):

  replicate r: draw S seeds with replacement from the S trained seeds, and one resample of
  the N test examples (with replacement); the replicate is the mean over the drawn seeds
  of  metric(method A of that seed on the resample) - metric(method B of that seed, same
  resample).

The example resample is shared by both methods (they are scored on the same records and
masks: paired) and by the drawn seeds of a replicate (the test split is one sample, common
to every seed, so its sampling noise does not average out over seeds). The point estimate
is the mean over seeds of the full-split differences; the interval is the percentile
interval of the replicates. Identical methods give exactly 0 (every replicate);
per-example values shifted by a constant c give exactly c.

Per-example scores come from the `scores.npz` that `save_scores` writes beside each
results.json: `labels` [N, K] and `<model>|<condition>` [N, K] zero-shot scores.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from etils import epath

from scar_jax.evaluation import cmrs as cmrs_lib
from scar_jax.evaluation import zeroshot

SCORES_FILE = "scores.npz"
_SEP = "|"


def paired_difference(
    a: Sequence[Any],
    b: Sequence[Any],
    statistic: Callable[[Any, np.ndarray], np.ndarray],
    n: int,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Mean difference A - B over seeds with its paired seed x example bootstrap interval.

    a, b: one input per seed (seed i of A is paired with seed i of B), whatever `statistic`
    takes; statistic(x, indices [R, n]) -> [R] values of the metric on each resample of the
    n test examples (rows of example indices, zeroshot.bootstrap_indices). Returns
    {'mean', 'ci' [lo, hi], 'seeds' (per-seed full-split differences), 'n_seeds'}.
    """
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_difference needs the same seeds for both methods: "
                         f"{len(a)} vs {len(b)}.")
    full = np.arange(n)[None]
    per_seed = np.array([float(statistic(x, full)[0]) - float(statistic(y, full)[0])
                         for x, y in zip(a, b)])
    out: dict[str, Any] = {"mean": float(np.mean(per_seed)), "seeds": per_seed.tolist(),
                           "n_seeds": len(a), "ci": [float("nan"), float("nan")]}
    if num_samples <= 0:
        return out
    idx = zeroshot.bootstrap_indices(n, int(num_samples), int(seed))
    diffs = np.stack([np.asarray(statistic(x, idx), np.float64)
                      - np.asarray(statistic(y, idx), np.float64) for x, y in zip(a, b)])
    drawn = np.random.default_rng([int(seed), 1]).integers(0, len(a), (int(num_samples),
                                                                       len(a)))
    reps = np.mean(diffs[drawn, np.arange(int(num_samples))[:, None]], axis=1)  # [R]
    out["ci"] = list(zeroshot.interval(reps, level))
    return out


def auroc_statistic(labels: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """statistic(scores [N, K], indices [R, N]) -> macro AUROC [R] over the classes valid on
    the whole split (the same classes for both methods)."""
    labels = np.asarray(labels, bool)
    classes = zeroshot.valid_classes(labels)
    return lambda s, idx: zeroshot.bootstrap_macro_auroc(labels, s, idx, classes=classes)


def weighted_mean_statistic(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """values [N] (NaN = not counted), indices [R, N] -> mean of the counted values of each
    resample [R] (NaN where a resample counts none)."""
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)
    n = values.shape[0]
    rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
    w = np.bincount(rows * n + idx.ravel(), minlength=idx.shape[0] * n).reshape(-1, n)
    w = w * ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ np.where(ok, values, 0.0)) / w.sum(1)


def cmrs_values(clean: np.ndarray, counterfactuals: Sequence[np.ndarray],
                labels: np.ndarray) -> np.ndarray:
    """Per-example CMRS [N]: mean over the budgets of clip(Delta(x~) / Delta(x), 0, 1) where
    Delta(x) > 0, else NaN; its mean over examples is cmrs.headline of the cmrs_rho's."""
    d0 = cmrs_lib.margin(clean, labels)
    ok = np.isfinite(d0) & (d0 > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = [np.clip(cmrs_lib.margin(cf, labels) / d0, 0.0, 1.0) for cf in counterfactuals]
    return np.where(ok, np.mean(ratios, 0), np.nan)


# ----------------------------------------------------------------------------- Score files.


def score_key(model: str, condition: str) -> str:
    """The npz key of one model's scores under one condition."""
    if _SEP in model:
        raise ValueError(f"model name {model!r} must not contain {_SEP!r}.")
    return f"{model}{_SEP}{condition}"


def save_scores(out_dir: str | os.PathLike, labels: np.ndarray,
                scores: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """Per-example zero-shot scores of every model and condition into out_dir/scores.npz
    (labels [N, K] and '<model>|<condition>' [N, K] float32): the seed summary's paired
    bootstrap of method differences reads them (load_scores)."""
    arrays = {"labels": np.asarray(labels, bool)}
    for model, by_cond in scores.items():
        for cond, sc in by_cond.items():
            arrays[score_key(model, cond)] = np.asarray(sc, np.float32)
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SCORES_FILE
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)
    return str(path)


def load_scores(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """scores.npz -> (labels [N, K] bool, {model: {condition: scores [N, K]}})."""
    with epath.Path(path).open("rb") as f:
        npz = np.load(f)
        labels = np.asarray(npz["labels"], bool)
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in npz.files:
            if key == "labels":
                continue
            model, _, cond = key.partition(_SEP)
            out.setdefault(model, {})[cond] = np.asarray(npz[key])
    return labels, out


def method_differences(
    per_seed: Mapping[int, tuple[np.ndarray, Mapping[str, Mapping[str, np.ndarray]]]],
    model: str,
    others: Sequence[str],
    *,
    cmrs_conditions: Sequence[str] = (),
    num_samples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{other: {condition: paired_difference}} of `model` - other for every condition that
    every seed scored for both, plus 'cmrs' (per-example CMRS over `cmrs_conditions`, the
    headline adversary's budgets) when those are present.

    per_seed: {seed: (labels, {model: {condition: scores}})} as load_scores returns them;
    every seed must have scored the same test records (same labels).
    """
    seeds = sorted(per_seed)
    if not seeds:
        raise ValueError("method_differences needs at least one seed's scores.")
    labels = per_seed[seeds[0]][0]
    for s in seeds[1:]:
        if per_seed[s][0].shape != labels.shape or not np.array_equal(per_seed[s][0], labels):
            raise ValueError(f"seed {s} scored other test records than seed {seeds[0]}; the "
                             "paired bootstrap needs the same test split for every seed.")
    n = labels.shape[0]
    stat = auroc_statistic(labels)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for other in others:
        have = [per_seed[s][1] for s in seeds]
        if not all(model in h and other in h for h in have):
            continue
        conds = [c for c in have[0][model]
                 if all(c in h[model] and c in h[other] for h in have)]
        res = {}
        for c in conds:
            res[c] = paired_difference([h[model][c] for h in have], [h[other][c] for h in have],
                                       stat, n, num_samples=num_samples, seed=seed)
        cm = list(cmrs_conditions)
        if cm and all(c in conds for c in ["clean"] + cm):
            va = [cmrs_values(h[model]["clean"], [h[model][c] for c in cm], labels) for h in have]
            vb = [cmrs_values(h[other]["clean"], [h[other][c] for c in cm], labels) for h in have]
            res["cmrs"] = paired_difference(va, vb, weighted_mean_statistic, n,
                                            num_samples=num_samples, seed=seed)
        out[other] = res
    return out


def difference_cell(d: Mapping[str, Any] | None) -> str:
    """One difference as a table cell: 'mean [lo, hi]', bold when the interval excludes 0,
    '–' when there is none (missing or non-finite mean)."""
    mean = d.get("mean") if d else None
    if mean is None or not np.isfinite(mean):
        return "–"
    lo, hi = d["ci"]
    text = f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"
    excludes_zero = lo is not None and hi is not None and np.isfinite(lo) and (lo > 0 or hi < 0)
    return f"**{text}**" if excludes_zero else text
