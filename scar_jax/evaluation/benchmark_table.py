"""The six-benchmark table: every checkpoint on every built benchmark, in the layout peers publish.

    python -m scar_jax.main benchmark_table --config=configs/scar.py \
        --checkpoint=scar=RUN_A,merl=RUN_B --data_dir=TFDS_DIR --out=DIR \
        [--splits_dir=MERL/finetune/data_split] [--grid] [--dataset=...] [--label_set=...]

The benchmarks are the standard ECG zero-shot benchmark (METHOD §1.6): PTB-XL's four label
sets (super, sub, form, rhythm), CPSC2018 and Chapman-Shaoxing-Ningbo (CSN). For each one that
is built in the data folder, `run.evaluate` (the eval command's grid) scores every checkpoint:
zero-shot macro AUROC on the test split and the linear probe at 1 %, 10 % and 100 % of the
training labels (C chosen on the validation split); with `grid`, the whole missingness grid of
config.eval as well (its full report per benchmark in OUT/<benchmark>/). A benchmark that is
not built (or built by an older builder, or at another rate or length than config.input) is
listed as skipped with the reason, never a crash.

Splits: the builders' own (PTB-XL strat_fold 1-8/9/10; CPSC2018 and CSN seeded 70/10/20), or
with `splits_dir` the train/val/test CSVs MERL published (MERL's repository,
finetune/data_split/): records are assigned to splits by id from those files (PTB-XL `ecg_id`,
CPSC2018 `filename`, CSN the stem of `ecg_path`); ids the built dataset lacks are counted and
reported. Labels and classes stay ours (exact SNOMED matching for CSN: data/builders).

Writes OUT/benchmark_table.md and OUT/benchmark_table.json: rows are the methods, columns each
benchmark's linear probe at 1 / 10 / 100 % and zero-shot, plus the zero-shot mean, and a
reference row of MERL's published numbers (`MERL_PUBLISHED`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
from absl import logging

from scar_jax.data import names as names_lib
from scar_jax.evaluation import data as data_lib
from scar_jax.evaluation import run as run_lib
from scar_jax.evaluation import zeroshot

FRACTIONS = (0.01, 0.1, 1.0)
COLUMNS = ("1%", "10%", "100%", "zero-shot")  # per benchmark; probe fractions, then zero-shot
MERL_SPLITS = ("train", "val", "test")  # MERL's CSV suffixes, for config.eval's three splits


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One column group: a corpus (and PTB-XL label set) and where MERL's split CSVs lie."""

    key: str  # short name, the folder of its grid report
    title: str  # the column header peers use
    corpus: str  # builder
    label_set: str | None  # PTB-XL label set (builder feature labels_<set>)
    merl_split: str  # <splits_dir>/<merl_split>_{train,val,test}.csv
    merl_id: str  # the CSV column that holds the record id


BENCHMARKS = (
    Benchmark("ptbxl_super", "PTBXL-Super", "ptbxl", "superdiagnostic",
              "ptbxl/super_class/ptbxl_super_class", "ecg_id"),
    Benchmark("ptbxl_sub", "PTBXL-Sub", "ptbxl", "subdiagnostic",
              "ptbxl/sub_class/ptbxl_sub_class", "ecg_id"),
    Benchmark("ptbxl_form", "PTBXL-Form", "ptbxl", "form", "ptbxl/form/ptbxl_form", "ecg_id"),
    Benchmark("ptbxl_rhythm", "PTBXL-Rhythm", "ptbxl", "rhythm", "ptbxl/rhythm/ptbxl_rhythm",
              "ecg_id"),
    Benchmark("cpsc2018", "CPSC2018", "cpsc2018", None, "icbeb/icbeb", "filename"),
    Benchmark("csn", "CSN", "chapman_shaoxing", None, "chapman/chapman", "ecg_path"),
)

