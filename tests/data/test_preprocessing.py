"""Preprocessing ops against hand-computed results."""

import numpy as np
import pytest

from scar_jax.data import preprocessing as pp
from scar_jax.leads import LEAD_NAMES


@pytest.mark.parametrize(
    "name, want",
    [("avr", "aVR"), ("AVR", "aVR"), (" aVR ", "aVR"), ("v1", "V1"), ("V6", "V6"), ("iii", "III")],
)
def test_canonical_lead_name(name, want):
    assert pp.canonical_lead_name(name) == want


def test_canonical_lead_name_rejects_unknown_and_mlii_unless_aliased():
    with pytest.raises(ValueError, match="'MLII'"):
        pp.canonical_lead_name("MLII")
    with pytest.raises(ValueError, match="'V7'"):
        pp.canonical_lead_name("V7")
    assert pp.canonical_lead_name("mlii", aliases={"MLII": "II"}) == "II"


def test_reorder_recovers_standard_order_from_shuffled_header():
    rng = np.random.default_rng(0)
    names = list(LEAD_NAMES)
    perm = rng.permutation(12)
    shuffled = [names[i].upper() if i % 2 else names[i].lower() for i in perm]
    # column j holds the value 100 + index of its lead in the standard order
    signal = np.tile((100.0 + perm)[None, :], (5, 1))
    out, observed = pp.reorder_leads(signal, shuffled)
    np.testing.assert_array_equal(out, np.tile(100.0 + np.arange(12), (5, 1)))
    assert observed.all()


def test_reorder_mimic_avf_before_avl():
    mimic = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    signal = np.arange(3 * 12, dtype=np.float32).reshape(3, 12)
    out, _ = pp.reorder_leads(signal, mimic)
    np.testing.assert_array_equal(out[:, 4], signal[:, 5])  # aVL
    np.testing.assert_array_equal(out[:, 5], signal[:, 4])  # aVF
    np.testing.assert_array_equal(out[:, [0, 1, 2, 3]], signal[:, [0, 1, 2, 3]])
    np.testing.assert_array_equal(out[:, 6:], signal[:, 6:])


def test_reorder_missing_leads_are_zero_and_unobserved():
    signal = np.array([[1.0, 2.0], [3.0, 4.0]])
    out, observed = pp.reorder_leads(signal, ["V2", "ii"])
    want_obs = np.zeros(12, bool)
    want_obs[[1, 7]] = True
    np.testing.assert_array_equal(observed, want_obs)
    np.testing.assert_array_equal(out[:, 7], [1.0, 3.0])
    np.testing.assert_array_equal(out[:, 1], [2.0, 4.0])
    assert np.count_nonzero(out[:, ~want_obs]) == 0


def test_reorder_errors():
    with pytest.raises(ValueError, match="twice"):
        pp.reorder_leads(np.zeros((4, 2)), ["aVL", "AVL"])
    with pytest.raises(ValueError, match=r"\['I', 'X'\]"):
        pp.reorder_leads(np.zeros((4, 2)), ["I", "X"])
    with pytest.raises(ValueError, match="header names 3"):
        pp.reorder_leads(np.zeros((4, 2)), ["I", "II", "III"])
    with pytest.raises(ValueError, match=r"\[T, L\]"):
        pp.reorder_leads(np.zeros(4), ["I"])


