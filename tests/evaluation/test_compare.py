"""The paired seed x example bootstrap of method differences, on hand-computable cases."""

import numpy as np
import pytest

from scar_jax.evaluation import cmrs as cmrs_lib
from scar_jax.evaluation import compare
from scar_jax.evaluation import zeroshot


def _labels(n=40, k=3, seed=0):
    labels = np.random.default_rng(seed).random((n, k)) > 0.5
    labels[0], labels[1] = True, False
    return labels


def test_identical_methods_differ_by_exactly_zero():
    labels = _labels()
    rng = np.random.default_rng(1)
    seeds = [rng.normal(size=labels.shape) for _ in range(3)]
    d = compare.paired_difference(seeds, [s.copy() for s in seeds],
                                  compare.auroc_statistic(labels), len(labels), num_samples=200)
    assert d["mean"] == 0.0 and d["ci"] == [0.0, 0.0] and d["seeds"] == [0.0, 0.0, 0.0]


def test_a_constant_shift_of_per_example_values_is_the_difference():
    rng = np.random.default_rng(2)
    a = [rng.random(30) for _ in range(3)]
    for x in a:
        x[[3, 7]] = np.nan  # not counted (CMRS: Delta(x) <= 0), the same examples for both
    b = [x - 0.25 for x in a]
    d = compare.paired_difference(a, b, compare.weighted_mean_statistic, 30, num_samples=300)
    assert d["mean"] == pytest.approx(0.25, abs=1e-12)
    assert d["ci"] == pytest.approx([0.25, 0.25], abs=1e-12)


def test_perfect_vs_reversed_scores_differ_by_one_in_every_resample():
    labels = _labels()
    good = labels.astype(float) + 0.01 * np.arange(len(labels))[:, None]  # AUROC 1
    d = compare.paired_difference([good, good], [-good, -good],
                                  compare.auroc_statistic(labels), len(labels), num_samples=100)
    assert d["mean"] == pytest.approx(1.0) and d["ci"] == pytest.approx([1.0, 1.0])


def test_seeds_are_resampled_two_seeds_give_0_half_or_1():
    """Seed 0: A beats B by 1 (perfect vs reversed); seed 1: A == B. A replicate draws 2 seeds
    with replacement: (0, 0) -> 1, (1, 1) -> 0, mixed -> 0.5, so the 95 % interval is [0, 1]
    and the replicates' shares are 1/4, 1/2, 1/4; the point estimate is 0.5."""
    labels = _labels()
    good = labels.astype(float) + 0.01 * np.arange(len(labels))[:, None]
    stat = compare.auroc_statistic(labels)
    d = compare.paired_difference([good, good], [-good, good], stat, len(labels),
                                  num_samples=2000, seed=3)
    assert d["mean"] == pytest.approx(0.5) and d["seeds"] == pytest.approx([1.0, 0.0])
    assert d["ci"] == pytest.approx([0.0, 1.0])
    # the replicates themselves: recompute with the same draws
    drawn = np.random.default_rng([3, 1]).integers(0, 2, (2000, 2))
    share_mixed = np.mean(drawn[:, 0] != drawn[:, 1])
    assert share_mixed == pytest.approx(0.5, abs=0.04)


def test_the_full_split_statistic_is_the_plain_metric():
    labels = _labels()
    s = np.random.default_rng(4).normal(size=labels.shape)
    full = compare.auroc_statistic(labels)(s, np.arange(len(labels))[None])
    assert full[0] == pytest.approx(zeroshot.macro_auroc(labels, s)["auroc"], abs=1e-12)
    clean = s + labels  # positive margins
    cfs = [clean * 0.5, clean * 0.2]
    v = compare.cmrs_values(clean, cfs, labels)
    want = cmrs_lib.headline({0.1: cmrs_lib.cmrs_rho(clean, cfs[0], labels),
                              0.2: cmrs_lib.cmrs_rho(clean, cfs[1], labels)})
    assert np.nanmean(v) == pytest.approx(want, abs=1e-12)


def test_method_differences_reads_score_files_and_rejects_other_test_sets(tmp_path):
    labels = _labels()
    rng = np.random.default_rng(5)
    per_seed = {}
    for seed in (0, 1):
        base = rng.normal(size=labels.shape)
        arrays = {"labels": labels}
        for cond in ("clean", "adversarial/whitebox/lead/rho0.1"):
            arrays[compare.score_key("scar", cond)] = base + labels
            arrays[compare.score_key("merl", cond)] = base + labels  # identical -> 0
        np.savez_compressed(tmp_path / f"s{seed}.npz", **arrays)
        per_seed[seed] = compare.load_scores(tmp_path / f"s{seed}.npz")
    out = compare.method_differences(per_seed, "scar", ["merl", "random"],
                                     cmrs_conditions=["adversarial/whitebox/lead/rho0.1"],
                                     num_samples=50)
    assert set(out) == {"merl"}  # random was not scored
    assert set(out["merl"]) == {"clean", "adversarial/whitebox/lead/rho0.1", "cmrs"}
    assert all(v["mean"] == 0.0 and v["ci"] == [0.0, 0.0] for v in out["merl"].values())
    per_seed[1] = (~labels, per_seed[1][1])
    with pytest.raises(ValueError, match="other test records"):
        compare.method_differences(per_seed, "scar", ["merl"])
    with pytest.raises(ValueError, match="same seeds"):
        compare.paired_difference([1], [], compare.weighted_mean_statistic, 3)
