r"""Writes a MIMIC-IV-ECG 1.0-layout corpus of any size from the built-in simulator.

    python -m scar_jax.data.builders.mimic_iv_ecg.simulate --out=/tmp/mimic_sim \
        --num_records=50000 --workers=2

The layout is the real corpus's (DATASETS.md), so the real builder builds it unchanged:
`files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY.{hea,dat}` (WFDB format 16, MIMIC's lead order with
aVF before aVL, 500 Hz, 10 s), `record_list.csv` and `machine_measurements.csv` with the report
as machine statements in report_0..report_17 (one statement a cell, capitalised, acronyms in
upper case, 'EKG' on some carts, a '***' marker cell on some). The builder's cleaning
(`clean_report`) gives back the simulator's report without its final full stop.

Record i is a pure function of (seed, i): its signal and report are
`synthetic.generate_record(seed, 'train', i)` at 500 Hz; its subject and study ids are
bijections of i (five studies per subject, as MIMIC's ~800k ECGs of ~160k subjects), so any
worker count writes the same bytes. The work is spread over `workers` processes in chunks;
the CSVs are streamed in record order, so memory does not grow with the corpus. The signal
files are written by `write_format16` (the bytes `wfdb_common.write_wfdb` writes, ~100x
faster: wfdb.wrsamp spends ~0.13 s a record in pandas, which would make 50k records an
hour on 2 cores). The small committed fixture with every kind of broken record is
make_dummy_data.py's; this module writes clean corpora at scale.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import re
import time
from typing import Sequence

import numpy as np
from absl import logging

from scar_jax.data import synthetic
from scar_jax.data.builders.mimic_iv_ecg import make_dummy_data

RATE = 500
SECONDS = 10.0
STUDIES_PER_SUBJECT = 5
GAIN = 1000.0  # adc units per mV, as wfdb_common.write_wfdb
_ID_SPAN = 10_000_000  # subject ids 1xxxxxxx, study ids 4xxxxxxx (8 digits, as MIMIC's)
_SUBJECT_MUL, _STUDY_MUL = 7_919_993, 3_571_429  # odd, not multiples of 5: bijections mod 1e7
# How the machine writes words that the simulator writes in lower case.
_CASED = {
    "av": "AV", "a-v": "A-V", "avf": "aVF", "avl": "aVL", "lbbb": "LBBB", "rbbb": "RBBB",
    "pvcs": "PVCs", "qrs": "QRS", "st": "ST", "pr": "PR", "rsr": "RSR", "afib": "AFIB",
    "v1": "V1", "v5": "V5", "v6": "V6", "ii": "II", "iii": "III", "hr": "HR",
}
_WORD = re.compile(r"[A-Za-z0-9-]+")


def record_ids(index: int, seed: int = 0) -> tuple[int, int]:
    """(subject_id, study_id) of record `index`: distinct studies, 5 studies per subject."""
    if not 0 <= index < _ID_SPAN:
        raise ValueError(f"record index {index} outside [0, {_ID_SPAN}).")
    k = index // STUDIES_PER_SUBJECT
    subject = 10_000_000 + (k * _SUBJECT_MUL + seed) % _ID_SPAN
    study = 40_000_000 + (index * _STUDY_MUL + seed) % _ID_SPAN
    return subject, study


def machine_statements(report: str, rng: np.random.Generator) -> list[str]:
    """The simulator's report ('a. b. c.') -> report_0..17 cells, the way a cart writes them."""
    ekg = rng.random() < 0.1
    cells = []
    for part in report.rstrip(".").split(". "):
        words = _WORD.sub(lambda m: _CASED.get(m.group(0), m.group(0)), part)
        words = re.sub(r"\becg\b", "EKG" if ekg else "ECG", words)
        cells.append(words[:1].upper() + words[1:])
    if rng.random() < 0.05:
        cells.insert(0, "***")
    if len(cells) > 18:
        raise ValueError(f"report has {len(cells)} statements; MIMIC has 18 report columns.")
    return cells + [""] * (18 - len(cells))


def write_format16(record_path: str, signal_mv: np.ndarray, names: Sequence[str], rate: int,
                   gain: float = GAIN) -> None:
    """Writes '<record_path>.hea/.dat' (WFDB format 16, mV, baseline 0): the same bytes as
    `wfdb_common.write_wfdb(record_path, signal_mv, names, rate)`, without wfdb's overhead."""
    directory, name = os.path.split(record_path)
    os.makedirs(directory or ".", exist_ok=True)
    x = np.asarray(signal_mv, np.float64) * gain
    digital = np.where(np.isfinite(x), np.clip(np.rint(x), -32767, 32767), -32768)
    digital = digital.astype("<i2")
    checksums = digital.astype(np.int64).sum(0) % 65536
    lines = [f"{name} {len(names)} {rate} {digital.shape[0]}"]
    for j, lead in enumerate(names):
        lines.append(f"{name}.dat 16 {float(gain)}(0)/mV 16 0 {int(digital[0, j])} "
                     f"{int(checksums[j])} 0 {lead}")
    with open(record_path + ".dat", "wb") as f:
        f.write(digital.tobytes())
    with open(record_path + ".hea", "w") as f:
        f.write("\n".join(lines) + "\n")


