r"""Records/s of the grain pipeline from ArrayRecord vs reading the same records from WFDB files.

  python -m scar_jax.benchmarks.pipeline_io [--records 2000] [--dataset synthetic_ecg/500hz]
      [--data_dir DIR] [--batch 64]

Takes the first N records of the dataset's train split (built first into a temp folder
when `--data_dir` holds no copy), writes each as a WFDB record (`wfdb.wrsamp`, 16-bit, the
same int16 counts and scale), then times in one run:

  arrayrecord: make_dataset (read, int16 -> mV, normalise, batch), N records;
  wfdb:        wfdb.rdsamp per record + the same lead reordering, normalisation and batching.

and prints one table with records/s and the ratio (target >= 10x).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings

import numpy as np
from absl import app, flags, logging

from scar_jax.data import pipeline, preprocessing
from scar_jax.leads import LEAD_NAMES

_RECORDS = flags.DEFINE_integer("records", 2000, "Records read by each reader.")
_DATASET = flags.DEFINE_string("dataset", "synthetic_ecg/500hz", "TFDS dataset/config.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the dataset is built (else a temp dir).")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size of both readers.")
_NORMALIZE = flags.DEFINE_string("normalize", "minmax", "minmax | zscore")


def _ensure_built(dataset: str, data_dir: str | None, records: int, tmp: str) -> tuple[str, str]:
    """(dataset, data_dir) with a built copy; builds `records` train records into tmp if needed."""
    if data_dir:
        return dataset, data_dir
    from scar_jax.data import build

    out = os.path.join(tmp, "tfds")
    sizes = {"num_train": records, "num_validation": 0, "num_test": 0}
    start = time.perf_counter()
    info = build.build_dataset(dataset, data_dir=out, config_kwargs=sizes)
    logging.info("built %s in %.1f s", info.full_name, time.perf_counter() - start)
    return f"{info.name}/{info.config_name}", out


def write_wfdb(source, n: int, folder: str) -> list[str]:
    """Writes records 0..n-1 of `source` as 16-bit WFDB files in `folder`; returns their names."""
    import wfdb

    names = []
    for i in range(n):
        ex = source[i]
        counts = np.asarray(ex["ecg"], np.int16)
        scale = float(ex["ecg_scale"])
        name = f"r{i:06d}"
        wfdb.wrsamp(
            name,
            fs=int(ex.get("source_rate", 500)),
            units=["mV"] * len(LEAD_NAMES),
            sig_name=list(LEAD_NAMES),
            d_signal=counts,
            fmt=["16"] * len(LEAD_NAMES),
            adc_gain=[1.0 / scale] * len(LEAD_NAMES),
            baseline=[0] * len(LEAD_NAMES),
            write_dir=folder,
        )
        names.append(os.path.join(folder, name))
    return names


def time_arrayrecord(input_config, n: int, batch: int) -> tuple[float, float, int]:
    """(wall s, CPU s, records) to read n records through make_dataset (eval: no shuffle)."""
    ds = pipeline.make_dataset(
        input_config, "train", global_batch_size=batch, seed=0, train=False,
        process_index=0, process_count=1,
    )
    it = iter(ds)
    start, cpu = time.perf_counter(), time.process_time()
    seen = 0
    for _ in range(math.ceil(n / batch)):
        b = next(it)
        seen += int(b["valid"].sum())
    return time.perf_counter() - start, time.process_time() - cpu, seen


def time_wfdb(paths: list[str], observed: np.ndarray, t: int, batch: int, kind: str):
    """(wall s, CPU s, records) for rdsamp + reorder + normalise + batch of every path."""
    import wfdb

    start, cpu = time.perf_counter(), time.process_time()
    for lo in range(0, len(paths), batch):
        rows = []
        for k, path in enumerate(paths[lo : lo + batch]):
            signal, fields = wfdb.rdsamp(path)
            x, _ = preprocessing.reorder_leads(signal, fields["sig_name"])
            x, valid = preprocessing.crop_or_pad(x, t)
            rows.append(preprocessing.normalize(x, observed[lo + k], valid, kind))
        np.stack(rows)
    return time.perf_counter() - start, time.process_time() - cpu, len(paths)


def main(argv: list[str]) -> None:
    """Builds / reads the corpus, writes WFDB copies, times both readers, prints the table."""
    del argv
    warnings.filterwarnings("ignore", module="wfdb")
    from scar_jax import config_files

    with tempfile.TemporaryDirectory() as tmp:
        dataset, data_dir = _ensure_built(_DATASET.value, _DATA_DIR.value, _RECORDS.value, tmp)
        source, info = pipeline.load_source(dataset, "train", data_dir)
        rate, length = pipeline.dataset_rate_and_length(info)
        n = min(_RECORDS.value, len(source))
        cfg = config_files.load_family("scar").input
        cfg.dataset, cfg.data_dir, cfg.normalize = dataset, data_dir, _NORMALIZE.value
        cfg.sample_rate, cfg.seconds = rate or 500, length / (rate or 500)
        observed = np.stack([np.asarray(source[i]["lead_observed"], bool) for i in range(n)])
        wfdb_dir = os.path.join(tmp, "wfdb")
        os.makedirs(wfdb_dir)
        paths = write_wfdb(source, n, wfdb_dir)
        time_arrayrecord(cfg, _BATCH.value, _BATCH.value)  # warm-up: opens the shards
        ar_s, ar_cpu, ar_n = time_arrayrecord(cfg, n, _BATCH.value)
        wf_s, wf_cpu, wf_n = time_wfdb(paths, observed, length, _BATCH.value, _NORMALIZE.value)
        size = sum(os.path.getsize(os.path.join(wfdb_dir, f)) for f in os.listdir(wfdb_dir))
        print(f"{dataset}: {n} records of {length} x 12 at {rate} Hz, batch {_BATCH.value}"
              f", normalise {_NORMALIZE.value}; WFDB copy {size / 2**20:.1f} MiB; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print("| reader | records | wall s | records/s (wall) | CPU s | records/CPU-s |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, secs, cpu, count in (
            ("grain pipeline (ArrayRecord)", ar_s, ar_cpu, ar_n),
            ("wfdb.rdsamp + same preprocessing", wf_s, wf_cpu, wf_n),
        ):
            print(f"| {name} | {count} | {secs:.2f} | {count / secs:,.0f} | {cpu:.2f} | "
                  f"{count / cpu:,.0f} |")
        print(f"ratio ArrayRecord / WFDB: {(ar_n / ar_s) / (wf_n / wf_s):.1f}x wall, "
              f"{(ar_n / ar_cpu) / (wf_n / wf_cpu):.1f}x CPU (target >= 10x)")


if __name__ == "__main__":
    app.run(main)
