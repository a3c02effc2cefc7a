"""The oracle-region rule and its token grid (scar_jax.evaluation.regions)."""

import types

import numpy as np

from scar_jax.evaluation import missingness as miss
from scar_jax.evaluation import regions


def test_oracle_regions_follow_the_class_metadata_for_positives_and_negatives():
    meta = {"class_info": {
        "A": {"primary_leads": ["I", "II"], "primary_time": "st",
              "secondary_leads": ["V1"], "secondary_time": "st"},
        "P": {"primary_leads": list(miss.LEAD_NAMES), "primary_time": "pvc",
              "secondary_leads": list(miss.LEAD_NAMES), "secondary_time": "post_pvc"},
    }}
    labels = np.array([[1, 1], [0, 0], [1, 0], [0, 1]], bool)
    bins = np.zeros((4, 20, 2), bool)
    bins[0, 4:7, 1] = True  # record 0's premature beat: 0.4-0.7 s
    bins[3, 12:14, 1] = True  # record 3's: 1.2-1.4 s
    bins[0, 2:18, 0] = bins[2, 2:18, 0] = True  # A's ST bins (positives only, as stored)
    reg = regions.oracle_regions(meta, ["A", "P"], "primary", labels, bins, 20, seed=0)
    assert reg.shape == (2, 4, 20, 12)
    # A recurs in every beat: leads I, II over the whole record, positives and negatives alike
    want_a = np.zeros((20, 12), bool)
    want_a[:, :2] = True
    for i in range(4):
        np.testing.assert_array_equal(reg[0, i], want_a)
    # P is time-localised: positives keep their own spans on all leads ...
    np.testing.assert_array_equal(reg[1, 0], np.repeat(bins[0, :, 1, None], 12, 1))
    np.testing.assert_array_equal(reg[1, 3], np.repeat(bins[3, :, 1, None], 12, 1))
    # ... negatives get a positive's span shifted in time: same length, all leads
    for i in (1, 2):
        t = reg[1, i].all(-1)
        assert t.sum() in (3, 2) and (reg[1, i].any(-1) == t).all()
    # on the token grid (2 s at 500 Hz, patch 100 -> 0.2 s segments) the oracle keep removes
    # exactly the region: record 0 loses segments 2 and 3 of every lead for class P
    tok = miss.evidence_to_tokens(reg[1], patch_size=100, sample_rate=500, num_segments=10)
    obs = np.ones((4, 12, 10), bool)
    keep = miss.region_keep(obs, tok)
    removed = np.flatnonzero(~keep[0].all(0))
    np.testing.assert_array_equal(removed, [2, 3])
    assert regions.oracle_regions({}, ["A"], "primary", labels[:, :1], None, 20) is None


def test_region_tokens_of_a_batch_are_that_batchs_rows():
    # per-example class regions [K, N, bins, 12] -> the batch's rows only; class-level
    # regions [K, bins, 12] -> one row per class, broadcast over the batch
    rng = np.random.default_rng(1)
    region = rng.random((3, 10, 20, 12)) < 0.1
    data = types.SimpleNamespace(sample_rate=500, bin_seconds=0.1)
    whole = miss.evidence_to_tokens(region, patch_size=100, sample_rate=500, num_segments=10)
    got = regions.region_tokens(region, data, 100, 10, slice(4, 8))
    assert got.shape == (3, 4, 12, 10)
    np.testing.assert_array_equal(got, whole[:, 4:8])
    got = regions.region_tokens(region[:, 0], data, 100, 10, slice(4, 8))
    np.testing.assert_array_equal(got, whole[:, :1])
    assert regions.region_tokens(None, data, 100, 10, slice(4, 8)) is None
