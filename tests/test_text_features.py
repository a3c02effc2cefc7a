"""Training start-up's text features: read from the builder's report table (no record is
read), embedded once per distinct report with the work split over JAX processes, cached
through epath (gs:// too).

The two-process test launches this file twice as `python -m tests.test_text_features <id>
<port> <out>` (jax.distributed on localhost, 4 CPU devices each), as
test_multiprocess_update does.
"""

from __future__ import annotations

import os
import pathlib
import sys

import jax
import numpy as np
import pytest

from tests import multiprocess

DATASET = "synthetic_ecg/tiny"


def _setup(data_dir: str, find: float = 0.0):
    """(config, model, params, text_fn, mesh) of the mu model with the random tiny tower."""
    from configs import scar as scar_config
    from scar_jax import sharding, train, train_state
    from scar_jax.models import scar

    cfg = scar_config.get_config("variant=mu,runlocal,text=random-tiny")
    cfg.input.dataset, cfg.input.data_dir = DATASET, data_dir
    cfg.input.sample_rate, cfg.input.seconds = 100, 10.0
    cfg.loss_weights.find = find
    cfg.batch_size = 8
    model = scar.build_model(cfg.model)
    mesh = sharding.make_mesh(cfg.mesh)
    state, _ = train_state.create_train_state(model, cfg, train._batch_spec(cfg), mesh,
                                              jax.random.key(0))
    text_fn = scar.text_tokenizer(cfg.model.txt.checkpoint, cfg.model.txt.max_len)
    return cfg, model, state.params, text_fn, mesh


def _text_tower(model, params, tokens) -> np.ndarray:
    """The reference: the text tower's pooled features of every row in one call."""
    _, aux = model.apply({"params": params}, {k: np.asarray(tokens[k], np.int32) for k in (
        "input_ids", "attention_mask")}, method=model.embed_text)
    return np.asarray(aux["pre_logits"])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from scar_jax.data import build

    out = str(tmp_path_factory.mktemp("tfds"))
    build.build_dataset(DATASET, data_dir=out)
    return out


def test_start_up_reads_the_report_table_not_the_records(data_dir, monkeypatch):
    """The features are the text tower's on the table's texts (and of the
    findings of those texts); not one record is read or parsed to get them."""
    from scar_jax import train
    from scar_jax.data import findings, pipeline

    cfg, model, params, text_fn, mesh = _setup(data_dir, find=1.0)

    def no_reading(*args, **kwargs):
        raise AssertionError("a record was read to find the reports")

    monkeypatch.setattr(pipeline, "parse_fields", no_reading)
    monkeypatch.setattr(pipeline._SourceReader, "read", no_reading)
    monkeypatch.setattr(pipeline, "load_source", no_reading)
    rf = train.text_features(model, params, cfg, "train", text_fn, mesh)
    monkeypatch.undo()
    table = pipeline.report_table(DATASET, "train", data_dir)
    np.testing.assert_array_equal(rf.table.ids, table.ids)
    want = _text_tower(model, params, text_fn(list(table.texts)))
    np.testing.assert_allclose(rf.features, want, atol=1e-5)
    unique, ids, _ = findings.finding_table(table.texts, int(cfg.model.txt.max_findings))
    np.testing.assert_array_equal(rf.finding_ids, ids)
    want_f = _text_tower(model, params, text_fn(unique))
    np.testing.assert_allclose(rf.finding_features, want_f, atol=1e-5)
    # and the pipeline's batches carry each record's row
    source, _ = pipeline.load_source(DATASET, "train", data_dir)
    ds = pipeline.make_dataset(cfg.input, "train", global_batch_size=8, seed=0, train=True,
                               report_features=rf, process_index=0, process_count=1)
    batch = next(iter(ds))
    for k, i in enumerate(batch["index"]):
        row = table.texts.index(source[int(i)]["report"].decode())
        np.testing.assert_array_equal(batch["txt_feats"][k], rf.features[row])


def test_cached_array_on_gcs_is_computed_once(gcs):
    from scar_jax import train

    calls = []

    def compute():
        calls.append(1)
        return np.arange(6.0).reshape(2, 3)

    for _ in range(2):
        got = train.cached_array("gs://bucket/cache/text_features_x.npy", "test", compute)
        np.testing.assert_array_equal(got, np.arange(6.0).reshape(2, 3))
    assert len(calls) == 1
    assert (gcs / "bucket" / "cache" / "text_features_x.npy").is_file()


def test_cached_array_reads_a_local_file_memory_mapped(tmp_path):
    """A local cache file is memory-mapped read-only (pages shared by the processes of a host,
    start-up flat in the number of distinct reports), equal to what was computed."""
    from scar_jax import train

    want = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    first = train.cached_array(tmp_path / "x.npy", "test", lambda: want)
    again = train.cached_array(tmp_path / "x.npy", "test", lambda: 1 / 0)  # not computed
    np.testing.assert_array_equal(first, want)
    assert isinstance(again, np.memmap) and again.mode == "r"
    np.testing.assert_array_equal(again, want)


