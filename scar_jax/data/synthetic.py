"""Synthetic 12-lead ECG-report corpus with known, localised diagnostic evidence.

A 3-D cardiac dipole d(t) (x = left, y = inferior, z = anterior; millivolts) is traced
through P, QRS and T lobes for every beat and read out by the electrodes: the limb
electrodes RA, LA, LL see a_e . d, so I = LA - RA, II = LL - RA, III = LL - LA,
aVR = RA - (LA + LL) / 2, aVL, aVF (Einthoven/Goldberger relations hold exactly, noise
and baseline wander included, since they are added per electrode); the precordial leads
V1..V6 see their own axes (minus Wilson's central terminal) plus local fields (injury
currents, f-waves) that a distant dipole cannot express.

Every class has a PRIMARY region (leads x time) with strong evidence and a weaker
SECONDARY one elsewhere (`CLASS_INFO`), and each record carries the union of its classes'
regions as boolean maps on a 0.1 s grid (`Record.evidence_primary/secondary [bins, 12]`).
Generation is deterministic per (seed, split, index), independent of order or batching.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Sequence

import numpy as np
from absl import logging

from scar_jax.leads import LEAD_NAMES, LIMB, NUM_LEADS, PRECORDIAL, lead_indices

EVIDENCE_BIN_S = 0.1  # seconds per evidence bin
SPLITS = ("train", "validation", "test")
PROMPT_PREFIX = "ECG shows "  # the same register as scar_jax.data.real_labels

# Time kinds of an evidence region: which spans of the record hold the evidence.
TIME_KINDS = {
    "all": "the whole record",
    "st": "ST segment and T wave of every beat (J point to T end)",
    "qrs": "QRS complex of every beat",
    "qrst": "QRS complex, ST segment and T wave of every beat",
    "pr": "P wave and PR segment of every beat (P onset to QRS onset)",
    "pvc": "each premature ventricular beat (a few spans of about 0.5 s)",
    "post_pvc": "the compensatory pause and the sinus beat after each premature beat",
}


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    """One diagnostic class: zero-shot phrasings and where its evidence lies."""

    name: str
    description: str
    # zero-shot phrasings (the class embedding averages them), written from the class's
    # definition and worded unlike every report phrasing (tested); the first is canonical
    prompts: tuple[str, ...]
    primary_leads: tuple[str, ...]
    primary_time: str  # a TIME_KINDS key
    secondary_leads: tuple[str, ...]
    secondary_time: str  # a TIME_KINDS key
    note: str = ""

    @property
    def prompt(self) -> str:
        """The canonical (first) phrasing."""
        return self.prompts[0]

    def as_dict(self) -> dict:
        """JSON-friendly dict with the time kinds spelled out."""
        d = dataclasses.asdict(self)
        d["prompts"] = list(self.prompts)
        d["primary_leads"] = list(self.primary_leads)
        d["secondary_leads"] = list(self.secondary_leads)
        d["primary_time_description"] = TIME_KINDS[self.primary_time]
        d["secondary_time_description"] = TIME_KINDS[self.secondary_time]
        return d


def _phrasings(*bodies: str) -> tuple[str, ...]:
    """Zero-shot phrasings of a class: PROMPT_PREFIX + each body."""
    return tuple(PROMPT_PREFIX + b for b in bodies)


_OTHER = lambda *leads: tuple(x for x in LEAD_NAMES if x not in leads)  # noqa: E731

CLASS_INFO: tuple[ClassInfo, ...] = (
    ClassInfo(
        "NORM", "normal ECG", _phrasings(
            "a healthy heart with no abnormality",
            "regular rhythm with normal waves and intervals and no pathological finding",
            "a normal tracing without any sign of heart disease",
            "a normal ECG, with sinus rhythm and normal intervals, axis and repolarisation",
        ),
        PRECORDIAL, "all", LIMB, "all",
        "absence of findings; the chest leads show it best (R progression, flat ST)",
    ),
    ClassInfo(
        "AMI", "anterior ST elevation", _phrasings(
            "acute anterior wall myocardial infarction",
            "an injury current raising the ST segment over the anterior chest leads",
            "an acute heart attack of the anterior wall with ST segment elevation in V1 to V4",
            "an anterior myocardial infarction, with ST elevation in the anteroseptal chest leads",
        ),
        ("V1", "V2", "V3", "V4"), "st", ("II", "III", "aVF"), "st",
        "reciprocal ST depression in the inferior leads",
    ),
    ClassInfo(
        "IMI", "inferior ST elevation", _phrasings(
            "acute inferior wall myocardial infarction",
            "an injury current raising the ST segment in leads II, III and aVF",
            "an acute heart attack of the inferior wall",
            "an inferior myocardial infarction, with ST elevation in the inferior limb leads",
        ),
        ("II", "III", "aVF"), "st", ("I", "aVL"), "st",
        "reciprocal ST depression in I and aVL",
    ),
    ClassInfo(
        "LMI", "lateral ST elevation", _phrasings(
            "acute lateral wall myocardial infarction",
            "an injury current raising the ST segment in leads I, aVL, V5 and V6",
            "an acute heart attack of the lateral wall",
            "a lateral myocardial infarction, with ST elevation in the high lateral chest leads",
        ),
        ("I", "aVL", "V5", "V6"), "st", ("III", "aVF"), "st",
        "reciprocal ST depression in III and aVF",
    ),
    ClassInfo(
        "LBBB", "left bundle branch block", _phrasings(
            "blocked conduction in the left bundle",
            "a wide QRS complex with broad notched lateral R waves from a left bundle block",
            "delayed left ventricular activation through a blocked left bundle",
            "a left bundle branch block, with a QRS of 120 ms or more and notched R waves in V6",
        ),
        PRECORDIAL, "qrst", LIMB, "qrs",
        "QS in V1-V2, broad notched R in V5-V6, discordant ST-T; wide QRS also in limb leads",
    ),
    ClassInfo(
        "RBBB", "right bundle branch block",
        _phrasings(
            "blocked conduction in the right bundle",
            "a wide QRS complex with an rSR' pattern in V1 from a right bundle block",
            "delayed right ventricular activation through a blocked right bundle",
            "a right bundle branch block, with a QRS of 120 ms or more and a broad S wave in I",
        ),
        ("V1", "V2", "V3"), "qrst", ("I", "aVL", "V5", "V6"), "qrs",
        "rsR' and T inversion in V1-V3; wide slurred S in I, aVL, V5, V6",
    ),
    ClassInfo(
        "AFIB", "atrial fibrillation",
        _phrasings(
            "chaotic atrial activity with an irregularly irregular pulse",
            "fibrillatory waves instead of P waves with irregular ventricular beats",
            "disorganised atrial electrical activity without coordinated atrial contraction",
            "atrial fibrillation, with no P waves and an irregularly irregular ventricular rhythm",
        ),
        ("II", "aVF", "V1"), "all", _OTHER("II", "aVF", "V1"), "all",
        "no P waves and f-waves (II, aVF, V1); irregular RR intervals in every lead",
    ),
    ClassInfo(
        "1AVB", "first degree AV block",
        _phrasings(
            "delayed atrioventricular conduction of the first degree",
            "a PR interval longer than 200 milliseconds with every P wave conducted",
            "slowed conduction from the atria to the ventricles with a constant long PR interval",
            "a first degree atrioventricular block, with a constant PR interval over 200 ms",
        ),
        ("II", "aVF", "V1"), "pr", ("I", "III", "aVR"), "pr",
        "PR > 200 ms, read where the P wave is largest; smaller P waves elsewhere",
    ),
    ClassInfo(
        "SBRAD", "sinus bradycardia", _phrasings(
            "a slow heart rate under 60 per minute",
            "a regular rhythm from the sinus node slower than 60 beats per minute",
            "slow regular beating of the heart paced by the sinus node",
            "sinus bradycardia, a sinus rhythm with a rate below 60 beats per minute",
        ),
        ("II", "V5"), "all", _OTHER("II", "V5"), "all",
        "rate is global: every lead carries it (known weakness: secondary is not weaker)",
    ),
    ClassInfo(
        "STACH", "sinus tachycardia", _phrasings(
            "a fast heart rate over 100 per minute",
            "a regular rhythm from the sinus node faster than 100 beats per minute",
            "rapid regular beating of the heart paced by the sinus node",
            "sinus tachycardia, a sinus rhythm with a rate above 100 beats per minute",
        ),
        ("II", "V5"), "all", _OTHER("II", "V5"), "all",
        "rate is global: every lead carries it (known weakness: secondary is not weaker)",
    ),
    ClassInfo(
        "LVOLT", "low QRS voltage", _phrasings(
            "small amplitude of ventricular depolarisation",
            "QRS complexes smaller than 0.5 millivolts in the limb leads",
            "reduced electrical amplitude of the ventricular complexes",
            "low voltage QRS complexes, with amplitudes under 5 mm in every limb lead",
        ),
        LIMB, "qrs", PRECORDIAL, "qrs",
        "QRS < 0.5 mV in the limb leads; chest leads damped less",
    ),
    ClassInfo(
        "PVC", "premature ventricular complexes",
        _phrasings(
            "extra beats arising early from the ventricles",
            "early wide QRS complexes without a preceding P wave, followed by a pause",
            "ectopic ventricular beats interrupting the regular rhythm",
            "premature ventricular contractions, early wide beats with a compensatory pause",
        ),
        LEAD_NAMES, "pvc", LEAD_NAMES, "post_pvc",
        "evidence localised in time: wide premature beats; then a long pause and an altered T",
    ),
)  # fmt: skip
CLASSES = tuple(c.name for c in CLASS_INFO)
# classes whose secondary evidence generate_record's `secondary_strength` scales
SECONDARY_KNOB_CLASSES = ("AMI", "IMI", "LMI", "RBBB", "AFIB", "LVOLT")
_CI = {c.name: i for i, c in enumerate(CLASS_INFO)}


def class_lead_masks() -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary) lead masks of every class: [C, 12] bool each."""
    out = np.zeros((2, len(CLASS_INFO), len(LEAD_NAMES)), bool)
    for c, info in enumerate(CLASS_INFO):
        for k, leads in enumerate((info.primary_leads, info.secondary_leads)):
            out[k, c, lead_indices(leads)] = True
    return out[0], out[1]


