"""The grain input pipeline: TFDS ArrayRecord shards -> per-process numpy batches -> global arrays.

  source, info = load_source("synthetic_ecg/250hz", "train", data_dir)
  ds = make_dataset(config.input, "train", global_batch_size=256, seed=0, train=True,
                    text=functools.partial(text_encoder.tokenize, tok, max_len=64))
  it = iter(ds)
  batch = global_batch(next(it), sharding.batch_sharding(mesh))

Per process the pipeline is (no TensorFlow anywhere):

  train: the stream of all records (epoch after epoch, each a permutation of the split
     seeded by `seed`, reshuffled every epoch) cut into global batches of global_batch_size;
     this process's rows of each global batch (global_batch_size / process_count of them)
     eval: every process_count-th record from process_index on, padded, batched
  -> per batch, in one grain element: read the raw records and parse the schema fields
     (`parse_fields`)
  -> augment (train: random lead drop, random contiguous segment drop; applied only as
     lead_observed / time_observed = False, so they only turn observed into unobserved)
  -> normalise over what is still observed (int16 -> float32; unobserved stays 0)
  -> report tokens (`text`) or cached report features (`report_features`: a ReportFeatures
     row per distinct report of the split, found by the record's `report_id`).

`read_threads` batches are read ahead by threads; `worker_count` > 0 moves the work to
grain worker processes (same batches, same iterator state); a script that uses workers
needs an `if __name__ == "__main__":` guard (workers are spawned).

Batches are dicts of numpy arrays: ecg float32 [b, T, 12], lead_observed bool [b, 12],
time_observed bool [b, T], labels bool [b, C], index int64 [b] (the record's index in the
split), and input_ids / attention_mask int32 [b, L] or txt_feats float32 [b, H];
without either, report holds the texts (str [b]). Evaluation pipelines (train=False) read
every record once (no shuffle, no augmentation), pad the last batch of every process to the
same number of full batches and add valid bool [b] (False on padding, whose index is -1).

Determinism and resume: everything random is a function of `seed` and the position in the
stream, so two iterators with the same seed give identical batches, and global batch k
holds the same records, augmented alike, whatever the number of processes (`TrainStream`).
The training iterator's state is that global position (global batches read, with the
global batch size, seed and record count; `StreamIterator`). Save it with the train state
(scar_jax.checkpointing) and restore it on the same or any other number of processes:

  it = iter(ds); ...; state = it.get_state()   # {"batches": k, "examples": k*B, ...}
  it2 = iter(make_dataset(<same arguments, any process_count>)); it2.set_state(state)

it2 goes on at global batch k: across the resume, every record of an epoch is read once.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import re
import sys
from typing import Any, Callable, Mapping

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import flags, logging
from tensorflow_datasets.proto import tf_example_pb2

from scar_jax.data import names, preprocessing, reports

TextFn = Callable[[list[str]], Mapping[str, np.ndarray]]
_RATE_IN_NAME = re.compile(r"(\d+)\s*hz", re.IGNORECASE)


def _register(name: str) -> None:
    """Import scar_jax.data.builders.<name> so its TFDS builder class is registered."""
    for module in (
        f"scar_jax.data.builders.{name}.{name}_dataset_builder",
        f"scar_jax.data.builders.{name}",
    ):
        try:
            importlib.import_module(module)
            return
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise  # the builder exists but one of its own imports is missing


class StaleDatasetError(ValueError):
    """A dataset built by an older version of its builder, whose storage this code does not
    read (the message says how to rebuild it)."""


def _rebuild_command(parsed: names.DatasetName, data_dir: str) -> str:
    """The build command of `parsed` at the code's version into data_dir."""
    cmd = (f"python -m scar_jax.main build --dataset="
           f"{dataclasses.replace(parsed, version=None)} --data_dir={data_dir}")
    return cmd if parsed.builder == "synthetic_ecg" else cmd + " --manual_dir=<the corpus folder>"


