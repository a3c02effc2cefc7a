"""Report tables: the distinct report texts of a split, written by the builder, read by training.

Every example carries `report_id` (int64): a stable hash of its report text (`report_id`),
so ids need no coordination between splits, shards or build workers. Next to the dataset's
ArrayRecord files the builder writes, per split, `reports-<split>.npz`:

  report_id int64 [U]   the distinct ids, sorted
  count     int64 [U]   how many records of the split have that report
  offsets   int64 [U+1] text i is utf8[offsets[i]:offsets[i+1]]
  utf8      uint8 [S]   the texts, UTF-8, concatenated

Training reads this table (a few MB for MIMIC-IV-ECG) instead of every record, embeds the
U distinct reports once, and maps each batch's `report_id` to its feature row
(`Table.rows`). Read through etils.epath, so the dataset may live on gs://.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import hashlib
import io
import os
from typing import Callable, Sequence

import numpy as np
from etils import epath


def table_name(split: str) -> str:
    """The report table's file name for `split`."""
    return f"reports-{split}.npz"


def report_id(text: str) -> int:
    """A report text -> its id: the first 8 bytes of sha256(UTF-8) as a signed int64."""
    digest = hashlib.sha256(str(text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Texts(collections.abc.Sequence):
    """The texts of a report table, decoded from its UTF-8 blob only when read: a start-up
    whose features and finding table are cached never decodes the U reports (a sequence
    of str; a slice is a list)."""

    def __init__(self, offsets: np.ndarray, utf8: np.ndarray | Callable[[], np.ndarray]):
        """offsets [U+1]; utf8: the blob (uint8), or a function that loads it."""
        self._offsets = np.asarray(offsets, np.int64)
        self._load = utf8 if callable(utf8) else (lambda: utf8)
        self._blob: bytes | None = None

    def _bytes(self) -> bytes:
        if self._blob is None:
            self._blob = np.asarray(self._load(), np.uint8).tobytes()
        return self._blob

    def __reduce__(self):  # pickled with the blob (grain's worker processes)
        return (Texts, (self._offsets, np.frombuffer(self._bytes(), np.uint8)))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __eq__(self, other) -> bool:
        return isinstance(other, collections.abc.Sequence) and list(self) == list(other)

    __hash__ = None

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"report {i} of {len(self)}")
        i = i % len(self)
        return self._bytes()[self._offsets[i]:self._offsets[i + 1]].decode("utf-8")


@dataclasses.dataclass(frozen=True)
class Table:
    """The distinct reports of a split: ids [U] (sorted), texts [U], counts [U]."""

    ids: np.ndarray
    texts: Sequence[str]
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """report ids [...] -> row numbers of the table [...]; an id not in it raises."""
        ids = np.asarray(ids, np.int64)
        rows = np.searchsorted(self.ids, ids)
        rows = np.minimum(rows, max(len(self.ids) - 1, 0))
        bad = (self.ids[rows] != ids) if len(self.ids) else np.ones(ids.shape, bool)
        if np.any(bad):
            raise KeyError(
                f"report ids {np.unique(ids[bad])[:5].tolist()} are not in the report table "
                "of this split: the table and the records come from different builds; rebuild "
                "the dataset."
            )
        return rows

    def digest(self) -> str:
        """A hex digest of the table's texts (their ids), for cache keys."""
        return hashlib.sha256(np.ascontiguousarray(self.ids, "<i8").tobytes()).hexdigest()


class Collector:
    """Collects the reports of a build, split by split: `add` returns the id to store."""

    def __init__(self):
        self.texts: dict[str, dict[int, str]] = collections.defaultdict(dict)
        self.counts: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)

    def reset(self) -> None:
        """Forgets everything collected (a new build)."""
        self.texts.clear()
        self.counts.clear()

    def add(self, split: str, text: str) -> np.int64:
        """Records one example's report in `split`; returns its report_id."""
        text = str(text)
        rid = report_id(text)
        have = self.texts[split].setdefault(rid, text)
        if have != text:  # 2^-64 per pair; never seen, but never silently wrong
            raise ValueError(f"report id collision: {have!r} and {text!r} hash to {rid}.")
        self.counts[split][rid] += 1
        return np.int64(rid)

    def table(self, split: str) -> Table:
        """The collected table of `split` (empty if nothing was added)."""
        ids = np.array(sorted(self.texts.get(split, {})), np.int64)
        texts = [self.texts[split][int(i)] for i in ids]
        counts = np.array([self.counts[split][int(i)] for i in ids], np.int64)
        return Table(ids, texts, counts)

    def write(self, directory: str | os.PathLike, splits) -> dict[str, str]:
        """Writes the table of every split in `splits`; returns {split: file name}."""
        out = {}
        for split in splits:
            write_table(directory, split, self.table(split))
            out[split] = table_name(split)
        return out


def merge(tables: list[Table]) -> Table:
    """The union of several tables of one split (shards of a build): counts add up."""
    texts: dict[int, str] = {}
    counts: collections.Counter = collections.Counter()
    for t in tables:
        for i, text, c in zip(t.ids.tolist(), t.texts, t.counts.tolist()):
            if texts.setdefault(i, text) != text:
                raise ValueError(f"report id collision: {texts[i]!r} and {text!r} hash to {i}.")
            counts[i] += c
    ids = np.array(sorted(texts), np.int64)
    return Table(ids, [texts[int(i)] for i in ids],
                 np.array([counts[int(i)] for i in ids], np.int64))


def write_table(directory: str | os.PathLike, split: str, table: Table) -> epath.Path:
    """Writes `table` as directory/reports-<split>.npz (the module docstring's layout)."""
    encoded = [t.encode("utf-8") for t in table.texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    buf = io.BytesIO()
    np.savez(buf, report_id=np.asarray(table.ids, np.int64),
             count=np.asarray(table.counts, np.int64), offsets=offsets,
             utf8=np.frombuffer(b"".join(encoded), np.uint8))
    path = epath.Path(directory) / table_name(split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def read_table(directory: str | os.PathLike, split: str) -> Table:
    """directory/reports-<split>.npz -> Table; a missing file says to rebuild the dataset."""
    path = epath.Path(directory) / table_name(split)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the dataset in {directory} has no report table for split "
            f"{split!r} (built by an older builder?); rebuild it with `python -m scar_jax.main "
            "build`."
        )
    local = "://" not in os.fspath(path)
    # a local file's arrays are read when used (the texts' blob only if a text is)
    f = np.load(os.fspath(path) if local else io.BytesIO(path.read_bytes()), allow_pickle=False)
    ids, counts, offsets = (f[k] for k in ("report_id", "count", "offsets"))
    texts = Texts(offsets, lambda: f["utf8"])
    if len(texts) != len(ids) or np.any(ids[1:] <= ids[:-1]):
        raise ValueError(f"{path} is malformed (ids not sorted and distinct, or "
                         f"{len(texts)} texts for {len(ids)} ids); rebuild the dataset.")
    return Table(ids, texts, counts)