def class_regions(time_bins: np.ndarray, which: str = "primary") -> np.ndarray:
    """time_bins: [..., bins, C] bool (evidence_time_*) -> per-class regions [..., C, bins, 12]."""
    leads = class_lead_masks()[0 if which == "primary" else 1]  # [C, 12]
    t = np.moveaxis(np.asarray(time_bins, bool), -1, -2)  # [..., C, bins]
    return t[..., :, :, None] & leads[:, None, :]


# ---------------------------------------------------------------------------------------
# Reports: several phrasings per finding; none contains a class prompt (tested).
FINDING_TEMPLATES: dict[str, tuple[str, ...]] = {
    "NORM": (
        "normal electrocardiogram",
        "ecg within normal limits",
        "normal resting ecg",
        "no abnormality detected",
    ),
    "SR": ("sinus rhythm", "normal sinus rhythm", "rhythm is sinus", "regular sinus rhythm"),
    "AMI": (
        "st elevation in v1-v4 consistent with anterior infarct, acute",
        "anterior stemi",
        "acute anterior infarction with st elevation in the precordial leads",
        "anteroseptal st elevation, consider acute occlusion",
    ),
    "IMI": (
        "st elevation in ii, iii, avf consistent with inferior infarct, acute",
        "inferior stemi",
        "acute inferior infarction",
        "inferior st elevation with reciprocal changes",
    ),
    "LMI": (
        "st elevation in i, avl, v5, v6, lateral injury",
        "lateral stemi",
        "acute lateral infarction",
        "high lateral st elevation",
    ),
    "LBBB": (
        "left bundle branch block",
        "complete lbbb",
        "lbbb, qrs {qrs} ms",
        "left bundle-branch block pattern",
    ),
    "RBBB": (
        "right bundle branch block",
        "complete rbbb",
        "rbbb, qrs {qrs} ms",
        "right bundle-branch block with rsr' in v1",
    ),
    "AFIB": (
        "atrial fibrillation",
        "atrial fibrillation with controlled ventricular response",
        "afib, ventricular rate {hr}",
        "irregularly irregular rhythm without p waves, atrial fibrillation",
    ),
    "1AVB": (
        "first degree av block",
        "1st degree a-v block",
        "pr interval prolonged ({pr} ms)",
        "prolonged pr interval, first degree block",
    ),
    "SBRAD": (
        "sinus bradycardia",
        "marked sinus bradycardia",
        "bradycardic sinus rhythm, rate {hr}",
        "sinus brady",
    ),
    "STACH": (
        "sinus tachycardia",
        "sinus tachy, rate {hr}",
        "tachycardic sinus rhythm",
        "rapid sinus rhythm",
    ),
    "LVOLT": (
        "low qrs voltages in limb leads",
        "low voltage qrs",
        "low limb lead voltage",
        "generalised low voltage",
    ),
    "PVC": (
        "premature ventricular complexes",
        "occasional pvcs",
        "with ventricular premature beats",
        "multiple ventricular extrasystoles",
    ),
}
IRRELEVANT_REMARKS = (
    "patient moved during recording",
    "compared with prior tracing",
    "no significant change since last tracing",
    "baseline artifact",
    "technically fair recording",
    "lead placement checked",
    "recorded supine",
    "unconfirmed report",
    "confirmed by cardiologist",
    "ventricular rate {hr} bpm",
)
ABNORMAL_SUMMARY = ("abnormal ecg", "abnormal tracing", "borderline ecg")


