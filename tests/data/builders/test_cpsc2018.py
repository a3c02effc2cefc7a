"""CPSC2018 builder: both layouts, split file, labels, unobserved padding, lead order."""

from __future__ import annotations

import os

import numpy as np
import pytest

from scar_jax.data import real_labels
from scar_jax.data.builders import wfdb_common
from scar_jax.data.builders.cpsc2018 import cpsc2018_dataset_builder as cpsc
from scar_jax.data.builders.cpsc2018 import make_dummy_data

from .conftest import build, dummy_dir, edit_csv, manifest, millivolts, read_all


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    b = build(cpsc.Builder, dummy_dir("cpsc2018", "challenge"),
              tmp_path_factory.mktemp("tfds"), "10s")
    return b, read_all(b)


def _names(ex):
    return sorted(np.array(real_labels.CPSC2018_CLASSES)[ex["labels"]])


def test_challenge_layout_counts_split_file_and_skip(challenge):
    b, data = challenge
    assert {s: len(v) for s, v in data.items()} == {"train": 7, "validation": 2, "test": 2}
    with open(os.path.join(b.data_path, cpsc.SPLIT_FILE)) as f:
        rows = dict(line.strip().split(",") for line in f.readlines()[1:])
    assert len(rows) == 12 and list(rows.values()).count("train") == 8  # 70/10/20 of 12
    assert rows == wfdb_common.seeded_split(list(rows), cpsc.FRACTIONS, seed=0)
    for split, exs in data.items():
        assert all(rows[k] == split for k in exs)
    # A0010's only code (low QRS voltage) is no CPSC class: skipped under a named reason.
    man = wfdb_common.read_manifest(os.path.join(b.data_path, wfdb_common.MANIFEST_NAME))
    assert [(m["id"], m["reason"]) for m in man] == [("A0010", "no_label")]
    assert b.info.metadata["record_counts"] == {"kept": 11, "nan_repaired_records": 0,
                                                "no_label/skipped": 1}


def test_challenge_labels_padding_and_lead_order(challenge):
    _, data = challenge
    ex = {k: v for split in data.values() for k, v in split.items()}
    assert _names(ex["A0002"]) == ["AF", "RBBB"]
    assert _names(ex["A0009"]) == ["RBBB"]  # 59118001 and 713427006 both map to RBBB
    assert _names(ex["A0006"]) == ["PVC"] and _names(ex["A0005"]) == ["PAC", "STD"]
    short = ex["A0002"]  # 6 s: 3000 observed samples, the rest unobserved padding
    assert int(short["valid_samples"]) == 3000 and int(short["source_length"]) == 3000
    assert not short["ecg"][3000:].any()
    long = ex["A0003"]  # 15 s: cropped at the start
    assert int(long["valid_samples"]) == 5000 and int(long["source_length"]) == 7500
    ref = wfdb_common.synthetic_ecg(15, 500, seed=2)[:5000]
    np.testing.assert_allclose(millivolts(long), ref, atol=1.01e-3)
    shuffled = ex["A0004"]  # header lists V6..V1, I..aVF
    ref = wfdb_common.synthetic_ecg(8, 500, seed=3)
    np.testing.assert_allclose(millivolts(shuffled)[:4000], ref, atol=1.01e-3)


def test_original_reference_layout(tmp_path):
    b = build(cpsc.Builder, dummy_dir("cpsc2018", "original"), tmp_path, "60s")
    data = read_all(b)
    assert {s: len(v) for s, v in data.items()} == {"train": 7, "validation": 1, "test": 2}
    ex = {k: v for split in data.values() for k, v in split.items()}
    for rid, (sec, labels) in make_dummy_data.ORIGINAL.items():
        want = sorted(real_labels.CPSC2018_CLASSES[v - 1] for v in labels)
        assert _names(ex[rid]) == want
        assert int(ex[rid]["valid_samples"]) == sec * 500
        assert ex[rid]["ecg"].shape == (30000, 12)
    ref = wfdb_common.synthetic_ecg(8, 500, seed=103)  # A0004, stored in mV
    np.testing.assert_allclose(millivolts(ex["A0004"])[:4000], ref, atol=0.51e-3)


def test_malformed_reference_rows_are_skipped_by_name(tmp_path):
    """REFERENCE.csv rows whose label does not parse (a word, class 12), with no Recording,
    or whose Recording points outside the corpus folder (a valid file, copied out) are
    skipped with a named reason; the other records are built as before."""
    root = tmp_path / "cpsc"
    make_dummy_data.main(str(root))
    orig = root / "original"
    (tmp_path / "A0003.mat").write_bytes((orig / "A0003.mat").read_bytes())

    def edit(header, rows):
        by_id = {r[0]: r for r in rows}
        by_id["A0001"][1] = "AF"
        by_id["A0002"][2] = "12"
        by_id["A0003"][0] = "../A0003"
        rows.append(["", "1", "", ""])

    edit_csv(str(orig / "REFERENCE.csv"), edit)
    b = build(cpsc.Builder, str(orig), tmp_path / "tfds", "60s")
    skipped = manifest(b)
    assert {k: v[0] for k, v in skipped.items()} == {
        "A0001": "bad_metadata", "A0002": "bad_metadata", "../A0003": "outside_corpus",
        "line12": "bad_metadata"}
    assert skipped["A0001"][1].endswith("REFERENCE.csv:2")
    assert skipped["../A0003"][1] == os.path.join(str(orig), "../A0003")
    data = read_all(b)
    kept = {k: v for split in data.values() for k, v in split.items()}
    assert sorted(kept) == [f"A{i:04d}" for i in range(4, 11)]
    # the skipped rows keep their place in the seeded split: the others' splits are the
    # clean build's (whose only validation record is A0001: that split is left out here)
    clean = read_all(build(cpsc.Builder, dummy_dir("cpsc2018", "original"), tmp_path / "c", "60s"))
    assert {s: sorted(v) for s, v in data.items()} == {
        s: sorted(set(v) & set(kept)) for s, v in clean.items() if set(v) & set(kept)}
    assert clean["validation"].keys() == {"A0001"}
    for rid in kept:
        want = sorted(real_labels.CPSC2018_CLASSES[v - 1] for v in make_dummy_data.ORIGINAL[rid][1])
        assert _names(kept[rid]) == want
