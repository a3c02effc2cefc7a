"""MIMIC-IV-ECG 1.0: ~800,000 10 s 12-lead ECGs at 500 Hz with machine reports (pretraining).

Layout under --manual_dir: `record_list.csv` (subject_id, study_id, file_name, ecg_time,
path), `machine_measurements.csv` (subject_id, study_id, ..., report_0..report_17, ...)
and `files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY.{hea,dat}`.

Memory is bounded whatever the corpus size: record_list.csv is streamed row by row; the
cleaned reports are first put into an on-disk SQLite index keyed by study_id (streamed from
machine_measurements.csv, built once, atomically, and reused), so every record costs one
indexed lookup (no O(N^2) join, no DataFrame of the corpus); one signal is in memory at a
time. TFDS's writer buffers serialized examples up to 1 GiB before spilling to disk.

Splits are by subject (a seeded hash of subject_id: no subject in two splits, identical on
every worker). Sharded generation (many workers, resumable): see `build_sharded`; every
shard is its own small TFDS dataset (config `shardXXXXXofYYYYY`), built independently,
skipped when already built, then `merge_shards` links them into the `default` dataset.
Lead order: MIMIC stores aVF before aVL; leads are reordered by header names, never by
position.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import sqlite3
from typing import Iterator

import tensorflow_datasets as tfds
from absl import logging

from scar_jax.data import reports
from scar_jax.data.builders import wfdb_common

RATE = 500
NUM_SAMPLES = 10 * RATE
REPORT_COLUMNS = tuple(f"report_{i}" for i in range(18))
_SURROGATE = re.compile("[\udc80-\udcff]")
_MARKER_CHARS = "*=- \t"  # MERL strips these characters at both ends


def _strip_markers(text: str) -> str:
    """Strips leading/trailing '***', '=-', '=' markers (and white space)."""
    return text.strip().strip(_MARKER_CHARS)


def clean_report(parts: list[str]) -> str:
    """report_0..17 cells -> the cleaned report (DATASETS.md: MERL's rule).

    Joins the non-empty parts with '. ', replaces EKG by ECG, strips leading/trailing
    '***', '=-', '=' (and white space), lower-cases and collapses white space. The markers
    are also stripped from each part first, so a marker-only part leaves no stray '. '.
    """
    parts = [_strip_markers(p) for p in parts if p]
    text = ". ".join(p for p in parts if p)
    text = _strip_markers(text.replace("EKG", "ECG").replace("ekg", "ecg"))
    return " ".join(text.lower().split())


@dataclasses.dataclass(eq=False)
class MimicConfig(tfds.core.BuilderConfig):
    """Split fractions and seed, minimum report words, and the shard this build covers."""

    validation_fraction: float = 0.02  # share of subjects in the validation split
    seed: int = 0  # seed of the subject hash split
    min_words: int = 4  # reports with fewer words are skipped (short_report)
    num_shards: int = 1  # sharded generation: number of shards of the corpus
    shard_index: int = 0  # sharded generation: the shard this build writes

    def __post_init__(self):
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(
                f"shard_index={self.shard_index} must be in [0, num_shards={self.num_shards})."
            )

    @property
    def fractions(self) -> dict[str, float]:
        """{'train': 1 - v, 'validation': v}."""
        return {"train": 1.0 - self.validation_fraction, "validation": self.validation_fraction}


def shard_config(num_shards: int, shard_index: int, **kwargs) -> MimicConfig:
    """The config of one shard of a sharded build (its own TFDS dataset)."""
    return MimicConfig(
        name=f"shard{shard_index:05d}of{num_shards:05d}",
        num_shards=num_shards,
        shard_index=shard_index,
        description=f"shard {shard_index} of {num_shards}",
        **kwargs,
    )


def report_index(root: str, cache_dir: str) -> str:
    """Builds (once) the SQLite index study_id -> (cleaned report, bad_encoding); returns its path.

    Streams machine_measurements.csv; the file is rebuilt if the CSV's size or mtime changed.
    """
    src = os.path.join(root, "machine_measurements.csv")
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src} not found. {Builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    stamp = f"{os.path.getsize(src)}:{os.stat(src).st_mtime_ns}"
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, "mimic_iv_ecg_reports.sqlite")
    if os.path.exists(path):
        with sqlite3.connect(path) as db:
            if db.execute("SELECT value FROM meta WHERE key='source'").fetchone() == (stamp,):
                return path
    tmp = f"{path}.tmp{os.getpid()}"
    if os.path.exists(tmp):
        os.remove(tmp)
    db = sqlite3.connect(tmp)
    db.execute("CREATE TABLE reports (study_id TEXT PRIMARY KEY, report TEXT, bad INTEGER)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    with open(src, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = csv.DictReader(f)
        missing = [c for c in ("study_id",) + REPORT_COLUMNS if c not in (rows.fieldnames or [])]
        if missing:
            raise ValueError(f"{src} lacks columns {missing}; is this MIMIC-IV-ECG 1.0?")
        batch, no_study = [], 0
        for row in rows:
            if not (row.get("study_id") or "").strip():
                no_study += 1  # its record (if any) is skipped as missing_metadata
                continue
            parts = [row[c] or "" for c in REPORT_COLUMNS]
            bad = any(_SURROGATE.search(p) for p in parts)
            report = "" if bad else clean_report(parts)
            batch.append((row["study_id"].strip(), report, int(bad)))
            if len(batch) >= 10_000:
                db.executemany("INSERT OR REPLACE INTO reports VALUES (?, ?, ?)", batch)
                batch = []
        db.executemany("INSERT OR REPLACE INTO reports VALUES (?, ?, ?)", batch)
    if no_study:
        logging.warning("%s: %d rows without a study_id left out", src, no_study)
    db.execute("INSERT INTO meta VALUES ('source', ?)", (stamp,))
    db.commit()
    db.close()
    os.replace(tmp, path)
    return path


def row_problem(row: dict) -> str | None:
    """What is wrong with a record_list.csv row (None: nothing): a missing or non-numeric
    subject_id / study_id, no path, cells beyond the header."""
    if None in row:  # csv.DictReader puts cells beyond the header under None
        return f"{len(row[None])} cells more than the header has"
    for field in ("subject_id", "study_id"):
        value = (row.get(field) or "").strip()
        if not value.isdigit():
            return f"{field} {row.get(field)!r} is not a number"
    if not (row.get("path") or "").strip():
        return "no path"
    return None


def iter_rows(
    root: str,
    split: str | None,
    config: MimicConfig,
    hygiene: wfdb_common.Hygiene | None = None,
) -> Iterator[dict[str, str]]:
    """Streams record_list.csv rows of one split (None: all) and of the config's shard.

    A malformed row (`row_problem`) is never yielded; the pass over all splits (split None)
    reports it to `hygiene` as bad_metadata, once, in the shard that owns its line.
    """
    shards = {i: 1 / config.num_shards for i in range(config.num_shards)}
    src = os.path.join(root, "record_list.csv")
    with open(src, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            problem = row_problem(row)
            study = (row.get("study_id") or "").strip() if problem is None else f"line{line}"
            if config.num_shards > 1 and wfdb_common.hashed_split(
                study, shards, 0
            ) != config.shard_index:
                continue
            if problem is not None:
                if split is None and hygiene is not None:
                    key = (row.get("study_id") or "").strip() or f"line{line}"
                    hygiene.skip(key, wfdb_common.RecordError(
                        "bad_metadata", f"{src}:{line}", problem))
                continue
            if split is not None and wfdb_common.hashed_split(
                row["subject_id"].strip(), config.fractions, config.seed
            ) != split:
                continue
            yield row


def iter_examples(
    root: str, db_path: str, split: str, config: MimicConfig, hygiene: wfdb_common.Hygiene
) -> Iterator[tuple[str, dict]]:
    """Streams (study_id, example) of one split and shard; problems go to `hygiene`."""
    db = sqlite3.connect(db_path)
    for row in iter_rows(root, split, config):
        subject, study = row["subject_id"].strip(), row["study_id"].strip()
        found = db.execute(
            "SELECT report, bad FROM reports WHERE study_id=?", (study,)
        ).fetchone()
        try:
            path = wfdb_common.corpus_path(root, row["path"], "record_list.csv path")
            if found is None:
                raise wfdb_common.RecordError(
                    "missing_metadata", path, "study not in machine_measurements.csv"
                )
            report, bad = found
            if bad:
                raise wfdb_common.RecordError(
                    "bad_encoding", path, "report cells are not valid UTF-8"
                )
            if not report:
                raise wfdb_common.RecordError("empty_report", path, "empty after cleaning")
            if len(report.split()) < config.min_words:
                raise wfdb_common.RecordError(
                    "short_report", path, f"{report!r} has < {config.min_words} words"
                )
            record = wfdb_common.read_record(path, rate=RATE)
        except wfdb_common.RecordError as e:
            hygiene.skip(study, e)
            continue
        signal = hygiene.example(study, record, target_rate=RATE, num_samples=NUM_SAMPLES)
        if signal is None:
            continue
        yield study, dict(signal, report=report, labels=[], id=study, patient_id=subject)
    db.close()


class Builder(wfdb_common.WfdbBuilder):
    """MIMIC-IV-ECG from a local copy (manual_dir); streaming, shardable, ArrayRecord."""

    name = "mimic_iv_ecg"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "MIMIC-IV-ECG 1.0 with cleaned machine reports.",
        "2.0.0": "ECG as raw int16 bytes; report_id + per-split report tables; a malformed "
        "record_list.csv row is skipped (bad_metadata / outside_corpus), not fatal.",
    }
    BUILDER_CONFIGS = [MimicConfig(name="default", description="98/2 subject split, whole corpus")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download MIMIC-IV-ECG 1.0 from https://physionet.org/content/mimic-iv-ecg/1.0/ and pass
    its root (holding record_list.csv, machine_measurements.csv and files/) as --manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=wfdb_common.schema_features(NUM_SAMPLES, 0),
            metadata=tfds.core.MetadataDict(sample_rate=RATE, classes=[]),
            homepage="https://physionet.org/content/mimic-iv-ecg/1.0/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        if not os.path.exists(os.path.join(root, "record_list.csv")):
            raise FileNotFoundError(
                f"{root}/record_list.csv not found. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        db_path = report_index(root, os.fspath(self.data_dir_root))
        cfg = self.builder_config
        # One streaming pass over the CSV: TFDS cannot write an empty split (small shards).
        present = {wfdb_common.hashed_split(r["subject_id"].strip(), cfg.fractions, cfg.seed)
                   for r in iter_rows(root, None, cfg, self.hygiene)}
        return {s: self._generate_examples(root, db_path, s) for s in cfg.fractions if s in present}

    def _generate_examples(self, root: str, db_path: str, split: str):
        for key, ex in iter_examples(root, db_path, split, self.builder_config, self.hygiene):
            yield self._keep(split, key, ex)


def build_sharded(
    manual_dir: str,
    data_dir: str,
    num_shards: int,
    shard_indices: list[int] | None = None,
    *,
    strict: bool = False,
    **config_kwargs,
) -> list[int]:
    """Builds the given shards (default: all) unless already built; returns those built.

    One worker per shard index on a cluster (e.g. a SLURM array task runs
    `build_sharded(..., shard_indices=[$SLURM_ARRAY_TASK_ID])`); rerunning after an
    interruption rebuilds only the unfinished shards. Then call `merge_shards`.
    """
    built = []
    for i in range(num_shards) if shard_indices is None else shard_indices:
        b = Builder(config=shard_config(num_shards, i, **config_kwargs), data_dir=data_dir,
                    strict=strict)
        if b.is_prepared():
            logging.info("mimic_iv_ecg shard %d/%d already built; skipped", i, num_shards)
            continue
        b.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
        built.append(i)
    return built


def merge_shards(data_dir: str, num_shards: int, **config_kwargs) -> str:
    """Links the built shards' files into the `default` dataset; returns its directory.

    Read the result with `Builder(config='default', data_dir=data_dir).as_data_source()` or
    `tfds.data_source('mimic_iv_ecg', data_dir=data_dir)`.
    """
    from tensorflow_datasets.core import naming, splits as splits_lib

    shards = [Builder(config=shard_config(num_shards, i, **config_kwargs), data_dir=data_dir)
              for i in range(num_shards)]
    missing = [i for i, b in enumerate(shards) if not b.is_prepared()]
    if missing:
        raise ValueError(f"mimic_iv_ecg shards {missing} of {num_shards} are not built; run "
                         "build_sharded for them first.")
    final = Builder(config="default", data_dir=data_dir)
    out = os.fspath(final.data_path)
    os.makedirs(out, exist_ok=True)
    split_infos, counts = [], {}
    names = sorted({s for b in shards for s in b.info.splits}, key=["train", "validation"].index)
    for split in names:
        files, lengths, nbytes = [], [], 0
        for b in shards:
            if split not in b.info.splits:
                continue
            info = b.info.splits[split]
            files += [os.fspath(p) for p in info.filepaths]
            lengths += list(info.shard_lengths)
            nbytes += info.num_bytes
        template = naming.ShardedFileTemplate(
            data_dir=final.data_path, dataset_name=Builder.name, split=split,
            filetype_suffix="array_record",
        )
        for j, src in enumerate(files):
            dst = os.fspath(template.sharded_filepath(shard_index=j, num_shards=len(files)))
            if os.path.exists(dst):
                os.remove(dst)
            try:
                os.link(src, dst)
            except OSError:
                import shutil

                shutil.copyfile(src, dst)
        split_infos.append(splits_lib.SplitInfo(
            name=split, shard_lengths=lengths, num_bytes=nbytes, filename_template=template
        ))
        reports.write_table(out, split, reports.merge(
            [reports.read_table(b.data_path, split) for b in shards if split in b.info.splits]))
    for b in shards:
        for k, v in b.info.metadata.get("record_counts", {}).items():
            counts[k] = counts.get(k, 0) + v
    final.info.set_file_format("array_record")
    final.info.set_splits(splits_lib.SplitDict(split_infos))
    final.info.metadata["record_counts"] = counts
    final.info.metadata["merged_from_shards"] = num_shards
    final.info.metadata["report_tables"] = {s: reports.table_name(s) for s in names}
    final.info.write_to_directory(out)
    with open(os.path.join(out, wfdb_common.MANIFEST_NAME), "w", encoding="utf-8") as f:
        for b in shards:
            with open(os.path.join(os.fspath(b.data_path), wfdb_common.MANIFEST_NAME)) as g:
                f.write(g.read())
    logging.info("mimic_iv_ecg: merged %d shards into %s: %s", num_shards, out, counts)
    return out