# MERL's published macro AUROC (%), Liu et al., "Zero-Shot ECG Classification with Multimodal
# Learning and Test-time Clinical Knowledge Enhancement", ICML 2024 (arXiv 2403.06659).
# Only what could be read here is filled in; every other cell is '–' (None), not a guess:
# - MERL_ZERO_SHOT_MEAN 75.2: the six-dataset average zero-shot AUC stated in the paper's
#   abstract, read in the PMLR v235 PDF
#   (https://raw.githubusercontent.com/mlresearch/v235/main/assets/liu24bg/liu24bg.pdf) and on
#   https://openreview.net/forum?id=ZvJ2lQQKjz.
# - "1%" (five benchmarks): the MERL row of the paper's Table 1 (linear probe, 1 % of labels) as
#   listed on https://www.wizwand.com/paper/68fa73f11e209131cea5f04f, a secondary index of the
#   paper (it gives PTBXL-Sub as 0.649, i.e. 64.90). No CPSC2018 1 % cell there.
# - "10%", "100%" and every per-dataset "zero-shot" cell (Tables 1 and 2): '–'. The tables
#   themselves (MERL's, or a later paper's verbatim MERL row) could not be read from this
#   machine's stored copies, which hold only the opening of each paper. Fill them from the paper.
MERL_SOURCE = ("MERL (Liu et al., ICML 2024, arXiv 2403.06659): zero-shot mean 75.2 from the "
               "paper's abstract (PMLR v235 PDF, raw.githubusercontent.com/mlresearch/v235/main/"
               "assets/liu24bg/liu24bg.pdf); linear probe 1 % from its Table 1 as listed by "
               "www.wizwand.com/paper/68fa73f11e209131cea5f04f (secondary); other cells '–' "
               "(not read here)")
MERL_PUBLISHED: dict[str, dict[str, float]] = {
    "ptbxl_super": {"1%": 82.39},
    "ptbxl_sub": {"1%": 64.90},
    "ptbxl_form": {"1%": 58.26},
    "ptbxl_rhythm": {"1%": 53.33},
    "csn": {"1%": 66.60},
}
MERL_ZERO_SHOT_MEAN = 75.2


def select(datasets: str | Sequence[str] | None, label_sets: str | Sequence[str] | None,
           sample_rate: int) -> list[tuple[Benchmark, str]]:
    """(benchmark, dataset name) pairs to evaluate, from --dataset and --label_set.

    Default: all six, PTB-XL at the config's rate ('ptbxl/500hz' or 'ptbxl/100hz'). Names are
    parsed by scar_jax.data.names: 'ptbxl[/<config>]' means its label sets (all four, or those
    of `label_sets`), 'ptbxl/<label set>' one of them; 'cpsc2018[/<config>]' and
    'chapman_shaoxing[/<config>]' their benchmark.
    """
    ptbxl_default = f"ptbxl/{sample_rate}hz" if sample_rate in (100, 500) else "ptbxl"
    names = _split(datasets) or [ptbxl_default, "cpsc2018", "chapman_shaoxing"]
    sets = _split(label_sets)
    by_set = {b.label_set: b for b in BENCHMARKS if b.corpus == "ptbxl"}
    unknown = [s for s in sets if s not in by_set]
    if unknown:
        raise ValueError(f"--label_set {unknown}: PTB-XL's label sets are {sorted(by_set)}.")
    out: list[tuple[Benchmark, str]] = []
    for name in names:
        parsed = names_lib.parse(name)
        if parsed.builder == "ptbxl":
            if parsed.config in by_set:  # 'ptbxl/rhythm': a label set of the default config
                base = dataclasses.replace(names_lib.parse(ptbxl_default),
                                           version=parsed.version)
                out.append((by_set[parsed.config], str(base)))
            else:
                out += [(by_set[s], str(parsed)) for s in (sets or by_set)]
            continue
        found = [b for b in BENCHMARKS if b.corpus == parsed.builder]
        if not found:
            raise ValueError(
                f"--dataset {name!r} is not one of the benchmark corpora "
                f"({', '.join(sorted({b.corpus for b in BENCHMARKS}))}).")
        out.append((found[0], str(parsed)))
    return out


