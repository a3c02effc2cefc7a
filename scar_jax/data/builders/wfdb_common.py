"""Shared parts of the real-corpus builders: WFDB reading, record hygiene, skip manifest, splits.

A record goes: `read_record` (header via `wfdb.rdheader`, samples from `.dat` via
`wfdb.rdrecord` or from a Challenge `.mat` via scipy, converted to millivolts) ->
`Hygiene.example` (`preprocessing.prepare_record`: reorder by header names, NaN repair
along time, flat leads, resample, crop/pad with unobserved padding, int16) -> the example
schema of `scar_jax.data`.

Every problem has a named reason (`REASONS`). A record with a skip reason is left out and
written to the skip manifest (JSON lines: id, file, reason, detail, action); in strict mode
the first such record raises `RecordError` naming the file and the problem. Lead-level
problems (NaN runs, flat leads) mask the lead by default (`bad_lead_policy='mask'`: the
record is kept, the lead becomes unobserved, the event is in the manifest with
action 'masked'); `bad_lead_policy='skip'` skips such records instead. Short NaN gaps are
interpolated and listed with action 'repaired' (NaN counts per record).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.core import shuffle as tfds_shuffle

from scar_jax.data import preprocessing, reports

REASONS = {
    "missing_file": "the header or the signal file does not exist",
    "unreadable_header": "the .hea file cannot be parsed",
    "unreadable_data": "the signal file cannot be read (bad .mat, unsupported format)",
    "truncated": "the signal file holds fewer samples than the header declares",
    "length_mismatch": "the signal file holds more samples than the header declares",
    "wrong_lead_count": "the record does not have the corpus's number of leads",
    "unknown_lead": "a header lead name is not one of the 12 standard leads (or repeats one)",
    "unknown_units": "a header unit is not V, mV, uV or nV",
    "wrong_rate": "the header sampling rate is not the corpus's rate",
    "empty_report": "the report is empty after cleaning",
    "short_report": "the cleaned report has fewer words than the configured minimum",
    "bad_encoding": "the report is not valid UTF-8",
    "missing_metadata": "the record is not in the corpus's metadata table (or vice versa)",
    "no_label": "none of the record's codes maps to a class of this corpus",
    "nan": "a lead has a NaN/Inf run longer than the repair limit",
    "flat": "a lead is constant",
    "no_observed_lead": "after masking, no lead is left",
    "bad_metadata": "a field of the record's row in the metadata table is missing or does "
    "not parse",
    "outside_corpus": "a path in the metadata table points outside the corpus folder",
}
LEAD_REASONS = ("nan", "flat")
UNITS_TO_MV = {"v": 1e3, "mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "nv": 1e-6}
# Bytes per sample of the WFDB formats whose file size we can check before reading.
_BYTES_PER_SAMPLE = {"16": 2.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5, "24": 3.0, "32": 4.0}
# Digital value WFDB writes for a missing (NaN) sample, per format.
_WFDB_NAN = {"16": -(2**15), "61": -(2**15), "212": -(2**11), "24": -(2**23), "32": -(2**31)}
MANIFEST_NAME = "skip_manifest.jsonl"


class RecordError(ValueError):
    """A broken record: `reason` (a key of REASONS), the `file` and a `detail`."""

    def __init__(self, reason: str, file: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"RecordError: unknown reason {reason!r}; add it to REASONS.")
        self.reason, self.file, self.detail = reason, str(file), detail
        super().__init__(
            f"{file}: {reason} ({REASONS[reason]}): {detail}. Fix or remove this record, or "
            "build without strict mode to skip it and list it in the skip manifest."
        )


@dataclasses.dataclass
class Record:
    """One raw record: signal float64 [T, L] in mV (NaN where missing), names [L], rate Hz."""

    signal: np.ndarray
    names: list[str]
    rate: int
    comments: list[str]
    file: str


def parse_comments(comments: Iterable[str]) -> dict[str, str]:
    """['Age: 56', 'Dx: 1,2'] (with or without '#') -> {'Age': '56', 'Dx': '1,2'}."""
    out = {}
    for line in comments:
        line = line.strip().lstrip("#").strip()
        if ":" in line:
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def parse_dx(value: str | None) -> list[str]:
    """'164889003,59118001' -> ['164889003', '59118001'] (codes as strings, blanks dropped)."""
    if not value:
        return []
    return [c.strip() for c in value.replace(";", ",").split(",") if c.strip()]


def corpus_path(root: str, relative: str, what: str) -> str:
    """root + a path read from a metadata table -> the joined path; RecordError
    'outside_corpus' when it leaves the corpus folder (an absolute path, '..', a link out).

    `what` names where the path was read (e.g. 'ptbxl_database.csv filename_hr')."""
    relative = str(relative).strip()
    joined = os.path.join(root, relative)
    real_root = os.path.realpath(root)
    real = os.path.realpath(joined)
    if os.path.isabs(relative) or os.path.commonpath([real_root, real]) != real_root:
        raise RecordError("outside_corpus", joined,
                          f"{what} {relative!r} resolves to {real}, outside {real_root}")
    return joined


def _signal_file(header, record_path: str) -> str:
    """The one signal file a header points to (all our corpora keep one file per record)."""
    files = sorted(set(header.file_name or []))
    if len(files) != 1:
        raise RecordError(
            "unreadable_header", record_path + ".hea", f"expected one signal file, got {files}"
        )
    return os.path.join(os.path.dirname(record_path), files[0])


def read_record(
    record_path: str,
    *,
    num_leads: int | None = 12,
    rate: int | None = None,
) -> Record:
    """'<dir>/<name>' (no extension) -> Record in mV; problems raise RecordError with a reason.

    Reads `.dat` signals with `wfdb.rdrecord` and Challenge `.mat` signals (`val`, [L, T])
    with scipy; checks file presence, file size against the header (truncated /
    length_mismatch), lead count and sampling rate; WFDB's missing-sample value becomes NaN.
    """
    import scipy.io
    import wfdb

    hea = record_path + ".hea"
    if not os.path.exists(hea):
        raise RecordError("missing_file", hea, "no header file")
    try:
        header = wfdb.rdheader(record_path)
    except Exception as e:  # wfdb raises many types on a bad header
        raise RecordError("unreadable_header", hea, f"{type(e).__name__}: {e}") from None
    if not header.n_sig or not header.sig_name or not header.fs:
        raise RecordError("unreadable_header", hea, "no signals or no sampling rate declared")
    names = [str(n) for n in header.sig_name]
    comments = list(header.comments or [])
    if num_leads is not None and header.n_sig != num_leads:
        raise RecordError(
            "wrong_lead_count", hea, f"{header.n_sig} leads {names}, expected {num_leads}"
        )
    try:
        [preprocessing.canonical_lead_name(n) for n in names]
    except ValueError as e:
        raise RecordError("unknown_lead", hea, str(e)) from None
    if len({n.lower() for n in names}) != len(names):
        raise RecordError("unknown_lead", hea, f"a lead name repeats: {names}")
    fs = float(header.fs)
    if rate is not None and fs != rate:
        raise RecordError("wrong_rate", hea, f"{fs:g} Hz, expected {rate} Hz")
    units = [str(u or "mV").strip().lower() for u in header.units]
    bad_units = [u for u in units if u not in UNITS_TO_MV]
    if bad_units:
        raise RecordError("unknown_units", hea, f"units {bad_units}")
    data_file = _signal_file(header, record_path)
    if not os.path.exists(data_file):
        raise RecordError("missing_file", data_file, "the header's signal file does not exist")
    sig_len = int(header.sig_len or 0)
    fmts = {str(f) for f in header.fmt}
    if data_file.endswith(".mat"):
        try:
            digital = np.asarray(scipy.io.loadmat(data_file)["val"], np.float64).T
        except Exception as e:
            raise RecordError("unreadable_data", data_file, f"{type(e).__name__}: {e}") from None
        if digital.ndim != 2 or digital.shape[1] != header.n_sig:
            raise RecordError(
                "unreadable_data", data_file, f"'val' has shape {digital.T.shape}, "
                f"expected [{header.n_sig}, T]"
            )
        if digital.shape[0] < sig_len:
            raise RecordError("truncated", data_file, f"{digital.shape[0]} < {sig_len} samples")
        if digital.shape[0] > sig_len:
            raise RecordError(
                "length_mismatch", data_file, f"{digital.shape[0]} > {sig_len} samples"
            )
    else:
        if len(fmts) == 1 and (fmt := fmts.pop()) in _BYTES_PER_SAMPLE:
            offset = int((header.byte_offset or [0])[0] or 0)
            have = os.path.getsize(data_file) - offset
            want = int(np.ceil(sig_len * header.n_sig * _BYTES_PER_SAMPLE[fmt]))
            if have < want:
                raise RecordError("truncated", data_file, f"{have} bytes < {want} declared")
            if have > want + 1:  # format 212 may pad one byte
                raise RecordError("length_mismatch", data_file, f"{have} bytes > {want} declared")
        try:
            rec = wfdb.rdrecord(record_path, physical=False, return_res=64)
        except Exception as e:
            raise RecordError("unreadable_data", data_file, f"{type(e).__name__}: {e}") from None
        digital = np.asarray(rec.d_signal, np.float64)
        if digital.shape[0] != sig_len:
            raise RecordError("truncated", data_file, f"{digital.shape[0]} != {sig_len} samples")
    signal = np.empty_like(digital)
    for j in range(header.n_sig):
        fmt = str(header.fmt[j])
        col = digital[:, j]
        gain = float(header.adc_gain[j] or 200.0)
        physical = (col - float(header.baseline[j] or 0)) / gain * UNITS_TO_MV[units[j]]
        if fmt in _WFDB_NAN:
            physical[col == _WFDB_NAN[fmt]] = np.nan
        signal[:, j] = physical
    return Record(signal, names, int(round(fs)), comments, data_file)


def _stable_fraction(key: str, seed: int) -> float:
    """A uniform number in [0, 1) from (seed, key), identical on every machine and run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hashed_split(key: str, fractions: Mapping[str, float], seed: int) -> str:
    """A split name for a group key (e.g. a subject id) by a seeded hash; streaming-safe."""
    u, acc = _stable_fraction(key, seed), 0.0
    for name, frac in fractions.items():
        acc += frac
        if u < acc:
            return name
    return list(fractions)[-1]


