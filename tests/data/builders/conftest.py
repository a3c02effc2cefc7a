"""Helpers for the real-corpus builder tests: build a builder on a fixture, read it back."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # wfdb + pandas 3: Pandas4Warning on import
    import tensorflow_datasets as tfds
    import wfdb  # noqa: F401

BUILDERS_DIR = os.path.join(
    os.path.dirname(__file__), os.pardir, os.pardir, os.pardir, "scar_jax", "data", "builders"
)


def dummy_dir(name: str, *sub: str) -> str:
    """The committed dummy_data folder of a builder."""
    return os.path.abspath(os.path.join(BUILDERS_DIR, name, "dummy_data", *sub))


def build(cls, manual_dir: str, data_dir: str, config, **kwargs):
    """Builds `cls` (ArrayRecord) from manual_dir into data_dir; returns the builder."""
    b = cls(config=config, data_dir=str(data_dir), **kwargs)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return b


def read_all(builder) -> dict[str, dict[str, dict]]:
    """{split: {id: example}} through as_data_source (no TensorFlow)."""
    out = {}
    for split, source in builder.as_data_source().items():
        out[split] = {}
        for i in range(len(source)):
            ex = source[i]
            out[split][ex["id"].decode()] = ex
    return out


def millivolts(ex) -> np.ndarray:
    """ecg int16 [T, 12] -> float mV."""
    return ex["ecg"].astype(np.float64) * float(ex["ecg_scale"])


@pytest.fixture(autouse=True)
def _quiet_wfdb_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="wfdb")
        yield


def edit_csv(path: str, edit) -> None:
    """Rewrites a metadata table: edit(header, rows) changes the rows (lists of cells) in place;
    a row may get more or fewer cells than the header (a malformed row)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    edit(header, rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])


def copy_record(src: str, dst: str) -> None:
    """Copies a WFDB record's files '<src>.*' to '<dst>.*' (another folder, same stem)."""
    import glob
    import shutil

    os.makedirs(os.path.dirname(dst), exist_ok=True)
    for f in glob.glob(src + ".*"):
        shutil.copy(f, dst + os.path.splitext(f)[1])


def manifest(builder) -> dict[str, tuple[str, str]]:
    """{id: (reason, file)} of a build's skipped records."""
    from scar_jax.data.builders import wfdb_common

    lines = wfdb_common.read_manifest(os.path.join(builder.data_path, wfdb_common.MANIFEST_NAME))
    return {m["id"]: (m["reason"], m["file"]) for m in lines if m["action"] == "skipped"}