def prepared_builder(dataset: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """'ptbxl/500hz' -> its built TFDS builder at the code's version (never builds).

    A dataset built by an older builder version (another storage encoding, no report
    tables) is refused with StaleDatasetError naming both versions and the rebuild command;
    one not built at all is a FileNotFoundError saying how to build it.
    """
    parsed = names.check_builder(dataset)
    _register(parsed.builder)
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        current = str(tfds.builder_cls(parsed.builder).VERSION)
        if parsed.version and parsed.version != current:
            raise StaleDatasetError(
                f"Dataset {dataset!r} asks for version {parsed.version} of the "
                f"{parsed.builder} builder; this code reads only version {current} (older "
                "versions store the ECG as int64 lists and have no report tables). Drop the "
                f"version from the name and rebuild: "
                f"{_rebuild_command(parsed, data_dir or '~/tensorflow_datasets')}."
            )
        builder = tfds.builder(str(dataclasses.replace(parsed, version=None)), data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"Unknown dataset {dataset!r} (no TFDS builder registered under that name and no "
            f"built copy in {data_dir or '~/tensorflow_datasets'}): {e}"
        ) from None
    if not builder.is_prepared():
        root = builder.data_dir_root
        older = sorted(p.parent.name for p in builder.data_path.parent.glob("*/dataset_info.json")
                       if p.parent.name != current)
        if older:
            raise StaleDatasetError(
                f"Dataset {dataset!r} in {builder.data_path.parent} was built with version "
                f"{', '.join(older)} of the {parsed.builder} builder; this code reads only "
                f"version {current} (the ECG as raw int16 bytes, report tables next to the "
                f"records). Rebuild it: {_rebuild_command(parsed, root)}."
            )
        raise FileNotFoundError(
            f"Dataset {dataset!r} is not built in {builder.data_dir}; build it first "
            f"(python -m scar_jax.main build --dataset={dataset} "
            f"--data_dir={root}, adding --manual_dir=... for a real corpus) "
            "or point --config.input.data_dir / TFDS_DATA_DIR at the folder that holds it."
        )
    return builder


def load_source(
    dataset: str, split: str, data_dir: str | None = None
) -> tuple[Any, tfds.core.DatasetInfo]:
    """'synthetic_ecg/250hz', 'train' -> (random-access ArrayRecord source, DatasetInfo).

    data_dir None means $TFDS_DATA_DIR or ~/tensorflow_datasets. The dataset must have been
    built (with file_format='array_record') by the code's builder version
    (`prepared_builder`); this never builds or downloads.
    """
    builder = prepared_builder(dataset, data_dir)
    splits = list(builder.info.splits.keys())
    if split not in splits:
        raise ValueError(f"Dataset {dataset!r} has no split {split!r}; its splits are {splits}.")
    return builder.as_data_source(split=split), builder.info


def report_table(dataset: str, split: str, data_dir: str | None = None) -> reports.Table:
    """The distinct reports of a built split (the table its builder wrote; no record read)."""
    return reports.read_table(prepared_builder(dataset, data_dir).data_path, split)


def dataset_rate_and_length(info: tfds.core.DatasetInfo) -> tuple[int | None, int]:
    """(sampling rate in Hz or None if the dataset does not say, samples per record)."""
    length = int(info.features["ecg"].shape[0])
    rate = (info.metadata or {}).get("sample_rate")
    if rate is None and info.config_name:
        match = _RATE_IN_NAME.search(info.config_name)
        rate = int(match.group(1)) if match else None
    return (None if rate is None else int(rate)), length


def check_input_config(
    input_config: ml_collections.ConfigDict, info: tfds.core.DatasetInfo
) -> None:
    """Raise if the dataset's rate / record length disagree with config.input."""
    rate, length = dataset_rate_and_length(info)
    want_len = num_samples(input_config)
    name = info.full_name
    if rate is not None and rate != int(input_config.sample_rate):
        raise ValueError(
            f"Dataset {name} is sampled at {rate} Hz but config.input.sample_rate is "
            f"{input_config.sample_rate}; set --config.input.sample_rate={rate} or choose a "
            "dataset built at the config's rate."
        )
    if length != want_len:
        raise ValueError(
            f"Dataset {name} has records of {length} samples but config.input asks for "
            f"{want_len} (sample_rate {input_config.sample_rate} x seconds "
            f"{input_config.seconds}); set --config.input.seconds="
            f"{length / (rate or int(input_config.sample_rate)):g} or use a matching dataset."
        )


def num_samples(input_config: ml_collections.ConfigDict) -> int:
    """T = sample_rate * seconds (must be a whole number of samples)."""
    t = float(input_config.sample_rate) * float(input_config.seconds)
    if abs(t - round(t)) > 1e-6:
        raise ValueError(
            f"config.input.sample_rate={input_config.sample_rate} x seconds="
            f"{input_config.seconds} is not a whole number of samples."
        )
    return int(round(t))


def _text(value: Any) -> str:
    """TFDS Text feature (bytes) -> str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _decode_raw(example: Mapping[str, Any], num_samples: int) -> dict[str, Any]:
    """Stored example -> {ecg int16 [T, 12], ecg_scale, lead_observed [12], time_observed [T]..}."""
    ecg = np.asarray(example["ecg"])
    if ecg.shape != (num_samples, preprocessing.NUM_LEADS):
        raise ValueError(
            f"Record {_text(example.get('id', '?'))!r} has ecg of shape {ecg.shape}; the pipeline "
            f"expects ({num_samples}, {preprocessing.NUM_LEADS}) from config.input "
            "(sample_rate x seconds). Rebuild the dataset or fix config.input."
        )
    valid = int(example["valid_samples"])
    return {
        "ecg": ecg,  # int16 counts until _normalize (minmax / zscore do not need the scale)
        "ecg_scale": float(example["ecg_scale"]),
        "lead_observed": np.asarray(example["lead_observed"], bool).copy(),
        "time_observed": np.arange(num_samples) < valid,
        "labels": np.asarray(example["labels"], bool),
        "report": _text(example["report"]),
        "report_id": int(example["report_id"]),
    }


def _normalize(out: dict[str, Any], kind: str) -> dict[str, Any]:
    """int16 ecg [T, 12] or [B, T, 12] -> float32 normalised over what is observed, in place.

    kind 'none' gives millivolts; unobserved leads and samples are 0 in every case.
    """
    ecg, leads, rows = out["ecg"], out["lead_observed"], out["time_observed"]
    scale = np.asarray(out.pop("ecg_scale"), np.float32)
    single = ecg.ndim == 2
    if single:
        ecg, leads, rows, scale = ecg[None], leads[None], rows[None], scale[None]
    if kind == "none":
        ecg = ecg * scale[:, None, None]
    ecg = preprocessing.normalize_batch(ecg, leads, rows, kind)
    out["ecg"] = ecg[0] if single else ecg
    return out


def decode_example(
    example: Mapping[str, Any], *, normalize: str, num_samples: int
) -> dict[str, Any]:
    """Stored example -> {ecg float32 [T, 12] normalised, lead_observed, time_observed, ...}.

    lead_observed bool [12], time_observed bool [T] (False on padding), labels bool [C].
    """
    return _normalize(_decode_raw(example, num_samples), normalize)


def augment(
    out: dict[str, Any],
    rng: np.random.Generator,
    *,
    lead_drop_prob: float,
    max_leads_dropped: int,
    segment_drop_prob: float,
    max_segment_fraction: float,
) -> dict[str, Any]:
    """Random lead drop and contiguous segment drop as observed -> unobserved (in place).

    With probability lead_drop_prob, 1..max_leads_dropped of the observed leads (always
    leaving one) become unobserved; with probability segment_drop_prob one span of
    1..max_segment_fraction x (observed samples) inside the observed samples becomes
    unobserved. Masks only shrink; the signal is left to the masks (normalise afterwards).
    """
    lead_obs, time_obs = out["lead_observed"], out["time_observed"]
    observed_leads = np.flatnonzero(lead_obs)
    if rng.random() < lead_drop_prob and observed_leads.size > 1:
        k = int(rng.integers(1, min(max_leads_dropped, observed_leads.size - 1) + 1))
        lead_obs[rng.choice(observed_leads, size=k, replace=False)] = False
    observed_time = np.flatnonzero(time_obs)
    longest = int(max_segment_fraction * observed_time.size)
    if rng.random() < segment_drop_prob and longest >= 1 and observed_time.size > longest:
        length = int(rng.integers(1, longest + 1))
        start = int(rng.integers(0, observed_time.size - length + 1))
        time_obs[observed_time[start : start + length]] = False
    return out


_FIELDS = ("ecg", "ecg_scale", "lead_observed", "valid_samples", "labels", "report", "id",
           "report_id")


def parse_fields(raw: bytes) -> dict[str, Any]:
    """Serialized tf.train.Example -> the schema fields the pipeline reads (no other feature).

    About twice as fast as tfds's generic decoding, which converts every feature (the
    synthetic corpus's evidence maps included). `_SourceReader` checks it against tfds.
    """
    feats = tf_example_pb2.Example.FromString(raw).features.feature
    ecg = feats["ecg"]
    if ecg.WhichOneof("kind") != "bytes_list":
        raise ValueError("the record's ecg is not raw int16 bytes (a dataset of an older "
                         "builder version): rebuild the dataset.")
    return {
        "ecg": np.frombuffer(ecg.bytes_list.value[0], "<i2").reshape(-1, preprocessing.NUM_LEADS),
        "ecg_scale": float(feats["ecg_scale"].float_list.value[0]),
        "lead_observed": np.asarray(feats["lead_observed"].int64_list.value, bool),
        "valid_samples": int(feats["valid_samples"].int64_list.value[0]),
        "labels": np.asarray(feats["labels"].int64_list.value, bool),
        "report": feats["report"].bytes_list.value[0],
        "id": feats["id"].bytes_list.value[0],
        "report_id": int(feats["report_id"].int64_list.value[0]),
    }


class _SourceReader:
    """Reads stored examples by index: raw ArrayRecord bytes + parse_fields when that gives
    what tfds gives on the first and last record, else tfds's own decoding."""

    def __init__(self, source: Any):
        self.source = source
        self.raw = getattr(source, "data_source", None)
        self.fast = self.raw is not None and len(source) > 0 and all(
            self._agrees(i) for i in {0, len(source) - 1}
        )
        if not self.fast:
            logging.warning("pipeline: tfds's generic decoding (slower) for %s", source)

    def _agrees(self, index: int) -> bool:
        """parse_fields(raw) == tfds's decoding of record `index` on every field read."""
        try:
            mine = parse_fields(self.raw[index])
        except Exception as e:  # noqa: BLE001 - any mismatch of layout means: use tfds
            logging.warning("pipeline: parse_fields fails on record %d (%s)", index, e)
            return False
        ref = self.source[index]
        return all(
            np.array_equal(np.asarray(mine[k]), np.asarray(ref[k]))
            and np.asarray(mine[k]).dtype == np.asarray(ref[k]).dtype
            for k in _FIELDS
            if k not in ("ecg_scale", "valid_samples", "report_id")
        ) and all(float(mine[k]) == float(ref[k]) for k in ("ecg_scale", "valid_samples")
                  ) and mine["report_id"] == int(ref["report_id"])

    def read(self, keys: list[int]) -> list[Mapping[str, Any]]:
        """Stored examples (dicts with at least _FIELDS) for `keys`."""
        if self.fast:
            return [parse_fields(r) for r in self.raw.__getitems__(keys)]
        if hasattr(self.source, "__getitems__"):
            return list(self.source.__getitems__(keys))
        return [self.source[k] for k in keys]


@dataclasses.dataclass(frozen=True)
class ReportFeatures:
    """Frozen-text features of a split's distinct reports, for training batches.

    table: the split's report table (ids [U] sorted); features float32 [U, H] (row i:
    report table.ids[i]); optionally finding_ids int32 [U, F] (-1 = none) into
    finding_features float32 [V, H] (scar_jax.data.findings). Batches look rows up by
    each record's report_id, so no per-record array is held.
    """

    table: reports.Table
    features: np.ndarray
    finding_ids: np.ndarray | None = None
    finding_features: np.ndarray | None = None

    def __post_init__(self):
        u = len(self.table)
        if np.ndim(self.features) != 2 or len(self.features) != u:
            raise ValueError(f"ReportFeatures: features {np.shape(self.features)}; expected "
                             f"[{u}, H] (one row per distinct report of the table).")
        if (self.finding_ids is None) != (self.finding_features is None):
            raise ValueError("ReportFeatures: give both finding_ids and finding_features.")
        if self.finding_ids is not None:
            f_ids, f_feats = np.asarray(self.finding_ids), np.asarray(self.finding_features)
            if f_ids.ndim != 2 or len(f_ids) != u or f_feats.ndim != 2 or (
                    f_ids.size and f_ids.max() >= len(f_feats)):
                raise ValueError(
                    f"ReportFeatures: finding ids {f_ids.shape} / features {f_feats.shape}; "
                    f"expected ids [{u}, F] indexing the rows of features [V, H].")


class _ReadBatch(grain.transforms.Map):
    """Record indices -> one finished batch (module level: picklable).

    Eval elements are record indices [b] (-1: padding); train elements are [2, b]: record
    indices and their positions in the training stream (`TrainStream`). Each training
    record's augmentation is drawn from (seed, its position), so it is the same whichever
    process reads it and whatever the process count.
    """

    def __init__(
        self,
        source: Any,
        input_config: Mapping[str, Any],
        length: int,
        train: bool,
        text: TextFn | None,
        report_features: ReportFeatures | None,
        seed: int = 0,
    ):
        self.reader = _SourceReader(source)
        self.cfg, self.length, self.train = dict(input_config), length, train
        self.text, self.features, self.seed = text, report_features, int(seed)

    def _read(self, indices: np.ndarray) -> list[Mapping[str, Any]]:
        """Stored examples for `indices` (padding reads record 0)."""
        return self.reader.read([int(i) for i in np.maximum(indices, 0)])

    def map(self, element: np.ndarray) -> dict[str, Any]:
        """indices [b] or [2, b] (indices, stream positions) -> batch dict (module docstring)."""
        element = np.asarray(element, np.int64)
        indices, positions = (element[0], element[1]) if element.ndim == 2 else (element, None)
        examples = [_decode_raw(ex, self.length) for ex in self._read(indices)]
        if self.train:
            cfg = self.cfg
            for ex, position in zip(examples, positions):
                augment(
                    ex,
                    np.random.default_rng((self.seed, int(position))),
                    lead_drop_prob=float(cfg["lead_drop_prob"]),
                    max_leads_dropped=int(cfg["max_leads_dropped"]),
                    segment_drop_prob=float(cfg["segment_drop_prob"]),
                    max_segment_fraction=float(cfg["max_segment_fraction"]),
                )
        batch: dict[str, Any] = {
            key: np.stack([ex[key] for ex in examples])
            for key in ("ecg", "ecg_scale", "lead_observed", "time_observed", "labels")
        }
        pad = indices < 0
        batch["report"] = np.array(["" if p else ex["report"] for ex, p in zip(examples, pad)])
        if pad.any():  # padding: nothing observed, no label
            for key in ("lead_observed", "time_observed", "labels"):
                batch[key][pad] = False
        batch["index"] = indices
        if not self.train:
            batch["valid"] = ~pad
        batch = _normalize(batch, self.cfg["normalize"])
        if self.text is not None:
            tokens = self.text([str(r) for r in batch.pop("report")])
            for key in ("input_ids", "attention_mask"):
                if key not in tokens:
                    raise KeyError(f"The text tokenizer returned {list(tokens)}; needs {key!r}.")
                batch[key] = np.asarray(tokens[key], np.int32)
        elif self.features is not None:
            batch.pop("report")
            rf = self.features
            rows = rf.table.rows([ex["report_id"] for ex in examples])
            feats = rf.features[rows].astype(np.float32)
            feats[pad] = 0
            batch["txt_feats"] = feats
            if rf.finding_ids is not None:
                ids = np.where(pad[:, None], -1, rf.finding_ids[rows])
                batch["finding_ids"] = ids
                batch["finding_feats"] = (rf.finding_features[np.maximum(ids, 0)]
                                          * (ids >= 0)[..., None])
        return batch


def _process_indices(
    n: int, process_index: int, process_count: int, local_batch: int
) -> np.ndarray:
    """Record indices this process evaluates: every process_count-th record, padded with -1
    to the same number of full batches on every process."""
    own = np.arange(process_index, n, process_count, dtype=np.int64)
    per_process = math.ceil(n / process_count)
    padded = max(1, math.ceil(per_process / local_batch)) * local_batch
    return np.concatenate([own, np.full(padded - own.size, -1, np.int64)])


class _StreamRows:
    """Global batch k -> this process's rows of it, [2, b] int64: record indices and their
    positions in the training stream (module level: picklable for grain's workers).

    Position j of the stream is record order[j]: epoch e = positions [e*n, (e+1)*n) is a
    permutation of the n records, reshuffled every epoch (grain's index shuffle of `seed`:
    O(1) memory whatever the corpus size). Global batch k = positions [k*B, (k+1)*B); the
    process reads rows [first_row, first_row + rows) of it.
    """

    def __init__(self, records: int, seed: int, global_batch: int, first_row: int, rows: int):
        self.order = grain.MapDataset.range(records).shuffle(seed=seed)
        self.global_batch, self.first_row, self.rows = global_batch, first_row, rows

    def __call__(self, k: int) -> np.ndarray:
        """[2, rows]: record indices, stream positions of global batch k's rows of this process."""
        start = int(k) * self.global_batch + self.first_row
        positions = np.arange(start, start + self.rows, dtype=np.int64)
        return np.stack([np.array([self.order[int(j)] for j in positions], np.int64), positions])


def _read_ahead(ds: grain.MapDataset, input_config: ml_collections.ConfigDict) -> grain.IterDataset:
    """Batches read ahead by `read_threads` threads, in `worker_count` processes when > 0."""
    threads = max(1, int(input_config.read_threads))
    out = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
    workers = int(input_config.worker_count)
    if workers > 0:
        mark_flags_parsed()
        out = out.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return out


@dataclasses.dataclass(frozen=True)
class TrainStream:
    """This process's share of the training stream: what make_dataset(train=True) returns.

    The stream is the same for every process count: the epochs' permutations of the split's
    records one after the other (`_StreamRows`), cut into global batches of
    `global_batch_size`; process p of P reads rows [p*B/P, (p+1)*B/P) of every global batch,
    and each record's augmentation is drawn from (seed, its position in the stream). Global
    batch k therefore holds the same records, augmented alike, on 1 process or 64, and the
    data position is one number: k, the global batches read. Iterate it like a grain
    dataset; its iterator's state (`StreamIterator.get_state`) is that position, which
    `set_state` continues on any number of processes.
    """

    rows: _StreamRows
    reader: _ReadBatch
    input_config: ml_collections.ConfigDict
    records: int
    global_batch_size: int
    seed: int
    num_batches: int  # of the whole stream: num_epochs * records // B, or unbounded
    process_index: int
    process_count: int

    def dataset(self, start: int = 0) -> grain.IterDataset:
        """The grain pipeline of this process's batches from global batch `start` on."""
        ds = grain.MapDataset.range(start, max(start, self.num_batches))
        # batches of indices first: one read, decode and normalisation per batch, not per record
        return _read_ahead(ds.map(self.rows).map(self.reader), self.input_config)

    def __iter__(self) -> "StreamIterator":
        return StreamIterator(self)


class StreamIterator:
    """Iterator over a TrainStream whose state is the global data position (a JSON dict):

      {"batches": k, "examples": k*B, "epoch": k*B // n, "global_batch_size": B,
       "records": n, "seed": s, "process_index": p, "process_count": P}

    `set_state` continues at global batch k exactly, on this or any other number of
    processes (a state saved by another process count is remapped, with one log line); a
    state of another global batch size is refused. The grain pipeline behind it is built
    at the first `next` after a start or a `set_state`, from global batch k on.
    """

    def __init__(self, stream: TrainStream):
        self.stream = stream
        self.batches = 0  # global batches read (by every process alike)
        self._it: Any = None

    def __iter__(self) -> "StreamIterator":
        return self

    def __next__(self) -> dict[str, Any]:
        if self._it is None:
            self._it = iter(self.stream.dataset(self.batches))
        batch = next(self._it)
        self.batches += 1
        return batch

    def get_state(self) -> dict[str, int]:
        """The data position (see the class docstring)."""
        s = self.stream
        examples = self.batches * s.global_batch_size
        return {"batches": self.batches, "examples": examples, "epoch": examples // s.records,
                "global_batch_size": s.global_batch_size, "records": s.records, "seed": s.seed,
                "process_index": s.process_index, "process_count": s.process_count}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue at the saved global batch (from this or another process count)."""
        s = self.stream
        if "batches" not in state and set(state) == {"next_index"}:
            # written by the pipeline before elastic resume: one grain state of one process
            logging.warning("data position: an iterator state of an earlier pipeline "
                            "version; continuing at global batch %d", state["next_index"])
            state = dict(self.get_state(), batches=int(state["next_index"]))
        if "batches" not in state:
            raise ValueError(f"Not a training-stream position (keys {sorted(state)}); it was "
                             "saved from another kind of iterator.")
        batches, saved_batch = int(state["batches"]), int(state["global_batch_size"])
        if saved_batch != s.global_batch_size:
            raise ValueError(
                f"The saved data position is {batches} global batches of {saved_batch} "
                f"examples, but this run's global batch size is {s.global_batch_size}. The "
                "global batch size (config.batch_size, whatever the number of processes or "
                f"devices) must stay the same across a resume: resume with {saved_batch}, or "
                "train into a new workdir.")
        for key in ("seed", "records"):
            if int(state[key]) != getattr(s, key):
                logging.warning(
                    "data position: saved in a stream of %s %s, this one has %s; the rest of "
                    "the epoch is not the complement of the records read before the resume.",
                    key, state[key], getattr(s, key))
        if int(state["process_count"]) != s.process_count:
            logging.warning(
                "data position remapped: saved by %d processes, resumed on %d; global batch "
                "%d (example %d, epoch %d) goes on, %d of its %d rows on each process.",
                int(state["process_count"]), s.process_count, batches,
                batches * s.global_batch_size, batches * s.global_batch_size // s.records,
                s.global_batch_size // s.process_count, s.global_batch_size)
        self.close()
        self.batches = batches

    def close(self) -> None:
        """Stop the grain pipeline's threads and workers (rebuilt at the next `next`)."""
        if self._it is not None:
            self._it.close()
            self._it = None


def mark_flags_parsed() -> None:
    """Worker processes (grain's, the demo's training workers) read absl flags; outside
    absl.app they must count as parsed."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_dataset(
    input_config: ml_collections.ConfigDict,
    split: str,
    *,
    global_batch_size: int,
    seed: int,
    train: bool,
    text: TextFn | None = None,
    report_features: ReportFeatures | None = None,
    num_epochs: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset | TrainStream:
    """config.input + split -> this process's batches: a TrainStream (train) or a grain
    IterDataset (eval); see the module docstring.

    num_epochs None: train repeats forever, eval reads every record once. process_index /
    process_count default to this JAX process; pass them to simulate several processes.
    report_features: the frozen text tower's features of the split's distinct reports
    (batches carry txt_feats [b, H] instead of report texts); with its findings, batches
    also carry finding_ids [b, F] and finding_feats [b, F, H] (zeros where the id is -1).
    """
    if text is not None and report_features is not None:
        raise ValueError("make_dataset: pass either text (tokenize) or report_features, not both.")
    process_index = jax.process_index() if process_index is None else int(process_index)
    process_count = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} outside [0, {process_count}).")
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by {process_count} "
            "processes; choose a multiple of the process count."
        )
    local_batch = global_batch_size // process_count
    source, info = load_source(input_config.dataset, split, input_config.data_dir)
    check_input_config(input_config, info)
    length = num_samples(input_config)
    n = len(source)
    if report_features is not None and not isinstance(report_features, ReportFeatures):
        raise TypeError(
            f"report_features is a {type(report_features).__name__}; pass a "
            "pipeline.ReportFeatures (features of the split's report table, by report_id).")
    reader = _ReadBatch(source, input_config.to_dict(), length, train, text, report_features,
                        seed)
    if train:
        if n < global_batch_size:
            raise ValueError(
                f"{input_config.dataset} {split} has {n} records, fewer than one global batch "
                f"of {global_batch_size}; lower the batch size or use a bigger split.")
        rows = _StreamRows(n, seed, global_batch_size, process_index * local_batch, local_batch)
        logging.info(
            "pipeline %s %s: %d records, train (shuffled, augmented), global batch %d, "
            "process %d/%d reads rows %d:%d of each", input_config.dataset, split, n,
            global_batch_size, process_index, process_count, rows.first_row,
            rows.first_row + local_batch)
        return TrainStream(
            rows, reader, input_config, records=n, global_batch_size=global_batch_size,
            seed=seed, num_batches=sys.maxsize // global_batch_size if num_epochs is None
            else num_epochs * n // global_batch_size, process_index=process_index,
            process_count=process_count)
    indices = _process_indices(n, process_index, process_count, local_batch)
    # batches of indices first: one read, decode and normalisation per batch, not per record
    ds = grain.MapDataset.source(indices).repeat(num_epochs or 1)
    ds = ds.batch(local_batch, drop_remainder=True).map(reader)
    logging.info(
        "pipeline %s %s: %d records, process %d/%d reads %d, local batch %d, eval",
        input_config.dataset, split, n, process_index, process_count, indices.size, local_batch)
    return _read_ahead(ds, input_config)


def global_batch(
    local_batch: Mapping[str, Any], sharding_or_mesh: jax.sharding.Sharding | jax.sharding.Mesh
) -> dict[str, jax.Array]:
    """This process's numpy batch -> global jax.Arrays with the batch axis sharded.

    A Sharding is used as the prefix for every leaf (e.g. sharding.batch_sharding(mesh)); a
    Mesh shards the batch axis over all its axes. String leaves (report) are left out.
    """
    if isinstance(sharding_or_mesh, jax.sharding.Mesh):
        mesh = sharding_or_mesh
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names))
    else:
        sharding = sharding_or_mesh
    out = {}
    for key, value in local_batch.items():
        value = np.asarray(value)
        if value.dtype.kind in "OUS":
            continue
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out
