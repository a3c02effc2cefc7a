"""The synthetic_ecg TFDS builder, built as ArrayRecord and read back without TensorFlow.

`tfds.testing.DatasetBuilderTestCase` cannot run in this environment: importing it needs
`dill` (not installed) and then TensorFlow (`tfds.testing.test_case.TestCase` subclasses
`tf.test.TestCase`; its checks go through `builder.as_dataset`, i.e. tf.data). The same
checks run here through `as_data_source`: exact split counts, feature specs and example
shapes, reload from the directory (metadata included), disjoint splits, plus the corpus's
own properties (int16 round trip, missing leads, evidence table, determinism).
"""

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from scar_jax.data import synthetic
from scar_jax.data.builders.synthetic_ecg import synthetic_ecg_dataset_builder as sb

SPLITS = {"train": 24, "validation": 8, "test": 8}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = tfds.builder("synthetic_ecg/tiny", data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")
    return builder


def test_exact_split_counts(built):
    assert {s: built.info.splits[s].num_examples for s in built.info.splits} == SPLITS
    sources = built.as_data_source()
    assert {s: len(v) for s, v in sources.items()} == SPLITS
    # the builder's larger in-memory shuffle limit does not outlive its build
    from tensorflow_datasets.core import shuffle

    assert shuffle.MAX_MEM_BUFFER_SIZE == 1000 << 20


def test_example_schema(built):
    cfg = built.builder_config
    t = cfg.num_samples
    assert t == 1000 and cfg.sampling_rate == 100
    ex = built.as_data_source("train")[0]
    expected = {
        "ecg": (np.int16, (t, 12)),
        "lead_observed": (np.bool_, (12,)),
        "labels": (np.bool_, (len(synthetic.CLASSES),)),
        "evidence_primary": (np.bool_, (100, 12)),
        "evidence_secondary": (np.bool_, (100, 12)),
        "evidence_time_primary": (np.bool_, (100, len(synthetic.CLASSES))),
        "evidence_time_secondary": (np.bool_, (100, len(synthetic.CLASSES))),
    }
    for key, (dtype, shape) in expected.items():
        assert ex[key].dtype == dtype and ex[key].shape == shape, key
    for key in ("report", "id", "patient_id"):
        assert isinstance(ex[key], bytes) and ex[key], key
    assert ex["ecg_scale"] == pytest.approx(0.001)
    assert ex["valid_samples"] == t and ex["source_length"] == t and ex["source_rate"] == 100
    assert built.info.metadata["classes"] == list(synthetic.CLASSES)
    assert built.info.metadata["sample_rate"] == 100


def test_ids_unique_and_splits_disjoint(built):
    ids = {s: [ex["id"].decode() for ex in built.as_data_source(s)] for s in SPLITS}
    every = [i for v in ids.values() for i in v]
    assert len(set(every)) == len(every) == sum(SPLITS.values())
    assert sorted(ids["test"]) == [sb.record_id("test", i) for i in range(8)]


def test_int16_round_trip_and_determinism(built):
    cfg = built.builder_config
    source = built.as_data_source("validation")
    for ex in source:
        index = int(ex["id"].decode().rsplit("-", 1)[1])
        rec = synthetic.generate_record(
            cfg.seed, "validation", index, sampling_rate=cfg.sampling_rate,
            duration_s=cfg.duration_s, missing_lead_fraction=cfg.missing_lead_fraction,
        )  # fmt: skip
        mv = ex["ecg"].astype(np.float64) * ex["ecg_scale"]
        assert np.abs(mv - rec.ecg).max() <= ex["ecg_scale"] / 2 + 1e-6
        np.testing.assert_array_equal(ex["labels"], rec.labels)
        np.testing.assert_array_equal(ex["lead_observed"], rec.lead_observed)
        assert ex["report"].decode() == rec.report


def test_missing_lead_records(built):
    n = 0
    for split in SPLITS:
        for ex in built.as_data_source(split):
            missing = ~ex["lead_observed"]
            if missing.any():
                n += 1
                assert np.all(ex["ecg"][:, missing] == 0)
            assert np.all(np.abs(ex["ecg"][:, ex["lead_observed"]]).max(0) > 50)  # > 0.05 mV
    assert 2 <= n <= 20  # missing_lead_fraction 0.25 of 40 records


def test_evidence_table_in_metadata_and_reload(built):
    reloaded = tfds.builder_from_directory(built.data_dir)
    meta = reloaded.info.metadata
    assert meta["classes"] == list(synthetic.CLASSES)
    assert set(meta["class_info"]) == set(synthetic.CLASSES)
    assert meta["class_info"]["AMI"]["primary_leads"] == ["V1", "V2", "V3", "V4"]
    table = meta["evidence"]
    assert len(table) == sum(SPLITS.values())
    for ex in reloaded.as_data_source("test"):
        entry = table[ex["id"].decode()]
        np.testing.assert_array_equal(
            synthetic.unpack_evidence(entry["primary"], 100), ex["evidence_primary"]
        )
        np.testing.assert_array_equal(
            synthetic.unpack_evidence(entry["secondary"], 100), ex["evidence_secondary"]
        )
        assert ex["evidence_primary"].any()  # every record has a class, every class a region
        # the union map is the per-class time bins x each class's leads
        regions = synthetic.class_regions(ex["evidence_time_primary"], "primary")
        np.testing.assert_array_equal(regions.any(0), ex["evidence_primary"])
        np.testing.assert_array_equal(ex["evidence_time_primary"].any(0), ex["labels"])


def test_same_corpus_whatever_the_build(built, tmp_path):
    again = tfds.builder("synthetic_ecg/tiny", data_dir=str(tmp_path))
    again.download_and_prepare(file_format="array_record")
    a = {ex["id"]: ex for ex in built.as_data_source("train")}
    b = {ex["id"]: ex for ex in again.as_data_source("train")}
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k]["ecg"], b[k]["ecg"])
        assert a[k]["report"] == b[k]["report"]


def test_data_source_by_name(built):
    root = str(pathlib.Path(built.data_dir).parents[2])  # <root>/synthetic_ecg/tiny/2.0.0
    ds = tfds.data_source("synthetic_ecg/tiny", split="test", data_dir=root)
    assert len(ds) == 8