# ---------------------------------------------------------------------------------------
# Geometry (unit vectors, x = left, y = inferior, z = anterior).
def _frontal(deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.array([np.cos(r), np.sin(r), 0.0])


_U_I, _U_II = _frontal(0.0), _frontal(60.0)
_A_RA = -(_U_I + _U_II) / 3.0  # electrode lead vectors; RA + LA + LL = 0 for the dipole
_A_LA = _A_RA + _U_I
_A_LL = _A_RA + _U_II
_PRE_ANGLE = np.deg2rad(np.array([115.0, 90.0, 75.0, 60.0, 35.0, 10.0]))  # from +x toward +z
_PRE_AXES = np.stack([np.cos(_PRE_ANGLE), np.full(6, 0.12), np.sin(_PRE_ANGLE)], -1)
_PRE_GAIN = np.array([1.0, 1.3, 1.4, 1.5, 1.5, 1.3])
# [9, 3]: RA, LA, LL, V1..V6 electrode lead vectors.
_ELECTRODES = np.concatenate([np.stack([_A_RA, _A_LA, _A_LL]), _PRE_AXES * _PRE_GAIN[:, None]])


def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def electrodes_to_leads(e: np.ndarray) -> np.ndarray:
    """e: [T, 9] potentials (RA, LA, LL, V1..V6 electrodes) -> [T, 12] leads (LEAD_NAMES)."""
    ra, la, ll = e[:, 0], e[:, 1], e[:, 2]
    lead_i, lead_ii = la - ra, ll - ra
    wct = (ra + la + ll) / 3.0
    limb = np.stack(
        [
            lead_i,
            lead_ii,
            lead_ii - lead_i,
            -(lead_i + lead_ii) / 2.0,
            lead_i - lead_ii / 2.0,
            lead_ii - lead_i / 2.0,
        ],
        -1,
    )
    return np.concatenate([limb, e[:, 3:] - wct[:, None]], -1)


# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Record:
    """One generated record (float millivolts, before int16 storage)."""

    ecg: np.ndarray  # [T, 12] float32 mV; unobserved leads are 0
    lead_observed: np.ndarray  # [12] bool
    labels: np.ndarray  # [C] bool
    report: str
    evidence_primary: np.ndarray  # [bins, 12] bool
    evidence_secondary: np.ndarray  # [bins, 12] bool
    evidence_time_primary: np.ndarray  # [bins, C] bool: class c's primary time bins (positives)
    evidence_time_secondary: np.ndarray  # [bins, C] bool
    heart_rate: float  # requested mean rate, bpm
    rr: np.ndarray  # [n] seconds between consecutive generated QRS onsets
    qrs_onsets: np.ndarray  # [n + 1] seconds (inside and just outside the record)
    j_points: np.ndarray  # [n + 1] seconds; J point (QRS end) of each beat
    pr_ms: float
    qrs_ms: float


def record_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one record: a function of (seed, split, index) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def sample_labels(rng: np.random.Generator) -> np.ndarray:
    """A multi-hot [C] label vector with the corpus's exclusions (NORM alone; 1 rhythm; ...)."""
    y = np.zeros(len(CLASSES), bool)
    if rng.random() < 0.2:
        y[_CI["NORM"]] = True
        return y
    rhythm = rng.choice(["SR", "SBRAD", "STACH", "AFIB"], p=[0.55, 0.15, 0.15, 0.15])
    if rhythm != "SR":
        y[_CI[rhythm]] = True
    cond = rng.choice(["", "LBBB", "RBBB"], p=[0.76, 0.12, 0.12])
    if cond:
        y[_CI[cond]] = True
    if rhythm != "AFIB" and rng.random() < 0.15:
        y[_CI["1AVB"]] = True
    if cond != "LBBB" and rng.random() < 0.36:
        y[_CI[rng.choice(["AMI", "IMI", "LMI"])]] = True
    if rng.random() < 0.12:
        y[_CI["LVOLT"]] = True
    if rhythm != "AFIB" and rng.random() < 0.15:
        y[_CI["PVC"]] = True
    if not y.any():
        y[_CI["NORM"]] = True
    return y


def rr_intervals(
    rng: np.random.Generator, heart_rate: float, n: int, afib: bool = False
) -> np.ndarray:
    """[n] RR intervals (s) with mean 60 / heart_rate: sinus HRV (respiratory + AR(1)) or AFIB."""
    mean_rr = 60.0 / heart_rate
    if afib:
        sigma = rng.uniform(0.15, 0.25)
        x = np.exp(sigma * rng.standard_normal(n))
    else:
        resp = rng.uniform(0.0, 0.05) * np.sin(
            2 * np.pi * rng.uniform(0.15, 0.35) * mean_rr * np.arange(n) + rng.uniform(0, 2 * np.pi)
        )
        e = np.zeros(n)
        noise = rng.normal(0.0, 0.012, n)
        for i in range(1, n):
            e[i] = 0.6 * e[i - 1] + noise[i]
        x = 1.0 + resp + e
    x = np.clip(x, 0.55, 1.8)
    return mean_rr * x / x.mean()


def _lobes(
    t: np.ndarray,
    center: np.ndarray,
    sigma_l: np.ndarray,
    sigma_r: np.ndarray,
    amp: np.ndarray,
    sigma_aa: float,
) -> np.ndarray:
    """Asymmetric Gaussian lobes, band-limited by a Gaussian of sigma_aa.

    t: [B, W], center/sigma_l/sigma_r: [B, K], amp: [B, K, C] -> [B, W, C].
    """
    inv_l = 1.0 / np.sqrt(sigma_l**2 + sigma_aa**2)  # [B, K]
    inv_r = 1.0 / np.sqrt(sigma_r**2 + sigma_aa**2)
    mean_sigma = 0.5 * (sigma_l + sigma_r)
    amp = amp * (mean_sigma / np.sqrt(mean_sigma**2 + sigma_aa**2))[:, :, None]
    z = (t[:, None, :] - center[:, :, None]).astype(np.float32)  # [B, K, W]
    z *= np.where(z < 0, inv_l[:, :, None], inv_r[:, :, None]).astype(np.float32)
    np.square(z, out=z)
    z *= np.float32(-0.5)
    np.exp(z, out=z)
    return np.matmul(z.transpose(0, 2, 1), amp.astype(np.float32))  # [B, W, C]


def _overlap_add(buf: np.ndarray, beats: np.ndarray, starts: np.ndarray) -> None:
    """buf [N, C] += beats [B, W, C], beat b starting at buf row starts[b] (clipped)."""
    width = beats.shape[1]
    for b, s in enumerate(starts):
        lo, hi = max(s, 0), min(s + width, len(buf))
        if hi > lo:
            buf[lo:hi] += beats[b, lo - s : hi - s]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _rotation(frontal_deg: float, horizontal_deg: float) -> np.ndarray:
    a, b = np.deg2rad(frontal_deg), np.deg2rad(horizontal_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
    return rz @ ry


def _frontal_injury(deg: float) -> np.ndarray:
    """A frontal-plane injury vector as [9] electrode potentials per unit (limb only)."""
    v = _frontal(deg)
    return np.concatenate([np.stack([_A_RA @ v, _A_LA @ v, _A_LL @ v]), np.zeros(6)])


# Injury (ST) fields per territory: [9] electrode potentials for 1 mV of primary elevation.
_INJURY = {
    "AMI": _frontal_injury(-90.0) * 0.5 + np.r_[np.zeros(3), [0.6, 1.0, 1.0, 0.8, 0.15, 0.0]],
    "IMI": _frontal_injury(115.0),
    "LMI": _frontal_injury(-40.0) * 0.8 + np.r_[np.zeros(3), [0.0, 0.0, 0.0, 0.15, 0.8, 1.0]],
}
_EARLY_REPOL = _frontal_injury(60.0) * 0.2 + np.r_[np.zeros(3), [0.0, 0.5, 1.0, 0.8, 0.3, 0.0]]


_LEAD_MASKS = tuple(m.astype(np.uint8) for m in class_lead_masks())


def _dipole_to_electrodes(v: np.ndarray) -> np.ndarray:
    """v: [..., 3] dipole -> [..., 9] electrode potentials."""
    return v @ _ELECTRODES.T


def _spans_to_bins(spans: np.ndarray, num_bins: int) -> np.ndarray:
    """spans: [n, 2] seconds -> [num_bins] bool, bins overlapping any span."""
    out = np.zeros(num_bins, bool)
    for s, e in spans:
        lo = max(int(np.floor(s / EVIDENCE_BIN_S)), 0)
        hi = min(int(np.ceil(e / EVIDENCE_BIN_S)), num_bins)
        if hi > lo:
            out[lo:hi] = True
    return out


def generate_record(
    seed: int,
    split: str,
    index: int,
    *,
    sampling_rate: int = 500,
    duration_s: float = 10.0,
    missing_lead_fraction: float = 0.0,
    labels: np.ndarray | Sequence[str] | None = None,
    heart_rate: float | None = None,
    secondary_strength: float = 1.0,
) -> Record:
    """One record, a pure function of its arguments; `labels`/`heart_rate` override the draw.

    secondary_strength: the share of each class's signal kept in its secondary-only leads,
    for the classes whose secondary evidence is an additive component (SECONDARY_KNOB_CLASSES:
    the reciprocal ST change of AMI/IMI/LMI, RBBB's terminal S wave, AFIB's f-waves outside
    II/aVF/V1, LVOLT's damping of the chest leads). 1 (the default) is the corpus as it
    always was, bit for bit; 0 removes that evidence. The other classes' secondary evidence
    is timing that every lead carries (rate, rhythm, PR, QRS width) and stays. Evidence maps
    are unchanged: the regions say where the evidence would be."""
    if not 0.0 <= secondary_strength <= 1.0:
        raise ValueError(f"generate_record: secondary_strength must be in [0, 1], got "
                         f"{secondary_strength}.")
    knob = secondary_strength != 1.0
    parts: list[tuple[str, np.ndarray]] = []  # (class, [T, 9] electrode component) if knob
    rng = record_rng(seed, split, index)
    fs = float(sampling_rate)
    num_samples = int(round(duration_s * fs))
    drawn = sample_labels(rng)
    if labels is not None:
        if len(labels) and isinstance(labels[0], str):
            unknown = sorted(set(labels) - set(CLASSES))
            if unknown:
                raise ValueError(f"generate_record: unknown classes {unknown}; known: {CLASSES}.")
            y = np.isin(np.array(CLASSES), list(labels))
        else:
            y = np.asarray(labels, bool)
        if y.shape != (len(CLASSES),) or not y.any():
            raise ValueError(
                f"generate_record: labels must name at least one of {CLASSES} (or be a "
                f"multi-hot [{len(CLASSES)}] vector); got {labels!r}."
            )
    else:
        y = drawn
    has = {c: bool(y[_CI[c]]) for c in CLASSES}
    afib = has["AFIB"]

    # --- rhythm -----------------------------------------------------------------------
    if heart_rate is None:
        if has["SBRAD"]:
            heart_rate = rng.uniform(40.0, 56.0)
        elif has["STACH"]:
            heart_rate = rng.uniform(104.0, 145.0)
        elif afib:
            heart_rate = rng.uniform(65.0, 125.0)
        else:
            heart_rate = rng.uniform(60.0, 98.0)
    mean_rr = 60.0 / heart_rate
    n_beats = int(np.ceil((duration_s + 2.5) / mean_rr)) + 3
    rr = rr_intervals(rng, heart_rate, n_beats, afib=afib)
    onsets = -1.0 - rng.uniform(0.0, mean_rr) + np.concatenate([[0.0], np.cumsum(rr)])
    onsets = onsets[onsets < duration_s + 1.0]
    n = len(onsets)
    kind = np.zeros(n, np.int8)  # 0 sinus, 1 PVC, 2 sinus after a PVC
    if has["PVC"]:
        inside = np.flatnonzero((onsets > 0.6) & (onsets < duration_s - 1.2))
        inside = inside[(inside > 0) & (inside < n - 1)]
        k = min(int(rng.integers(1, 4)), max(len(inside) // 3, 1))
        chosen: list[int] = []
        for j in rng.permutation(inside):
            if all(abs(int(j) - c) > 2 for c in chosen):
                chosen.append(int(j))
            if len(chosen) == k:
                break
        for j in chosen:
            coupling = rng.uniform(0.5, 0.68)
            onsets[j] = onsets[j - 1] + coupling * (onsets[j] - onsets[j - 1])
            kind[j], kind[j + 1] = 1, 2
    sinus = kind != 1

    # --- subject morphology -------------------------------------------------------------
    rot = _rotation(rng.normal(0.0, 18.0), rng.normal(0.0, 10.0))
    gain = np.exp(rng.normal(0.0, 0.22))
    pr = rng.uniform(0.23, 0.36) if has["1AVB"] else rng.uniform(0.12, 0.19)
    qtc = rng.uniform(0.38, 0.44)
    wide = has["LBBB"] or has["RBBB"]
    qrs_dur = rng.uniform(0.13, 0.16) if wide else rng.uniform(0.08, 0.10)

    # lobes per beat: (offset from QRS onset, sigma_l, sigma_r, dipole [3] or None, local [6])
    r_amp = gain * rng.uniform(1.2, 1.9)
    t_amp = gain * rng.uniform(0.25, 0.45)
    p_amp = gain * rng.uniform(0.08, 0.14)
    septal = rot @ _unit([-0.5, 0.1, 0.85]) * 0.25 * gain
    main = rot @ _unit([0.8, 0.5, -0.2]) * r_amp
    term = rot @ _unit([-0.3, -0.6, -0.5]) * 0.35 * gain
    t_dir = rot @ _unit([0.7, 0.6, 0.2]) * t_amp
    ra_p = rot @ _unit([0.2, 0.8, 0.5]) * p_amp
    la_p = rot @ _unit([0.8, 0.5, -0.4]) * p_amp
    q_lobes = [(0.012, 0.006, 0.006, septal), (0.038, 0.010, 0.010, main),
               (0.062, 0.009, 0.009, term)]  # fmt: skip
    t_local = np.zeros(6)
    st_dipole = rng.normal(0.0, 0.008, 3)  # non-specific ST drift, every record
    if has["LBBB"]:
        lb = rot @ _unit([0.75, 0.15, -0.65]) * r_amp * 0.9
        q_lobes = [(0.012, 0.008, 0.008, -0.6 * septal), (0.05, 0.02, 0.018, lb),
                   (0.105, 0.022, 0.02, lb * 0.9)]  # fmt: skip
        t_dir = -_unit(lb) * t_amp * 1.2
        st_dipole = st_dipole - _unit(lb) * rng.uniform(0.08, 0.16)
    elif has["RBBB"]:
        rb = rot @ _unit([-0.55, 0.0, 0.85]) * gain * rng.uniform(0.6, 0.9)
        q_lobes = q_lobes[:2] + [(0.105, 0.022, 0.022, rb)]
        t_local = np.array([-1.0, -0.7, -0.3, 0.0, 0.0, 0.0]) * t_amp * 1.2
    qrs_e = [(o, sl, sr, _dipole_to_electrodes(v)) for o, sl, sr, v in q_lobes]
    rbbb_lobe = q_lobes[2] if has["RBBB"] else None

    # --- per-beat times -----------------------------------------------------------------
    rr_prev = np.diff(onsets, prepend=onsets[0] - mean_rr)
    rr_sin = np.where(kind == 2, mean_rr, rr_prev)  # QT follows the underlying sinus RR
    qt = qtc * np.sqrt(np.clip(rr_sin, 0.3, 2.0))
    t_sr = rng.uniform(0.035, 0.045)
    t_sl = rng.uniform(0.04, 0.055)
    t_end = onsets + qt
    t_peak = t_end - 2.5 * t_sr
    j_point = onsets + qrs_dur
    pvc_dur = rng.uniform(0.14, 0.18)
    t_end = np.where(kind == 1, onsets + pvc_dur + 0.3, t_end)
    j_point = np.where(kind == 1, onsets + pvc_dur, j_point)

    # --- render (beats in windows, overlap-added into an extended buffer) --------------
    pad = int(round(1.6 * fs))
    buf = np.zeros((num_samples + 2 * pad, 9))
    w_lo, w_hi = -0.45, 0.75
    width = int(np.ceil((w_hi - w_lo) * fs)) + 1
    starts = np.floor((onsets + w_lo) * fs).astype(np.int64)
    tw = (starts[:, None] + np.arange(width)[None, :]) / fs - onsets[:, None]  # [B, W]
    sigma_aa = 0.5 / fs

    centers, sls, srs, amps = [], [], [], []

    def add(center, sl, sr, amp):
        centers.append(np.broadcast_to(center, (n,)))
        sls.append(np.broadcast_to(sl, (n,)))
        srs.append(np.broadcast_to(sr, (n,)))
        amps.append(np.broadcast_to(amp, (n, 9)))

    on_sinus = sinus[:, None]
    if not afib:
        pe = np.where(on_sinus, 1.0, 0.0)
        add(-pr + 0.035, 0.016, 0.016, pe * _dipole_to_electrodes(ra_p))
        add(-pr + 0.07, 0.02, 0.02, pe * _dipole_to_electrodes(la_p))
    for o, sl, sr, e in qrs_e:
        add(o, sl, sr, np.where(on_sinus, 1.0, 0.0) * e)
    t_scale = np.where(kind == 2, rng.uniform(-0.5, 0.2), 1.0)[:, None]
    t_e = _dipole_to_electrodes(t_dir) + np.r_[np.zeros(3), t_local]
    add(t_peak - onsets, t_sl, t_sr, np.where(on_sinus, t_scale, 0.0) * t_e)
    if has["PVC"]:
        focus = _unit([-0.5, 0.3, 0.8]) if rng.random() < 0.5 else _unit([0.7, 0.5, -0.5])
        v1 = rot @ (focus + rng.normal(0.0, 0.15, 3)) * gain * rng.uniform(1.3, 2.0)
        v2 = rot @ _unit(focus + rng.normal(0.0, 0.4, 3)) * gain * 0.6
        pv = np.where(kind[:, None] == 1, 1.0, 0.0)
        add(0.045, 0.025, 0.025, pv * _dipole_to_electrodes(v1))
        add(0.10, 0.03, 0.03, pv * _dipole_to_electrodes(v2))
        add(pvc_dur + 0.16, 0.07, 0.05, pv * _dipole_to_electrodes(-_unit(v1) * t_amp * 1.5))
    lobes = _lobes(
        tw,
        np.stack(centers, 1),
        np.stack(sls, 1),
        np.stack(srs, 1),
        np.stack(amps, 1),
        sigma_aa,
    )  # [B, W, 9]

    # ST plateau from J to T end (injury currents and non-specific drift)
    st_e = _dipole_to_electrodes(st_dipole)
    injury = {}
    for c in ("AMI", "IMI", "LMI"):
        if has[c]:
            injury[c] = _INJURY[c] * gain**0.5 * rng.uniform(0.18, 0.4)
            st_e = st_e + injury[c]
    if not (has["AMI"] or has["IMI"] or has["LMI"]) and rng.random() < 0.15:
        st_e = st_e + _EARLY_REPOL * rng.uniform(0.05, 0.15)
    plateau = _sigmoid((tw - (j_point - onsets)[:, None]) / 0.008) * _sigmoid(
        ((t_end - onsets)[:, None] - tw) / 0.02
    )
    lobes += plateau.astype(np.float32)[:, :, None] * (on_sinus * st_e).astype(np.float32)[:, None]
    _overlap_add(buf, lobes, starts + pad)
    sig = buf[pad : pad + num_samples]  # [T, 9] electrode potentials

    def component(beats: np.ndarray) -> np.ndarray:  # [B, W, 9] -> [T, 9], as `sig`
        out = np.zeros_like(buf)
        _overlap_add(out, beats, starts + pad)
        return out[pad : pad + num_samples]

    if knob:
        for c, inj in injury.items():
            parts.append((c, component(plateau.astype(np.float32)[:, :, None]
                                       * (on_sinus * inj).astype(np.float32)[:, None])))
        if rbbb_lobe is not None:
            o, sl, sr, v = rbbb_lobe
            full = lambda x: np.full((n, 1), x)  # noqa: E731
            amp = (np.where(on_sinus, 1.0, 0.0) * _dipole_to_electrodes(v))[:, None]
            parts.append(("RBBB", component(_lobes(tw, full(o), full(sl), full(sr), amp,
                                                   sigma_aa))))
    t = np.arange(num_samples) / fs

    # --- atrial fibrillation f-waves --------------------------------------------------------
    if afib:
        f = np.zeros(num_samples)
        for _ in range(3):
            fr = rng.uniform(4.5, 8.0)
            drift = np.cumsum(rng.normal(0.0, 0.04, num_samples)) * np.sqrt(500.0 / fs)
            f += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * fr * t + rng.uniform(0, 7) + drift)
        f *= rng.uniform(0.04, 0.09) / (np.std(f) + 1e-9)
        f_e = (
            _dipole_to_electrodes(_unit([0.1, 0.9, 0.5]) * 0.7)
            + np.r_[np.zeros(3), [1.0, 0.4, 0.1, 0.0, 0.0, 0.0]]
        )
        sig = sig + f[:, None] * f_e
        if knob:
            parts.append(("AFIB", f[:, None] * f_e))

    # --- damping (low voltage), noise and baseline wander per electrode -----------------
    damp = 1.0
    if has["LVOLT"]:
        damp = np.r_[np.full(3, rng.uniform(0.25, 0.38)), np.full(6, rng.uniform(0.5, 0.65))]
        if knob:  # the chest leads (LVOLT's secondary) damped by that share of it
            damp[3:] = 1.0 - secondary_strength * (1.0 - damp[3:])
        sig = sig * damp
    wander = np.zeros((num_samples, 9))
    resp_f = rng.uniform(0.15, 0.35)
    resp = np.sin(2 * np.pi * resp_f * t + rng.uniform(0, 2 * np.pi))
    wander += resp[:, None] * rng.normal(0.0, 0.04, 9)
    for _ in range(2):
        wf = rng.uniform(0.05, 0.5)
        wander += np.sin(2 * np.pi * wf * t + rng.uniform(0, 2 * np.pi))[:, None] * rng.normal(
            0.0, 0.06, 9
        )
    noise = rng.standard_normal((num_samples, 9)) * rng.uniform(0.006, 0.02)
    if rng.random() < 0.2:  # a burst of muscle noise somewhere
        c = rng.uniform(0, duration_s)
        burst = np.exp(-0.5 * ((t - c) / rng.uniform(0.2, 0.6)) ** 2)
        noise += rng.standard_normal((num_samples, 9)) * burst[:, None] * rng.uniform(0.02, 0.06)
    ecg = electrodes_to_leads(sig + wander + noise)
    for c, part in parts:  # knob: scale each part in its class's secondary-only leads
        only = (_LEAD_MASKS[1][_CI[c]] > 0) & (_LEAD_MASKS[0][_CI[c]] == 0)
        ecg[:, only] += (secondary_strength - 1.0) * electrodes_to_leads(part * damp)[:, only]
    ecg = ecg.astype(np.float32)

    # --- evidence maps ---------------------------------------------------------------------
    num_bins = int(round(duration_s / EVIDENCE_BIN_S))
    p_on = onsets - pr
    spans = {
        "all": np.array([[0.0, duration_s]]),
        "st": np.stack([j_point, t_end], 1)[sinus],
        "qrs": np.stack([onsets, j_point], 1)[sinus],
        "qrst": np.stack([onsets, t_end], 1)[sinus],
        "pr": np.stack([p_on, onsets], 1)[sinus],
        "pvc": np.stack([onsets - 0.04, t_end], 1)[kind == 1],
        "post_pvc": np.stack([np.roll(t_end, 1), t_end], 1)[
            kind == 2
        ],  # from the PVC's T end to the next sinus beat's T end
    }
    # per class: time bins of its primary / secondary evidence (its leads are CLASS_INFO's)
    time_prim = np.zeros((num_bins, len(CLASSES)), bool)
    time_sec = np.zeros((num_bins, len(CLASSES)), bool)
    for c, info in enumerate(CLASS_INFO):
        if has[info.name]:
            time_prim[:, c] = _spans_to_bins(spans[info.primary_time], num_bins)
            time_sec[:, c] = _spans_to_bins(spans[info.secondary_time], num_bins)
    prim = time_prim.astype(np.uint8) @ _LEAD_MASKS[0] > 0  # [bins, 12], union over classes
    sec = time_sec.astype(np.uint8) @ _LEAD_MASKS[1] > 0

    # --- missing leads ----------------------------------------------------------------------
    observed = np.ones(NUM_LEADS, bool)
    if missing_lead_fraction > 0 and rng.random() < missing_lead_fraction:
        k = int(rng.integers(1, 7))
        observed[rng.choice(NUM_LEADS, k, replace=False)] = False
        ecg[:, ~observed] = 0.0

    report = make_report(rng, y, heart_rate=heart_rate, pr_ms=pr * 1e3, qrs_ms=qrs_dur * 1e3)
    return Record(
        ecg=ecg,
        lead_observed=observed,
        labels=y,
        report=report,
        evidence_primary=prim,
        evidence_secondary=sec,
        evidence_time_primary=time_prim,
        evidence_time_secondary=time_sec,
        heart_rate=float(heart_rate),
        rr=np.diff(onsets),
        qrs_onsets=onsets,
        j_points=j_point,
        pr_ms=float(pr * 1e3),
        qrs_ms=float(qrs_dur * 1e3),
    )


def make_report(
    rng: np.random.Generator, labels: np.ndarray, *, heart_rate: float, pr_ms: float, qrs_ms: float
) -> str:
    """A report for multi-hot `labels`: one phrasing per finding, shuffled, optional remarks."""
    names = [c for c, on in zip(CLASSES, labels) if on]
    fill = {"hr": int(round(heart_rate)), "pr": int(round(pr_ms / 2) * 2), "qrs": int(qrs_ms)}
    parts = []
    rhythm_named = any(c in names for c in ("AFIB", "SBRAD", "STACH"))
    if not rhythm_named and rng.random() < 0.8:
        parts.append(rng.choice(FINDING_TEMPLATES["SR"]))
    for c in names:
        parts.append(rng.choice(FINDING_TEMPLATES[c]))
    order = rng.permutation(len(parts))
    parts = [parts[i] for i in order]
    if "NORM" not in names and rng.random() < 0.5:
        parts.append(rng.choice(ABNORMAL_SUMMARY))
    for _ in range(rng.binomial(2, 0.2)):
        parts.insert(int(rng.integers(0, len(parts) + 1)), rng.choice(IRRELEVANT_REMARKS))
    return ". ".join(p.format(**fill) for p in parts) + "."


def all_report_templates() -> tuple[str, ...]:
    """Every phrasing a report can contain (findings, summaries, remarks)."""
    out = [p for v in FINDING_TEMPLATES.values() for p in v]
    return tuple(out + list(IRRELEVANT_REMARKS) + list(ABNORMAL_SUMMARY))


# ---------------------------------------------------------------------------------------
def pack_evidence(mask: np.ndarray) -> str:
    """mask: [bins, 12] bool -> base64 of its packed bits (for info.metadata)."""
    return base64.b64encode(np.packbits(np.asarray(mask, bool).reshape(-1)).tobytes()).decode()


def unpack_evidence(text: str, num_bins: int) -> np.ndarray:
    """Inverse of pack_evidence: base64 text -> [num_bins, 12] bool."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))
    return bits[: num_bins * NUM_LEADS].reshape(num_bins, NUM_LEADS).astype(bool)


def plot_examples(
    out_png: str, *, config_name: str = "500hz", seed: int = 0, seconds: float = 4.0
) -> str:
    """One record per class: 12 leads, first `seconds`; primary evidence red, secondary blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = {"500hz": 500, "250hz": 250, "100hz": 100, "tiny": 100}
    if config_name not in rates:
        raise ValueError(
            f"plot_examples: config_name {config_name!r}; expected one of {list(rates)}."
        )
    fs = rates[config_name]
    fig, axes = plt.subplots(
        NUM_LEADS, len(CLASSES), figsize=(2.6 * len(CLASSES), 16), squeeze=False
    )
    for j, name in enumerate(CLASSES):
        rec = generate_record(seed, "test", j, sampling_rate=fs, labels=[name])
        n = int(seconds * fs)
        t = np.arange(n) / fs
        for i, lead in enumerate(LEAD_NAMES):
            ax = axes[i, j]
            for ev, colour in (
                (rec.evidence_primary, "tab:red"),
                (rec.evidence_secondary, "tab:blue"),
            ):
                col = np.r_[False, ev[: int(np.ceil(seconds / EVIDENCE_BIN_S)), i], False]
                edges = np.flatnonzero(np.diff(col.astype(np.int8)))  # run starts and ends
                for lo, hi in zip(edges[::2], edges[1::2]):
                    ax.axvspan(
                        lo * EVIDENCE_BIN_S, hi * EVIDENCE_BIN_S, color=colour, alpha=0.15, lw=0
                    )
            ax.plot(t, rec.ecg[:n, i], "k", lw=0.6)
            ax.set_xlim(0, seconds)
            ax.set_ylim(-2.0, 2.5)
            ax.set_yticks([-1, 0, 1, 2], labels=None if j == 0 else [])
            ax.set_xticks(np.arange(int(seconds) + 1), labels=None if i == NUM_LEADS - 1 else [])
            ax.tick_params(labelsize=6)
            ax.grid(True, lw=0.2)
            if j == 0:
                ax.set_ylabel(lead + " (mV)", fontsize=8)
        axes[0, j].set_title(f"{name} ({CLASS_INFO[j].description})", fontsize=8)
        axes[-1, j].set_xlabel("s", fontsize=7)
    fig.suptitle(
        f"synthetic_ecg {config_name}, seed {seed}: primary evidence red, secondary blue",
        fontsize=10,
    )
    fig.subplots_adjust(left=0.03, right=0.995, top=0.955, bottom=0.03, wspace=0.15, hspace=0.12)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    logging.info("Wrote %s", out_png)
    return out_png


# ---------------------------------------------------------------------------------------
# Evidence probe: is each region informative on its own? (logistic regression on features)
def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    """Moving average of k samples along axis 0: [T, ...] -> [T, ...]."""
    if k <= 1:
        return x
    c = np.cumsum(np.pad(x, [(k // 2 + 1, k - k // 2 - 1)] + [(0, 0)] * (x.ndim - 1), "edge"), 0)
    return (c[k:] - c[:-k]) / k


def beat_features(ecg: np.ndarray, keep: np.ndarray, fs: int) -> np.ndarray:
    """Hand-made features of the kept samples only: ecg [T, 12] mV, keep [T, 12] bool -> [F].

    Per lead: median beat (R-aligned, 20 ms steps), beat-to-beat variability, QRS amplitude,
    4-9 Hz residual power, observed flag; rhythm: rate and RR irregularity from peak pairs
    with no removed sample between them. Removed samples never enter any feature.
    """
    x = np.where(keep, ecg, 0.0).astype(np.float64)
    t_keep = keep.any(1)
    k = max(int(0.02 * fs), 1)
    slope = np.abs(np.diff(_smooth(x, k), axis=0, prepend=0.0)) * keep
    energy = _smooth(slope.sum(1) / np.maximum(keep.sum(1), 1), k)
    energy[~t_keep] = 0.0
    peaks: list[int] = []
    if energy.max() > 0:
        thr = 0.4 * np.percentile(energy[t_keep], 99)
        cand = np.flatnonzero((energy[1:-1] > thr) & (energy[1:-1] >= energy[:-2])
                              & (energy[1:-1] >= energy[2:])) + 1  # fmt: skip
        for i in cand:
            if not peaks or i - peaks[-1] > 0.25 * fs:
                peaks.append(int(i))
            elif energy[i] > energy[peaks[-1]]:
                peaks[-1] = int(i)
    peaks_a = np.array(peaks, np.int64)
    # rhythm
    gap = np.cumsum(~t_keep)
    rr = np.array([(b - a) / fs for a, b in zip(peaks_a[:-1], peaks_a[1:]) if gap[b] == gap[a]])
    if len(rr) >= 2:
        med = np.median(rr)
        rhythm = [
            1.0,
            60.0 / rr.mean(),
            rr.std() / rr.mean(),
            np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean(),
            rr.max() / med,
            rr.min() / med,
        ]
    else:
        rhythm = [0.0] * 6  # fmt: skip
    rhythm.append(len(peaks_a) / max(t_keep.sum() / fs, 1e-3))
    # longest kept stretch without a QRS (a pause), in seconds and relative to the median RR
    marks = np.zeros(len(x) + 1, np.int64)
    marks[peaks_a] = 1
    run_id = np.cumsum(marks[:-1] | np.r_[1, (~t_keep[:-1] & t_keep[1:])])
    run_len = np.bincount(run_id[t_keep], minlength=run_id.max() + 1) if t_keep.any() else [0]
    pause = float(np.max(run_len)) / fs
    rhythm += [pause, pause / np.median(rr) if len(rr) else 0.0]
    # median beats
    lo, hi = int(-0.2 * fs), int(0.42 * fs)
    step = max(int(0.02 * fs), 1)
    win = np.arange(lo, hi)
    per_lead = []
    residual = x.copy()
    idx = peaks_a[:, None] + win[None, :]  # [P, W]
    inside = (idx[:, 0] >= 0) & (idx[:, -1] < len(x)) if len(peaks_a) else np.zeros(0, bool)
    idx = idx[inside]
    for lead in range(NUM_LEADS):
        good = keep[idx, lead].all(1) if len(idx) else np.zeros(0, bool)
        if good.any():
            beats_a = x[idx[good], lead]
            beats_a = beats_a - beats_a[:, : int(0.08 * fs)].mean(1, keepdims=True)
            med_beat = np.median(beats_a, 0)
            var = np.sqrt(((beats_a - med_beat) ** 2).mean(1)).max()
            np.subtract.at(residual[:, lead], idx.reshape(-1), np.tile(med_beat, len(idx)))
        else:
            med_beat, var = np.zeros(len(win)), 0.0
        obs = keep[:, lead]
        if obs.sum() > fs:
            v = x[obs, lead]
            amp = np.percentile(v, 99) - np.percentile(v, 1)
            r = residual[obs, lead] - residual[obs, lead].mean()
            spec = np.abs(np.fft.rfft(r)) ** 2
            f = np.fft.rfftfreq(len(r), 1.0 / fs)
            band = spec[(f >= 4) & (f <= 9)].sum() / max(len(r), 1)
        else:
            amp, band = 0.0, 0.0
        per_lead.append(np.r_[med_beat[::step], var, amp, np.sqrt(band), float(obs.any())])
    return np.concatenate([np.array(rhythm)] + per_lead).astype(np.float32)


def _view_keep(
    rec: Record, view: str, primary: np.ndarray, secondary: np.ndarray
) -> np.ndarray:
    """[T, 12] bool keep mask of one probe view of a record, from its class's oracle regions.

    primary / secondary: [bins, 12] the class's regions in this record (the evaluation grid's
    oracle-region rule, scar_jax.evaluation.regions.oracle_regions). 'full': the observed leads;
    'no_primary': without the primary region; 'secondary_only': the secondary region only
    (less any primary overlap).
    """
    num_samples = rec.ecg.shape[0]
    keep = np.broadcast_to(rec.lead_observed, (num_samples, NUM_LEADS)).copy()
    if view == "full":
        return keep
    per = num_samples // primary.shape[0]
    prim, sec = np.repeat(primary, per, axis=0), np.repeat(secondary, per, axis=0)
    return keep & ~prim if view == "no_primary" else keep & sec & ~prim


def evidence_probe(
    *,
    num_train: int = 1500,
    num_test: int = 600,
    sampling_rate: int = 100,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    views: Sequence[str] = ("full", "no_primary", "secondary_only"),
    l2: float = 0.05,
) -> dict[str, dict[str, float]]:
    """Per class: test AUROC of a logistic probe trained and tested on each view.

    Views: 'full'; 'no_primary' (the class's primary region removed from every record,
    positives and negatives alike; PVC spans for negatives are a random positive's spans,
    shifted); 'secondary_only' (only the class's secondary region kept). The regions are
    the evaluation grid's oracle regions, the probe is evaluation's logistic regression
    (C = 1 / (l2 * num_train): mean log-loss + l2 / 2 * |w|^2) and AUROC.
    Returns {class: {view: test AUROC}}.
    """
    from scar_jax.evaluation import linear_probe, zeroshot
    from scar_jax.evaluation.regions import oracle_regions

    names = list(classes or CLASSES)
    recs = {
        split: [generate_record(seed, split, i, sampling_rate=sampling_rate) for i in range(n)]
        for split, n in (("train", num_train), ("test", num_test))
    }
    metadata = {"class_info": {c.name: c.as_dict() for c in CLASS_INFO}}
    regions = {}  # split -> region -> [C, N, bins, 12]
    for split, rs in recs.items():
        labels = np.stack([r.labels for r in rs])
        for region in ("primary", "secondary"):
            bins = np.stack([getattr(r, f"evidence_time_{region}") for r in rs])
            regions.setdefault(split, {})[region] = oracle_regions(
                metadata, CLASSES, region, labels, bins, bins.shape[1],
                seed=seed * len(SPLITS) + SPLITS.index(split),
            )
    cache: dict[tuple, np.ndarray] = {}
    out: dict[str, dict[str, float]] = {}
    for name in names:
        c = _CI[name]
        out[name] = {}
        for view in views:
            feats = {}
            for split, rs in recs.items():
                rows = []
                for i, r in enumerate(rs):
                    keep = _view_keep(r, view, regions[split]["primary"][c, i],
                                      regions[split]["secondary"][c, i])  # fmt: skip
                    key = (split, i, np.packbits(keep.any(0)).tobytes(),
                           np.packbits(keep.any(1)).tobytes())  # fmt: skip
                    if key not in cache:
                        cache[key] = beat_features(r.ecg, keep, sampling_rate)
                    rows.append(cache[key])
                feats[split] = np.stack(rows)
            mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
            ytr = np.array([r.labels[c] for r in recs["train"]])
            yte = np.array([r.labels[c] for r in recs["test"]])
            coef, intercept = linear_probe.fit_classes(
                (feats["train"] - mu) / sd, ytr[:, None], 1.0 / (l2 * len(ytr)), max_iter=300
            )
            score = ((feats["test"] - mu) / sd) @ coef.T + intercept
            out[name][view] = float(zeroshot.auroc(yte[:, None], score)[0])
        logging.info("evidence probe %s: %s", name, out[name])
    return out
