"""Writes dummy_data/: MIMIC-IV-ECG 1.0's layout with synthetic signals, the pydicom ECG and
one record per kind of breakage.

Run from the repo root: python -m scar_jax.data.builders.mimic_iv_ecg.make_dummy_data
No patient data: ids, times and reports are invented. Records are written in MIMIC's lead
order (aVF before aVL). `write_corpus(out, n_good)` is also used by the tests to make
larger corpora (memory bound, resume).
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from scar_jax.data import preprocessing
from scar_jax.data.builders import wfdb_common

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data")
MIMIC_NAMES = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
MIMIC_ORDER = [preprocessing.LEAD_NAMES.index(n) for n in MIMIC_NAMES]
GOOD_REPORTS = [
    ["Sinus rhythm", "Possible left atrial abnormality", "Borderline ECG"],
    ["Sinus tachycardia", "Left axis deviation", "Abnormal ECG"],
    ["Atrial fibrillation with rapid ventricular response", "Nonspecific ST-T abnormality"],
    ["***", "Sinus bradycardia", "Otherwise normal EKG", ""],
    ["Sinus rhythm", "Normal ECG"],
    ["Sinus rhythm", "Left ventricular hypertrophy", "=-"],
]
RECORD_LIST_COLUMNS = ["subject_id", "study_id", "file_name", "ecg_time", "path"]
MEASUREMENT_COLUMNS = [
    "subject_id", "study_id", "cart_id", "ecg_time", *[f"report_{i}" for i in range(18)],
    "bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end",
    "p_axis", "qrs_axis", "t_axis",
]
# study suffix: (kind, report cells); every kind but 'repaired_nan' is broken.
BROKEN = {
    "truncated": ["Sinus rhythm", "Normal ECG", "truncated file"],
    "length_mismatch": ["Sinus rhythm", "Normal ECG", "longer file"],
    "nan": ["Sinus rhythm", "Normal ECG", "nan run"],
    "flat": ["Sinus rhythm", "Normal ECG", "flat lead"],
    "unknown_lead": ["Sinus rhythm", "Normal ECG", "mlii lead"],
    "wrong_lead_count": ["Sinus rhythm", "Normal ECG", "eleven leads"],
    "wrong_rate": ["Sinus rhythm", "Normal ECG", "half rate"],
    "missing_file": ["Sinus rhythm", "Normal ECG", "no dat file"],
    "missing_header": ["Sinus rhythm", "Normal ECG", "no files at all"],
    "unreadable_header": ["Sinus rhythm", "Normal ECG", "garbage header"],
    "empty_report": ["***", "", "=-"],
    "bad_encoding": ["Sinus rhythm", "Normal ECG", "caf\udce9 latin-1 byte"],
    "short_report": ["Normal ECG"],
    "missing_metadata": None,
    "repaired_nan": ["Sinus rhythm", "Normal ECG", "short nan gap"],
}


def _paths(subject: int, study: int) -> str:
    """files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY (MIMIC's path column)."""
    return f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"


def write_corpus(out: str, n_good: int = 8, broken: bool = True, seed: int = 0) -> dict:
    """Writes a corpus: n_good records (the first is the pydicom ECG) + the broken kinds.

    Returns {study_id: kind} ('good', 'pydicom' or a BROKEN key).
    """
    os.makedirs(out, exist_ok=True)
    records, measurements, kinds = [], [], {}
    items = [("pydicom" if i == 0 else "good", GOOD_REPORTS[i % len(GOOD_REPORTS)])
             for i in range(n_good)]
    if broken:
        items += list(BROKEN.items())
    for k, (kind, report) in enumerate(items):
        subject, study = 10000000 + 7 * (k // 2) + 3, 40000000 + 13 * k + seed
        rel = _paths(subject, study)
        path = os.path.join(out, rel)
        kinds[str(study)] = kind
        records.append([subject, study, str(study), "2150-01-01 00:00:00", rel])
        if report is not None:
            cells = report + [""] * (18 - len(report))
            measurements.append([subject, study, "6848", "2150-01-01 00:00:00"] + cells
                                + ["0.2-150 Hz", "60 Hz notch", 800, 40, 140, 180, 270, 600,
                                   60, 30, 45])
        if kind == "pydicom":
            sig, names, rate, _ = wfdb_common.pydicom_ecg()
            sig = preprocessing.resample(sig, rate, 500)
        else:
            sig = wfdb_common.synthetic_ecg(10, 500, seed=seed * 1000 + k)
        sig, names, rate = sig[:, MIMIC_ORDER], list(MIMIC_NAMES), 500
        if kind == "nan":
            sig[1000:1500, 7] = np.nan  # 1 s of NaN in V2 (repair limit 0.1 s)
        elif kind == "repaired_nan":
            sig[2000:2010, 8] = np.nan  # 20 ms: interpolated
        elif kind == "flat":
            sig[:, 8] = 0.1
        elif kind == "unknown_lead":
            names[1] = "MLII"
        elif kind == "wrong_lead_count":
            sig, names = sig[:, :11], names[:11]
        elif kind == "wrong_rate":
            sig, rate = sig[::2], 250
        if kind == "missing_header":
            continue
        wfdb_common.write_wfdb(path, sig, names, rate)
        if kind == "truncated":
            with open(path + ".dat", "r+b") as f:
                f.truncate(os.path.getsize(path + ".dat") // 2)
        elif kind == "length_mismatch":
            with open(path + ".dat", "ab") as f:
                f.write(b"\0" * 2 * 12 * 100)
        elif kind == "missing_file":
            os.remove(path + ".dat")
        elif kind == "unreadable_header":
            with open(path + ".hea", "w") as f:
                f.write("this is not a WFDB header\n")
    with open(os.path.join(out, "record_list.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RECORD_LIST_COLUMNS)
        w.writerows(records)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(MEASUREMENT_COLUMNS)
    w.writerows(measurements)
    with open(os.path.join(out, "machine_measurements.csv"), "wb") as f:
        f.write(buf.getvalue().encode("utf-8", errors="surrogateescape"))  # the non-UTF-8 byte
    return kinds


def main(out: str = HERE) -> None:
    """Writes the committed fixture: 8 good records + every broken kind."""
    write_corpus(out, n_good=8, broken=True)


if __name__ == "__main__":
    main()
