"""The six-benchmark table end to end: PTB-XL (four label sets), CPSC2018 and CSN built for real
from the builders' fixtures, a mu checkpoint on disk, the table's cells against zero-shot AUROC
computed here with sklearn, MERL split CSVs (ids assigned, missing ones counted), skips."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scar_jax.evaluation import benchmark_table as bt
from scar_jax.evaluation import data as eval_data
from scar_jax.evaluation import linear_probe
from scar_jax.evaluation import missingness as miss
from scar_jax.evaluation import run
from tests.data.builders.conftest import build, dummy_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Built fixtures of the three corpora (500 Hz, 10 s), a mu model at that length, and its
    checkpoint folder."""
    from configs import scar as scar_config
    from scar_jax import checkpointing
    from scar_jax.data.builders.chapman_shaoxing import chapman_shaoxing_dataset_builder as csn
    from scar_jax.data.builders.cpsc2018 import cpsc2018_dataset_builder as cpsc
    from scar_jax.data.builders.ptbxl import ptbxl_dataset_builder as ptbxl
    from scar_jax.models import scar

    tfds_dir = tmp_path_factory.mktemp("tfds")
    build(ptbxl.Builder, dummy_dir("ptbxl"), tfds_dir, "500hz")
    build(cpsc.Builder, dummy_dir("cpsc2018", "challenge"), tfds_dir, "10s")
    build(csn.Builder, dummy_dir("chapman_shaoxing"), tfds_dir, "min10")
    config = scar_config.get_config("runlocal,text=random-tiny")
    config.input.sample_rate, config.input.seconds = 500, 10.0
    config.input.data_dir = str(tfds_dir)
    ev = config.eval
    ev.batch_size, ev.bootstrap, ev.max_examples, ev.probe_cs = 8, 10, 0, (0.1, 1.0)
    model = scar.build_model(config.model)
    batch = {"ecg": jnp.zeros((1, 5000, 12)), "lead_observed": jnp.ones((1, 12), bool),
             "input_ids": jnp.ones((1, 8), jnp.int32),
             "attention_mask": jnp.ones((1, 8), jnp.int32)}
    variables = jax.jit(model.init)({"params": jax.random.key(3), "masker": jax.random.key(4)},
                                    batch)
    ckpt_dir = tmp_path_factory.mktemp("run") / "checkpoints"
    ckpt = checkpointing.Checkpointer(ckpt_dir, async_save=False, keep_best=0)
    ckpt.save(1, {"step": jnp.asarray(1), "params": variables["params"]}, config=config)
    ckpt.close()
    return config, str(ckpt_dir), run.ModelSpec.from_config("mu", config, variables)


def _zero_shot(spec: run.ModelSpec, data: eval_data.EvalData, center: bool) -> float:
    """Clean zero-shot macro AUROC computed here: the model's embed_ecg on all observed tokens,
    cosine to the averaged phrasings, sklearn's AUROC over classes with both labels."""
    patch = spec.model.ecg.patch_size
    keep = eval_data.observed_tokens(data, slice(None), patch)
    z, _ = spec.model.apply(spec.variables, jnp.asarray(np.nan_to_num(data.ecg)),
                            jnp.asarray(data.lead_observed), keep=jnp.asarray(keep, jnp.float32),
                            method=spec.model.embed_ecg)
    z, c = np.asarray(z), spec.class_embeddings(data.prompts, center)
    s = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (
        c / np.linalg.norm(c, axis=1, keepdims=True)).T
    y = data.labels
    ok = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    return float(np.mean([roc_auc_score(y[:, k], s[:, k]) for k in ok])) if ok else float("nan")


def _close(table_value, want) -> bool:
    if table_value is None:  # NaN in the JSON
        return not np.isfinite(want)
    return abs(table_value - want) < 1e-5