def write_record(out: str, index: int, seed: int = 0) -> tuple[list, list]:
    """Writes record `index`'s WFDB files under `out`; returns its (record_list.csv row,
    machine_measurements.csv row)."""
    subject, study = record_ids(index, seed)
    rel = make_dummy_data._paths(subject, study)
    rec = synthetic.generate_record(seed, "train", index, sampling_rate=RATE, duration_s=SECONDS)
    write_format16(os.path.join(out, rel), rec.ecg[:, make_dummy_data.MIMIC_ORDER],
                   make_dummy_data.MIMIC_NAMES, RATE)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7, index]))
    minutes = index * 97 % (60 * 24 * 365)
    when = np.datetime64("2150-01-01T00:00") + np.timedelta64(minutes, "m")
    when = str(when).replace("T", " ") + ":00"
    rr = int(round(60_000 / rec.heart_rate))
    p_onset = 40
    qrs_onset = p_onset + int(round(rec.pr_ms))
    qrs_end = qrs_onset + int(round(rec.qrs_ms))
    measurements = [subject, study, str(6848 + index % 50), when,
                    *machine_statements(rec.report, rng), "0.5-150 Hz", "60 Hz notch",
                    rr, p_onset, p_onset + 100, qrs_onset, qrs_end, qrs_end + 300,
                    int(rng.integers(0, 90)), int(rng.integers(-30, 90)),
                    int(rng.integers(0, 90))]
    return [subject, study, str(study), when, rel], measurements


def _write_chunk(args: tuple[str, int, int, int]) -> tuple[list, list]:
    """Pool task: records [start, stop) of `out`; (record rows, measurement rows)."""
    out, start, stop, seed = args
    rows = [write_record(out, i, seed) for i in range(start, stop)]
    return [r for r, _ in rows], [m for _, m in rows]


def write_corpus(out: str, num_records: int, *, seed: int = 0, workers: int = 1,
                 chunk: int = 250) -> dict:
    """Writes the corpus of `num_records` records into `out` (workers processes); returns
    {'records', 'seconds'}."""
    os.makedirs(out, exist_ok=True)
    tasks = [(out, s, min(num_records, s + chunk), seed) for s in range(0, num_records, chunk)]
    t0 = time.perf_counter()
    done = 0
    with open(os.path.join(out, "record_list.csv"), "w", newline="", encoding="utf-8") as f_rec, \
            open(os.path.join(out, "machine_measurements.csv"), "w", newline="",
                 encoding="utf-8") as f_mm:
        w_rec, w_mm = csv.writer(f_rec), csv.writer(f_mm)
        w_rec.writerow(make_dummy_data.RECORD_LIST_COLUMNS)
        w_mm.writerow(make_dummy_data.MEASUREMENT_COLUMNS)
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap(_write_chunk, tasks) if pool else map(_write_chunk, tasks)
            for n, (recs, meas) in enumerate(results, start=1):
                w_rec.writerows(recs)
                w_mm.writerows(meas)
                done += len(recs)
                if n % 20 == 0 or done == num_records:
                    dt = time.perf_counter() - t0
                    logging.info("simulated MIMIC-IV-ECG: %d/%d records (%.0f records/s, "
                                 "%.0f s left)", done, num_records, done / dt,
                                 (num_records - done) * dt / done)
        finally:
            if pool:
                pool.close()
                pool.join()
    return {"records": num_records, "seconds": time.perf_counter() - t0}


def main(argv: Sequence[str]) -> None:
    """The command line (module docstring)."""
    del argv
    from absl import flags

    f = flags.FLAGS
    info = write_corpus(f.out, f.num_records, seed=f.seed, workers=f.workers)
    logging.info("wrote %d records into %s in %.1f s", info["records"], f.out, info["seconds"])


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("out", None, "Output folder (the corpus root).", required=True)
    flags.DEFINE_integer("num_records", 1000, "Number of records.", lower_bound=1)
    flags.DEFINE_integer("workers", max(1, os.cpu_count() or 1), "Processes.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Simulator seed.")
    app.run(main)
