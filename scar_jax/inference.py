"""Single-ECG inference: read one WFDB or DICOM 12-lead record, preprocess, zero-shot scores.

  python -m scar_jax.main predict --config=configs/scar.py --checkpoint=WORKDIR/checkpoints \
      --input=record.hea [--dataset=synthetic_ecg]

The record goes through the same preprocessing ops as the builders (lead reordering by
the header's names, NaN repair along time, flat-lead detection, resampling, crop/pad with
unobserved padding) and the pipeline's normalisation, so a model sees it exactly as it
saw its training data. Absent leads stay unobserved (never zero-filled).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scar_jax.data import preprocessing
from scar_jax.leads import LEAD_NAMES
from scar_jax.data.builders import wfdb_common

WFDB_SUFFIXES = (".hea", ".dat", ".mat")

# DICOM channel units -> millivolts.
_DICOM_UNITS_TO_MV = {"uv": 1e-3, "mv": 1.0, "v": 1e3}


class UnreadableRecordError(ValueError):
    """A file that cannot be read as a 12-lead ECG; the message names the file and the problem."""


@dataclasses.dataclass
class Prediction:
    """Zero-shot scores of one record: class -> cosine score, and which leads were observed."""

    scores: dict[str, float]
    lead_observed: dict[str, bool]
    valid_seconds: float
    file: str


def read_dicom(path: str) -> wfdb_common.Record:
    """A DICOM 12-lead waveform (first multiplex group) -> Record in mV with its lead names."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        wave = ds.WaveformSequence[0]
        signal = np.asarray(ds.waveform_array(0), np.float64)
        channels = list(wave.ChannelDefinitionSequence)
        rate = float(wave.SamplingFrequency)
    except Exception as e:  # pydicom raises many types on a broken or non-waveform file
        raise UnreadableRecordError(
            f"{path}: not a readable DICOM ECG waveform ({type(e).__name__}: {e})."
        ) from None
    names = []
    for j, ch in enumerate(channels):
        meaning = str(ch.ChannelSourceSequence[0].CodeMeaning)  # e.g. 'Lead I (Einthoven)'
        words = meaning.replace("Lead", " ").split()
        if not words:
            raise UnreadableRecordError(f"{path}: channel {j} has no lead name ({meaning!r}).")
        names.append(words[0])
        unit = str(ch.ChannelSensitivityUnitsSequence[0].CodeValue).strip().lower()
        if unit not in _DICOM_UNITS_TO_MV:
            raise UnreadableRecordError(
                f"{path}: channel {meaning!r} is in unit {unit!r}; expected one of "
                f"{sorted(_DICOM_UNITS_TO_MV)}."
            )
        signal[:, j] *= _DICOM_UNITS_TO_MV[unit]
    return wfdb_common.Record(signal, names, int(round(rate)), [], path)


def read_ecg_file(path: str) -> wfdb_common.Record:
    """A WFDB record (.hea/.dat/.mat or the path without extension) or a .dcm file -> Record."""
    path = os.fspath(path)
    if path.lower().endswith(".dcm"):
        if not os.path.exists(path):
            raise UnreadableRecordError(f"{path}: no such file.")
        return read_dicom(path)
    base = path
    for suffix in WFDB_SUFFIXES:
        if path.lower().endswith(suffix):
            base = path[: -len(suffix)]
    if not os.path.exists(base + ".hea"):
        raise UnreadableRecordError(
            f"{path}: no WFDB header {base}.hea and not a .dcm file; pass a WFDB record "
            "(header + signal file) or a DICOM 12-lead ECG."
        )
    try:
        return wfdb_common.read_record(base, num_leads=None)
    except wfdb_common.RecordError as e:
        raise UnreadableRecordError(str(e)) from None


def prepare_input(
    record: wfdb_common.Record, input_config: ml_collections.ConfigDict
) -> dict[str, np.ndarray]:
    """Record -> a batch of one: ecg float32 [1, T, 12] normalised, lead_observed, time_observed."""
    rate = int(input_config.sample_rate)
    num_samples = int(round(rate * float(input_config.seconds)))
    try:
        prepared = preprocessing.prepare_record(
            record.signal,
            record.names,
            record.rate,
            target_rate=rate,
            num_samples=num_samples,
            max_gap_samples=preprocessing.nan_gap_samples(record.rate),
        )
    except ValueError as e:
        raise UnreadableRecordError(f"{record.file}: {e}") from None
    observed = prepared["lead_observed"]
    if not observed.any():
        raise UnreadableRecordError(
            f"{record.file}: no usable lead (all absent, NaN or flat); nothing to score."
        )
    time_observed = np.arange(num_samples) < prepared["valid_samples"]
    ecg = preprocessing.normalize_batch(
        prepared["ecg"][None], observed[None], time_observed[None], input_config.normalize
    )
    return {
        "ecg": ecg.astype(np.float32),
        "lead_observed": observed[None],
        "time_observed": time_observed[None],
    }


def zero_shot_scores(
    model: Any, variables: Any, batch: Mapping[str, np.ndarray], z_cls: np.ndarray
) -> np.ndarray:
    """Cosine scores [B, K] of the batch's ECG embeddings against K class embeddings [K, E]."""
    from scar_jax.models import scar as scar_model

    z_ecg, _ = model.apply(
        variables,
        jnp.asarray(batch["ecg"]),
        jnp.asarray(batch["lead_observed"]),
        jnp.asarray(batch["time_observed"]),
        method=scar_model.Model.embed_ecg,
    )
    z_ecg = np.asarray(jax.device_get(z_ecg))
    z_ecg = z_ecg / np.maximum(np.linalg.norm(z_ecg, axis=-1, keepdims=True), 1e-12)
    return z_ecg @ np.asarray(z_cls).T


def predict(
    config: ml_collections.ConfigDict,
    variables: Any,
    path: str,
    dataset: str,
) -> Prediction:
    """Zero-shot scores of every class of `dataset` for the ECG file at `path`."""
    from scar_jax.data import labels as labels_lib
    from scar_jax.models import scar as scar_model

    record = read_ecg_file(path)
    batch = prepare_input(record, config.input)
    classes = labels_lib.classes(dataset)
    model = scar_model.build_model(config.model)
    # the class embeddings eval scores with: phrasings averaged, centred as config.eval says
    z_cls = scar_model.class_embeddings(
        model, variables, labels_lib.class_prompts(dataset, classes),
        text_checkpoint=config.model.txt.checkpoint, max_len=int(config.model.txt.max_len),
        center=bool(config.eval.get("center_prompts", False)))
    scores = zero_shot_scores(model, variables, batch, z_cls)[0]
    if not np.all(np.isfinite(scores)):
        raise FloatingPointError(f"{path}: non-finite zero-shot scores {scores}.")
    return Prediction(
        scores={c: float(s) for c, s in zip(classes, scores)},
        lead_observed={
            n: bool(o) for n, o in zip(LEAD_NAMES, batch["lead_observed"][0])
        },
        valid_seconds=float(batch["time_observed"][0].sum()) / int(config.input.sample_rate),
        file=path,
    )


def format_prediction(p: Prediction) -> str:
    """A human-readable table: observed leads, then classes by descending score."""
    leads = " ".join(n if o else f"({n})" for n, o in p.lead_observed.items())
    lines = [
        f"{p.file}",
        f"  leads  {leads}   (parenthesised = not observed)",
        f"  signal {p.valid_seconds:.1f} s observed",
        "  zero-shot score (cosine ECG-prompt similarity), highest first:",
    ]
    for c, s in sorted(p.scores.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {c:<12} {s:+.4f}")
    return "\n".join(lines)
