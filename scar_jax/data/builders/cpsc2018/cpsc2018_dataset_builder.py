"""CPSC2018 (ICBEB 2018): 6,877 12-lead ECGs of 6-60 s at 500 Hz, 9 classes, seeded split.

Two on-disk layouts are accepted under --manual_dir:
  * PhysioNet/CinC Challenge 2020 `cpsc_2018`: `*.hea` + `*.mat` (any sub-folders, e.g.
    g1/ .. g7/), SNOMED-CT codes on the `#Dx:` header comment (mapped by
    `real_labels.CPSC2018_SNOMED`);
  * the original ICBEB release: `REFERENCE.csv` (Recording, First_label, Second_label,
    Third_label; classes 1-9) + `A0001.mat` files holding a struct `ECG` with `data`
    [12, T] in mV (standard lead order, 500 Hz).
Length policy: records are cropped at the start to the config's length and shorter ones
are padded with *unobserved* samples (`valid_samples`), never zeros-as-signal.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import os

import numpy as np
import tensorflow_datasets as tfds

from scar_jax.data import preprocessing, real_labels
from scar_jax.data.builders import wfdb_common

RATE = 500
FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
SPLIT_FILE = "split.csv"


@dataclasses.dataclass(eq=False)
class Cpsc2018Config(tfds.core.BuilderConfig):
    """Stored length (seconds at 500 Hz) and the split seed."""

    seconds: int = 10  # stored length; longer records are cropped at the start
    seed: int = 0  # seed of the 70/10/20 split

    @property
    def num_samples(self) -> int:
        """Stored samples at 500 Hz."""
        return self.seconds * RATE


def _original_record(path: str) -> wfdb_common.Record:
    """An original-layout A0001.mat (struct ECG, data [12, T] mV) -> Record."""
    import scipy.io

    if not os.path.exists(path):
        raise wfdb_common.RecordError("missing_file", path, "listed in REFERENCE.csv")
    try:
        data = np.asarray(scipy.io.loadmat(path)["ECG"]["data"][0, 0], np.float64)
    except Exception as e:
        raise wfdb_common.RecordError("unreadable_data", path, f"{type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[0] != 12:
        raise wfdb_common.RecordError(
            "wrong_lead_count", path, f"ECG.data has shape {data.shape}, expected [12, T]"
        )
    return wfdb_common.Record(data.T, list(preprocessing.LEAD_NAMES), RATE, [], path)


def parse_reference_row(row: dict, root: str) -> tuple[str, str, list[str]]:
    """One REFERENCE.csv row -> (record id, path without extension, class names); a malformed
    row raises RecordError ('bad_metadata' naming the field, 'outside_corpus' for a
    Recording that leaves root)."""
    if None in row:  # csv.DictReader puts cells beyond the header under None
        raise wfdb_common.RecordError("bad_metadata", "REFERENCE.csv",
                                      f"{len(row[None])} cells more than the header has")
    rid = (row.get("Recording") or "").strip()
    if not rid:
        raise wfdb_common.RecordError("bad_metadata", "REFERENCE.csv", "no Recording")
    names = []
    for field in ("First_label", "Second_label", "Third_label"):
        value = (row.get(field) or "").strip()
        if not value:
            continue
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        if not (number.is_integer() and 1 <= number <= len(real_labels.CPSC2018_CLASSES)):
            raise wfdb_common.RecordError(
                "bad_metadata", "REFERENCE.csv",
                f"{field} {value!r} of {rid} is not a class number 1-"
                f"{len(real_labels.CPSC2018_CLASSES)}")
        names.append(real_labels.CPSC2018_CLASSES[int(number) - 1])
    if not names:
        raise wfdb_common.RecordError("no_label", "REFERENCE.csv", f"{rid} has no label")
    path = wfdb_common.corpus_path(root, rid, "REFERENCE.csv Recording")
    return rid, path, names


def find_records(
    root: str, hygiene: wfdb_common.Hygiene | None = None
) -> dict[str, tuple[str, list[str] | None]]:
    """{record id: (path without extension, classes or None = read #Dx later)}, either layout.

    A malformed REFERENCE.csv row is reported to `hygiene` (skip manifest; without one it
    raises) and, when it names a Recording, kept as (None, None): it takes its place in the
    seeded split, so the other records' splits do not depend on it, but is not built.
    """
    ref = os.path.join(root, "REFERENCE.csv")
    if os.path.exists(ref):
        out = {}
        with open(ref, newline="") as f:
            reader = csv.DictReader(f)
            if "Recording" not in (reader.fieldnames or []):
                raise ValueError(f"{ref} has no Recording column; is this the ICBEB 2018 "
                                 "REFERENCE.csv?")
            for line, row in enumerate(reader, start=2):
                try:
                    rid, path, names = parse_reference_row(row, root)
                except wfdb_common.RecordError as e:
                    if hygiene is None:
                        raise
                    key = (row.get("Recording") or "").strip() or f"line{line}"
                    file = e.file if e.reason == "outside_corpus" else f"{ref}:{line}"
                    hygiene.skip(key, wfdb_common.RecordError(e.reason, file, e.detail))
                    if (row.get("Recording") or "").strip():
                        out[key] = (None, None)
                    continue
                out[rid] = (path, names)
        return out
    heads = glob.glob(os.path.join(root, "**", "*.hea"), recursive=True)
    if not heads:
        raise FileNotFoundError(
            f"No REFERENCE.csv and no *.hea under {root}: --manual_dir must be the Challenge "
            "2020 cpsc_2018 folder or the original ICBEB folder. "
            + Builder.MANUAL_DOWNLOAD_INSTRUCTIONS
        )
    return {os.path.basename(h)[:-4]: (h[:-4], None) for h in sorted(heads)}


class Builder(wfdb_common.WfdbBuilder):
    """CPSC2018 from a local copy (manual_dir); ArrayRecord, no TensorFlow needed."""

    name = "cpsc2018"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Challenge 2020 and original layouts; seeded 70/10/20 split.",
        "2.0.0": "ECG as raw int16 bytes; report_id + per-split report tables; a malformed "
        "REFERENCE.csv row is skipped (bad_metadata / outside_corpus), not fatal.",
    }
    BUILDER_CONFIGS = [
        Cpsc2018Config(name="10s", seconds=10, description="first 10 s; shorter: unobserved pad"),
        Cpsc2018Config(name="60s", seconds=60, description="whole records up to 60 s"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Pass as --manual_dir either the PhysioNet/CinC Challenge 2020 `cpsc_2018` training folder
    (https://physionet.org/content/challenge-2020/1.0.2/training/cpsc_2018/) or the original
    ICBEB 2018 TrainingSet folder holding REFERENCE.csv and A*.mat.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return self.dataset_info_from_configs(
            features=wfdb_common.schema_features(
                cfg.num_samples, len(real_labels.CPSC2018_CLASSES)
            ),
            metadata=tfds.core.MetadataDict(
                sample_rate=RATE,
                classes=list(real_labels.CPSC2018_CLASSES), split_file=SPLIT_FILE, seed=cfg.seed
            ),
            homepage="http://2018.icbeb.org/Challenge.html",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        records = find_records(root, self.hygiene)
        # No patient ids exist in CPSC2018: each recording is its own group.
        assign = wfdb_common.seeded_split(list(records), FRACTIONS, self.builder_config.seed)
        os.makedirs(self.data_path, exist_ok=True)
        with open(os.path.join(self.data_path, SPLIT_FILE), "w") as f:
            f.write("id,split\n" + "".join(f"{r},{assign[r]}\n" for r in sorted(records)))
        by_split = wfdb_common.non_empty_splits(self.name, {
            split: {r: v for r, v in records.items() if assign[r] == split and v[0]}
            for split in FRACTIONS
        })
        return {s: self._generate_examples(s, r) for s, r in by_split.items()}

    def _generate_examples(self, split: str, records):
        cfg = self.builder_config
        for rid, (path, names) in sorted(records.items()):
            try:
                if names is None:
                    record = wfdb_common.read_record(path, rate=RATE)
                    comments = wfdb_common.parse_comments(record.comments)
                    codes = wfdb_common.parse_dx(comments.get("Dx"))
                    names = sorted({real_labels.CPSC2018_SNOMED[c] for c in codes
                                    if c in real_labels.CPSC2018_SNOMED})
                    if not names:
                        raise wfdb_common.RecordError(
                            "no_label", path + ".hea", f"#Dx codes {codes} map to no CPSC class"
                        )
                else:
                    record = _original_record(path + ".mat")
            except wfdb_common.RecordError as e:
                self.hygiene.skip(rid, e)
                continue
            signal = self.hygiene.example(rid, record, target_rate=RATE,
                                          num_samples=cfg.num_samples)
            if signal is None:
                continue
            ex = dict(signal, report="", id=rid, patient_id="")
            ex["labels"] = wfdb_common.multi_hot(names, real_labels.CPSC2018_CLASSES)
            yield self._keep(split, rid, ex)
