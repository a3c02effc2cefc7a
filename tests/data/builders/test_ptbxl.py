"""PTB-XL builder on its dummy data: split counts, labels, lead order, units, provenance."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from scar_jax.data import preprocessing, real_labels
from scar_jax.data.builders import wfdb_common
from scar_jax.data.builders.ptbxl import make_dummy_data, ptbxl_dataset_builder as ptbxl

from .conftest import build, copy_record, dummy_dir, edit_csv, manifest, millivolts, read_all


@pytest.fixture(scope="module", params=["500hz", "100hz"])
def built(request, tmp_path_factory):
    b = build(ptbxl.Builder, dummy_dir("ptbxl"), tmp_path_factory.mktemp("tfds"), request.param)
    return request.param, b, read_all(b)


def test_split_counts_and_has_label_counts(built):
    _, b, data = built
    assert {s: len(v) for s, v in data.items()} == {"train": 5, "validation": 2, "test": 2}
    # Hand-counted from make_dummy_data.RECORDS (a set leaves out records without a label).
    expected = {
        "superdiagnostic": {"train": 3, "validation": 2, "test": 2},
        "subdiagnostic": {"train": 3, "validation": 2, "test": 2},
        "form": {"train": 2, "validation": 1, "test": 1},
        "rhythm": {"train": 5, "validation": 2, "test": 1},
    }
    for name, want in expected.items():
        got = {s: sum(bool(ex[f"has_{name}"]) for ex in v.values()) for s, v in data.items()}
        assert got == want, name
    assert b.info.metadata["classes"] == list(real_labels.PTBXL_SUPERDIAGNOSTIC)


def _names(ex, name):
    return sorted(np.array(real_labels.PTBXL_LABEL_SETS[name])[ex[f"labels_{name}"]])


def test_labels_match_hand_derivation(built):
    _, _, data = built
    ex = {k: v for split in data.values() for k, v in split.items()}
    assert _names(ex["3"], "superdiagnostic") == ["HYP", "MI"]  # ASMI -> MI, LVH -> HYP
    assert _names(ex["3"], "subdiagnostic") == ["AMI", "LVH"]
    assert _names(ex["3"], "rhythm") == ["AFIB"] and not ex["3"]["has_form"]
    assert _names(ex["6"], "superdiagnostic") == ["STTC"] and _names(ex["6"], "form") == ["NDT"]
    assert _names(ex["7"], "subdiagnostic") == ["CLBBB", "_AVB"]  # CLBBB, 1AVB
    assert _names(ex["8"], "subdiagnostic") == ["ISCA", "STTC"]  # ISCAL, LNGQT
    assert _names(ex["8"], "form") == ["LNGQT"] and not ex["8"]["has_rhythm"]
    assert _names(ex["2"], "form") == ["ABQRS"]  # likelihood 0 still counts
    assert not ex["5"]["has_superdiagnostic"] and _names(ex["5"], "rhythm") == ["SR"]
    np.testing.assert_array_equal(ex["2"]["labels"], ex["2"]["labels_superdiagnostic"])
    assert ex["4"]["patient_id"] == b"104" and ex["5"]["patient_id"] == b"104"
    assert int(ex["8"]["strat_fold"]) == 10 and int(ex["8"]["ecg_id"]) == 8
    assert ex["1"]["report"] == b"sinusrhythmus normales ekg"


def test_label_maps_cover_the_71_statements():
    st = make_dummy_data.statements()
    maps = ptbxl.label_maps(st)
    assert len(st) == 71
    assert {k: len(v) for k, v in maps.items()} == {
        "superdiagnostic": 44, "subdiagnostic": 44, "form": 19, "rhythm": 12
    }
    assert {k: len(set(v.values())) for k, v in maps.items()} == {
        "superdiagnostic": 5, "subdiagnostic": 23, "form": 19, "rhythm": 12
    }
    assert ptbxl.derive_labels("{'INJIL': 0.0, 'PRC(S)': 0.0}", maps) == {
        "superdiagnostic": ["MI"], "subdiagnostic": ["IMI"], "form": ["PRC(S)"], "rhythm": []
    }
    bad = st.copy()
    bad.loc["NORM", "diagnostic_class"] = "NORMAL"
    with pytest.raises(ValueError, match="NORMAL"):
        ptbxl.label_maps(bad)


def test_signals_units_and_lead_order(built):
    config, _, data = built
    rate = {"500hz": 500, "100hz": 100}[config]
    ex = {k: v for split in data.values() for k, v in split.items()}
    for key, ref in [("3", make_dummy_data.signal_for(3, "synthetic")),  # shuffled header
                     ("1", make_dummy_data.signal_for(1, "pydicom"))]:  # the real ECG
        if rate == 100:
            ref = preprocessing.resample(ref, 500, 100)
        got = millivolts(ex[key])
        assert got.shape == (10 * rate, 12)
        # wfdb stores 1 uV per count and the int16 store 1 uV: error <= 1 uV.
        np.testing.assert_allclose(got, ref, atol=1.01e-3)
        assert ex[key]["lead_observed"].all()
        assert int(ex[key]["source_rate"]) == rate and int(ex[key]["source_length"]) == 10 * rate
        assert int(ex[key]["valid_samples"]) == 10 * rate
    header = pd.read_csv(dummy_dir("ptbxl", "ptbxl_database.csv"))
    assert header.filename_hr[2].endswith("00003_hr")


def test_manifest_is_empty_on_clean_data(built):
    _, b, _ = built
    assert wfdb_common.read_manifest(str(b.data_path / wfdb_common.MANIFEST_NAME)) == []
    assert b.info.metadata["record_counts"]["kept"] == 9


def test_build_dataset_and_the_pipeline_read_it_unchanged(tmp_path):
    from configs import scar as scar_config
    from scar_jax.data import build, pipeline

    info = build.build_dataset("ptbxl/100hz", data_dir=str(tmp_path),
                               manual_dir=dummy_dir("ptbxl"), strict=True)
    assert info.metadata["sample_rate"] == 100
    cfg = scar_config.get_config("runlocal")
    cfg.input.dataset, cfg.input.data_dir = "ptbxl/100hz", str(tmp_path)
    cfg.input.sample_rate, cfg.input.seconds = 100, 10.0
    ds = pipeline.make_dataset(cfg.input, "validation", global_batch_size=2, seed=0,
                               train=False, process_index=0, process_count=1)
    batch = next(iter(ds))
    assert batch["ecg"].shape == (2, 1000, 12) and batch["labels"].shape == (2, 5)
    assert batch["lead_observed"].all() and batch["time_observed"].all()


def test_malformed_database_rows_are_skipped_by_name_and_cost_no_other_record(tmp_path):
    """Rows of ptbxl_database.csv with an unparseable scp_codes, a missing strat_fold, a cell
    too many, or a record path outside the corpus (a valid record, copied out) are skipped
    with a named reason; the build finishes and every other record is built as before."""
    root = str(tmp_path / "ptbxl")
    make_dummy_data.main(root)
    copy_record(os.path.join(root, "records500", "00000", "00006_hr"),
                str(tmp_path / "outside" / "00006_hr"))

    def edit(header, rows):
        col = {c: i for i, c in enumerate(header)}
        by_id = {r[col["ecg_id"]]: r for r in rows}
        by_id["2"][col["scp_codes"]] = "{'IMI': 80.0, 'ABQRS'"
        by_id["4"][col["strat_fold"]] = ""
        by_id["6"][col["filename_hr"]] = "../outside/00006_hr"
        by_id["5"].append("surplus")

    edit_csv(os.path.join(root, "ptbxl_database.csv"), edit)
    b = build(ptbxl.Builder, root, tmp_path / "tfds", "500hz")
    skipped = manifest(b)
    assert {k: v[0] for k, v in skipped.items()} == {
        "2": "bad_metadata", "4": "bad_metadata", "6": "outside_corpus", "5": "bad_metadata"}
    assert skipped["6"][1] == os.path.join(root, "../outside/00006_hr")
    assert skipped["2"][1].endswith("ptbxl_database.csv:3")  # the table's line
    data = read_all(b)
    assert sorted(k for v in data.values() for k in v) == ["1", "3", "7", "8", "9"]
    clean = read_all(build(ptbxl.Builder, dummy_dir("ptbxl"), tmp_path / "clean", "500hz"))
    clean = {k: v for split in clean.values() for k, v in split.items()}
    for split in data.values():
        for k, ex in split.items():
            np.testing.assert_array_equal(ex["ecg"], clean[k]["ecg"])
            np.testing.assert_array_equal(ex["labels_rhythm"], clean[k]["labels_rhythm"])
    assert b.info.metadata["record_counts"] == {
        "kept": 5, "nan_repaired_records": 0, "bad_metadata/skipped": 3,
        "outside_corpus/skipped": 1}
    with pytest.raises(wfdb_common.RecordError, match=r"ptbxl_database.csv:3: bad_metadata .*"
                       "scp_codes"):  # strict: the first malformed row stops the build
        build(ptbxl.Builder, root, tmp_path / "strict", "500hz", strict=True)


def test_ecg_stored_as_raw_int16_bytes_and_reports_in_a_table(built):
    """One record's serialized size is raw int16 (T x 12 x 2 B) plus < 1 KB of other fields
    (the int64-list encoding of builder 1.0.3 took ~2.4x raw on this fixture); each split's
    report table lists its records' reports."""
    from scar_jax.data import reports

    config, b, data = built
    t = {"500hz": 5000, "100hz": 1000}[config]
    for split in data:
        raw = b.as_data_source(split=split).data_source
        sizes = [len(raw[i]) for i in range(len(raw))]
        assert all(t * 24 < n < t * 24 + 1024 for n in sizes), sizes
        table = reports.read_table(b.data_path, split)
        texts = [ex["report"].decode() for ex in data[split].values()]
        assert sorted(table.texts) == sorted(set(texts)) and table.counts.sum() == len(texts)
        assert [int(ex["report_id"]) for ex in data[split].values()] == [
            reports.report_id(x) for x in texts]
    assert b.info.metadata["report_tables"] == {
        s: reports.table_name(s) for s in ("train", "validation", "test")}


