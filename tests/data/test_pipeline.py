"""The grain pipeline: determinism, resume, process sharding, augmentation, global batches."""

import collections
import re

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from configs import scar as scar_config
from scar_jax.data import build, pipeline, preprocessing, reports

DATASET = "synthetic_ecg/tiny"  # 24 / 8 / 8 records of 10 s at 100 Hz
BATCH = 8


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The tiny synthetic corpus, built once per session."""
    out = str(tmp_path_factory.mktemp("tfds"))
    build.build_dataset(DATASET, data_dir=out)
    return out


@pytest.fixture(scope="session")
def info(data_dir):
    return pipeline.load_source(DATASET, "train", data_dir)[1]


def input_config(data_dir: str, info, **overrides) -> ml_collections.ConfigDict:
    """config.input of the runlocal config pointed at the test corpus."""
    cfg = scar_config.get_config("runlocal").input
    rate, length = pipeline.dataset_rate_and_length(info)
    cfg.dataset, cfg.data_dir = DATASET, data_dir
    cfg.sample_rate, cfg.seconds = rate, length / rate
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def take(ds, n: int) -> list[dict]:
    it = iter(ds)
    return [next(it) for _ in range(n)]


def assert_batches_equal(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batch_shapes_and_dtypes(data_dir, info):
    cfg = input_config(data_dir, info)
    t = pipeline.num_samples(cfg)
    (batch,) = take(pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0,
                                          train=True), 1)
    num_classes = len(info.metadata["classes"])
    want = {
        "ecg": ((BATCH, t, 12), np.float32),
        "lead_observed": ((BATCH, 12), np.bool_),
        "time_observed": ((BATCH, t), np.bool_),
        "labels": ((BATCH, num_classes), np.bool_),
        "index": ((BATCH,), np.int64),
    }
    for key, (shape, dtype) in want.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    assert batch["report"].shape == (BATCH,)


def test_decode_example_against_preprocessing(data_dir, info):
    cfg = input_config(data_dir, info)
    t = pipeline.num_samples(cfg)
    source, _ = pipeline.load_source(DATASET, "train", data_dir)
    partial = [i for i in range(len(source)) if not source[i]["lead_observed"].all()]
    assert partial, "the tiny corpus should hold a record with missing leads"
    ex = dict(source[partial[0]])
    ex["valid_samples"] = t - 100  # as if the last 100 samples were padding
    out = pipeline.decode_example(ex, normalize="minmax", num_samples=t)
    valid = int(ex["valid_samples"])
    np.testing.assert_array_equal(out["time_observed"], np.arange(t) < valid)
    np.testing.assert_array_equal(out["lead_observed"], ex["lead_observed"])
    mv = ex["ecg"].astype(np.float64) * ex["ecg_scale"]
    obs = ex["lead_observed"]
    lo, hi = mv[:valid, obs].min(), mv[:valid, obs].max()
    want = (mv[:valid, obs] - lo) / (hi - lo)
    np.testing.assert_allclose(out["ecg"][:valid, obs], want, rtol=0, atol=1e-6)
    assert np.count_nonzero(out["ecg"][valid:]) == 0
    assert np.count_nonzero(out["ecg"][:, ~obs]) == 0
    assert out["report"] == ex["report"].decode()
    with pytest.raises(ValueError, match=f"expects \\({t + 1}, 12\\)"):
        pipeline.decode_example(ex, normalize="minmax", num_samples=t + 1)


def test_same_seed_same_batches_other_seed_other_batches(data_dir, info):
    cfg = input_config(data_dir, info, lead_drop_prob=0.5, segment_drop_prob=0.5)

    def run(seed):
        ds = pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=seed, train=True)
        return take(ds, 6)

    a, b, c = run(3), run(3), run(4)
    assert_batches_equal(a, b)
    assert not all(np.array_equal(x["index"], y["index"]) for x, y in zip(a, c))


def test_resume_reads_exactly_what_an_uninterrupted_run_reads(data_dir, info):
    cfg = input_config(data_dir, info, lead_drop_prob=0.5, segment_drop_prob=0.5)

    def ds():
        return pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=1, train=True)

    n = len(pipeline.load_source(DATASET, "train", data_dir)[0])
    total, cut = n // BATCH + 3, n // BATCH - 1  # the resumed part crosses an epoch boundary
    full = take(ds(), total)
    it = iter(ds())
    for _ in range(cut):
        next(it)
    state = it.get_state()
    resumed = iter(ds())
    resumed.set_state(state)
    assert_batches_equal([next(resumed) for _ in range(total - cut)], full[cut:])


def test_position_moves_to_another_process_count_and_keeps_the_global_batch(
        data_dir, info, caplog):
    cfg = input_config(data_dir, info, lead_drop_prob=0.5, segment_drop_prob=0.5)
    n = len(pipeline.load_source(DATASET, "train", data_dir)[0])

    def iters(count, batch=BATCH):
        return [iter(pipeline.make_dataset(cfg, "train", global_batch_size=batch, seed=4,
                                           train=True, process_index=p, process_count=count))
                for p in range(count)]

    def merged(parts):  # the processes' rows of one global batch, in process order
        return {k: np.concatenate([b[k] for b in parts]) for k in parts[0]}

    total, cut = n // BATCH + 2, n // BATCH - 1  # the resumed part crosses an epoch boundary
    (ref,) = iters(1)
    want = [next(ref) for _ in range(total)]
    for before, after in ((2, 1), (1, 2)):
        first = iters(before)
        got = [merged([next(it) for it in first]) for _ in range(cut)]
        state = first[-1].get_state()
        assert state == {"batches": cut, "examples": cut * BATCH, "epoch": cut * BATCH // n,
                         "global_batch_size": BATCH, "records": n, "seed": 4,
                         "process_index": before - 1, "process_count": before}
        caplog.clear()
        resumed = iters(after)
        for it in resumed:
            it.set_state(state)
        assert f"saved by {before} processes, resumed on {after}; global batch {cut}" in (
            caplog.text)
        got += [merged([next(it) for it in resumed]) for _ in range(total - cut)]
        assert_batches_equal(got, want)  # the same global batches, augmentation included
        order = np.concatenate([b["index"] for b in got])
        assert sorted(order[:n].tolist()) == list(range(n))  # the first epoch: each record once

    # a state of the pipeline before elastic resume (one grain index) is its batch count
    (it,) = iters(1)
    it.set_state({"next_index": 2})
    assert_batches_equal([next(it)], want[2:3])
    # another global batch size is refused, naming both
    with pytest.raises(ValueError, match=f"{cut} global batches of {BATCH} examples, but this "
                                         "run's global batch size is 4"):
        iters(1, batch=4)[0].set_state(state)


def test_epochs_are_permutations_reshuffled_each_epoch(data_dir, info):
    cfg = input_config(data_dir, info)
    n = len(pipeline.load_source(DATASET, "train", data_dir)[0])
    ds = pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0, train=True,
                               num_epochs=2)
    order = np.concatenate([b["index"] for b in ds])
    assert order.size == 2 * n // BATCH * BATCH  # batches run across the epoch boundary
    np.testing.assert_array_equal(np.sort(order[:n]), np.arange(n))
    second = order[n:]
    assert np.unique(second).size == second.size  # still no repeat inside epoch 2
    assert not np.array_equal(order[: second.size], second)


def test_two_processes_partition_the_records(data_dir, info):
    cfg = input_config(data_dir, info, lead_drop_prob=0.5, segment_drop_prob=0.5)
    source, _ = pipeline.load_source(DATASET, "train", data_dir)
    n = len(source)
    assert n % BATCH == 0  # so that one epoch is whole global batches

    def batches(p, count):
        return list(pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0,
                                          train=True, num_epochs=1, process_index=p,
                                          process_count=count))

    # train: each of 2 processes reads its half of every global batch of 1 process, the
    # augmentation included (drawn per record from its position in the stream)
    one, halves = batches(0, 1), [batches(p, 2) for p in range(2)]
    assert len(one) == len(halves[0]) == len(halves[1]) == n // BATCH
    for k, whole in enumerate(one):
        for p in range(2):
            part = {key: v[p * BATCH // 2 : (p + 1) * BATCH // 2] for key, v in whole.items()}
            assert_batches_equal([halves[p][k]], [part])
    idx = np.concatenate([b["index"] for h in halves for b in h])
    assert sorted(idx.tolist()) == list(range(n))  # one epoch: every record once
    # eval: every record exactly once over the two processes, padding flagged invalid
    n_val = len(pipeline.load_source(DATASET, "validation", data_dir)[0])
    valid_idx, sizes, padding = [], [], 0
    for p in range(2):
        batches = list(pipeline.make_dataset(cfg, "validation", global_batch_size=6, seed=0,
                                             train=False, process_index=p, process_count=2))
        sizes.append(len(batches))
        for b in batches:
            assert b["ecg"].shape[0] == 3
            padding += int((~b["valid"]).sum())
            np.testing.assert_array_equal(b["valid"], b["index"] >= 0)
            assert np.count_nonzero(b["ecg"][~b["valid"]]) == 0
            valid_idx += b["index"][b["valid"]].tolist()
    assert sizes[0] == sizes[1] and padding == 2 * sizes[0] * 3 - n_val > 0
    assert sorted(valid_idx) == list(range(n_val))


def test_augmentation_only_turns_observed_into_unobserved(data_dir, info):
    cfg = input_config(data_dir, info, lead_drop_prob=1.0, max_leads_dropped=3,
                       segment_drop_prob=1.0, max_segment_fraction=0.3)
    t = pipeline.num_samples(cfg)
    source, _ = pipeline.load_source(DATASET, "train", data_dir)
    batches = take(pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0,
                                         train=True), 4)
    dropped_leads = dropped_time = 0
    for b in batches:
        for k, index in enumerate(b["index"]):
            ref = pipeline.decode_example(source[int(index)], normalize="none", num_samples=t)
            leads, time = b["lead_observed"][k], b["time_observed"][k]
            assert not np.any(leads & ~ref["lead_observed"])
            assert not np.any(time & ~ref["time_observed"])
            assert leads.any()
            n_ref = ref["lead_observed"].sum()
            assert n_ref - leads.sum() <= 3 and (n_ref == 1 or leads.sum() < n_ref)
            gone = np.flatnonzero(ref["time_observed"] & ~time)
            assert 1 <= gone.size <= int(0.3 * ref["time_observed"].sum())
            assert np.all(np.diff(gone) == 1)  # one contiguous span
            dropped_leads += n_ref - leads.sum()
            dropped_time += gone.size
            # normalised over what is still observed; the rest is 0
            want = preprocessing.normalize(ref["ecg"], leads, time, "minmax")
            np.testing.assert_allclose(b["ecg"][k], want, atol=1e-6)
    assert dropped_leads > 0 and dropped_time > 0


def test_report_table_is_the_split_s_distinct_reports(data_dir):
    """The builder's table holds exactly the distinct reports of the split's records, with
    their counts, and every record's report_id is its report's id."""
    for split in ("train", "validation"):
        source, _ = pipeline.load_source(DATASET, split, data_dir)
        table = pipeline.report_table(DATASET, split, data_dir)
        records = [source[i] for i in range(len(source))]
        texts = [ex["report"].decode() for ex in records]
        for ex, text in zip(records, texts):
            assert int(ex["report_id"]) == reports.report_id(text)
        want = collections.Counter(texts)
        assert sorted(table.texts) == sorted(want)
        assert dict(zip(table.texts, table.counts.tolist())) == dict(want)
        assert table.rows([reports.report_id(t) for t in texts]).tolist() == [
            table.texts.index(t) for t in texts]


def test_report_features_by_report_id_and_tokens(data_dir, info):
    cfg = input_config(data_dir, info)
    source, _ = pipeline.load_source(DATASET, "train", data_dir)
    texts = [source[i]["report"].decode() for i in range(len(source))]
    table = pipeline.report_table(DATASET, "train", data_dir)
    feats = np.random.default_rng(0).normal(size=(len(table), 5)).astype(np.float32)
    f_ids = np.full((len(table), 3), -1, np.int32)
    f_ids[:, 0] = np.arange(len(table)) % 2
    f_feats = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    rf = pipeline.ReportFeatures(table, feats, f_ids, f_feats)
    (b,) = take(pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0, train=True,
                                      report_features=rf), 1)
    rows = [table.texts.index(texts[i]) for i in b["index"]]
    np.testing.assert_array_equal(b["txt_feats"], feats[rows])
    np.testing.assert_array_equal(b["finding_ids"], f_ids[rows])
    np.testing.assert_array_equal(b["finding_feats"][:, 0], f_feats[np.arange(len(table)) % 2][rows])
    assert not b["finding_feats"][:, 1:].any()
    assert "report" not in b

    def tokenize(reports_):
        return {"input_ids": np.array([[len(r), 7] for r in reports_]),
                "attention_mask": np.ones((len(reports_), 2))}

    (b,) = take(pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0, train=True,
                                      text=tokenize), 1)
    want = tokenize([texts[i] for i in b["index"]])
    assert b["input_ids"].dtype == np.int32 and b["input_ids"].shape == (BATCH, 2)
    np.testing.assert_array_equal(b["input_ids"], want["input_ids"])
    with pytest.raises(ValueError, match=rf"expected \[{len(table)}, H\]"):
        pipeline.ReportFeatures(table, feats[:-1])
    with pytest.raises(TypeError, match="pass a pipeline.ReportFeatures"):
        pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0, train=True,
                              report_features=feats)
    # records of another build (ids not in the table) fail by name
    other = reports.Table(table.ids[:1], table.texts[:1], table.counts[:1])
    ds = pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0, train=True,
                               report_features=pipeline.ReportFeatures(other, feats[:1]))
    with pytest.raises(KeyError, match="not in the report table"):
        take(ds, 1)


def test_config_disagreeing_with_the_dataset_fails_naming_both(data_dir, info):
    rate, length = pipeline.dataset_rate_and_length(info)
    cfg = input_config(data_dir, info, sample_rate=rate * 2)
    with pytest.raises(ValueError, match=f"sampled at {rate} Hz.*sample_rate is {rate * 2}"):
        pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0, train=True)
    cfg = input_config(data_dir, info, seconds=length / rate / 2)
    with pytest.raises(ValueError, match=f"{length} samples.*asks for {length // 2}"):
        pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=0, train=True)
    with pytest.raises(ValueError, match="no split 'nope'"):
        pipeline.load_source(DATASET, "nope", data_dir)
    # the error says which command builds it, there (the README's train command fails so
    # on a fresh machine)
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"not built in {data_dir}/empty/{DATASET}/2.0.0; build it first (python -m "
            f"scar_jax.main build --dataset={DATASET} --data_dir={data_dir}/empty,")):
        pipeline.load_source(DATASET, "train", data_dir + "/empty")
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_ecg/x'"):
        pipeline.load_source("no_such_ecg/x", "train", data_dir)


def test_global_batch_on_8_devices(data_dir, info):
    devices = jax.devices()
    assert len(devices) == 8
    mesh = Mesh(np.asarray(devices).reshape(4, 2), ("data", "fsdp"))
    cfg = input_config(data_dir, info)
    t = pipeline.num_samples(cfg)
    (local,) = take(pipeline.make_dataset(cfg, "train", global_batch_size=16, seed=0, train=True),
                    1)
    for target in (NamedSharding(mesh, P(("data", "fsdp"))), mesh):
        batch = pipeline.global_batch(local, target)
        assert "report" not in batch
        assert batch["ecg"].shape == (16, t, 12)
        assert batch["time_observed"].shape == (16, t)
        assert batch["ecg"].sharding.spec[0] == ("data", "fsdp")
        for shard in batch["ecg"].addressable_shards:
            assert shard.data.shape == (2, t, 12)
            np.testing.assert_array_equal(np.asarray(shard.data), local["ecg"][shard.index])
        np.testing.assert_array_equal(np.asarray(batch["index"]), local["index"])



def test_parse_fields_equals_tfds_decoding():
    f = tfds.features
    rng = np.random.default_rng(0)
    features = f.FeaturesDict(
        {
            "ecg": f.Tensor(shape=(50, 12), dtype=np.int16, encoding=f.Encoding.BYTES),
            "report_id": f.Scalar(dtype=np.int64),
            "ecg_scale": f.Scalar(dtype=np.float32),
            "lead_observed": f.Tensor(shape=(12,), dtype=np.bool_),
            "valid_samples": f.Scalar(dtype=np.int32),
            "report": f.Text(),
            "labels": f.Tensor(shape=(5,), dtype=np.bool_),
            "id": f.Text(),
            "evidence": f.Tensor(shape=(4, 12), dtype=np.bool_),  # not read by the pipeline
        }
    )
    example = {
        "ecg": rng.integers(-32768, 32767, size=(50, 12)).astype(np.int16),
        "ecg_scale": 0.00123,
        "lead_observed": rng.random(12) > 0.3,
        "valid_samples": 41,
        "report": "sinus rhythm, ST élévation",
        "report_id": reports.report_id("sinus rhythm, ST élévation"),
        "labels": np.array([1, 0, 0, 1, 0], bool),
        "id": "rec/7",
        "evidence": rng.random((4, 12)) > 0.5,
    }
    raw = features.serialize_example(example)
    mine, ref = pipeline.parse_fields(raw), features.deserialize_example_np(raw)
    for key in ("ecg", "lead_observed", "labels"):
        assert mine[key].dtype == ref[key].dtype, key
        np.testing.assert_array_equal(mine[key], ref[key], err_msg=key)
        np.testing.assert_array_equal(mine[key], example[key], err_msg=key)
    assert mine["report"] == ref["report"] == example["report"].encode()
    assert mine["id"] == b"rec/7" and mine["valid_samples"] == 41
    assert mine["report_id"] == int(ref["report_id"]) == example["report_id"]
    # the storage of older builders (ecg as int64 lists) is refused by name
    old = f.FeaturesDict({**features, "ecg": f.Tensor(shape=(50, 12), dtype=np.int16)})
    with pytest.raises(ValueError, match="not raw int16 bytes.*rebuild"):
        pipeline.parse_fields(old.serialize_example(example))
    assert mine["ecg_scale"] == float(np.float32(0.00123))


def test_reader_uses_parse_fields_on_the_built_corpus(data_dir):
    source, _ = pipeline.load_source(DATASET, "train", data_dir)
    assert pipeline._SourceReader(source).fast
    keys = list(range(len(source)))
    for mine, ref in zip(pipeline._SourceReader(source).read(keys), source.__getitems__(keys)):
        np.testing.assert_array_equal(mine["ecg"], ref["ecg"])
        np.testing.assert_array_equal(mine["lead_observed"], ref["lead_observed"])
        assert mine["report"] == ref["report"]


@pytest.mark.slow  # starts two grain worker processes
def test_worker_processes_give_the_same_batches_and_resume(data_dir, info):
    def ds(workers):
        cfg = input_config(data_dir, info, worker_count=workers, lead_drop_prob=0.5)
        return pipeline.make_dataset(cfg, "train", global_batch_size=BATCH, seed=2, train=True)

    want = take(ds(0), 6)
    it = iter(ds(2))
    got = [next(it) for _ in range(3)]
    state = it.get_state()
    resumed = iter(ds(2))
    resumed.set_state(state)
    got += [next(resumed) for _ in range(3)]
    assert_batches_equal(got, want)
