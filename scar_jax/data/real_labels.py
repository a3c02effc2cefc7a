"""Class names and curated class prompts of the real corpora (PTB-XL, CPSC2018, CSN).

Prompts are short clinical statements in the register of machine ECG reports, used as the
text side of zero-shot classification. `PROMPTS[corpus][class_name]` covers every class of
every label set (tested); `prompt(corpus, name, fallback)` is the lookup builders and
evaluators use.
"""

from __future__ import annotations

# --- PTB-XL (scp_statements.csv of PTB-XL 1.0.3) -------------------------------------------
PTBXL_SUPERDIAGNOSTIC = ("NORM", "MI", "STTC", "CD", "HYP")
PTBXL_SUBDIAGNOSTIC = (
    "NORM", "IMI", "AMI", "LMI", "PMI", "STTC", "NST_", "ISC_", "ISCA", "ISCI", "LAFB/LPFB",
    "IRBBB", "_AVB", "IVCD", "CRBBB", "CLBBB", "WPW", "ILBBB", "LVH", "LAO/LAE", "RVH",
    "RAO/RAE", "SEHYP",
)  # fmt: skip
PTBXL_FORM = (
    "NDT", "NST_", "DIG", "LNGQT", "ABQRS", "PVC", "STD_", "VCLVH", "QWAVE", "LOWT", "NT_",
    "PAC", "LPR", "INVT", "LVOLT", "HVOLT", "TAB_", "STE_", "PRC(S)",
)  # fmt: skip
PTBXL_RHYTHM = (
    "SR", "AFIB", "STACH", "SARRH", "SBRAD", "PACE", "SVARR", "BIGU", "AFLT", "SVTAC", "PSVT",
    "TRIGU",
)  # fmt: skip
PTBXL_LABEL_SETS = {
    "superdiagnostic": PTBXL_SUPERDIAGNOSTIC,
    "subdiagnostic": PTBXL_SUBDIAGNOSTIC,
    "form": PTBXL_FORM,
    "rhythm": PTBXL_RHYTHM,
}

