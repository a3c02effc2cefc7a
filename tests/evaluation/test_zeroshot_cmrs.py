"""AUROC vs sklearn, bootstrap intervals, prompts; CMRS, drift ratio, rank retention by hand."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scar_jax.evaluation import cmrs
from scar_jax.evaluation import zeroshot


def test_auroc_equals_sklearn_with_ties_and_skips_degenerate_classes():
    rng = np.random.default_rng(0)
    labels = rng.random((200, 5)) > 0.6
    labels[:, 3] = False  # no positives
    labels[:, 4] = True  # no negatives
    scores = np.round(rng.normal(size=(200, 5)) + labels, 1)  # rounding makes ties
    per = zeroshot.auroc(labels, scores)
    for c in range(3):
        assert per[c] == pytest.approx(roc_auc_score(labels[:, c], scores[:, c]), abs=1e-12)
    assert np.isnan(per[3]) and np.isnan(per[4])
    out = zeroshot.macro_auroc(labels, scores, ["a", "b", "c", "d", "e"])
    assert out["skipped"] == ["d", "e"]
    assert out["auroc"] == pytest.approx(np.mean([roc_auc_score(labels[:, c], scores[:, c])
                                                  for c in range(3)]))


def test_fake_model_known_embeddings_hand_computed_auroc():
    # 2 classes, prompts along e1 and e2; 4 ECG embeddings with known cosines.
    z_cls = np.array([[1.0, 0.0], [0.0, 1.0]])
    z = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    labels = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], bool)
    s = zeroshot.scores(z, z_cls)
    np.testing.assert_allclose(s[:, 0], [1.0, 0.6, 0.0, 0.8])
    # class 0: positives {1.0, 0.8} vs negatives {0.6, 0.0}: all 4 pairs right -> 1.0
    # class 1: positives {0.8, 1.0} (ex 1, 2) vs negatives {0.0, 0.6}: 1.0
    assert zeroshot.macro_auroc(labels, s)["auroc"] == pytest.approx(1.0)
    # relabel so that one pair per class is ordered wrongly
    labels2 = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], bool)
    # class 0: pos {1.0, 0.6} vs neg {0.0, 0.8}: pairs right: (1,0),(1,.8),(.6,0) = 3/4
    # class 1: pos {1.0, 0.6} vs neg {0.0, 0.8}: same 3/4
    assert zeroshot.macro_auroc(labels2, s)["auroc"] == pytest.approx(0.75)


def test_bootstrap_is_seeded_and_interval_contains_the_estimate():
    rng = np.random.default_rng(1)
    labels = rng.random((300, 4)) > 0.5
    scores = rng.normal(size=(300, 4)) + 0.8 * labels
    a = zeroshot.evaluate(labels, scores, list("abcd"),
                          indices=zeroshot.bootstrap_indices(300, 200, seed=7))
    b = zeroshot.evaluate(labels, scores, list("abcd"),
                          indices=zeroshot.bootstrap_indices(300, 200, seed=7))
    c = zeroshot.evaluate(labels, scores, list("abcd"),
                          indices=zeroshot.bootstrap_indices(300, 200, seed=8))
    assert a["ci"] == b["ci"] and a["ci"] != c["ci"]
    lo, hi = a["ci"]
    assert lo < a["auroc"] < hi and hi - lo < 0.2
    # a resample's value is sklearn's macro AUROC on that resample
    idx = zeroshot.bootstrap_indices(300, 3, seed=7)
    vals = zeroshot.bootstrap_macro_auroc(labels, scores, idx)
    want = np.mean([roc_auc_score(labels[idx[0], c], scores[idx[0], c]) for c in range(4)])
    assert vals[0] == pytest.approx(want)


def test_bootstrap_weighted_mann_whitney_equals_auroc_on_each_materialised_resample():
    # ties (rounded scores), duplicates (resampling) and a rare class that some resamples
    # lose entirely (its AUROC is then NaN and left out of that resample's mean)
    rng = np.random.default_rng(3)
    labels = rng.random((120, 5)) > 0.5
    labels[:, 4] = False
    labels[[5, 77], 4] = True
    scores = np.round(rng.normal(size=(120, 5)) + labels, 1)
    idx = zeroshot.bootstrap_indices(120, 60, seed=2)
    got = zeroshot.bootstrap_macro_auroc(labels, scores, idx)
    lost = 0
    for r in range(len(idx)):
        per = [roc_auc_score(labels[idx[r], c], scores[idx[r], c]) for c in range(5)
               if 0 < labels[idx[r], c].sum() < len(idx[r])]
        lost += len(per) < 5
        assert got[r] == pytest.approx(np.mean(per), abs=1e-12)
    assert lost > 0  # the NaN path was exercised


def test_prompt_ids_for_random_text_are_distinct_and_reproducible():
    a = zeroshot.tokenize_prompts("random-tiny", ["ECG shows x", "ECG shows y"], 16)
    b = zeroshot.tokenize_prompts("random-tiny", ["ECG shows x", "ECG shows y"], 16)
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert (a["input_ids"][0] != a["input_ids"][1]).any()


def test_cmrs_hand_computed():
    labels = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 0, 0]], bool)
    clean = np.array([[0.9, 0.1, 0.3], [0.2, 0.6, 0.8], [0.5, 0.5, 0.5], [0.1, 0.4, 0.2]])
    cf = np.array([[0.5, 0.1, 0.3], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [0.9, 0.0, 0.0]])
    d = cmrs.margin(clean, labels)
    # ex0: 0.9 - 0.2 = 0.7; ex1: 0.7 - 0.2 = 0.5; ex2: no negatives -> NaN; ex3: 0.1 - 0.3 < 0
    np.testing.assert_allclose(d[[0, 1, 3]], [0.7, 0.5, -0.2])
    assert np.isnan(d[2])
    # cf margins: ex0: 0.5 - 0.2 = 0.3 -> 0.3/0.7; ex1: 0.5 - 0.5 = 0 -> 0; ex3 excluded
    assert cmrs.cmrs_rho(clean, cf, labels) == pytest.approx((0.3 / 0.7 + 0.0) / 2)
    # clipping: a counterfactual with a larger margin counts as 1, a reversed one as 0
    cf2 = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.1], [0, 0, 0], [0, 0, 0]])
    assert cmrs.cmrs_rho(clean, cf2, labels) == pytest.approx((1.0 + 0.0) / 2)
    assert cmrs.headline({0.1: 0.9, 0.2: 0.6, 0.3: 0.3}) == pytest.approx(0.6)


def test_drift_ratio_and_rank_retention_hand_computed():
    z = np.array([[1.0, 0.0], [0.0, 1.0]])
    crit = np.array([[0.0, 1.0], [0.0, 1.0]])  # drifts 1 and 0 -> mean 0.5
    rand = np.array([[0.8, 0.6], [0.6, 0.8]])  # drifts 0.2 and 0.2 -> mean 0.2
    assert cmrs.drift_ratio(z, crit, rand) == pytest.approx(0.5 / 0.2)
    labels = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], bool)
    clean = np.array([[0.9, 0.2, 0.5], [0.8, 0.1, 0.3], [0.5, 0.5, 0.5]])
    cf = np.array([[0.9, 0.2, 0.5], [0.2, 0.1, 0.3], [0.0, 0.0, 0.0]])
    # clean above every negative: (0, c0) yes, (0, c1) no, (1, c0) yes; ex 2 has no negatives.
    # after removal: (0, c0) stays, (1, c0) falls below 0.3 -> 1 of 2 retained
    assert cmrs.rank_retention(clean, cf, labels) == pytest.approx(0.5)