def test_finding_table_is_cached_with_the_report_features(data_dir, tmp_path, monkeypatch):
    """With text_cache_dir set, the finding table (each distinct report split into findings)
    is computed once; a later start-up reads it (the splitting is made to fail) and gets the
    same findings, ids and counts as findings.finding_table."""
    from scar_jax import train
    from scar_jax.data import findings, pipeline

    cfg, *_ = _setup(data_dir)
    cfg.train.text_cache_dir = str(tmp_path / "cache")
    table = pipeline.report_table(DATASET, "train", data_dir)
    want = findings.finding_table(table.texts, 3)
    assert int(np.sum(want[2] > 3)) > 0  # the fixture has reports that are cut
    first = train.cached_finding_table(cfg, table, 3)

    def no_splitting(*args, **kwargs):
        raise AssertionError("findings were split again")

    monkeypatch.setattr(findings, "finding_table", no_splitting)
    again = train.cached_finding_table(cfg, table, 3)
    for got in (first, again):
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])
    with pytest.raises(AssertionError, match="split again"):  # another max_findings: new key
        train.cached_finding_table(cfg, table, 2)


def test_text_cache_dir_defaults_to_the_workdir():
    """'' keeps the features in WORKDIR/text_cache (library calls without a workdir: none),
    'off' nowhere, any other value is the folder."""
    from configs import scar as scar_config
    from scar_jax import train

    cfg = scar_config.get_config("variant=mu,runlocal,text=random-tiny")
    assert cfg.train.text_cache_dir == ""
    assert train.text_cache_dir(cfg, "/w/run") == "/w/run/text_cache"
    assert train.text_cache_dir(cfg, "gs://b/run") == "gs://b/run/text_cache"
    assert train.text_cache_dir(cfg) is None
    cfg.train.text_cache_dir = "off"
    assert train.text_cache_dir(cfg, "/w/run") is None
    cfg.train.text_cache_dir = "gs://b/cache"
    assert train.text_cache_dir(cfg, "/w/run") == "gs://b/cache"


def test_a_resumed_start_up_reads_the_workdirs_text_cache(data_dir, tmp_path, monkeypatch):
    """With the default text_cache_dir, a second start-up on the same workdir embeds nothing
    and decodes no report text: the report features and the finding table come from
    WORKDIR/text_cache, equal to the first start-up's."""
    from scar_jax import train
    from scar_jax.data import reports

    cfg, model, params, text_fn, mesh = _setup(data_dir, find=1.0)
    cfg.model.txt.checkpoint = "random-tiny-cached"  # not the random tower: the cache is used
    workdir = str(tmp_path / "run")
    first = train.text_features(model, params, cfg, "train", text_fn, mesh, workdir)
    names = sorted(p.name.split("_")[0] + "_" + p.name.split("_")[1]
                   for p in (tmp_path / "run" / "text_cache").glob("*.npy"))
    assert names == ["finding_ids", "finding_texts", "text_features", "text_features"]

    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded again")

    def no_decoding(*args, **kwargs):
        raise AssertionError("a report text was decoded")

    monkeypatch.setattr(train, "embed_texts", no_embedding)
    monkeypatch.setattr(reports.Texts, "__getitem__", no_decoding)  # keys use the table's ids
    again = train.text_features(model, params, cfg, "train", text_fn, mesh, workdir)
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_array_equal(again.finding_ids, first.finding_ids)
    np.testing.assert_array_equal(again.finding_features, first.finding_features)
    monkeypatch.undo()
    monkeypatch.setattr(train, "embed_texts", no_embedding)
    with pytest.raises(AssertionError, match="embedded again"):  # 'off': nothing kept
        cfg.train.text_cache_dir = "off"
        train.text_features(model, params, cfg, "train", text_fn, mesh, workdir)


@pytest.mark.slow
def test_two_processes_embed_half_each_and_get_the_one_process_features(data_dir, tmp_path):
    """Each process tokenizes only its half of every chunk; both end with all U features,
    equal to one process's, and process 0 alone writes the cache, which a second start-up
    reads (no text tokenized)."""
    multiprocess.run_processes("tests.test_text_features", tmp_path, data_dir)
    from scar_jax import train

    cfg, model, params, text_fn, mesh = _setup(data_dir)
    texts = _texts(data_dir)
    want = train.embed_texts(model, params, texts, text_fn, mesh, 8)
    counts = []
    for i in range(2):
        got = np.load(tmp_path / f"feats_{i}.npz")
        np.testing.assert_allclose(got["features"], want, atol=1e-5)
        counts.append(int(got["tokenized"]))
        assert int(got["tokenized_again"]) == 0  # the second start-up read the cache
    chunks = -(-len(texts) // 8)
    assert counts == [4 * chunks, 4 * chunks]  # half of every 8-row chunk, padding included
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1


def _texts(data_dir: str) -> list[str]:
    from scar_jax.data import pipeline

    return list(pipeline.report_table(DATASET, "train", data_dir).texts)


def _worker(process_id: int, port: int, out: str, data_dir: str) -> None:
    """One of the two processes: embed the train reports (cached), count what it tokenized."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_default_matmul_precision", "highest")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    from scar_jax import train

    cfg, model, params, text_fn, mesh = _setup(data_dir)
    cfg.model.txt.checkpoint = "random-tiny-cached"  # not the random tower: the cache is used
    cfg.train.text_cache_dir = os.path.join(out, "cache")
    tokenized = []

    def counting(texts):
        tokenized.append(len(texts))
        return text_fn(texts)

    texts = _texts(data_dir)
    feats = train.cached_text_features(model, params, cfg, texts, counting, mesh, "reports")
    first = sum(tokenized)
    tokenized.clear()
    again = train.cached_text_features(model, params, cfg, texts, counting, mesh, "reports")
    np.testing.assert_array_equal(again, feats)
    np.savez(pathlib.Path(out) / f"feats_{process_id}.npz", features=feats, tokenized=first,
             tokenized_again=sum(tokenized))
    jax.distributed.shutdown()


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
