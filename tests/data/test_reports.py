"""Report tables: ids, collection, merge, the file layout (local and gs://), bad files."""

import hashlib
import pickle

import numpy as np
import pytest

from scar_jax.data import reports


def test_report_id_is_the_first_8_bytes_of_sha256_as_signed_int64():
    digest = hashlib.sha256("sinus rhythm. normal ecg".encode()).digest()
    want = int(np.frombuffer(digest[:8], ">i8")[0])
    assert reports.report_id("sinus rhythm. normal ecg") == want
    assert reports.report_id("") != reports.report_id(" ")


def test_collector_tables_merge_and_file_round_trip(tmp_path):
    c = reports.Collector()
    texts = ["sinus rhythm", "afib. lbbb", "sinus rhythm", "", "élévation du segment ST"]
    ids = [c.add("train", t) for t in texts]
    assert ids[0] == ids[2] == reports.report_id("sinus rhythm")
    c.add("validation", "sinus rhythm")
    table = c.table("train")
    assert sorted(table.texts) == sorted(set(texts)) and list(table.ids) == sorted(table.ids)
    assert dict(zip(table.texts, table.counts.tolist())) == {
        "sinus rhythm": 2, "afib. lbbb": 1, "": 1, "élévation du segment ST": 1}
    np.testing.assert_array_equal(table.rows(ids), [table.texts.index(t) for t in texts])
    assert c.write(tmp_path, ["train", "validation"]) == {
        "train": "reports-train.npz", "validation": "reports-validation.npz"}
    back = reports.read_table(tmp_path, "train")
    np.testing.assert_array_equal(back.ids, table.ids)
    np.testing.assert_array_equal(back.counts, table.counts)
    assert back.texts == table.texts and back.digest() == table.digest()
    merged = reports.merge([back, reports.read_table(tmp_path, "validation")])
    assert dict(zip(merged.texts, merged.counts.tolist()))["sinus rhythm"] == 3
    assert merged.counts.sum() == 6 and len(merged) == 4
    with pytest.raises(KeyError, match="not in the report table"):
        table.rows([reports.report_id("never seen")])


def test_table_on_gcs_through_epath(gcs):
    c = reports.Collector()
    c.add("train", "sinus rhythm")
    c.write("gs://bucket/ds/1.0.0", ["train"])
    assert (gcs / "bucket" / "ds" / "1.0.0" / "reports-train.npz").is_file()
    assert reports.read_table("gs://bucket/ds/1.0.0", "train").texts == ["sinus rhythm"]


def test_missing_or_malformed_table_says_rebuild(tmp_path):
    with pytest.raises(FileNotFoundError, match="no report table for split 'test'.*rebuild"):
        reports.read_table(tmp_path, "test")
    bad = reports.Table(np.array([5, 3], np.int64), ["a", "b"], np.array([1, 1]))
    reports.write_table(tmp_path, "train", bad)
    with pytest.raises(ValueError, match="malformed.*rebuild"):
        reports.read_table(tmp_path, "train")


def test_texts_are_decoded_only_when_read():
    """reports.Texts decodes its blob on the first text read, once; it behaves as a sequence
    of str (len, index, negative index, slice, equality with a list, IndexError)."""
    words = ["sinus rhythm", "", "fibrillation auriculaire", "ü"]
    blob = b"".join(w.encode("utf-8") for w in words)
    offsets = np.cumsum([0] + [len(w.encode("utf-8")) for w in words])
    loads = []

    def load():
        loads.append(1)
        return np.frombuffer(blob, np.uint8)

    texts = reports.Texts(offsets, load)
    assert len(texts) == 4 and loads == []
    assert texts[2] == "fibrillation auriculaire" and texts[-1] == "ü"
    assert texts[1:3] == ["", "fibrillation auriculaire"] and texts == words
    assert texts.index("ü") == 3 and list(texts) == words
    assert loads == [1]
    with pytest.raises(IndexError):
        texts[4]
    assert pickle.loads(pickle.dumps(texts)) == words  # grain's workers get a copy
    assert reports.Texts(offsets, np.frombuffer(blob, np.uint8))[2] == words[2]
