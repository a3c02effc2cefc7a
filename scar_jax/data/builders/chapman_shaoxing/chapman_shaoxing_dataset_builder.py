"""Chapman-Shaoxing-Ningbo (PhysioNet ecg-arrhythmia 1.0.0): ~45,000 10 s 12-lead ECGs.

Layout under --manual_dir: `WFDBRecords/<NN>/<NNN>/JSxxxxx.{hea,mat}` (SNOMED-CT codes on
the `#Dx:` comment) and `ConditionNames_SNOMED-CT.csv` (Acronym Name, Full Name, Snomed_CT).
Labels match codes *exactly*; the tables peers copy matched acronyms by substring ('AF'
fired on 'AFIB', 'VB' on 'AVB'): `substring_labels` reproduces that for comparison.
Classes: codes with at least `min_count` records (10 by default), named by their acronym;
the class list depends on the corpus and is stored in `info.metadata['classes']`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import os

import tensorflow_datasets as tfds

from scar_jax.data import real_labels
from scar_jax.data.builders import wfdb_common

RATE = 500
FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
SPLIT_FILE = "split.csv"
CONDITIONS = "ConditionNames_SNOMED-CT.csv"


def read_conditions(path: str, hygiene: wfdb_common.Hygiene | None = None) -> dict[str, str]:
    """ConditionNames_SNOMED-CT.csv -> {SNOMED code: acronym}; acronyms of one code join by '/'.

    A row without an acronym or with a code that is not a number is left out and reported
    to `hygiene` (skip manifest, reason bad_metadata); without one it raises.
    """
    out: dict[str, list[str]] = collections.defaultdict(list)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        lacking = [c for c in ("Acronym Name", "Snomed_CT") if c not in (reader.fieldnames or [])]
        if lacking:
            raise ValueError(f"{path} lacks the columns {lacking}; is this ecg-arrhythmia 1.0.0?")
        for line, row in enumerate(reader, start=2):
            code = (row.get("Snomed_CT") or "").strip()
            acronym = (row.get("Acronym Name") or "").strip()
            if not code.isdigit() or not acronym:
                err = wfdb_common.RecordError(
                    "bad_metadata", f"{path}:{line}",
                    f"condition row (Acronym Name {acronym!r}, Snomed_CT {code!r}) needs an "
                    "acronym and a numeric code")
                if hygiene is None:
                    raise err
                hygiene.skip(f"{CONDITIONS}:{line}", err)
                continue
            if acronym not in out[code]:
                out[code].append(acronym)
    return {c: "/".join(a) for c, a in out.items()}


def read_dx(header_path: str) -> list[str] | None:
    """The `#Dx:` codes of a header, read as text (fast pre-pass); None if unreadable.

    A header without a `#Dx:` line, or with a code that is not a number, raises
    RecordError('bad_metadata').
    """
    try:
        with open(header_path, encoding="utf-8") as f:
            for line in f:
                if line.lstrip("#").strip().startswith("Dx:"):
                    codes = wfdb_common.parse_dx(line.split(":", 1)[1])
                    bad = [c for c in codes if not c.isdigit()]
                    if bad:
                        raise wfdb_common.RecordError(
                            "bad_metadata", header_path, f"#Dx: codes {bad} are not SNOMED-CT "
                            "codes (numbers)")
                    return codes
    except (OSError, UnicodeDecodeError):
        return None
    raise wfdb_common.RecordError("bad_metadata", header_path, "no #Dx: comment line")


def exact_labels(codes: list[str], class_codes: list[str]) -> set[str]:
    """Classes (codes) a record has: exact code equality."""
    return set(codes) & set(class_codes)


def substring_labels(acronyms: list[str], class_acronyms: list[str]) -> set[str]:
    """The peers' rule: a class fires when its acronym is a substring of one of the record's."""
    return {c for c in class_acronyms if any(c in a for a in acronyms)}


def compare_matching(dx: dict[str, list[str]], names: dict[str, str]) -> dict[str, tuple[int, int]]:
    """{acronym: (records by exact codes, records by acronym substring)} over every condition."""
    exact, sub = collections.Counter(), collections.Counter()
    acr = list(names.values())
    for codes in dx.values():
        have = [names[c] for c in codes if c in names]
        exact.update(names[c] for c in set(codes) if c in names)
        sub.update(substring_labels(have, acr))
    return {a: (exact[a], sub[a]) for a in sorted(acr)}


@dataclasses.dataclass(eq=False)
class CsnConfig(tfds.core.BuilderConfig):
    """Minimum records per class and the split seed."""

    min_count: int = 10  # a SNOMED code becomes a class when this many records have it
    seed: int = 0  # seed of the 70/10/20 split


class Builder(wfdb_common.WfdbBuilder):
    """Chapman-Shaoxing-Ningbo from a local copy (manual_dir); ArrayRecord, no TensorFlow."""

    name = "chapman_shaoxing"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "ecg-arrhythmia 1.0.0, exact SNOMED matching, seeded split.",
        "2.0.0": "ECG as raw int16 bytes; report_id + per-split report tables; a header "
        "without a parseable #Dx: line or a malformed condition row is skipped (bad_metadata).",
    }
    BUILDER_CONFIGS = [
        CsnConfig(name="min10", min_count=10, description="classes with >= 10 records"),
        CsnConfig(name="all", min_count=1, description="every condition present"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download https://physionet.org/content/ecg-arrhythmia/1.0.0/ and pass its root (holding
    WFDBRecords/ and ConditionNames_SNOMED-CT.csv) as --manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            # The class count depends on the corpus: every example has len(classes) entries.
            features=wfdb_common.schema_features(10 * RATE, None),
            metadata=tfds.core.MetadataDict(
                sample_rate=RATE, split_file=SPLIT_FILE, seed=self.builder_config.seed
            ),
            homepage="https://physionet.org/content/ecg-arrhythmia/1.0.0/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        cond_path = os.path.join(root, CONDITIONS)
        if not os.path.exists(cond_path):
            raise FileNotFoundError(f"{cond_path} not found. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        names = read_conditions(cond_path, self.hygiene)
        heads = sorted(glob.glob(os.path.join(root, "WFDBRecords", "**", "*.hea"), recursive=True))
        if not heads:
            raise FileNotFoundError(f"No WFDBRecords/**/*.hea under {root}.")
        dx, malformed = {}, set()
        for h in heads:
            rid = os.path.basename(h)[:-4]
            try:
                dx[rid] = read_dx(h) or []
            except wfdb_common.RecordError as e:  # in the split (others keep theirs), not built
                self.hygiene.skip(rid, e)
                dx[rid], malformed = [], malformed | {rid}
        counts = collections.Counter(c for codes in dx.values() for c in set(codes))
        unknown = sorted(c for c in counts if c not in names)
        class_codes = sorted((c for c, n in counts.items()
                              if c in names and n >= self.builder_config.min_count),
                             key=lambda c: names[c])
        classes = [names[c] for c in class_codes]
        md = self.info.metadata
        md["classes"] = classes
        md["class_codes"] = class_codes
        # Every class's phrasings, canonical first (a class without curated ones: its acronym).
        md["prompts"] = [list(real_labels.prompts("chapman_shaoxing", n, n)) for n in classes]
        md["codes_not_in_condition_names"] = {c: counts[c] for c in unknown}
        md["exact_vs_substring"] = compare_matching(dx, names)
        assign = wfdb_common.seeded_split(list(dx), FRACTIONS, self.builder_config.seed)
        os.makedirs(self.data_path, exist_ok=True)
        with open(os.path.join(self.data_path, SPLIT_FILE), "w") as f:
            f.write("id,split\n" + "".join(f"{r},{assign[r]}\n" for r in sorted(dx)))
        by_split = wfdb_common.non_empty_splits(self.name, {
            split: [h for h in heads if assign[os.path.basename(h)[:-4]] == split
                    and os.path.basename(h)[:-4] not in malformed]
            for split in FRACTIONS
        })
        return {s: self._generate_examples(s, h, class_codes) for s, h in by_split.items()}

    def _generate_examples(self, split: str, heads, class_codes):
        for head in heads:
            rid = os.path.basename(head)[:-4]
            try:
                record = wfdb_common.read_record(head[:-4], rate=RATE)
            except wfdb_common.RecordError as e:
                self.hygiene.skip(rid, e)
                continue
            signal = self.hygiene.example(rid, record, target_rate=RATE, num_samples=10 * RATE)
            if signal is None:
                continue
            codes = wfdb_common.parse_dx(wfdb_common.parse_comments(record.comments).get("Dx"))
            ex = dict(signal, report="", id=rid, patient_id="")
            ex["labels"] = wfdb_common.multi_hot(exact_labels(codes, class_codes), class_codes)
            yield self._keep(split, rid, ex)
