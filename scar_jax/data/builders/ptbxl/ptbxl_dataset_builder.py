"""PTB-XL 1.0.3: 21,799 10 s 12-lead ECGs, four label sets from scp_codes, strat_fold splits."""

from __future__ import annotations

import ast
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
    VERSION = tfds.core.Version("1.0.3")
    RELEASE_NOTES = {"1.0.3": "PTB-XL 1.0.3, four label sets, strat_fold splits."}
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
        db = pd.read_csv(db_path, index_col="ecg_id")
        maps = label_maps(pd.read_csv(os.path.join(root, "scp_statements.csv"), index_col=0))
        return {
            split: self._generate_examples(root, db[db.strat_fold.isin(folds)], maps)
            for split, folds in SPLIT_FOLDS.items()
        }

    def _generate_examples(self, root: str, db, maps):
        cfg = self.builder_config
        for ecg_id, row in db.iterrows():
            key = str(int(ecg_id))
            try:
                record = wfdb_common.read_record(
                    os.path.join(root, str(row[cfg.filename_column])), rate=cfg.rate
                )
            except wfdb_common.RecordError as e:
                self.hygiene.skip(key, e)
                continue
            signal = self.hygiene.example(
                key, record, target_rate=cfg.rate, num_samples=cfg.num_samples
            )
            if signal is None:
                continue
            labels = derive_labels(row["scp_codes"], maps)
            ex = dict(signal)
            report = row["report"]
            ex["report"] = "" if not isinstance(report, str) else report.strip()
            for name, classes in real_labels.PTBXL_LABEL_SETS.items():
                ex[f"labels_{name}"] = wfdb_common.multi_hot(labels[name], classes)
                ex[f"has_{name}"] = bool(labels[name])
            ex["labels"] = ex["labels_superdiagnostic"]
            ex["id"] = key
            ex["patient_id"] = str(int(row["patient_id"])) if row["patient_id"] == row[
                "patient_id"] else ""
            ex["ecg_id"] = np.int32(ecg_id)
            ex["strat_fold"] = np.int32(row["strat_fold"])
            yield self._keep(key, ex)
