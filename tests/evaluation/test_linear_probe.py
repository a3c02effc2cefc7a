"""Linear probe: C chosen on validation only, seeded label subsets, known-answer features."""

import numpy as np
import pytest

from scar_jax.evaluation import linear_probe
from scar_jax.evaluation import zeroshot


def _features(n, rng):
    """x0 = signal + shared noise, x1 = shared noise, x2.. = noise; label = signal > 0.

    Strong L2 (small C) keeps the weights near the label correlation, i.e. mostly on x0,
    which is swamped by the shared noise; weak L2 (large C) learns x0 - x1 = signal.
    """
    s = rng.normal(size=n)
    shared = 4.0 * rng.normal(size=n)
    x = np.concatenate([(s + shared)[:, None], shared[:, None], rng.normal(size=(n, 3))], 1)
    y = np.stack([s > 0, s > 0.5], 1)
    return x, y


def test_c_is_chosen_on_validation_and_the_answer_is_known():
    rng = np.random.default_rng(0)
    (xt, yt), (xv, yv), (xs, ys) = (_features(n, rng) for n in (400, 300, 300))
    probe = linear_probe.fit(xt, yt, xv, yv, cs=(1e-4, 10.0))
    assert probe.c == 10.0
    assert probe.val_by_c[10.0] > probe.val_by_c[1e-4] + 0.1
    assert probe.val_auroc == probe.val_by_c[10.0]
    assert zeroshot.macro_auroc(ys, probe.decision(xs))["auroc"] > 0.97
    # the test split never influences the choice: validation labels that reward the noisy
    # direction flip it
    yv_bad = np.stack([xv[:, 0] > 0, xv[:, 0] > 1.0], 1)
    assert linear_probe.fit(xt, yt, xv, yv_bad, cs=(1e-4, 10.0)).c == 1e-4


def test_label_subsets_are_seeded_and_sized():
    a = linear_probe.subset_indices(1000, 0.01, seed=3)
    assert len(a) == 10 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, linear_probe.subset_indices(1000, 0.01, seed=3))
    assert (a != linear_probe.subset_indices(1000, 0.01, seed=4)).any()
    assert len(linear_probe.subset_indices(1000, 1.0, seed=3)) == 1000
    with pytest.raises(ValueError, match="fraction"):
        linear_probe.subset_indices(10, 0.0, seed=0)


def test_fractions_and_constant_classes():
    rng = np.random.default_rng(1)
    (xt, yt), (xv, yv) = (_features(n, rng) for n in (300, 200))
    yt[:, 1] = False  # a class without positives in training gets a constant score
    probes = linear_probe.fit_fractions(xt, yt, xv, yv, fractions=(0.1, 1.0), cs=(1.0,))
    assert set(probes) == {0.1, 1.0}
    scores = probes[1.0].decision(xv)
    assert np.ptp(scores[:, 1]) == 0.0 and np.ptp(scores[:, 0]) > 0