@pytest.mark.slow
def test_the_table_of_six_benchmarks_matches_the_evaluation(world, tmp_path):
    config, ckpt, spec = world
    out = tmp_path / "table"
    # the four PTB-XL label sets, CPSC2018, CSN; ptbxl/100hz is not built: skipped, no crash
    bt.run(config, {"mu": ckpt}, out, datasets="ptbxl/500hz,cpsc2018,chapman_shaoxing,"
           "ptbxl/100hz", label_sets="")
    table = json.loads((out / "benchmark_table.json").read_text())
    assert [b["key"] for b in table["benchmarks"]] == [b.key for b in bt.BENCHMARKS]
    assert [(s["dataset"], s["benchmark"]) for s in table["skipped"]] == [
        ("ptbxl/100hz", k) for k in ("ptbxl_super", "ptbxl_sub", "ptbxl_form", "ptbxl_rhythm")]
    assert all("not built" in s["reason"] for s in table["skipped"])
    n = {b["key"]: b["n"] for b in table["benchmarks"]}
    # PTB-XL fixture, counted by hand (tests/data/builders/test_ptbxl.py): a record without a
    # label in a set is left out of it
    assert n["ptbxl_super"] == {"train": 3, "val": 2, "test": 2}
    assert n["ptbxl_form"] == {"train": 2, "val": 1, "test": 1}
    assert n["ptbxl_rhythm"] == {"train": 5, "val": 2, "test": 1}
    cells = table["cells"]["mu"]
    center = bool(config.eval.center_prompts)
    for b in bt.BENCHMARKS:  # every zero-shot cell against the computation here
        dataset = "ptbxl/500hz" if b.corpus == "ptbxl" else b.corpus
        test = eval_data.load_split(config, dataset, "test", label_set=b.label_set,
                                    evidence=False)
        assert len(test) == n[b.key]["test"]
        assert _close(cells[b.key]["zero-shot"], _zero_shot(spec, test, center)), b.key
    assert np.isfinite(cells["ptbxl_super"]["zero-shot"])
    # PTB-XL form: one validation record, no class with both labels: no probe, said so
    assert cells["ptbxl_form"]["1%"] is None and "no class" in table["benchmarks"][2]["note"]
    # the probe cells of PTB-XL super: linear_probe on the clean pooled features of the splits
    load = lambda s: eval_data.load_split(config, "ptbxl/500hz", s,  # noqa: E731
                                          label_set="superdiagnostic", evidence=False)
    tr, va, te = load("train"), load("validation"), load("test")
    emb = miss.GridEmbedder(spec.model, spec.variables, config.eval.chunk,
                            config.eval.grid_buckets)
    feats = [run._clean_embeddings(emb, d, config.eval, spec.model.ecg.patch_size)[1]
             for d in (tr, va, te)]
    probes = linear_probe.fit_fractions(feats[0], tr.labels, feats[1], va.labels,
                                        bt.FRACTIONS, config.eval.probe_cs, config.eval.seed)
    for frac, col in zip(bt.FRACTIONS, ("1%", "10%", "100%")):
        per = [roc_auc_score(te.labels[:, k], probes[frac].decision(feats[2])[:, k])
               for k in range(te.labels.shape[1]) if 0 < te.labels[:, k].sum() < len(te)]
        assert _close(cells["ptbxl_super"][col], float(np.mean(per))), col
    md = (out / "benchmark_table.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert header.count("|") == 1 + 1 + 6 * 4 + 1 and "PTBXL-Form 10%" in header
    merl = next(line for line in md.splitlines() if line.startswith("| MERL (published)"))
    assert "| 82.39 |" in merl and "| 75.20 |" in merl  # all six evaluated: its mean is shown
    assert "## Skipped (4)" in md and "ptbxl/100hz" in md


def _write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


@pytest.mark.slow
def test_merl_split_csvs_assign_records_by_id(world, tmp_path):
    config, ckpt, spec = world
    splits = tmp_path / "data_split"
    head = ["ecg_id", "patient_id", "strat_fold", "filename_lr", "filename_hr", "rhythm", "SR"]
    row = lambda i: [i, 100.0 + i, 1, f"records100/00000/{i:05d}_lr",  # noqa: E731
                     f"records500/00000/{i:05d}_hr", "['SR']", 1]
    # MERL's layout; 424242 is not in the corpus, 8 has no rhythm label (not in the set)
    ids = {"train": [1, 2, 4, 424242], "val": [5, 9], "test": [3, 6, 7, 8]}
    for split, which in ids.items():
        _write_csv(splits / "ptbxl" / "rhythm" / f"ptbxl_rhythm_{split}.csv", head,
                   [row(i) for i in which])
    icbeb = ["patient_id", "ecg_id", "filename", "validation", "age", "sex", "scp_codes", "AFIB"]
    for split, which in {"train": ["A0001", "A0002", "A0003", "A0004", "A0005", "A0006"],
                         "val": ["A0007", "A0008", "A0009"],
                         "test": ["A0010", "A0011", "A0012", "A9999"]}.items():
        _write_csv(splits / "icbeb" / f"icbeb_{split}.csv", icbeb,
                   [[k, k, rid, False, 50.0, 0, "{}", 0] for k, rid in enumerate(which)])
    out = tmp_path / "merl"
    table = bt.run(config, {"mu": ckpt}, out, datasets="ptbxl/rhythm,cpsc2018,chapman_shaoxing",
                   splits_dir=str(splits))
    by_key = {b["key"]: b for b in table["benchmarks"]}
    rhythm = by_key["ptbxl_rhythm"]
    assert rhythm["listed"] == {"train": 4, "val": 2, "test": 4}
    assert rhythm["missing"] == {"train": 1, "val": 0, "test": 1}
    assert rhythm["n"] == {"train": 3, "val": 2, "test": 3}
    # A0010's codes map to no CPSC class (the build skipped it), A9999 does not exist
    assert by_key["cpsc2018"]["missing"] == {"train": 0, "val": 0, "test": 2}
    assert by_key["cpsc2018"]["n"] == {"train": 6, "val": 3, "test": 2}
    # CSN has no MERL file here: skipped with the reason, the rest evaluated
    assert [s["benchmark"] for s in table["skipped"]] == ["csn"]
    assert "chapman/chapman_train.csv" in table["skipped"][0]["reason"]
    # the zero-shot cell is the AUROC of exactly those records (ours labels, by id)
    every = [eval_data.load_split(config, "ptbxl/500hz", s, label_set="rhythm", evidence=False,
                                  ids=True) for s in ("train", "validation", "test")]
    pos = {rid: (k, i) for k, d in enumerate(every) for i, rid in enumerate(d.ids)}
    pick = [pos[r] for r in ("3", "6", "7")]
    test = eval_data.EvalData(
        np.stack([every[k].ecg[i] for k, i in pick]),
        np.stack([every[k].lead_observed[i] for k, i in pick]),
        np.stack([every[k].labels[i] for k, i in pick]), every[0].class_names,
        every[0].prompts, time_observed=np.stack([every[k].time_observed[i] for k, i in pick]))
    want = _zero_shot(spec, test, bool(config.eval.center_prompts))
    assert np.isfinite(want)
    assert abs(table["cells"]["mu"]["ptbxl_rhythm"]["zero-shot"] - want) < 1e-5
    md = (out / "benchmark_table.md").read_text()
    assert "train: 3 of 4 ids found" in md and "## Skipped (1)" in md


def test_select_parses_names_and_label_sets(tmp_path):
    keys = lambda sel: [(b.key, d) for b, d in sel]  # noqa: E731
    assert keys(bt.select(None, None, 100))[0] == ("ptbxl_super", "ptbxl/100hz")
    assert keys(bt.select("ptbxl/rhythm,cpsc2018/60s", None, 500)) == [
        ("ptbxl_rhythm", "ptbxl/500hz"), ("cpsc2018", "cpsc2018/60s")]
    assert keys(bt.select("ptbxl/100hz", "form,rhythm", 500)) == [
        ("ptbxl_form", "ptbxl/100hz"), ("ptbxl_rhythm", "ptbxl/100hz")]
    with pytest.raises(ValueError, match="label sets are"):
        bt.select(None, "rythm", 500)
    with pytest.raises(ValueError, match="not one of the benchmark corpora"):
        bt.select("synthetic_ecg", None, 500)
    assert [bt.record_id(v) for v in ("8", "8.0", "A0001",
                                      "/chapman/WFDBRecords/44/448/JS44279.mat")] == [
        "8", "8", "A0001", "JS44279"]
    _write_csv(str(tmp_path / "x.csv"), ["ecg_path", "SR"], [["/c/WFDBRecords/01/010/JS1.mat", 1]])
    assert bt.read_split_ids(str(tmp_path / "x.csv"), "ecg_path") == ["JS1"]
    with pytest.raises(ValueError, match="no 'filename' column"):
        bt.read_split_ids(str(tmp_path / "x.csv"), "filename")


@pytest.mark.slow
def test_the_command_lists_unbuilt_benchmarks_as_skipped(world, tmp_path):
    _, ckpt, _ = world
    empty = tmp_path / "nothing_built"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "scar_jax.main", "benchmark_table",
         "--config=configs/scar.py:runlocal,text=random-tiny", f"--checkpoint=mu={ckpt}",
         f"--data_dir={empty}", f"--out={tmp_path}/out"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 benchmarks evaluated, 6 skipped" in proc.stdout
    table = json.loads((tmp_path / "out" / "benchmark_table.json").read_text())
    assert [s["dataset"] for s in table["skipped"]] == ["ptbxl/100hz"] * 4 + [
        "cpsc2018", "chapman_shaoxing"]
    assert table["benchmarks"] == [] and table["cells"] == {"mu": {}}


@pytest.mark.slow
def test_grid_adds_the_missingness_rows_and_each_benchmark_report(world, tmp_path):
    config, ckpt, _ = world
    cfg = config.copy_and_resolve_references()
    ev = cfg.eval
    ev.lead_drop, ev.subsets, ev.temporal, ev.joint = (6,), ("I+II",), (0.5,), ()
    ev.rhos, ev.adv_units, ev.adv_modes, ev.class_rhos = (0.2,), ("lead",), ("whitebox",), ()
    out = tmp_path / "grid"
    table = bt.run(cfg, {"mu": ckpt}, out, datasets="ptbxl/superdiagnostic", grid=True)
    grid = table["missingness"]["mu"]["ptbxl_super"]
    assert {"clean", "lead_drop/k6", "subset/I+II", "temporal/r0.5", "random/lead/rho0.2",
            "adversarial/whitebox/lead/rho0.2"} <= set(grid)
    # the table's zero-shot cell is the grid's clean row, and the report is the eval command's
    assert grid["clean"] == table["cells"]["mu"]["ptbxl_super"]["zero-shot"]
    saved = json.loads((out / "ptbxl_super" / "results.json").read_text())
    res = saved["ptbxl/500hz/superdiagnostic"]["models"]["mu"]
    want = grid["lead_drop/k6"]
    assert res["zeroshot"]["lead_drop/k6"]["auroc"] == pytest.approx(want, abs=1e-12)
    assert set(res["linear_probe"]) == {"0.01", "0.1", "1"}
    md = (out / "benchmark_table.md").read_text()
    assert "under missingness" in md and "| lead_drop/k6 |" in md
