"""The simulated MIMIC-IV-ECG corpus (mimic_iv_ecg/simulate.py): the real builder builds it,
and every record comes back with the signal, report and ids the simulator wrote."""

from __future__ import annotations

import filecmp
import os

import numpy as np

from scar_jax.data import synthetic
from scar_jax.data.builders import wfdb_common
from scar_jax.data.builders.mimic_iv_ecg import mimic_iv_ecg_dataset_builder as mimic
from scar_jax.data.builders.mimic_iv_ecg import simulate

from .conftest import build, millivolts, read_all

N = 20


def test_format16_writer_writes_the_bytes_of_write_wfdb(tmp_path):
    ecg = synthetic.generate_record(3, "train", 5).ecg[:, simulate.make_dummy_data.MIMIC_ORDER]
    ecg[100:103, 4] = np.nan  # WFDB's missing value
    ecg[200, 7] = 40.0  # clipped
    names = simulate.make_dummy_data.MIMIC_NAMES
    wfdb_common.write_wfdb(str(tmp_path / "a" / "r"), ecg, names, 500)
    simulate.write_format16(str(tmp_path / "b" / "r"), ecg, names, 500)
    for ext in (".hea", ".dat"):
        a, b = (tmp_path / d / f"r{ext}" for d in "ab")
        assert a.read_bytes() == b.read_bytes()


def test_machine_statements_clean_back_to_the_simulator_report():
    for i in range(300):
        report = synthetic.generate_record(0, "train", i).report
        cells = simulate.machine_statements(report, np.random.default_rng(i))
        assert len(cells) == 18
        assert mimic.clean_report(cells) == report.rstrip(".")
    cells = simulate.machine_statements("sinus rhythm. normal ecg.", np.random.default_rng(0))
    assert [c for c in cells if c] in (["Sinus rhythm", "Normal ECG"],
                                      ["Sinus rhythm", "Normal EKG"],
                                      ["***", "Sinus rhythm", "Normal ECG"],
                                      ["***", "Sinus rhythm", "Normal EKG"])


def test_record_ids_are_distinct_studies_five_per_subject():
    ids = [simulate.record_ids(i) for i in range(1000)]
    assert len({s for _, s in ids}) == 1000
    assert len({p for p, _ in ids}) == 200
    assert all(10_000_000 <= p < 20_000_000 and 40_000_000 <= s < 50_000_000 for p, s in ids)


def test_records_do_not_depend_on_worker_count_or_neighbours(tmp_path):
    simulate.write_corpus(str(tmp_path / "one"), 6, workers=1)
    simulate.write_corpus(str(tmp_path / "two"), 6, workers=2, chunk=2)
    for name in ("record_list.csv", "machine_measurements.csv"):
        assert filecmp.cmp(tmp_path / "one" / name, tmp_path / "two" / name, shallow=False)
    alone = str(tmp_path / "alone")
    row, _ = simulate.write_record(alone, 4)
    for ext in (".hea", ".dat"):
        for other in ("one", "two"):
            assert filecmp.cmp(os.path.join(alone, row[4] + ext),
                               tmp_path / other / (row[4] + ext), shallow=False)


def test_the_real_builder_builds_the_simulated_corpus(tmp_path):
    root = str(tmp_path / "corpus")
    simulate.write_corpus(root, N)
    config = mimic.MimicConfig(name="simulated", validation_fraction=0.5, seed=2)  # 3+1 subjects
    b = build(mimic.Builder, root, tmp_path / "tfds", config)
    data = read_all(b)
    kept = {k: ex for split in data.values() for k, ex in split.items()}
    manifest = wfdb_common.read_manifest(os.path.join(b.data_path, wfdb_common.MANIFEST_NAME))
    skipped = {m["id"]: m["reason"] for m in manifest if m["action"] == "skipped"}
    assert set(data) == {"train", "validation"}
    for i in range(N):
        subject, study = simulate.record_ids(i)
        rec = synthetic.generate_record(0, "train", i)
        report = rec.report.rstrip(".")
        if len(report.split()) < config.min_words:  # MERL's filter, as the builder applies it
            assert skipped.pop(str(study)) == "short_report"
            continue
        ex = kept.pop(str(study))
        assert ex["report"].decode() == report
        assert ex["patient_id"].decode() == str(subject)
        assert np.asarray(ex["labels"]).size == 0  # MIMIC has reports, not labels
        assert ex["lead_observed"].all()
        assert ex["ecg"].shape == (5000, 12)
        # standard lead order again (the file has aVF before aVL), to the file's 1 uV steps
        np.testing.assert_allclose(millivolts(ex), rec.ecg, atol=5e-4 + 1e-6)
    assert kept == {} and skipped == {}
    # subjects never straddle splits
    subjects = {s: {ex["patient_id"] for ex in data[s].values()} for s in data}
    assert not subjects["train"] & subjects["validation"]
