"""wfdb_common: header comments, units, splits, hygiene reasons and strict mode."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from scar_jax.data import preprocessing
from scar_jax.data.builders import wfdb_common


def test_parse_comments_and_dx():
    c = wfdb_common.parse_comments(["#Age: 56", "Sex: Female", "#Dx: 164889003, 59118001,"])
    assert c == {"Age": "56", "Sex": "Female", "Dx": "164889003, 59118001,"}
    assert wfdb_common.parse_dx(c["Dx"]) == ["164889003", "59118001"]
    assert wfdb_common.parse_dx(None) == []


def test_units_are_converted_to_millivolts_and_nan_survives(tmp_path):
    sig = wfdb_common.synthetic_ecg(2, 500, seed=0)
    sig[10:20, 2] = np.nan
    wfdb_common.write_wfdb(str(tmp_path / "r"), sig, preprocessing.LEAD_NAMES, 500, units="uV",
                           gain=1.0)  # 1 count per uV
    rec = wfdb_common.read_record(str(tmp_path / "r"), rate=500)
    assert np.isnan(rec.signal[10:20, 2]).all() and np.isfinite(rec.signal[20:, 2]).all()
    np.testing.assert_allclose(rec.signal[20:], sig[20:], atol=0.51e-3)


def test_read_record_reasons(tmp_path):
    sig = wfdb_common.synthetic_ecg(1, 500, seed=0)
    wfdb_common.write_wfdb(str(tmp_path / "a"), sig, preprocessing.LEAD_NAMES, 500)
    with pytest.raises(wfdb_common.RecordError) as e:
        wfdb_common.read_record(str(tmp_path / "a"), rate=1000)
    assert e.value.reason == "wrong_rate" and str(tmp_path / "a.hea") in str(e.value)
    with pytest.raises(wfdb_common.RecordError) as e:
        wfdb_common.read_record(str(tmp_path / "a"), num_leads=15)
    assert e.value.reason == "wrong_lead_count"
    names = list(preprocessing.LEAD_NAMES)
    names[3] = "AVL"  # aVL twice, in another letter case
    wfdb_common.write_wfdb(str(tmp_path / "b"), sig, names, 500)
    with pytest.raises(wfdb_common.RecordError) as e:
        wfdb_common.read_record(str(tmp_path / "b"))
    assert e.value.reason == "unknown_lead"
    with pytest.raises(wfdb_common.RecordError) as e:
        wfdb_common.read_record(str(tmp_path / "nothing"))
    assert e.value.reason == "missing_file"


def test_seeded_split_exact_proportions_and_deterministic():
    ids = [f"r{i}" for i in range(1000)]
    a = wfdb_common.seeded_split(ids, {"train": 0.7, "validation": 0.1, "test": 0.2}, seed=3)
    b = wfdb_common.seeded_split(ids[::-1], {"train": 0.7, "validation": 0.1, "test": 0.2}, 3)
    assert a == b
    assert collections.Counter(a.values()) == {"train": 700, "validation": 100, "test": 200}
    c = wfdb_common.seeded_split(ids, {"train": 0.7, "validation": 0.1, "test": 0.2}, seed=4)
    assert a != c


def test_hashed_split_fraction_and_stability():
    fr = {"train": 0.98, "validation": 0.02}
    got = [wfdb_common.hashed_split(str(10000000 + i), fr, 0) for i in range(20000)]
    share = got.count("validation") / len(got)
    assert abs(share - 0.02) < 0.004  # binomial sd ~0.001
    assert got == [wfdb_common.hashed_split(str(10000000 + i), fr, 0) for i in range(20000)]


def test_hygiene_manifest_counts_and_strict(tmp_path):
    h = wfdb_common.Hygiene("t")
    h.open(str(tmp_path))
    h.report("r1", "x/r1.dat", "truncated", "short")
    h.report("r2", "x/r2.dat", "flat", "V1", action="masked")
    assert wfdb_common.read_manifest(str(tmp_path / wfdb_common.MANIFEST_NAME)) == [
        {"id": "r1", "file": "x/r1.dat", "reason": "truncated", "detail": "short",
         "action": "skipped"},
        {"id": "r2", "file": "x/r2.dat", "reason": "flat", "detail": "V1", "action": "masked"},
    ]
    assert h.summary() == {"kept": 0, "nan_repaired_records": 0, "flat/masked": 1,
                           "truncated/skipped": 1}
    with pytest.raises(ValueError, match="unknown reason"):
        h.report("r3", "f", "bogus", "")
    strict = wfdb_common.Hygiene("t", strict=True)
    strict.report("r2", "x/r2.dat", "flat", "V1", action="masked")  # masking is not an error
    with pytest.raises(wfdb_common.RecordError, match=r"x/r9.hea: unreadable_header"):
        strict.report("r9", "x/r9.hea", "unreadable_header", "bad line")


def test_example_masks_a_long_nan_run_and_repairs_a_short_one():
    sig = wfdb_common.synthetic_ecg(10, 500, seed=1)
    sig[100:110, 0] = np.nan  # 20 ms: repaired
    sig[1000:2000, 5] = np.nan  # 2 s: aVF masked
    rec = wfdb_common.Record(sig, list(preprocessing.LEAD_NAMES), 500, [], "f")
    h = wfdb_common.Hygiene("t")
    ex = h.example("r", rec, target_rate=500, num_samples=5000)
    assert ex["lead_observed"].tolist() == [True] * 5 + [False] + [True] * 6
    assert h.counts == {("nan", "masked"): 1, ("nan", "repaired"): 1} and h.n_repaired == 1
    assert ex["ecg"].dtype == np.int16 and not ex["ecg"][:, 5].any()


def test_in_memory_shuffle_raises_tfds_limit_inside_the_block_only():
    from tensorflow_datasets.core import shuffle

    before = shuffle.MAX_MEM_BUFFER_SIZE
    with wfdb_common.in_memory_shuffle():
        assert shuffle.MAX_MEM_BUFFER_SIZE == wfdb_common.IN_MEMORY_SHUFFLE_BYTES == 8 << 30
    assert shuffle.MAX_MEM_BUFFER_SIZE == before
    with pytest.raises(RuntimeError):
        with wfdb_common.in_memory_shuffle(16 << 30):
            assert shuffle.MAX_MEM_BUFFER_SIZE == 16 << 30
            raise RuntimeError("a failed build")
    assert shuffle.MAX_MEM_BUFFER_SIZE == before