@pytest.mark.parametrize("from_hz, to_hz", [(500, 250), (500, 100), (250, 500), (360, 500)])
def test_resample_sine(from_hz, to_hz):
    seconds, f = 4, 3.0  # a 3 Hz sine is far below every Nyquist here
    t_in = np.arange(seconds * from_hz) / from_hz
    x = np.stack([np.sin(2 * np.pi * f * t_in), 2 * np.cos(2 * np.pi * f * t_in)], 1)
    y = pp.resample(x, from_hz, to_hz)
    assert y.shape == (seconds * to_hz, 2)
    t_out = np.arange(seconds * to_hz) / to_hz
    want = np.stack([np.sin(2 * np.pi * f * t_out), 2 * np.cos(2 * np.pi * f * t_out)], 1)
    inner = slice(to_hz // 2, -to_hz // 2)  # away from the filter's edge effects
    np.testing.assert_allclose(y[inner], want[inner], atol=2e-3)


def test_resample_identity_and_errors():
    x = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_array_equal(pp.resample(x, 500, 500), x)
    with pytest.raises(ValueError, match="repair_nan"):
        pp.resample(np.array([[np.nan], [1.0]]), 500, 250)
    with pytest.raises(ValueError, match="from_hz"):
        pp.resample(x, 0, 250)
    with pytest.raises(ValueError, match="to_hz"):
        pp.resample(x, 500, 2.5)


def test_crop_or_pad():
    x = np.arange(10.0)[:, None] * np.ones((1, 2))
    y, valid = pp.crop_or_pad(x, 4)
    assert valid == 4
    np.testing.assert_array_equal(y[:, 0], [0, 1, 2, 3])
    y, valid = pp.crop_or_pad(x, 4, policy="center")
    np.testing.assert_array_equal(y[:, 0], [3, 4, 5, 6])
    y, valid = pp.crop_or_pad(x, 13)
    assert valid == 10 and y.shape == (13, 2)
    np.testing.assert_array_equal(y[:, 1], list(range(10)) + [0, 0, 0])
    offsets = set()
    rng = np.random.default_rng(0)
    for _ in range(50):
        y, valid = pp.crop_or_pad(x, 8, policy="random", rng=rng)
        assert valid == 8
        np.testing.assert_array_equal(y[:, 0], np.arange(y[0, 0], y[0, 0] + 8))
        offsets.add(int(y[0, 0]))
    assert offsets == {0, 1, 2}
    with pytest.raises(ValueError, match="rng"):
        pp.crop_or_pad(x, 4, policy="random")
    with pytest.raises(ValueError, match="policy"):
        pp.crop_or_pad(x, 4, policy="end")


def test_normalize_minmax_whole_record_observed_valid_only():
    x = np.zeros((4, 12))
    x[:, 0] = [1.0, 2.0, 3.0, 100.0]  # row 3 is padding: excluded from min/max
    x[:, 1] = [-1.0, 0.0, 1.0, 50.0]
    x[:, 2] = [1000.0, 1000.0, 1000.0, 1000.0]  # unobserved: excluded and zeroed
    observed = np.zeros(12, bool)
    observed[[0, 1]] = True
    y = pp.normalize(x, observed, 3, "minmax")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:3, 0], [0.5, 0.75, 1.0])
    np.testing.assert_allclose(y[:3, 1], [0.0, 0.25, 0.5])
    assert np.count_nonzero(y[3]) == 0 and np.count_nonzero(y[:, 2:]) == 0


def test_normalize_zscore_per_lead():
    x = np.zeros((5, 12))
    x[:4, 0] = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, std sqrt(1.25)
    x[:4, 1] = [10.0, 10.0, 30.0, 30.0]  # mean 20, std 10
    x[:4, 2] = 7.0  # constant lead -> 0
    observed = np.zeros(12, bool)
    observed[:3] = True
    y = pp.normalize(x, observed, 4, "zscore")
    np.testing.assert_allclose(y[:4, 0], (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25), 1e-6)
    np.testing.assert_allclose(y[:4, 1], [-1, -1, 1, 1])
    np.testing.assert_array_equal(y[:, 2], 0)
    assert np.count_nonzero(y[4]) == 0


