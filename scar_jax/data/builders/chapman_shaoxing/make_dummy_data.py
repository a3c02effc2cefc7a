"""Writes dummy_data/: Chapman-Shaoxing-Ningbo (ecg-arrhythmia 1.0.0) layout, synthetic signals.

Run from the repo root: python -m scar_jax.data.builders.chapman_shaoxing.make_dummy_data
WFDBRecords/01/010/JS00001..JS00016.{hea,mat} (Challenge-style .mat, 500 Hz, 10 s) and
ConditionNames_SNOMED-CT.csv. SR is on 10 records (so the default >= 10 config keeps one
class); JS00005 has a shuffled lead order; JS00016 has a code missing from the csv.
"""

from __future__ import annotations

import csv
import os

from scar_jax.data import preprocessing
from scar_jax.data.builders import wfdb_common

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data")
NAMES = list(preprocessing.LEAD_NAMES)
SHUFFLED = [1, 0, 2, 5, 4, 3, 6, 8, 7, 10, 9, 11]
# (acronym, full name, SNOMED-CT code): the subset of the corpus's condition list we use.
CONDITIONS = [
    ("1AVB", "1 degree atrioventricular block", "270492004"),
    ("2AVB", "2 degree atrioventricular block", "195042002"),
    ("3AVB", "3 degree atrioventricular block", "27885002"),
    ("AVB", "atrioventricular block", "233917008"),
    ("VB", "ventricular bigeminy", "11157007"),
    ("SB", "Sinus Bradycardia", "426177001"),
    ("SR", "Sinus Rhythm", "426783006"),
    ("AFIB", "Atrial Fibrillation", "164889003"),
    ("ST", "Sinus Tachycardia", "427084000"),
    ("AF", "Atrial Flutter", "164890007"),
    ("STTC", "ST-T Change", "428750005"),
    ("TWC", "T wave Change", "164934002"),
    ("RBBB", "right bundle branch block", "59118001"),
]
CODE = {a: c for a, _, c in CONDITIONS}
RECORDS = {
    "JS00001": ["SR"], "JS00002": ["AFIB"], "JS00003": ["AF"], "JS00004": ["SR", "1AVB"],
    "JS00005": ["SR", "STTC"], "JS00006": ["SB", "TWC"], "JS00007": ["SR", "RBBB"],
    "JS00008": ["AFIB", "STTC"], "JS00009": ["SR"], "JS00010": ["ST", "3AVB"],
    "JS00011": ["SR", "VB"], "JS00012": ["SR"], "JS00013": ["SR", "TWC"], "JS00014": ["SR"],
    "JS00015": ["SR", "2AVB"], "JS00016": ["SB", "999999999"],
}  # fmt: skip


def main(out: str = HERE) -> None:
    """Writes the fixture corpus into `out`."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "ConditionNames_SNOMED-CT.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Acronym Name", "Full Name", "Snomed_CT"])
        w.writerows(CONDITIONS)
    for i, (rid, acr) in enumerate(RECORDS.items()):
        sig = wfdb_common.synthetic_ecg(10, 500, seed=i)
        perm = SHUFFLED if rid == "JS00005" else list(range(12))
        dx = ",".join(CODE.get(a, a) for a in acr)
        wfdb_common.write_challenge_mat(
            os.path.join(out, "WFDBRecords", "01", "010", rid), sig[:, perm],
            [NAMES[j] for j in perm], 500,
            comments=["Age: 40", "Sex: Female", f"Dx: {dx}", "Rx: Unknown", "Hx: Unknown",
                      "Sx: Unknown"],
        )


if __name__ == "__main__":
    main()
