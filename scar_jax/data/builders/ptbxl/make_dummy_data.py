"""Writes dummy_data/: PTB-XL 1.0.3's exact layout with synthetic signals and the pydicom ECG.

Run from the repo root: python -m scar_jax.data.builders.ptbxl.make_dummy_data
No patient data: signals are synthetic (plus pydicom's public test ECG); the metadata rows
are invented; scp_statements.csv holds PTB-XL's 71 SCP statements (public metadata).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from scar_jax.data import preprocessing
from scar_jax.data.builders import wfdb_common

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data")
PTBXL_NAMES = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]

# code: (description, diagnostic, form, rhythm, diagnostic_class, diagnostic_subclass)
_DIAG = {
    "NORM": ("normal ECG", "NORM", "NORM"),
    "IMI": ("inferior myocardial infarction", "MI", "IMI"),
    "ASMI": ("anteroseptal myocardial infarction", "MI", "AMI"),
    "ILMI": ("inferolateral myocardial infarction", "MI", "IMI"),
    "AMI": ("anterior myocardial infarction", "MI", "AMI"),
    "ALMI": ("anterolateral myocardial infarction", "MI", "AMI"),
    "INJAS": ("subendocardial injury in anteroseptal leads", "MI", "AMI"),
    "LMI": ("lateral myocardial infarction", "MI", "LMI"),
    "INJAL": ("subendocardial injury in anterolateral leads", "MI", "AMI"),
    "IPLMI": ("inferoposterolateral myocardial infarction", "MI", "IMI"),
    "IPMI": ("inferoposterior myocardial infarction", "MI", "IMI"),
    "INJIN": ("subendocardial injury in inferior leads", "MI", "IMI"),
    "INJLA": ("subendocardial injury in lateral leads", "MI", "AMI"),
    "PMI": ("posterior myocardial infarction", "MI", "PMI"),
    "INJIL": ("subendocardial injury in inferolateral leads", "MI", "IMI"),
    "NDT": ("non-diagnostic T abnormalities", "STTC", "STTC"),
    "NST_": ("non-specific ST changes", "STTC", "NST_"),
    "DIG": ("digitalis-effect", "STTC", "STTC"),
    "LNGQT": ("long QT-interval", "STTC", "STTC"),
    "ISC_": ("non-specific ischemic", "STTC", "ISC_"),
    "ISCAL": ("ischemic in anterolateral leads", "STTC", "ISCA"),
    "ISCIN": ("ischemic in inferior leads", "STTC", "ISCI"),
    "ISCIL": ("ischemic in inferolateral leads", "STTC", "ISCI"),
    "ISCAS": ("ischemic in anteroseptal leads", "STTC", "ISCA"),
    "ISCLA": ("ischemic in lateral leads", "STTC", "ISCA"),
    "ANEUR": ("ST-T changes compatible with ventricular aneurysm", "STTC", "STTC"),
    "EL": ("electrolytic disturbance or drug (former EDIS)", "STTC", "STTC"),
    "ISCAN": ("ischemic in anterior leads", "STTC", "ISCA"),
    "LAFB": ("left anterior fascicular block", "CD", "LAFB/LPFB"),
    "IRBBB": ("incomplete right bundle branch block", "CD", "IRBBB"),
    "1AVB": ("first degree AV block", "CD", "_AVB"),
    "IVCD": ("non-specific intraventricular conduction disturbance (block)", "CD", "IVCD"),
    "CRBBB": ("complete right bundle branch block", "CD", "CRBBB"),
    "CLBBB": ("complete left bundle branch block", "CD", "CLBBB"),
    "LPFB": ("left posterior fascicular block", "CD", "LAFB/LPFB"),
    "WPW": ("Wolf-Parkinson-White syndrome", "CD", "WPW"),
    "ILBBB": ("incomplete left bundle branch block", "CD", "ILBBB"),
    "3AVB": ("third degree AV block", "CD", "_AVB"),
    "2AVB": ("second degree AV block", "CD", "_AVB"),
    "LVH": ("left ventricular hypertrophy", "HYP", "LVH"),
    "LAO/LAE": ("left atrial overload/enlargement", "HYP", "LAO/LAE"),
    "RVH": ("right ventricular hypertrophy", "HYP", "RVH"),
    "RAO/RAE": ("right atrial overload/enlargement", "HYP", "RAO/RAE"),
    "SEHYP": ("septal hypertrophy", "HYP", "SEHYP"),
}
_FORM = {
    "NDT": "", "NST_": "", "DIG": "", "LNGQT": "", "ABQRS": "abnormal QRS",
    "PVC": "ventricular premature complex", "STD_": "non-specific ST depression",
    "VCLVH": "voltage criteria (QRS) for left ventricular hypertrophy",
    "QWAVE": "Q waves present", "LOWT": "low amplitude T-waves",
    "NT_": "non-specific T-wave changes", "PAC": "atrial premature complex",
    "LPR": "prolonged PR interval", "INVT": "inverted T-waves",
    "LVOLT": "low QRS voltages in the frontal and horizontal leads",
    "HVOLT": "high QRS voltage", "TAB_": "T-wave abnormality",
    "STE_": "non-specific ST elevation", "PRC(S)": "premature complex(es)",
}  # fmt: skip
_RHYTHM = {
    "SR": "sinus rhythm", "AFIB": "atrial fibrillation", "STACH": "sinus tachycardia",
    "SARRH": "sinus arrhythmia", "SBRAD": "sinus bradycardia",
    "PACE": "normal functioning artificial pacemaker", "SVARR": "supraventricular arrhythmia",
    "BIGU": "bigeminal pattern (unknown origin, SV or Ventricular)", "AFLT": "atrial flutter",
    "SVTAC": "supraventricular tachycardia", "PSVT": "paroxysmal supraventricular tachycardia",
    "TRIGU": "trigeminal pattern (unknown origin, SV or Ventricular)",
}  # fmt: skip

# ecg_id: (patient_id, strat_fold, scp_codes, report, lead order, signal source)
RECORDS = {
    1: (101, 3, {"NORM": 100.0, "SR": 0.0}, "sinusrhythmus normales ekg", "std", "pydicom"),
    2: (102, 1, {"IMI": 80.0, "ABQRS": 0.0, "SR": 0.0}, "sinus rhythm. inferior infarct", "std",
        "synthetic"),
    3: (103, 5, {"ASMI": 50.0, "LVH": 100.0, "AFIB": 0.0}, "atrial fibrillation", "shuffled",
        "synthetic"),
    4: (104, 8, {"PVC": 100.0, "SR": 0.0}, "sinus rhythm. pvc", "std", "synthetic"),
    5: (104, 2, {"SR": 0.0}, "sinus rhythm", "std", "synthetic"),
    6: (106, 9, {"NDT": 100.0, "SBRAD": 0.0}, "sinus bradycardia. t abnormal", "std",
        "synthetic"),
    7: (107, 9, {"CLBBB": 100.0, "1AVB": 100.0, "SR": 0.0}, "lbbb, av block i", "std",
        "synthetic"),
    8: (108, 10, {"ISCAL": 100.0, "LNGQT": 100.0}, "ischemia anterolateral", "std",
        "synthetic"),
    9: (109, 10, {"IRBBB": 100.0, "STACH": 0.0}, "sinus tachycardia. irbbb", "std",
        "synthetic"),
}  # fmt: skip
SHUFFLED = [5, 0, 11, 3, 7, 1, 10, 2, 9, 4, 8, 6]  # header column j holds standard lead SHUFFLED[j]


def statements() -> pd.DataFrame:
    """PTB-XL's scp_statements.csv (the columns the builder reads, 71 rows)."""
    rows = {}
    for code, (desc, cls, sub) in _DIAG.items():
        rows[code] = dict(description=desc, diagnostic=1.0, form=np.nan, rhythm=np.nan,
                          diagnostic_class=cls, diagnostic_subclass=sub)
    for code, desc in _FORM.items():
        row = rows.setdefault(code, dict(description=desc, diagnostic=np.nan, rhythm=np.nan,
                                         diagnostic_class=np.nan, diagnostic_subclass=np.nan))
        row["form"] = 1.0
    for code, desc in _RHYTHM.items():
        rows[code] = dict(description=desc, diagnostic=np.nan, form=np.nan, rhythm=1.0,
                          diagnostic_class=np.nan, diagnostic_subclass=np.nan)
    df = pd.DataFrame.from_dict(rows, orient="index")
    df["Statement Category"] = ""
    return df[["description", "diagnostic", "form", "rhythm", "diagnostic_class",
               "diagnostic_subclass", "Statement Category"]]


