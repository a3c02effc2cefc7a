"""MIMIC-IV-ECG builder: report cleaning, every broken-record kind, strict mode, lead order,
subject split, streaming memory bound, sharded resumable build."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

from scar_jax.data import preprocessing, reports
from scar_jax.data.builders import wfdb_common
from scar_jax.data.builders.mimic_iv_ecg import make_dummy_data
from scar_jax.data.builders.mimic_iv_ecg import mimic_iv_ecg_dataset_builder as mimic

from .conftest import build, copy_record, dummy_dir, edit_csv, manifest, millivolts, read_all

# The dummy corpus has 12 subjects: the default 2 % validation would be empty.
FIXTURE = dict(validation_fraction=0.25, seed=1)

# Manifest counts of the committed dummy data (make_dummy_data.BROKEN), by reason.
SKIPPED = {
    "truncated": 1, "length_mismatch": 1, "unknown_lead": 1, "wrong_lead_count": 1,
    "wrong_rate": 1, "missing_file": 2, "unreadable_header": 1, "empty_report": 1,
    "bad_encoding": 1, "short_report": 1, "missing_metadata": 1,
}  # fmt: skip


def config(name="fixture", **kw):
    return mimic.MimicConfig(name=name, **{**FIXTURE, **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    b = build(mimic.Builder, dummy_dir("mimic_iv_ecg"), tmp_path_factory.mktemp("t"), config())
    return b, read_all(b)


def test_clean_report_hand_examples():
    c = mimic.clean_report
    assert c(["Sinus rhythm", "Normal ECG", ""] + [""] * 15) == "sinus rhythm. normal ecg"
    assert c(["***", "Sinus bradycardia", "Otherwise normal EKG"]) == (
        "sinus bradycardia. otherwise normal ecg")
    assert c(["*** Sinus  rhythm\t***", "Abnormal ekg =-"]) == "sinus rhythm. abnormal ecg"
    assert c(["=Atrial fibrillation", "", "  "]) == "atrial fibrillation"
    assert c(["***", "", "=-"]) == ""
    assert c(["Borderline EKG", "ST-T changes"]) == "borderline ecg. st-t changes"


def test_every_broken_kind_is_in_the_manifest_and_every_good_record_kept(built):
    b, data = built
    man = wfdb_common.read_manifest(os.path.join(b.data_path, wfdb_common.MANIFEST_NAME))
    skipped = {}
    for m in man:
        if m["action"] == "skipped":
            skipped[m["reason"]] = skipped.get(m["reason"], 0) + 1
    assert skipped == SKIPPED
    kept = {k for v in data.values() for k in v}
    by_id = {m["id"]: m for m in man}
    expected_kinds = _fixture_kinds()
    good = {k for k, kind in expected_kinds.items() if kind in ("good", "pydicom", "repaired_nan",
                                                                 "nan", "flat")}
    assert kept == good  # every good (or repairable) record kept, nothing else
    assert len(kept) == 11 and {s: len(v) for s, v in data.items()} == {"train": 8,
                                                                       "validation": 3}
    for study, kind in expected_kinds.items():
        if kind == "missing_header":
            assert by_id[study]["reason"] == "missing_file"
        elif kind in SKIPPED:
            assert by_id[study]["reason"] == kind, study
            assert study in by_id[study]["file"] or kind in ("empty_report", "short_report",
                                                             "bad_encoding", "missing_metadata")
    # NaN run (1 s in V2) and flat V3 are masked: the record is kept, the lead unobserved.
    inv = {v: k for k, v in expected_kinds.items()}
    ex = {k: v for split in data.values() for k, v in split.items()}
    lo = ex[inv["nan"]]["lead_observed"]
    assert not lo[preprocessing.LEAD_NAMES.index("V2")] and lo.sum() == 11
    assert not ex[inv["nan"]]["ecg"][:, preprocessing.LEAD_NAMES.index("V2")].any()
    assert not ex[inv["flat"]]["lead_observed"][preprocessing.LEAD_NAMES.index("V3")]
    assert ex[inv["repaired_nan"]]["lead_observed"].all()
    assert (by_id[inv["nan"]]["action"], by_id[inv["flat"]]["action"]) == ("masked", "masked")
    counts = b.info.metadata["record_counts"]
    assert counts["kept"] == 11 and counts["nan_repaired_records"] == 1
    assert counts["nan/masked"] == 1 and counts["flat/masked"] == 1
    assert by_id[inv["repaired_nan"]]["action"] == "repaired"
    assert by_id[inv["repaired_nan"]]["detail"].startswith("10 NaN/Inf samples")


def _fixture_kinds():
    """{study_id: kind} of the committed fixture, recomputed without writing files."""
    items = [("pydicom" if i == 0 else "good") for i in range(8)] + list(make_dummy_data.BROKEN)
    return {str(40000000 + 13 * k): kind for k, kind in enumerate(items)}


def test_skip_policy_skips_nan_and_flat_records(tmp_path):
    b = build(mimic.Builder, dummy_dir("mimic_iv_ecg"), tmp_path, config(),
              bad_lead_policy="skip")
    counts = b.info.metadata["record_counts"]
    assert counts["kept"] == 9 and counts["nan/skipped"] == 1 and counts["flat/skipped"] == 1


def test_strict_mode_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(Exception) as info:
        build(mimic.Builder, dummy_dir("mimic_iv_ecg"), tmp_path, config(), strict=True)
    msg = str(info.value)
    # The first broken record of the train split in record_list order.
    assert "40000104.dat" in msg and "truncated" in msg and "strict" in msg


def test_lead_order_by_names_and_provenance(built):
    _, data = built
    ex = data["train"]["40000000"]  # the real pydicom ECG, written in MIMIC order
    sig, names, rate, report = wfdb_common.pydicom_ecg()
    assert names == list(preprocessing.LEAD_NAMES)
    ref = preprocessing.resample(sig, rate, 500)
    np.testing.assert_allclose(millivolts(ex), ref, atol=1.01e-3)
    assert ex["patient_id"] == b"10000003" and int(ex["source_rate"]) == 500
    assert ex["report"] == b"sinus rhythm. possible left atrial abnormality. borderline ecg"
    with open(os.path.join(dummy_dir("mimic_iv_ecg"), "files/p1000/p10000003/s40000000/"
                           "40000000.hea")) as f:
        header = f.read()
    assert header.index(" aVF") < header.index(" aVL")  # stored as MIMIC does


def test_subject_split_has_no_subject_in_two_splits(built):
    _, data = built
    subjects = {s: {ex["patient_id"] for ex in v.values()} for s, v in data.items()}
    assert not subjects["train"] & subjects["validation"]


def _peak_bytes(root, tmp, name):
    cfg = config(validation_fraction=0.0)
    db = mimic.report_index(root, str(tmp / name))
    hyg = wfdb_common.Hygiene("t")
    tracemalloc.start()
    n = sum(1 for _ in mimic.iter_examples(root, db, "train", cfg, hyg))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return n, peak


@pytest.mark.slow
def test_streaming_peak_memory_does_not_grow_with_records(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    make_dummy_data.write_corpus(str(small), n_good=15, broken=False, seed=1)
    make_dummy_data.write_corpus(str(large), n_good=60, broken=False, seed=2)
    _peak_bytes(str(small), tmp_path, "db_warm")  # lazy imports and caches, not traced twice
    n_small, peak_small = _peak_bytes(str(small), tmp_path, "db_small")
    n_large, peak_large = _peak_bytes(str(large), tmp_path, "db_large")
    assert (n_small, n_large) == (15, 60)
    # 4x the records; the peak is one record's working set (~2 MB), not the corpus (~7 MB).
    print(f"tracemalloc peak: {n_small} records {peak_small / 2**20:.2f} MiB, "
          f"{n_large} records {peak_large / 2**20:.2f} MiB")
    assert peak_large < 1.25 * peak_small + 256 * 1024, (peak_small, peak_large)
    assert peak_large < 8 * 2**20


@pytest.mark.slow
def test_sharded_build_resumes_after_interruption(tmp_path, monkeypatch):
    root = str(tmp_path / "corpus")
    make_dummy_data.write_corpus(root, n_good=30, broken=False, seed=3)
    data_dir = str(tmp_path / "tfds")
    real_read = wfdb_common.read_record
    calls = []

    def crash_in_shard_1(path, **kw):  # simulates a worker killed mid-shard
        calls.append(path)
        if crash_in_shard_1.armed and len(calls) > crash_in_shard_1.after:
            raise KeyboardInterrupt("simulated crash")
        return real_read(path, **kw)

    crash_in_shard_1.armed, crash_in_shard_1.after = False, 0
    monkeypatch.setattr(wfdb_common, "read_record", crash_in_shard_1)
    assert mimic.build_sharded(root, data_dir, 3, [0], **FIXTURE) == [0]
    n_shard0 = len(calls)
    crash_in_shard_1.armed, crash_in_shard_1.after = True, n_shard0 + 3
    with pytest.raises(KeyboardInterrupt):
        mimic.build_sharded(root, data_dir, 3, **FIXTURE)
    shard0 = mimic.Builder(config=mimic.shard_config(3, 0, **FIXTURE), data_dir=data_dir)
    shard1 = mimic.Builder(config=mimic.shard_config(3, 1, **FIXTURE), data_dir=data_dir)
    assert shard0.is_prepared() and not shard1.is_prepared()
    crash_in_shard_1.armed = False
    calls.clear()
    assert mimic.build_sharded(root, data_dir, 3, **FIXTURE) == [1, 2]  # shard 0 not redone
    assert len(calls) == 30 - n_shard0
    out = mimic.merge_shards(data_dir, 3, **FIXTURE)
    assert out == os.path.join(data_dir, "mimic_iv_ecg", "default", str(mimic.Builder.VERSION))
    merged = mimic.Builder(config="default", data_dir=data_dir)
    got = read_all(merged)
    want = read_all(build(mimic.Builder, root, tmp_path / "whole", config()))
    assert {s: sorted(v) for s, v in got.items()} == {s: sorted(v) for s, v in want.items()}
    for split in want:
        for k, ex in want[split].items():
            np.testing.assert_array_equal(got[split][k]["ecg"], ex["ecg"])
            assert got[split][k]["report"] == ex["report"]
            assert got[split][k]["report_id"] == ex["report_id"]
        # the merged report table is the union of the shards' (counts added up)
        table = reports.read_table(merged.data_path, split)
        whole = reports.read_table(build_dir(tmp_path / "whole"), split)
        np.testing.assert_array_equal(table.ids, whole.ids)
        np.testing.assert_array_equal(table.counts, whole.counts)
        assert table.texts == whole.texts and table.counts.sum() == len(want[split])
    assert merged.info.metadata["record_counts"]["kept"] == 30
    assert merged.info.metadata["report_tables"] == {
        s: reports.table_name(s) for s in want}


def build_dir(data_dir):
    return mimic.Builder(config=config(), data_dir=str(data_dir)).data_path


def test_default_config_and_counts_logged_at_the_end(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        b = build(mimic.Builder, dummy_dir("mimic_iv_ecg"), tmp_path, "default")
    data = read_all(b)
    # 2 % validation: no fixture subject hashes there, and an empty split is left out.
    assert {s: len(v) for s, v in data.items()} == {"train": 11}
    assert "record counts" in caplog.text and "truncated/skipped" in caplog.text


def test_malformed_record_list_rows_are_skipped_by_name(tmp_path):
    """record_list.csv rows with no subject_id, a study_id that is not a number, a cell too
    many, or a path outside the corpus folder (relative '..' or absolute, to a valid record
    copied out) are skipped with a named reason, once; every other record is built."""
    root = tmp_path / "mimic"
    kinds = make_dummy_data.write_corpus(str(root), n_good=16, broken=False, seed=0)
    studies = sorted(kinds)
    out = tmp_path / "outside" / "rec"

    def edit(header, rows):
        col = {c: i for i, c in enumerate(header)}
        by_study = {r[col["study_id"]]: r for r in rows}
        copy_record(str(root / by_study[studies[6]][col["path"]]), str(out))
        by_study[studies[1]][col["subject_id"]] = ""
        by_study[studies[2]][col["study_id"]] = "4000x026"
        by_study[studies[3]].append("surplus")
        by_study[studies[6]][col["path"]] = "../outside/rec"
        by_study[studies[7]][col["path"]] = str(out)

    edit_csv(str(root / "record_list.csv"), edit)
    b = build(mimic.Builder, str(root), tmp_path / "tfds", config())
    skipped = manifest(b)
    assert {k: v[0] for k, v in skipped.items()} == {
        studies[1]: "bad_metadata", "4000x026": "bad_metadata", studies[3]: "bad_metadata",
        studies[6]: "outside_corpus", studies[7]: "outside_corpus"}
    assert skipped[studies[6]][1] == os.path.join(str(root), "../outside/rec")
    assert skipped[studies[1]][1].endswith("record_list.csv:3")
    assert len(wfdb_common.read_manifest(os.path.join(b.data_path, wfdb_common.MANIFEST_NAME))
               ) == 5  # each once, though the rows are read once per split
    kept = sorted(k for v in read_all(b).values() for k in v)
    assert kept == [studies[0], studies[4], studies[5]] + studies[8:]