# --- CPSC2018: classes 1..9 of REFERENCE.csv, and their SNOMED-CT codes in Challenge 2020 --
CPSC2018_CLASSES = ("NORM", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
CPSC2018_SNOMED = {
    "426783006": "NORM",  # sinus rhythm
    "164889003": "AF",
    "270492004": "I-AVB",
    "164909002": "LBBB",
    "59118001": "RBBB",
    "713427006": "RBBB",  # complete RBBB (scored as RBBB by the Challenge)
    "284470004": "PAC",
    "63593006": "PAC",  # supraventricular premature beats (scored as PAC)
    "164884008": "PVC",  # ventricular ectopics, the code of CPSC's PVC in Challenge 2020
    "427172004": "PVC",
    "17338001": "PVC",  # ventricular premature beats (scored as PVC)
    "429622005": "STD",
    "164931005": "STE",
}

_P = "ECG shows "
PROMPTS: dict[str, dict[str, str]] = {
    "ptbxl": {
        # superdiagnostic
        "NORM": "normal ECG",
        "MI": "myocardial infarction",
        "STTC": "ST/T changes",
        "CD": "conduction disturbance",
        "HYP": "hypertrophy",
        # subdiagnostic
        "IMI": "inferior myocardial infarction",
        "AMI": "anterior myocardial infarction",
        "LMI": "lateral myocardial infarction",
        "PMI": "posterior myocardial infarction",
        "NST_": "non-specific ST changes",
        "ISC_": "non-specific ischemic changes",
        "ISCA": "ischemic changes in anterior leads",
        "ISCI": "ischemic changes in inferior leads",
        "LAFB/LPFB": "left anterior or left posterior fascicular block",
        "IRBBB": "incomplete right bundle branch block",
        "_AVB": "atrioventricular block",
        "IVCD": "non-specific intraventricular conduction delay",
        "CRBBB": "complete right bundle branch block",
        "CLBBB": "complete left bundle branch block",
        "WPW": "Wolff-Parkinson-White pre-excitation",
        "ILBBB": "incomplete left bundle branch block",
        "LVH": "left ventricular hypertrophy",
        "LAO/LAE": "left atrial overload or enlargement",
        "RVH": "right ventricular hypertrophy",
        "RAO/RAE": "right atrial overload or enlargement",
        "SEHYP": "septal hypertrophy",
        # form
        "NDT": "non-diagnostic T wave abnormalities",
        "DIG": "digitalis effect",
        "LNGQT": "long QT interval",
        "ABQRS": "abnormal QRS complex",
        "PVC": "premature ventricular complexes",
        "STD_": "non-specific ST depression",
        "VCLVH": "voltage criteria for left ventricular hypertrophy",
        "QWAVE": "Q waves present",
        "LOWT": "low amplitude T waves",
        "NT_": "non-specific T wave changes",
        "PAC": "premature atrial complexes",
        "LPR": "prolonged PR interval",
        "INVT": "inverted T waves",
        "LVOLT": "low QRS voltage",
        "HVOLT": "high QRS voltage",
        "TAB_": "T wave abnormality",
        "STE_": "non-specific ST elevation",
        "PRC(S)": "premature complexes",
        # rhythm
        "SR": "sinus rhythm",
        "AFIB": "atrial fibrillation",
        "STACH": "sinus tachycardia",
        "SARRH": "sinus arrhythmia",
        "SBRAD": "sinus bradycardia",
        "PACE": "normally functioning artificial pacemaker",
        "SVARR": "supraventricular arrhythmia",
        "BIGU": "bigeminal pattern",
        "AFLT": "atrial flutter",
        "SVTAC": "supraventricular tachycardia",
        "PSVT": "paroxysmal supraventricular tachycardia",
        "TRIGU": "trigeminal pattern",
    },
    "cpsc2018": {
        "NORM": "sinus rhythm, normal ECG",
        "AF": "atrial fibrillation",
        "I-AVB": "first degree atrioventricular block",
        "LBBB": "left bundle branch block",
        "RBBB": "right bundle branch block",
        "PAC": "premature atrial contraction",
        "PVC": "premature ventricular contraction",
        "STD": "ST segment depression",
        "STE": "ST segment elevation",
    },
    # Chapman-Shaoxing-Ningbo: acronyms of ConditionNames_SNOMED-CT.csv (ecg-arrhythmia 1.0.0).
    "chapman_shaoxing": {
        "1AVB": "first degree atrioventricular block",
        "2AVB": "second degree atrioventricular block",
        "2AVB1": "second degree atrioventricular block, Mobitz type I",
        "2AVB2": "second degree atrioventricular block, Mobitz type II",
        "3AVB": "third degree atrioventricular block",
        "ABI": "atrial bigeminy",
        "ALS": "left axis deviation",
        "APB": "atrial premature beats",
        "AQW": "abnormal Q waves",
        "ARS": "right axis deviation",
        "AVB": "atrioventricular block",
        "CCR": "counterclockwise rotation",
        "CR": "clockwise rotation",
        "ERV": "early repolarization",
        "FQRS": "fragmented QRS",
        "IDC": "intraventricular conduction differences",
        "IVB": "intraventricular block",
        "JEB": "junctional escape beats",
        "JPT": "junctional premature beats",
        "LBBB": "left bundle branch block",
        "LBBBB": "left posterior fascicular block",
        "LFBBB": "left anterior fascicular block",
        "LVH": "left ventricular hypertrophy",
        "LVQRSAL": "low QRS voltage in all leads",
        "LVQRSCL": "low QRS voltage in the chest leads",
        "LVQRSLL": "low QRS voltage in the limb leads",
        "MI": "myocardial infarction",
        "MIBW": "posterior wall myocardial infarction",
        "MIFW": "anterior wall myocardial infarction",
        "MILW": "inferior wall myocardial infarction",
        "MISW": "lateral wall myocardial infarction",
        "PRIE": "prolonged PR interval",
        "PWC": "P wave changes",
        "QTIE": "prolonged QT interval",
        "RAH": "right atrial enlargement",
        "RBBB": "right bundle branch block",
        "RVH": "right ventricular hypertrophy",
        "STDD": "ST segment depression",
        "STE": "ST segment elevation",
        "STTC": "ST-T changes",
        "STTU": "ST segment elevation",
        "TWC": "T wave changes",
        "TWO": "inverted T waves",
        "UW": "U waves",
        "VB": "ventricular bigeminy",
        "VEB": "ventricular escape beats",
        "VFW": "ventricular fusion beats",
        "VPB": "ventricular premature beats",
        "VPE": "ventricular pre-excitation",
        "VET": "ventricular escape trigeminy",
        "WAVN": "wandering pacemaker in the atrioventricular node",
        "WPW": "Wolff-Parkinson-White pattern",
        "SB": "sinus bradycardia",
        "SR": "sinus rhythm",
        "AFIB": "atrial fibrillation",
        "ST": "sinus tachycardia",
        "AF": "atrial flutter",
        "SA": "sinus arrhythmia",
        "SVT": "supraventricular tachycardia",
        "AT": "atrial tachycardia",
        "AVNRT": "atrioventricular nodal reentrant tachycardia",
        "AVRT": "atrioventricular reentrant tachycardia",
        "SAAWR": "wandering atrial pacemaker",
    },
}
PROMPTS = {c: {k: _P + v for k, v in d.items()} for c, d in PROMPTS.items()}


def classes(corpus: str, label_set: str | None = None) -> tuple[str, ...]:
    """Class names of a corpus with a fixed class list ('ptbxl' needs a label set)."""
    if corpus == "ptbxl":
        if label_set not in PTBXL_LABEL_SETS:
            raise ValueError(
                f"ptbxl label set {label_set!r}; expected one of {list(PTBXL_LABEL_SETS)}."
            )
        return PTBXL_LABEL_SETS[label_set]
    if corpus == "cpsc2018":
        return CPSC2018_CLASSES
    raise ValueError(
        f"corpus {corpus!r} has no fixed class list here; chapman_shaoxing's classes depend "
        "on the corpus (read them from the built dataset's info.metadata['classes'])."
    )


def prompt(corpus: str, name: str, fallback: str | None = None) -> str:
    """The curated prompt of a class; for a class without one, 'ECG shows <fallback>'.

    A class name joined from several acronyms ('WAVN/SAAWR') takes its first one's prompt.
    """
    table = PROMPTS.get(corpus, {})
    for key in (name, *name.split("/")):
        if key in table:
            return table[key]
    if fallback:
        return _P + fallback.strip().lower()
    raise KeyError(
        f"No prompt for class {name!r} of {corpus!r}: add one to "
        "scar_jax/data/real_labels.py PROMPTS or pass a fallback description."
    )