def test_a_dataset_of_an_older_builder_version_is_refused_with_the_rebuild_command(tmp_path):
    """A PTB-XL build of version 1.0.3 (faked: a built dataset moved to the old version's
    folder) is refused by name, with the command that rebuilds it; so is the old version
    asked for explicitly."""
    import json
    import re
    import shutil

    from scar_jax.data import build as build_lib, pipeline

    build_lib.build_dataset("ptbxl/100hz", data_dir=str(tmp_path), manual_dir=dummy_dir("ptbxl"))
    new = tmp_path / "ptbxl" / "100hz" / "2.0.0"
    old = new.parent / "1.0.3"
    shutil.move(str(new), str(old))
    info = json.loads((old / "dataset_info.json").read_text())
    info["version"] = "1.0.3"
    (old / "dataset_info.json").write_text(json.dumps(info))
    want = re.escape(
        f"in {new.parent} was built with version 1.0.3 of the ptbxl builder; this code reads "
        "only version 2.0.0") + r".*" + re.escape(
        f"Rebuild it: python -m scar_jax.main build --dataset=ptbxl/100hz "
        f"--data_dir={tmp_path} --manual_dir=<the corpus folder>.")
    with pytest.raises(pipeline.StaleDatasetError, match=want):
        pipeline.load_source("ptbxl/100hz", "train", str(tmp_path))
    with pytest.raises(pipeline.StaleDatasetError, match="asks for version 1.0.3.*only version "
                       "2.0.0.*build --dataset=ptbxl/100hz "):
        pipeline.load_source("ptbxl/100hz:1.0.3", "train", str(tmp_path))
