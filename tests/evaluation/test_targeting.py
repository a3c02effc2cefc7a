"""Targeting: share of a remover's tokens inside the evidence vs chance, by hand, overall and
per class (scar_jax.evaluation.targeting)."""

import numpy as np
import pytest

from scar_jax.evaluation import classwise
from scar_jax.evaluation import targeting


def test_targeting_share_and_chance_by_hand():
    obs = np.ones((2, 12, 10), bool)
    primary = np.zeros_like(obs)
    primary[:, 0, :] = True  # 10 of 120 tokens: chance 1/12
    removed = np.zeros_like(obs)
    removed[0, 0, :5] = True  # 5 of 5 removals inside
    removed[1, 0, :2] = True
    removed[1, 1, :6] = True  # 2 of 8 inside
    t = targeting.targeting(removed, primary, obs)
    assert t["share"] == pytest.approx((1.0 + 0.25) / 2)
    assert t["chance"] == pytest.approx(1 / 12)
    assert t["lift"] == pytest.approx(0.625 * 12)
    assert t["n"] == 2
    # a removal of an unobserved token does not count; an example without removals is skipped
    obs[1, 1, :] = False  # example 1: 6 of its 8 removals fall on a lead it never had
    t = targeting.targeting(removed, primary, obs)
    assert t["share"] == pytest.approx((1.0 + 1.0) / 2)
    assert t["chance"] == pytest.approx((1 / 12 + 10 / 110) / 2)
    removed[1] = False
    t = targeting.targeting(removed, primary, obs)
    assert t["n"] == 1 and t["share"] == 1.0 and t["chance"] == pytest.approx(1 / 12)
    # the grid's count rows aggregate to the same numbers
    rows = targeting.target_counts(removed & obs, primary, obs)
    np.testing.assert_array_equal(rows, [[5, 5, 10, 120], [0, 0, 10, 110]])
    assert targeting.targeting_from_counts(rows) == t
    assert targeting.targeting(np.zeros_like(obs), primary, obs)["n"] == 0


def test_class_targeting_counts_each_positive_against_its_own_class_region():
    """Hand count: 3 tokens removed, 2 inside class A's region (6 of 24 tokens) -> lift 8/3;
    class B has no positive, so it is not counted and the macro lift is A's."""
    observed = np.ones((2, 12, 2), bool)
    removed = np.zeros((2, 12, 2), bool)
    removed[0, 0, :] = removed[0, 5, 0] = True  # example 0: lead 0 and one token of lead 5
    removed[1, 3, :] = True  # example 1 is a positive of neither class
    region = np.zeros((2, 2, 12, 2), bool)  # [K, b, 12, S]
    region[0, :, 0:3] = True  # class A: leads 0-2
    region[1, :, 5] = True  # class B: lead 5
    labels = np.array([[True, False], [False, False]])
    rows = targeting.class_target_counts(removed, region, observed, labels)
    np.testing.assert_array_equal(rows[0, 0], [3, 2, 6, 24])
    assert not rows[0, 1].any() and not rows[1].any()
    t = targeting.targeting_by_class(rows, ["A", "B"])
    assert t["classes"]["A"]["share"] == pytest.approx(2 / 3)
    assert t["classes"]["A"]["chance"] == pytest.approx(0.25)
    assert t["classes"]["A"]["lift"] == pytest.approx(8 / 3) == t["macro_lift"]
    assert t["classes"]["B"]["n"] == 0


def test_lead_local_classes_and_their_macro_lift():
    region = np.zeros((3, 5, 12), bool)  # [K, bins, 12]
    region[0, :, :3] = True  # leads I-III: local
    region[1] = True  # every lead (a premature beat): not local
    assert classwise.lead_local_classes(region, ["A", "P", "E"]) == ["A"]  # E: no region
    # The whole evidence counts: A's secondary region on every other lead (a rate, a width)
    # makes it global; on some of them it stays local.
    secondary = np.zeros((3, 5, 12), bool)
    secondary[0, :, 3:] = True
    assert classwise.lead_local_classes(region, ["A", "P", "E"], secondary) == []
    secondary[0, :, 11] = False
    assert classwise.lead_local_classes(region, ["A", "P", "E"], secondary) == ["A"]
    # The built-in corpus: the infarcts, the right bundle branch block and the first-degree
    # AV block; not the rates (every lead carries them), NORM, LBBB, AFIB, LVOLT or PVC.
    from scar_jax.data import synthetic
    prim, sec = synthetic.class_lead_masks()
    assert classwise.lead_local_classes(prim[:, None], synthetic.CLASSES, sec[:, None]) == [
        "AMI", "IMI", "LMI", "RBBB", "1AVB"]
    results = {"models": {"m": {"targeting_by_class": {"masker/rho0.2": {"classes": {
        "A": {"lift": 2.5, "n": 3}, "P": {"lift": 1.0, "n": 4}, "E": {"lift": 9.0, "n": 0}}}}}}}
    targeting.add_lead_local(results, ["A", "E"])
    t = results["models"]["m"]["targeting_by_class"]["masker/rho0.2"]
    assert t["lead_local_macro_lift"] == 2.5 and results["lead_local_classes"] == ["A", "E"]


def test_lead_profile_by_hand():
    """Example 0 removes 3 tokens of lead 0 and 1 of lead 1 (all 12 leads observed, 2 tokens
    each); example 1 removes 2 tokens of lead 1 and has lost lead 11; example 2 removes none
    (skipped). Lift = share of removals / share of observed tokens, averaged per example."""
    observed = np.ones((3, 12, 4), bool)
    observed[1, 11] = False
    removed = np.zeros_like(observed)
    removed[0, 0, :3] = removed[0, 1, 0] = True
    removed[1, 1, :2] = True
    removed[1, 11, :] = True  # never recorded: not a removal
    rows = targeting.lead_counts(removed, observed)
    np.testing.assert_array_equal(rows[1, 0], [0, 2] + [0] * 10)
    np.testing.assert_array_equal(rows[1, 1], [4] * 11 + [0])
    labels = np.array([[True, False], [True, True], [True, False]])
    p = targeting.lead_profile(rows, labels, ["A", "B"])
    assert p["all"]["n"] == 2 and p["classes"]["A"]["n"] == 2 and p["classes"]["B"]["n"] == 1
    share = np.zeros(12)
    share[0], share[1] = 0.75 / 2, (0.25 + 1.0) / 2
    np.testing.assert_allclose(p["all"]["share"], share)
    chance = (np.full(12, 1 / 12) + np.r_[np.full(11, 1 / 11), 0.0]) / 2
    np.testing.assert_allclose(p["all"]["lift"], share / chance)
    assert p["classes"]["A"] == p["all"]
    b = p["classes"]["B"]  # example 1 alone: lead 1 holds all of it, 1/11 of its tokens
    np.testing.assert_allclose(b["lift"][:11], [0, 11] + [0] * 9)
    assert np.isnan(b["lift"][11]) and sum(b["share"]) == pytest.approx(1.0)
    assert targeting.lead_profile(rows[2:], labels[2:], ["A", "B"]) == {
        "all": None, "classes": {"A": None, "B": None}}