def test_normalize_row_mask_equals_count_and_excludes_masked_rows():
    x = np.zeros((5, 12))
    x[:, 0] = [1.0, 9.0, 3.0, 5.0, 7.0]
    observed = np.eye(12, dtype=bool)[0]
    by_count = pp.normalize(x, observed, 3, "minmax")
    by_mask = pp.normalize(x, observed, np.array([1, 1, 1, 0, 0], bool), "minmax")
    np.testing.assert_array_equal(by_count, by_mask)
    # a masked row in the middle (9.0) is excluded from min/max and zeroed
    y = pp.normalize(x, observed, np.array([1, 0, 1, 1, 1], bool), "minmax")
    np.testing.assert_allclose(y[:, 0], [0.0, 0.0, 1 / 3, 2 / 3, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(pp.normalize(x, observed, None, "none")[:, 0], x[:, 0])


@pytest.mark.parametrize("kind", ["minmax", "zscore"])
def test_normalize_batch_is_per_example_and_unit_free(kind):
    rng = np.random.default_rng(0)
    counts = rng.integers(-3000, 3000, size=(3, 50, 12)).astype(np.int16)
    leads = rng.random((3, 12)) > 0.3
    rows = rng.random((3, 50)) > 0.2
    leads[2] = False  # an example with nothing observed -> all 0
    got = pp.normalize_batch(counts, leads, rows, kind)
    assert got.dtype == np.float32
    for b in range(3):
        want = pp.normalize(counts[b].astype(np.float64) * 0.00123, leads[b], rows[b], kind)
        np.testing.assert_allclose(got[b], want, atol=2e-5)
    np.testing.assert_array_equal(got[2], 0)
    with pytest.raises(ValueError, match="masks"):
        pp.normalize_batch(counts, leads[:, :11], rows, kind)


def test_normalize_constant_and_errors():
    observed = np.ones(12, bool)
    y = pp.normalize(np.full((3, 12), 5.0), observed, None, "minmax")
    np.testing.assert_array_equal(y, 0)
    with pytest.raises(ValueError, match="repair_nan"):
        pp.normalize(np.full((3, 12), np.nan), observed, None, "minmax")
    with pytest.raises(ValueError, match="kind"):
        pp.normalize(np.zeros((3, 12)), observed, None, "l2")
    with pytest.raises(ValueError, match="lead_observed"):
        pp.normalize(np.zeros((3, 12)), np.ones(11, bool), None, "minmax")


def test_repair_nan_interpolates_along_time_per_lead():
    nan = np.nan
    x = np.array(
        [
            [0.0, 10.0, nan, 5.0],
            [nan, 20.0, nan, 5.0],
            [nan, nan, nan, nan],
            [3.0, 40.0, nan, nan],
            [4.0, 50.0, nan, nan],
            [5.0, 60.0, nan, nan],
        ]
    )
    y, observed, n = pp.repair_nan(x, max_gap_samples=2)
    # lead 0: gap of 2 between 0 (t=0) and 3 (t=3) -> 1, 2 (interpolation along time,
    # not across leads: row 1's neighbours 20 and 5 play no part)
    np.testing.assert_allclose(y[:, 0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(y[:, 1], [10, 20, 30, 40, 50, 60])
    np.testing.assert_array_equal(observed, [True, True, False, False])  # all-NaN; gap of 4
    np.testing.assert_array_equal(y[:, 2:], 0)
    assert n == 3
    assert np.all(np.isfinite(y))


def test_repair_nan_edges_inf_and_given_mask():
    x = np.array([[np.inf, 1.0], [2.0, 1.0], [4.0, 1.0], [-np.inf, 1.0]])
    y, observed, n = pp.repair_nan(x, 1, lead_observed=np.array([True, False]))
    np.testing.assert_allclose(y[:, 0], [2, 2, 4, 4])  # edges take the nearest value
    np.testing.assert_array_equal(y[:, 1], 0)
    np.testing.assert_array_equal(observed, [True, False])
    assert n == 2


def test_flat_leads():
    x = np.array([[1.0, 0.0, np.nan, 2.0], [1.0, 1.0, np.nan, 2.0 + 1e-9], [1.0, 0.0, np.nan, 7.0]])
    np.testing.assert_array_equal(pp.flat_leads(x, 1e-6), [True, False, True, False])
    want = [True, False, True, True]
    np.testing.assert_array_equal(pp.flat_leads(x, 1e-6, valid_samples=2), want)


def test_int16_round_trip_and_clipping():
    x = np.array([[0.0012, -0.0004], [32.8, -40.0], [1.0, -1.0]])
    counts, clipped = pp.to_int16(x, 0.001)
    assert counts.dtype == np.int16 and clipped == 2
    np.testing.assert_array_equal(counts, [[1, 0], [32767, -32768], [1000, -1000]])
    back = pp.from_int16(counts, 0.001)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back[2], [1.0, -1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="repair_nan"):
        pp.to_int16(np.array([[np.nan]]), 0.001)


def test_prepare_record_end_to_end():
    t = np.arange(1000) / 500.0  # 2 s at 500 Hz
    sine = np.sin(2 * np.pi * 2 * t)
    names = ["V1", "II", "I", "aVL"]
    x = np.stack([sine, 2 * sine, np.full_like(t, 3.0), np.full_like(t, np.nan)], 1)
    x[100:103, 1] = np.nan
    rec = pp.prepare_record(x, names, 500, target_rate=250, num_samples=750, max_gap_samples=5)
    assert rec["ecg"].shape == (750, 12) and rec["ecg"].dtype == np.float32
    assert rec["valid_samples"] == 500 and rec["n_repaired"] == 3
    want_obs = np.zeros(12, bool)
    want_obs[[1, 6]] = True  # II and V1; I is flat, aVL all-NaN
    np.testing.assert_array_equal(rec["lead_observed"], want_obs)
    np.testing.assert_array_equal(rec["flat"], np.eye(12, dtype=bool)[0])
    np.testing.assert_array_equal(rec["ecg"][500:], 0)
    np.testing.assert_array_equal(rec["ecg"][:, ~want_obs], 0)
    t_out = np.arange(500) / 250.0
    inner = slice(100, 400)
    want = np.sin(2 * np.pi * 2 * t_out)[inner]
    np.testing.assert_allclose(rec["ecg"][inner, 6], want, atol=3e-3)
    np.testing.assert_allclose(rec["ecg"][inner, 1], 2 * rec["ecg"][inner, 6], atol=1e-2)
