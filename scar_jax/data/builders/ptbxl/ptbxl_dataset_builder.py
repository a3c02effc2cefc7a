"""PTB-XL 1.0.3: 21,799 10 s 12-lead ECGs, four label sets from scp_codes, strat_fold splits."""

from __future__ import annotations

import ast
import csv
import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from scar_jax.data import real_labels
from scar_jax.data.builders import wfdb_common

SPLIT_FOLDS = {"train": tuple(range(1, 9)), "validation": (9,), "test": (10,)}
_SET_COLUMN = {"superdiagnostic": "diagnostic_class", "subdiagnostic": "diagnostic_subclass"}
_SET_FLAG = {"superdiagnostic": "diagnostic", "subdiagnostic": "diagnostic", "form": "form",
             "rhythm": "rhythm"}


def _flag(value: Any) -> bool:
    """A scp_statements.csv flag cell (1.0 / '' / NaN) -> bool."""
    try:
        return float(value) == 1.0
    except (TypeError, ValueError):
        return False


def label_maps(statements) -> dict[str, dict[str, str]]:
    """scp_statements.csv (DataFrame indexed by SCP code) -> {label set: {code: class name}}.

    superdiagnostic / subdiagnostic: diagnostic codes -> diagnostic_class / _subclass;
    form / rhythm: codes with that flag -> themselves. Classes must be those of real_labels.
    """
    out: dict[str, dict[str, str]] = {}
    for name, classes in real_labels.PTBXL_LABEL_SETS.items():
        flag = _SET_FLAG[name]
        mapping = {}
        for code, row in statements.iterrows():
            if not _flag(row[flag]):
                continue
            target = str(row[_SET_COLUMN[name]]) if name in _SET_COLUMN else str(code)
            if target not in classes:
                raise ValueError(
                    f"scp_statements.csv maps {code!r} to {name} class {target!r}, which is "
                    f"not in scar_jax/data/real_labels.py PTBXL_LABEL_SETS[{name!r}]; is this "
                    "PTB-XL 1.0.3?"
                )
            mapping[str(code)] = target
        out[name] = mapping
    return out


def derive_labels(scp_codes: str | dict, maps: dict[str, dict[str, str]]) -> dict[str, list]:
    """"{'IMI': 50.0, 'SR': 0.0}" -> {label set: sorted class names}; every code counts.

    As the PTB-XL benchmark (Strodthoff et al. 2020) does, a code counts whatever its
    likelihood (0 included).
    """
    codes = ast.literal_eval(scp_codes) if isinstance(scp_codes, str) else scp_codes
    return {s: sorted({m[c] for c in codes if c in m}) for s, m in maps.items()}


@dataclasses.dataclass(eq=False)
class PtbxlConfig(tfds.core.BuilderConfig):
    """A sampling rate (500 or 100 Hz): which WFDB folder to read and the stored length."""

    rate: int = 500  # Hz: records500 (filename_hr) or records100 (filename_lr)

    def __post_init__(self):
        if self.rate not in (100, 500):
            raise ValueError(f"PTB-XL rate={self.rate}; the corpus has 100 and 500 Hz files.")

    @property
    def num_samples(self) -> int:
        """10 s at the config's rate."""
        return 10 * self.rate

    @property
    def filename_column(self) -> str:
        """The ptbxl_database.csv column of the record paths."""
        return {500: "filename_hr", 100: "filename_lr"}[self.rate]