def _split(value: str | Sequence[str] | None) -> list[str]:
    """'a,b' or ['a', 'b'] -> ['a', 'b'] (empty items dropped)."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [v.strip() for v in items if v.strip()]


def unavailable(config: ml_collections.ConfigDict, dataset: str,
                data_dir: str | None) -> str | None:
    """Why `dataset` cannot be evaluated with `config` (not built, stale, other rate or
    length), or None when it can."""
    from scar_jax.data import pipeline

    try:
        builder = pipeline.prepared_builder(dataset, data_dir)
    except (FileNotFoundError, pipeline.StaleDatasetError) as e:
        return str(e)
    try:
        pipeline.check_input_config(config.input, builder.info)
    except ValueError as e:
        return str(e)
    return None


def record_id(value: Any) -> str:
    """A split CSV's id cell -> our record id: '8' / '8.0' -> '8' (PTB-XL ecg_id), 'A0001',
    '/chapman/WFDBRecords/01/010/JS00001.mat' -> 'JS00001' (the file stem)."""
    text = os.path.splitext(os.path.basename(str(value).strip()))[0]
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def read_split_ids(path: str, column: str) -> list[str]:
    """The record ids of one MERL split CSV (column `column`), in file order (local or gs://)."""
    from etils import epath

    reader = csv.DictReader(io.StringIO(epath.Path(path).read_text(encoding="utf-8-sig")))
    if column not in (reader.fieldnames or []):
        raise ValueError(f"{path} has no {column!r} column (its columns: "
                         f"{reader.fieldnames}); is it one of MERL's split files?")
    return [record_id(row[column]) for row in reader]


def load_splits(config: ml_collections.ConfigDict, bench: Benchmark, dataset: str,
                data_dir: str | None, splits_dir: str | None,
                text_checkpoint: str | None = None):
    """(train, val, test) EvalData of one benchmark and how they were split (a JSON-able dict).

    Without splits_dir: the built splits config.eval.{train_split, val_split, split}. With
    it: every built record, reassigned by id to MERL's train/val/test CSVs; `missing` counts
    the CSV ids the built dataset lacks. config.eval.max_examples caps the test split.
    """
    ev = config.eval
    ours = (ev.train_split, ev.val_split, ev.split)
    load = lambda split, **kw: data_lib.load_split(  # noqa: E731
        config, dataset, split, data_dir=data_dir, label_set=bench.label_set, evidence=False,
        **kw)
    if not splits_dir:
        train, val = load(ours[0]), load(ours[1])
        test = load(ours[2], text_checkpoint=text_checkpoint)
        parts, how = (train, val, test), {"source": "builder", "splits": list(ours)}
    else:
        files = [os.path.join(splits_dir, f"{bench.merl_split}_{s}.csv") for s in MERL_SPLITS]
        from scar_jax.data import pipeline

        built = list(pipeline.prepared_builder(dataset, data_dir).info.splits.keys())
        every = data_lib.concat([load(s, ids=True, text_checkpoint=text_checkpoint)
                                 for s in built])
        row_of = {rid: i for i, rid in enumerate(every.ids)}
        parts, missing, listed = [], {}, {}
        for split, path in zip(MERL_SPLITS, files):
            ids = read_split_ids(path, bench.merl_id)
            rows = [row_of[i] for i in ids if i in row_of]
            listed[split], missing[split] = len(ids), len(ids) - len(rows)
            if missing[split]:
                logging.warning("%s: %d of the %d ids of %s are not in the built %s (left out)",
                                bench.title, missing[split], len(ids), path, dataset)
            parts.append(data_lib.take(every, np.asarray(rows, np.int64)))
        how = {"source": "merl_csv", "files": files, "listed": listed, "missing": missing}
    train, val, test = parts
    test = data_lib.head(test, int(ev.max_examples))
    how["n"] = {"train": len(train), "val": len(val), "test": len(test)}
    return train, val, test, how


def table_eval_config(ev: ml_collections.ConfigDict, grid: bool) -> ml_collections.ConfigDict:
    """config.eval for the table: the probe at 1/10/100 %; without `grid`, the clean
    condition only (no missingness, no class-level removal, no mask probe)."""
    out = ml_collections.ConfigDict(ev.to_dict())
    out.probe, out.probe_fractions, out.probe_random_init = True, FRACTIONS, False
    if not grid:
        out.lead_drop, out.subsets, out.temporal, out.joint = (), (), (), ()
        out.rhos, out.adv_units, out.adv_modes, out.class_rhos = (), (), (), ()
        out.mask_probe, out.oracle, out.timing_reps = False, False, 1
    return out


def run(
    config: ml_collections.ConfigDict,
    checkpoints: Mapping[str, Any],
    out_dir: str | os.PathLike,
    *,
    data_dir: str | None = None,
    datasets: str | Sequence[str] | None = None,
    label_sets: str | Sequence[str] | None = None,
    splits_dir: str | None = None,
    grid: bool = False,
) -> dict[str, Any]:
    """Evaluate {name: checkpoint folder | variables | (config, variables)} on every built
    benchmark; writes OUT/benchmark_table.{md,json} (and with grid, OUT/<benchmark>/) and
    returns the table (the JSON's content)."""
    from scar_jax.evaluation import report

    if not checkpoints:
        raise ValueError("benchmark_table needs at least one checkpoint.")
    data_dir = data_dir or config.input.data_dir or None
    models = [run_lib.model_spec(name, config, src) for name, src in checkpoints.items()]
    ev = table_eval_config(config.eval, grid)
    reference = None
    if grid and config.eval.reference:
        reference = run_lib.model_spec("reference", config, config.eval.reference)
    table: dict[str, Any] = {
        "methods": [m.name for m in models], "columns": list(COLUMNS), "benchmarks": [],
        "cells": {m.name: {} for m in models}, "skipped": [], "grid": grid,
        "reference": {"name": "MERL (published)", "source": MERL_SOURCE,
                      "cells": MERL_PUBLISHED, "zero_shot_mean": MERL_ZERO_SHOT_MEAN},
    }
    if grid:
        table["missingness"] = {m.name: {} for m in models}
    for bench, dataset in select(datasets, label_sets, int(config.input.sample_rate)):
        reason = unavailable(config, dataset, data_dir)
        done = [b["dataset"] for b in table["benchmarks"] if b["key"] == bench.key]
        if reason is None and done:
            raise ValueError(f"--dataset names {bench.title} twice ({done[0]} and {dataset}, "
                             "both built); pass one of them.")
        if reason is None and splits_dir:
            from etils import epath

            lacking = [p for p in (os.path.join(splits_dir, f"{bench.merl_split}_{s}.csv")
                                   for s in MERL_SPLITS) if not epath.Path(p).exists()]
            if lacking:
                reason = f"no MERL split file {', '.join(lacking)}"
        if reason is not None:
            logging.warning("benchmark %s (%s) skipped: %s", bench.title, dataset, reason)
            table["skipped"].append({"benchmark": bench.key, "title": bench.title,
                                     "dataset": dataset, "reason": reason})
            continue
        text_ckpt = models[0].text_checkpoint if grid else None
        train, val, test, how = load_splits(config, bench, dataset, data_dir, splits_dir,
                                            text_ckpt)
        probe_data, note = (train, val), None
        if not zeroshot.valid_classes(val.labels).any() or not len(train):
            probe_data, note = None, ("linear probe not run: the validation split has no class "
                                      "with both positives and negatives")
            logging.warning("%s: %s", bench.title, note)
        logging.info("benchmark %s (%s): %s", bench.title, dataset, how["n"])
        results, plots = run_lib.evaluate(models, test, ev, reference=reference,
                                          probe_data=probe_data, rank_data=val if grid else None)
        entry = {"key": bench.key, "title": bench.title, "dataset": dataset,
                 "label_set": bench.label_set, "classes": list(test.class_names),
                 "skipped_classes": results["skipped_classes"], **how}
        if note:
            entry["note"] = note
        table["benchmarks"].append(entry)
        for m in models:
            res = results["models"][m.name]
            cells = {"zero-shot": res["zeroshot"]["clean"]["auroc"]}
            for frac in FRACTIONS:
                probe = res.get("linear_probe", {}).get(f"{frac:g}")
                cells[f"{frac * 100:g}%"] = (probe["test"]["clean"]["auroc"] if probe
                                             else float("nan"))
            table["cells"][m.name][bench.key] = cells
            if grid:
                table["missingness"][m.name][bench.key] = {
                    c: v["auroc"] for c, v in res["zeroshot"].items()}
        if grid:
            name = dataset + (f"/{bench.label_set}" if bench.label_set else "")
            results.update(dataset=name, split=how.get("splits", how["source"]))
            report.write(os.path.join(os.fspath(out_dir), bench.key), {name: results},
                         {name: plots}, patch_size=models[0].model.ecg.patch_size,
                         sample_rate=test.sample_rate)
    logging.info("benchmark table: %d evaluated, %d skipped", len(table["benchmarks"]),
                 len(table["skipped"]))
    write(out_dir, table)
    return table


def zero_shot_mean(cells: Mapping[str, Mapping[str, float]]) -> float:
    """Mean zero-shot AUROC over the benchmarks with a finite one (NaN when none)."""
    vals = [c["zero-shot"] for c in cells.values()
            if c["zero-shot"] is not None and math.isfinite(c["zero-shot"])]
    return float(np.mean(vals)) if vals else float("nan")


def _pct(value: float | None) -> str:
    """AUROC in [0, 1] -> '87.12'; missing or NaN -> '–'."""
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def markdown(table: Mapping[str, Any]) -> str:
    """The table as markdown: methods (and MERL's published row) x benchmark columns."""
    benches = {b.key: b for b in BENCHMARKS}
    shown = [b["key"] for b in table["benchmarks"]]
    header = ["method"] + [f"{benches[k].title} {c}" for k in shown for c in COLUMNS]
    header.append("zero-shot mean")
    rows = []
    for name in table["methods"]:
        cells = table["cells"][name]
        rows.append([name] + [_pct(cells[k][c]) for k in shown for c in COLUMNS]
                    + [_pct(zero_shot_mean(cells))])
    ref = table["reference"]
    merl = [ref["name"]]
    for k in shown:
        for c in COLUMNS:
            v = ref["cells"].get(k, {}).get(c)
            merl.append("–" if v is None else f"{v:.2f}")
    merl.append(f"{ref['zero_shot_mean']:.2f}" if len(shown) == len(BENCHMARKS) else "–")
    rows.append(merl)
    lines = ["# Six-benchmark table", "",
             "Macro AUROC (%) on each benchmark's test split: linear probe on frozen pooled "
             "features at 1 / 10 / 100 % of the training labels (C chosen on validation), and "
             "zero-shot (class prompts). '–': not run or not available.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"Reference row: {ref['source']}. A method's zero-shot mean is over the "
              "benchmarks evaluated here; MERL's is over all six (shown only when all six were "
              "evaluated).", "", "## Splits", ""]
    for b in table["benchmarks"]:
        n = b["n"]
        where = ("the builder's splits" if b["source"] == "builder" else
                 "MERL's split CSVs (" + ", ".join(
                     f"{s}: {b['listed'][s] - b['missing'][s]} of {b['listed'][s]} ids found"
                     for s in MERL_SPLITS) + ")")
        lines.append(f"- {benches[b['key']].title} ({b['dataset']}): train {n['train']}, "
                     f"val {n['val']}, test {n['test']} records, {len(b['classes'])} classes "
                     f"({len(b['skipped_classes'])} without both labels in test); {where}"
                     + (f"; {b['note']}" if b.get("note") else "") + ".")
    lines += ["", f"## Skipped ({len(table['skipped'])})", ""]
    lines += [f"- {s['title']} ({s['dataset']}): {s['reason']}" for s in table["skipped"]]
    if not table["skipped"]:
        lines.append("- none")
    if table.get("missingness"):
        lines += ["", "## Zero-shot AUROC (%) under missingness", "",
                  "Each benchmark's full grid report is in its folder here.", ""]
        for name, per in table["missingness"].items():
            if not per:
                continue
            conds = list(next(iter(per.values())))
            lines += [f"### {name}", "", "| condition | " + " | ".join(
                benches[k].title for k in per) + " |", "|" + "---|" * (len(per) + 1)]
            lines += ["| " + c + " | " + " | ".join(_pct(per[k].get(c)) for k in per) + " |"
                      for c in conds]
            lines.append("")
    return "\n".join(lines) + "\n"


def write(out_dir: str | os.PathLike, table: Mapping[str, Any]) -> None:
    """OUT/benchmark_table.json (NaN as null) and OUT/benchmark_table.md (local or gs://)."""
    from etils import epath

    from scar_jax.evaluation import report

    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(report._jsonable(table)))
    (out / "benchmark_table.json").write_text(json.dumps(clean, indent=1))
    (out / "benchmark_table.md").write_text(markdown(clean))
