"""scar_jax.data.build.build_dataset: named and derived configs, reuse, clear errors."""

import os

import numpy as np
import pytest

from scar_jax.data import build


def test_build_named_config_and_reuse(tmp_path):
    info = build.build_dataset("synthetic_ecg/tiny", data_dir=str(tmp_path))
    assert info.full_name == "synthetic_ecg/tiny/2.0.0"
    assert {s: info.splits[s].num_examples for s in info.splits} == {
        "train": 24, "validation": 8, "test": 8,
    }  # fmt: skip
    files = sorted((tmp_path / "synthetic_ecg" / "tiny" / "2.0.0").iterdir())
    assert any(f.name.startswith("synthetic_ecg-train.array_record") for f in files)
    stamp = {f.name: os.stat(f).st_mtime_ns for f in files}
    again = build.build_dataset("synthetic_ecg/tiny", data_dir=str(tmp_path))  # reused
    assert again.splits["train"].num_examples == 24
    assert {f.name: os.stat(f).st_mtime_ns for f in files} == stamp


def test_build_derived_config(tmp_path):
    info = build.build_dataset(
        "synthetic_ecg/tiny",
        data_dir=str(tmp_path),
        config_kwargs={"num_train": 3, "num_validation": 2, "num_test": 0, "seed": 5},
    )
    assert info.config_name == "tiny_num_test0_num_train3_num_validation2_seed5"
    assert {s: info.splits[s].num_examples for s in info.splits} == {"train": 3, "validation": 2}
    import tensorflow_datasets as tfds

    b = tfds.builder_from_directory(str(tmp_path / "synthetic_ecg" / info.config_name / "2.0.0"))
    ex = b.as_data_source("train")[0]
    assert ex["ecg"].shape == (1000, 12)
    assert b.info.metadata["seed"] == 5
    named = build.build_dataset(
        "synthetic_ecg/tiny", data_dir=str(tmp_path), config_kwargs={"name": "mine", "num_test": 1}
    )
    assert named.config_name == "mine" and named.splits["test"].num_examples == 1
    # seed 5 made other records than the default seed 0
    seed0 = tfds.builder_from_directory(
        str(tmp_path / "synthetic_ecg" / "mine" / "2.0.0")
    ).as_data_source("train")
    assert not np.array_equal(ex["ecg"], seed0[0]["ecg"])
    assert len(seed0) == 24


def test_build_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no builder 'nope'.*exist: chapman.*data/builders"):
        build.build_dataset("nope/x", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not fields of synthetic_ecg/tiny"):
        build.build_dataset("synthetic_ecg/tiny", data_dir=str(tmp_path), config_kwargs={"hz": 1})
    with pytest.raises(ValueError, match="no config 'x'"):
        build.build_dataset("synthetic_ecg/x", data_dir=str(tmp_path), config_kwargs={"seed": 1})
    with pytest.raises(ValueError, match="builds only version 2.0.0 of synthetic_ecg.*drop "
                       "':1.0.0'"):
        build.build_dataset("synthetic_ecg/tiny:1.0.0", data_dir=str(tmp_path))
    assert build.build_dataset("synthetic_ecg/tiny:2.0.0", data_dir=str(tmp_path)).version == (
        "2.0.0")


def test_build_prints_nothing_to_stdout(tmp_path, capsys):
    """TFDS's 'Downloading and preparing dataset ...' lines stay out of the output; the log
    says what was built (verbosity >= 1 keeps them)."""
    info = build.build_dataset("synthetic_ecg/tiny", data_dir=str(tmp_path))
    assert info.splits["train"].num_examples == 24
    assert "Downloading and preparing" not in capsys.readouterr().out