class Builder(wfdb_common.WfdbBuilder):
    """PTB-XL from a local PhysioNet copy (manual_dir); ArrayRecord, no TensorFlow needed."""

    name = "ptbxl"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.3": "PTB-XL 1.0.3, four label sets, strat_fold splits.",
        "2.0.0": "ECG as raw int16 bytes; report_id + per-split report tables; a malformed "
        "ptbxl_database.csv row is skipped (bad_metadata / outside_corpus), not fatal.",
    }
    BUILDER_CONFIGS = [
        PtbxlConfig(name="500hz", rate=500, description="records500, 5000 samples"),
        PtbxlConfig(name="100hz", rate=100, description="records100, 1000 samples"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download PTB-XL 1.0.3 from https://physionet.org/content/ptb-xl/1.0.3/ and pass its root
    (the folder holding ptbxl_database.csv, scp_statements.csv, records100/, records500/) as
    --manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        extra = {}
        for name, classes in real_labels.PTBXL_LABEL_SETS.items():
            extra[f"labels_{name}"] = tfds.features.Tensor(shape=(len(classes),), dtype=np.bool_)
            extra[f"has_{name}"] = tfds.features.Scalar(dtype=np.bool_)
        extra["ecg_id"] = tfds.features.Scalar(dtype=np.int32)
        extra["strat_fold"] = tfds.features.Scalar(dtype=np.int32)
        metadata = tfds.core.MetadataDict(
            sample_rate=self.builder_config.rate,
            classes=list(real_labels.PTBXL_SUPERDIAGNOSTIC),
            label_sets={k: list(v) for k, v in real_labels.PTBXL_LABEL_SETS.items()},
        )
        return self.dataset_info_from_configs(
            features=wfdb_common.schema_features(
                self.builder_config.num_samples, len(real_labels.PTBXL_SUPERDIAGNOSTIC), **extra
            ),
            metadata=metadata,
            homepage="https://physionet.org/content/ptb-xl/1.0.3/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        import pandas as pd

        root = os.fspath(dl_manager.manual_dir)
        db_path = os.path.join(root, "ptbxl_database.csv")
        if not os.path.exists(db_path):
            raise FileNotFoundError(
                f"{db_path} not found: --manual_dir must be the PTB-XL root. "
                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        maps = label_maps(pd.read_csv(os.path.join(root, "scp_statements.csv"), index_col=0))
        rows = read_database(db_path, root, self.builder_config.filename_column, maps,
                             self.hygiene)
        by_split = wfdb_common.non_empty_splits(self.name, {
            s: [r for r in rows if r["strat_fold"] in folds] for s, folds in SPLIT_FOLDS.items()
        })
        return {s: self._generate_examples(s, r) for s, r in by_split.items()}

    def _generate_examples(self, split: str, rows: list[dict[str, Any]]):
        cfg = self.builder_config
        for row in rows:
            key = row["id"]
            try:
                record = wfdb_common.read_record(row["path"], rate=cfg.rate)
            except wfdb_common.RecordError as e:
                self.hygiene.skip(key, e)
                continue
            signal = self.hygiene.example(
                key, record, target_rate=cfg.rate, num_samples=cfg.num_samples
            )
            if signal is None:
                continue
            labels = row["labels"]
            ex = dict(signal)
            ex["report"] = row["report"]
            for name, classes in real_labels.PTBXL_LABEL_SETS.items():
                ex[f"labels_{name}"] = wfdb_common.multi_hot(labels[name], classes)
                ex[f"has_{name}"] = bool(labels[name])
            ex["labels"] = ex["labels_superdiagnostic"]
            ex["id"] = key
            ex["patient_id"] = row["patient_id"]
            ex["ecg_id"] = np.int32(row["ecg_id"])
            ex["strat_fold"] = np.int32(row["strat_fold"])
            yield self._keep(split, key, ex)


_REQUIRED = ("ecg_id", "patient_id", "report", "scp_codes", "strat_fold", "filename_lr",
             "filename_hr")


def _whole_number(value: str, field: str) -> int:
    """'15709' or '15709.0' -> 15709; anything else raises ValueError naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} {value!r} is not a number") from None
    if not np.isfinite(number) or number != int(number):
        raise ValueError(f"{field} {value!r} is not a whole number")
    return int(number)


def parse_row(row: dict, root: str, filename_column: str, maps) -> dict[str, Any]:
    """One ptbxl_database.csv row -> {id, ecg_id, patient_id, report, labels, strat_fold,
    path}; a malformed row raises RecordError ('bad_metadata' naming the field, or
    'outside_corpus' for a record path that leaves root)."""
    where = "ptbxl_database.csv"
    if None in row:  # csv.DictReader puts cells beyond the header under None
        raise wfdb_common.RecordError("bad_metadata", where, f"{len(row[None])} cells more "
                                      "than the header has")
    missing = [k for k in _REQUIRED if row.get(k) is None]
    if missing:
        raise wfdb_common.RecordError("bad_metadata", where, f"no field {missing}")
    try:
        ecg_id = _whole_number(row["ecg_id"], "ecg_id")
        fold = _whole_number(row["strat_fold"], "strat_fold")
        if not 1 <= fold <= 10:
            raise ValueError(f"strat_fold {fold} is not in 1..10")
        patient = row["patient_id"].strip()
        patient = str(_whole_number(patient, "patient_id")) if patient else ""
        try:
            codes = ast.literal_eval(row["scp_codes"])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"scp_codes {row['scp_codes']!r} is not a dict literal") from None
        if not isinstance(codes, dict):
            raise ValueError(f"scp_codes {row['scp_codes']!r} is not a dict literal")
        if not row[filename_column].strip():
            raise ValueError(f"{filename_column} is empty")
    except ValueError as e:
        raise wfdb_common.RecordError("bad_metadata", where, str(e)) from None
    path = wfdb_common.corpus_path(root, row[filename_column], f"{where} {filename_column}")
    return {"id": str(ecg_id), "ecg_id": ecg_id, "patient_id": patient,
            "report": row["report"].strip(), "labels": derive_labels(codes, maps),
            "strat_fold": fold, "path": path}


def read_database(path: str, root: str, filename_column: str, maps,
                  hygiene: wfdb_common.Hygiene) -> list[dict[str, Any]]:
    """ptbxl_database.csv -> its parsed rows (`parse_row`); a malformed row is skipped and
    listed in the skip manifest under its reason, never aborting the build. A table without
    the required columns raises."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        lacking = [k for k in _REQUIRED if k not in (reader.fieldnames or [])]
        if lacking:
            raise ValueError(f"{path} lacks the columns {lacking}; is this PTB-XL 1.0.3?")
        for line, row in enumerate(reader, start=2):
            key = (row.get("ecg_id") or "").strip() or f"line{line}"
            try:
                out.append(parse_row(row, root, filename_column, maps))
            except wfdb_common.RecordError as e:
                hygiene.skip(key, wfdb_common.RecordError(
                    e.reason, e.file if e.reason == "outside_corpus" else f"{path}:{line}",
                    e.detail))
    return out
