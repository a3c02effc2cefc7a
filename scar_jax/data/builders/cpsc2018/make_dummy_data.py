"""Writes dummy_data/: CPSC2018 in the Challenge 2020 layout (challenge/) and the original one.

Run from the repo root: python -m scar_jax.data.builders.cpsc2018.make_dummy_data
Synthetic signals only (no patient data). challenge/g1/A0001..A0012: .mat + .hea with
SNOMED #Dx; lengths 6-15 s; A0004 has a shuffled lead order; A0010's codes map to no class
(skipped as no_label). original/: REFERENCE.csv + A0001..A0010.mat (struct ECG, mV).
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from scar_jax.data import preprocessing
from scar_jax.data.builders import wfdb_common

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data")
NAMES = list(preprocessing.LEAD_NAMES)
SHUFFLED = [11, 10, 9, 8, 7, 6, 0, 1, 2, 3, 4, 5]
# id: (seconds, #Dx codes)
CHALLENGE = {
    "A0001": (10, "426783006"),
    "A0002": (6, "164889003,59118001"),
    "A0003": (15, "270492004"),
    "A0004": (8, "164909002"),
    "A0005": (12, "284470004,429622005"),
    "A0006": (7, "164884008"),
    "A0007": (9, "164931005"),
    "A0008": (11, "426783006"),
    "A0009": (6, "59118001,713427006"),
    "A0010": (10, "251146004"),
    "A0011": (10, "164889003"),
    "A0012": (20, "426783006"),
}
# id: (seconds, labels 1-9)
ORIGINAL = {
    "A0001": (6, [1]), "A0002": (6, [2, 5]), "A0003": (7, [3]), "A0004": (8, [7, 8, 9]),
    "A0005": (6, [6]), "A0006": (7, [4]), "A0007": (6, [1]), "A0008": (6, [2]),
    "A0009": (7, [5, 6]), "A0010": (6, [8]),
}  # fmt: skip


def main(out: str = HERE) -> None:
    """Writes both layouts into `out`."""
    for i, (rid, (sec, dx)) in enumerate(CHALLENGE.items()):
        sig = wfdb_common.synthetic_ecg(sec, 500, seed=i)
        perm = SHUFFLED if rid == "A0004" else list(range(12))
        wfdb_common.write_challenge_mat(
            os.path.join(out, "challenge", "g1", rid), sig[:, perm], [NAMES[j] for j in perm],
            500, comments=["Age: 50", "Sex: Male", f"Dx: {dx}", "Rx: Unknown", "Hx: Unknown"],
        )
    os.makedirs(os.path.join(out, "original"), exist_ok=True)
    rows = ["Recording,First_label,Second_label,Third_label"]
    for i, (rid, (sec, labels)) in enumerate(ORIGINAL.items()):
        sig = wfdb_common.synthetic_ecg(sec, 500, seed=100 + i)
        ecg = {"sex": "Female", "age": np.array([[60.0]]), "data": sig.T.astype(np.float32)}
        path = os.path.join(out, "original", rid + ".mat")
        scipy.io.savemat(path, {"ECG": ecg})
        with open(path, "r+b") as f:  # fixed MAT 5 header text (scipy writes today's date)
            f.write(b"MATLAB 5.0 MAT-file, written by make_dummy_data.py".ljust(116))
        rows.append(",".join([rid] + [str(v) for v in labels] + [""] * (3 - len(labels))))
    with open(os.path.join(out, "original", "REFERENCE.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
