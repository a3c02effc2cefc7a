"""Chapman-Shaoxing-Ningbo builder: exact SNOMED matching vs substring, classes, split."""

from __future__ import annotations

import numpy as np
import pytest

from scar_jax.data import real_labels
from scar_jax.data.builders import wfdb_common
from scar_jax.data.builders.chapman_shaoxing import chapman_shaoxing_dataset_builder as csn
from scar_jax.data.builders.chapman_shaoxing import make_dummy_data

from .conftest import build, dummy_dir, edit_csv, manifest, millivolts, read_all


@pytest.fixture(scope="module")
def built_all(tmp_path_factory):
    b = build(csn.Builder, dummy_dir("chapman_shaoxing"), tmp_path_factory.mktemp("t"), "all")
    return b, read_all(b)


def test_default_config_keeps_classes_with_10_records(tmp_path):
    b = build(csn.Builder, dummy_dir("chapman_shaoxing"), tmp_path, "min10")
    data = read_all(b)
    assert {s: len(v) for s, v in data.items()} == {"train": 11, "validation": 2, "test": 3}
    assert b.info.metadata["classes"] == ["SR"]  # only SR is on >= 10 fixture records
    n_sr = sum(int(ex["labels"].sum()) for v in data.values() for ex in v.values())
    assert n_sr == 10


def test_exact_matching_and_difference_to_substring(built_all):
    b, data = built_all
    md = b.info.metadata
    assert md["classes"] == ["1AVB", "2AVB", "3AVB", "AF", "AFIB", "RBBB", "SB", "SR", "ST",
                             "STTC", "TWC", "VB"]
    assert md["codes_not_in_condition_names"] == {"999999999": 1}
    # Hand-counted from make_dummy_data.RECORDS: (exact, substring).
    diff = {k: tuple(v) for k, v in md["exact_vs_substring"].items() if v[0] != v[1]}
    assert diff == {"AF": (1, 3), "AVB": (0, 3), "ST": (1, 3), "VB": (1, 4)}
    ex = {k: v for split in data.values() for k, v in split.items()}
    names = lambda e: sorted(np.array(md["classes"])[e["labels"]])  # noqa: E731
    assert names(ex["JS00002"]) == ["AFIB"]  # not AF (atrial flutter)
    assert names(ex["JS00004"]) == ["1AVB", "SR"]  # not AVB, not VB
    assert names(ex["JS00010"]) == ["3AVB", "ST"]
    assert names(ex["JS00016"]) == ["SB"]  # the unknown code is ignored
    assert csn.substring_labels(["AFIB"], ["AF", "AFIB", "VB"]) == {"AF", "AFIB"}
    assert csn.exact_labels(["164889003"], ["164890007", "164889003"]) == {"164889003"}


def test_lead_order_and_prompts(built_all):
    b, data = built_all
    ex = {k: v for split in data.values() for k, v in split.items()}
    ref = wfdb_common.synthetic_ecg(10, 500, seed=4)  # JS00005 has a shuffled header
    np.testing.assert_allclose(millivolts(ex["JS00005"]), ref, atol=1.01e-3)
    prompts = b.info.metadata["prompts"]
    assert len(prompts) == len(b.info.metadata["classes"])
    assert prompts[3][0] == "ECG shows atrial flutter"  # the canonical phrasing comes first
    assert prompts[3] == list(real_labels.PROMPTS["chapman_shaoxing"]["AF"])
    assert all(isinstance(p, list) and len(p) >= 3 for p in prompts)
    assert len(make_dummy_data.RECORDS) == sum(len(v) for v in data.values())


def test_malformed_dx_and_condition_rows_are_skipped_by_name(tmp_path):
    """A header whose #Dx: code is not a number, one without a #Dx: line and a condition row
    without a code are skipped with reason bad_metadata; every other record is built, in
    the same split as in the clean build."""
    import os

    root = tmp_path / "csn"
    make_dummy_data.main(str(root))
    folder = root / "WFDBRecords" / "01" / "010"
    for rid, edit in (("JS00003", lambda t: t.replace("#Dx: 164890007", "#Dx: 16489x007")),
                      ("JS00006", lambda t: "\n".join(
                          x for x in t.split("\n") if not x.startswith("#Dx")))):
        hea = folder / f"{rid}.hea"
        hea.write_text(edit(hea.read_text()))
    edit_csv(str(root / csn.CONDITIONS), lambda header, rows: rows.append(["XX", "nothing", ""]))
    b = build(csn.Builder, str(root), tmp_path / "tfds", "all")
    skipped = manifest(b)
    line = len(make_dummy_data.CONDITIONS) + 2
    assert {k: v[0] for k, v in skipped.items()} == {
        "JS00003": "bad_metadata", "JS00006": "bad_metadata",
        f"{csn.CONDITIONS}:{line}": "bad_metadata"}
    assert skipped["JS00006"][1] == os.path.join(str(folder), "JS00006.hea")
    data = read_all(b)
    clean = read_all(build(csn.Builder, dummy_dir("chapman_shaoxing"), tmp_path / "c", "all"))
    assert {s: sorted(v) for s, v in data.items()} == {
        s: sorted(set(v) - {"JS00003", "JS00006"}) for s, v in clean.items()}