def signal_for(ecg_id: int, source: str) -> np.ndarray:
    """[5000, 12] mV at 500 Hz in standard lead order."""
    if source == "pydicom":
        sig, names, rate, _ = wfdb_common.pydicom_ecg()
        assert list(names) == list(preprocessing.LEAD_NAMES) and rate == 1000
        return preprocessing.resample(sig, 1000, 500)
    return wfdb_common.synthetic_ecg(10, 500, seed=ecg_id)


def main(out: str = HERE) -> None:
    """Writes the fixture corpus into `out`."""
    rows = []
    for ecg_id, (pid, fold, codes, report, order, source) in RECORDS.items():
        sig500 = signal_for(ecg_id, source)
        sig100 = preprocessing.resample(sig500, 500, 100)
        perm = SHUFFLED if order == "shuffled" else list(range(12))
        names = [PTBXL_NAMES[i] for i in perm]
        folder = f"{(ecg_id // 1000) * 1000:05d}"
        hr, lr = f"records500/{folder}/{ecg_id:05d}_hr", f"records100/{folder}/{ecg_id:05d}_lr"
        wfdb_common.write_wfdb(os.path.join(out, hr), sig500[:, perm], names, 500)
        wfdb_common.write_wfdb(os.path.join(out, lr), sig100[:, perm], names, 100)
        rows.append(dict(ecg_id=ecg_id, patient_id=float(pid), age=60.0, sex=ecg_id % 2,
                         height=np.nan, weight=np.nan, nurse=np.nan, site=0.0,
                         device="CS-12   E", recording_date="1990-01-01 00:00:00",
                         report=report, scp_codes=str(codes), heart_axis="",
                         strat_fold=fold, filename_lr=lr, filename_hr=hr))
    pd.DataFrame(rows).to_csv(os.path.join(out, "ptbxl_database.csv"), index=False)
    statements().to_csv(os.path.join(out, "scp_statements.csv"))


if __name__ == "__main__":
    main()