def seeded_split(
    groups: Sequence[str], fractions: Mapping[str, float], seed: int
) -> dict[str, str]:
    """groups (e.g. patient ids) -> {group: split} with exact proportions (a seeded shuffle)."""
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {dict(fractions)} must sum to 1.")
    uniq = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(uniq))
    bounds = np.round(np.cumsum(list(fractions.values())) * len(uniq)).astype(int)
    out, start = {}, 0
    for name, stop in zip(fractions, bounds):
        for i in order[start:stop]:
            out[uniq[i]] = name
        start = stop
    return out


class Hygiene:
    """Counts and logs record problems, writes the skip manifest, raises in strict mode."""

    def __init__(self, name: str, *, strict: bool = False, bad_lead_policy: str = "mask"):
        if bad_lead_policy not in ("mask", "skip"):
            raise ValueError(f"bad_lead_policy={bad_lead_policy!r}; expected 'mask' or 'skip'.")
        self.name, self.strict, self.bad_lead_policy = name, strict, bad_lead_policy
        self.counts: collections.Counter = collections.Counter()
        self.kept = 0
        self.n_repaired = 0
        self.manifest_path: str | None = None

    def open(self, directory: str) -> None:
        """Starts a fresh manifest `directory/skip_manifest.jsonl` and zeroes the counts."""
        self.counts.clear()
        self.kept = self.n_repaired = 0
        os.makedirs(directory, exist_ok=True)
        self.manifest_path = os.path.join(directory, MANIFEST_NAME)
        open(self.manifest_path, "w").close()

    def report(self, id_: str, file: str, reason: str, detail: str, action: str = "skipped"):
        """Records one event; a skip in strict mode raises RecordError."""
        if reason not in REASONS:
            raise ValueError(f"Hygiene.report: unknown reason {reason!r}.")
        self.counts[(reason, action)] += 1
        if self.strict and action == "skipped":
            raise RecordError(reason, file, detail)
        logging.log_every_n(logging.WARNING, "%s: %s %s: %s", 100, id_, action, reason, detail)
        if self.manifest_path:
            line = {"id": id_, "file": str(file), "reason": reason, "detail": detail}
            line["action"] = action
            with open(self.manifest_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")

    def skip(self, id_: str, err: RecordError) -> None:
        """Records a RecordError as a skipped record (raises it again in strict mode)."""
        self.report(id_, err.file, err.reason, err.detail)

    def example(
        self,
        id_: str,
        record: Record,
        *,
        target_rate: int,
        num_samples: int,
        max_gap_s: float = preprocessing.MAX_NAN_GAP_SECONDS,
        crop_policy: str = "start",
    ) -> dict[str, Any] | None:
        """Record -> the schema's signal fields (ecg int16 [num_samples, 12], ...) or None."""
        try:
            prep = preprocessing.prepare_record(
                record.signal,
                record.names,
                record.rate,
                target_rate=target_rate,
                num_samples=num_samples,
                max_gap_samples=preprocessing.nan_gap_samples(record.rate, max_gap_s),
                crop_policy=crop_policy,
            )
        except ValueError as e:  # names were checked by read_record
            self.skip(id_, RecordError("unreadable_data", record.file, str(e)))
            return None
        # Which leads were lost to NaN (not flat): present in the header, unobserved, not flat.
        present = np.zeros(preprocessing.NUM_LEADS, bool)
        present[[preprocessing.LEAD_NAMES.index(preprocessing.canonical_lead_name(n))
                 for n in record.names]] = True
        nan_lost = present & ~prep["lead_observed"] & ~prep["flat"]
        events = [
            ("nan", nan_lost, "NaN/Inf run longer than %g s" % max_gap_s),
            ("flat", prep["flat"], "constant lead"),
        ]
        action = "masked" if self.bad_lead_policy == "mask" else "skipped"
        for reason, leads, what in events:
            if leads.any():
                names = [preprocessing.LEAD_NAMES[i] for i in np.flatnonzero(leads)]
                self.report(id_, record.file, reason, f"{what}: {names}", action)
                if action == "skipped":
                    return None
        if not prep["lead_observed"].any():
            self.report(id_, record.file, "no_observed_lead", "every lead is NaN or flat")
            return None
        if prep["n_repaired"]:
            self.n_repaired += 1
            self.report(id_, record.file, "nan", f"{prep['n_repaired']} NaN/Inf samples "
                        "interpolated", action="repaired")
        ecg, n_clipped = preprocessing.to_int16(prep["ecg"])
        if n_clipped:
            logging.warning("%s: %d samples beyond +-32.767 mV clipped", id_, n_clipped)
        return {
            "ecg": ecg,
            "ecg_scale": np.float32(preprocessing.DEFAULT_ECG_SCALE),
            "lead_observed": prep["lead_observed"],
            "valid_samples": np.int32(prep["valid_samples"]),
            "source_rate": np.int32(prep["source_rate"]),
            "source_length": np.int32(prep["source_length"]),
        }

    def summary(self) -> dict[str, int]:
        """{'kept': n, '<reason>/<action>': n, ...}."""
        out = {"kept": self.kept, "nan_repaired_records": self.n_repaired}
        out.update({f"{r}/{a}": n for (r, a), n in sorted(self.counts.items())})
        return out

    def log_summary(self) -> dict[str, int]:
        """Logs (and returns) the counts at the end of a build."""
        s = self.summary()
        lines = "\n".join(f"  {k:32s} {v}" for k, v in s.items())
        logging.info("%s build: record counts (manifest %s)\n%s", self.name,
                     self.manifest_path, lines)
        return s


# TFDS spills a split's (or shard's) shuffle buffer to disk through tf.io.gfile, i.e. it needs
# TensorFlow, once the buffer passes 1000 MiB; builders keep it in memory up to this instead
# (PTB-XL at 500 Hz is ~2.6 GB of examples, Chapman-Shaoxing ~5.4 GB). Past it, build in
# shards (`main build --num_shards`).
IN_MEMORY_SHUFFLE_BYTES = 8 << 30


@contextlib.contextmanager
def in_memory_shuffle(limit: int = IN_MEMORY_SHUFFLE_BYTES):
    """TFDS's in-memory shuffle limit raised to `limit` bytes inside the block."""
    before = tfds_shuffle.MAX_MEM_BUFFER_SIZE
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = max(before, int(limit))
    try:
        yield
    finally:
        tfds_shuffle.MAX_MEM_BUFFER_SIZE = before


class WfdbBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the real-corpus builders: ArrayRecord by default, hygiene + manifest + counts.

    Extra constructor arguments: `strict` (raise at the first broken record) and
    `bad_lead_policy` ('mask' NaN/flat leads as unobserved, or 'skip' such records).
    """

    def __init__(self, *, strict: bool = False, bad_lead_policy: str = "mask", **kwargs):
        if kwargs.get("file_format") is None:
            kwargs["file_format"] = "array_record"
        self.hygiene = Hygiene(type(self).name, strict=strict, bad_lead_policy=bad_lead_policy)
        self.reports = reports.Collector()
        super().__init__(**kwargs)

    def _download_and_prepare(self, dl_manager, download_config=None):
        """Generates the splits; writes the skip manifest and the report tables; logs and
        stores the counts."""
        self.hygiene.open(os.fspath(self.data_path))
        self.reports.reset()
        with in_memory_shuffle():
            super()._download_and_prepare(dl_manager, download_config)
        self.info.metadata["record_counts"] = self.hygiene.log_summary()
        write_report_tables(self, self.reports)

    def _keep(self, split: str, key: str, example: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Counts a kept example, gives it its report_id (collected into `split`'s report
        table) and returns (key, example) for the generator to yield."""
        self.hygiene.kept += 1
        example["report_id"] = self.reports.add(split, example["report"])
        return key, example


def non_empty_splits(name: str, splits: Mapping[str, Any]) -> dict[str, Any]:
    """{split: its records} without the splits that have none (TFDS cannot write an empty
    split: every row of one may be malformed); each one left out is logged."""
    for split in [s for s, records in splits.items() if not len(records)]:
        logging.warning("%s: no valid record is in the %s split; the split is left out",
                        name, split)
    return {s: records for s, records in splits.items() if len(records)}


def write_report_tables(builder: tfds.core.DatasetBuilder, collector: reports.Collector) -> None:
    """After generation: every split's report table next to its files (scar_jax.data.reports),
    named in info.metadata['report_tables']."""
    splits = list(builder.info.splits.keys())
    builder.info.metadata["report_tables"] = collector.write(builder.data_path, splits)


def read_manifest(path: str) -> list[dict[str, str]]:
    """skip_manifest.jsonl -> its lines as dicts."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def schema_features(num_samples: int, num_classes: int | None, **extra):
    """The `scar_jax.data` example schema as tfds features (+ corpus-specific `extra`).

    ecg is stored as raw little-endian int16 bytes (Encoding.BYTES; the shape is in the
    schema): a tf.train.Example int64 list would cost ~5 bytes per sample. report_id is the
    report's id in the split's report table (scar_jax.data.reports).
    """
    f = tfds.features
    feats = {
        "ecg": f.Tensor(shape=(num_samples, preprocessing.NUM_LEADS), dtype=np.int16,
                        encoding=f.Encoding.BYTES),
        "report_id": f.Scalar(dtype=np.int64),
        "ecg_scale": f.Scalar(dtype=np.float32),
        "lead_observed": f.Tensor(shape=(preprocessing.NUM_LEADS,), dtype=np.bool_),
        "valid_samples": f.Scalar(dtype=np.int32),
        "report": f.Text(),
        "labels": f.Tensor(shape=(num_classes,), dtype=np.bool_),
        "id": f.Text(),
        "patient_id": f.Text(),
        "source_rate": f.Scalar(dtype=np.int32),
        "source_length": f.Scalar(dtype=np.int32),
    }
    feats.update(extra)
    return f.FeaturesDict(feats)


def multi_hot(names: Iterable[str], classes: Sequence[str]) -> np.ndarray:
    """names present -> bool [len(classes)]."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros(len(classes), bool)
    for n in names:
        if n in index:
            out[index[n]] = True
    return out


# --- Fixture writing (used by each builder's make_dummy_data.py and by the tests) ---------


def synthetic_ecg(seconds: float, rate: int, seed: int, heart_rate: float = 70.0) -> np.ndarray:
    """A plausible 12-lead ECG (P, QRS, T Gaussians; Einthoven-consistent limbs): [T, 12] mV."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    rr = 60.0 / heart_rate
    phase = (t + rng.uniform(0, rr)) % rr
    waves = [(0.10, 0.12, 0.02), (-0.1, 0.19, 0.006), (1.0, 0.21, 0.008), (-0.25, 0.23, 0.008),
             (0.3, 0.45, 0.04)]  # (amplitude mV, centre s, width s): P, Q, R, S, T
    beat = sum(a * np.exp(-0.5 * ((phase - c) / w) ** 2) for a, c, w in waves)
    lead_i = 0.6 * beat + 0.02 * rng.standard_normal(t.size)
    lead_ii = 1.0 * beat + 0.02 * rng.standard_normal(t.size)
    limbs = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2,
             lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    chest = [g * beat + 0.02 * rng.standard_normal(t.size)
             for g in (-0.5, -0.2, 0.4, 1.1, 1.2, 0.9)]
    return np.stack(limbs + chest, axis=1)


def pydicom_ecg() -> tuple[np.ndarray, list[str], int, str]:
    """The real ECG inside pydicom: (signal [10000, 12] mV, lead names, 1000 Hz, report)."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    wave = ds.WaveformSequence[0]
    names = []
    for ch in wave.ChannelDefinitionSequence:
        meaning = ch.ChannelSourceSequence[0].CodeMeaning  # 'Lead I (Einthoven)', 'Lead aVR'
        names.append(meaning.split()[1])
        if ch.ChannelSensitivityUnitsSequence[0].CodeValue != "uV":
            raise ValueError("pydicom's waveform_ecg.dcm is expected in uV.")
    report = ". ".join(
        a.UnformattedTextValue for a in ds.WaveformAnnotationSequence
        if getattr(a, "UnformattedTextValue", "")
    )
    return ds.waveform_array(0) / 1000.0, names, int(wave.SamplingFrequency), report


def write_wfdb(
    record_path: str,
    signal_mv: np.ndarray,
    names: Sequence[str],
    rate: int,
    comments: Sequence[str] = (),
    units: str = "mV",
    gain: float = 1000.0,
) -> None:
    """Writes '<record_path>.hea/.dat' (format 16, NaN -> WFDB's missing value) with wfdb."""
    import wfdb

    directory, name = os.path.split(record_path)
    os.makedirs(directory or ".", exist_ok=True)
    scale = UNITS_TO_MV[units.lower()]
    phys = np.asarray(signal_mv, np.float64) / scale
    digital = np.where(np.isfinite(phys), np.clip(np.rint(phys * gain), -32767, 32767), -32768)
    wfdb.wrsamp(
        name, fs=rate, units=[units] * len(names), sig_name=list(names),
        d_signal=digital.astype(np.int16), fmt=["16"] * len(names), adc_gain=[gain] * len(names),
        baseline=[0] * len(names), comments=list(comments), write_dir=directory or ".",
    )


def write_challenge_mat(
    record_path: str,
    signal_mv: np.ndarray,
    names: Sequence[str],
    rate: int,
    comments: Sequence[str] = (),
    gain: float = 1000.0,
) -> None:
    """Writes the PhysioNet/CinC Challenge layout: '<name>.mat' (MAT v4 'val' [L, T]) + '.hea'."""
    import scipy.io

    directory, name = os.path.split(record_path)
    os.makedirs(directory or ".", exist_ok=True)
    val = np.clip(np.rint(np.asarray(signal_mv) * gain), -32767, 32767).astype(np.int16).T
    scipy.io.savemat(record_path + ".mat", {"val": val}, format="4")
    lines = [f"{name} {len(names)} {rate} {val.shape[1]}"]
    for j, lead in enumerate(names):
        lines.append(f"{name}.mat 16+24 {gain:g}/mV 16 0 {int(val[j, 0])} 0 0 {lead}")
    lines += [f"#{c}" for c in comments]
    with open(record_path + ".hea", "w") as f:
        f.write("\n".join(lines) + "\n")
