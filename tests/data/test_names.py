"""Dataset names: one parser for every spelling users type, used by build, pipeline and labels."""

import pytest

from scar_jax.data import build, labels, names, pipeline, real_labels, synthetic


@pytest.mark.parametrize(
    "typed, want",
    [
        ("synthetic_ecg", ("synthetic_ecg", None, None)),
        ("synthetic_ecg/100hz", ("synthetic_ecg", "100hz", None)),
        ("synthetic_ecg/100hz:1.0.0", ("synthetic_ecg", "100hz", "1.0.0")),
        ("synthetic_ecg:1.0.0", ("synthetic_ecg", None, "1.0.0")),
        ("ptbxl/500hz", ("ptbxl", "500hz", None)),
        ("ptbxl/superdiagnostic", ("ptbxl", "superdiagnostic", None)),
        (" mimic_iv_ecg/500hz ", ("mimic_iv_ecg", "500hz", None)),
    ],
)
def test_parse_every_spelling(typed, want):
    parsed = names.parse(typed)
    assert (parsed.builder, parsed.config, parsed.version) == want
    assert str(parsed) == typed.strip()  # canonical spelling round-trips


@pytest.mark.parametrize(
    "typed", ["", "/500hz", "ptbxl/", "ptbxl//500hz", "ptbxl/500hz:", "PTB-XL"]
)
def test_malformed_names_say_the_format(typed):
    with pytest.raises(ValueError, match=r"not 'builder\[/config\]\[:version\]'"):
        names.parse(typed)


def test_builders_are_the_builder_folders():
    assert names.builders() == (
        "chapman_shaoxing", "cpsc2018", "mimic_iv_ecg", "ptbxl", "synthetic_ecg"
    )


def test_unknown_dataset_lists_the_ones_that_exist(tmp_path):
    listing = r"no builder 'ptbx'\. The datasets that exist: chapman_shaoxing, cpsc2018, .*ptbxl"
    with pytest.raises(names.UnknownDatasetError, match=listing):
        names.check_builder("ptbx/500hz")
    with pytest.raises(names.UnknownDatasetError, match=listing):
        build.build_dataset("ptbx", data_dir=str(tmp_path))
    with pytest.raises(names.UnknownDatasetError, match=listing):
        pipeline.load_source("ptbx/500hz", "train", str(tmp_path))
    assert names.check_builder("ptbxl/500hz:1.0.3") == names.DatasetName("ptbxl", "500hz", "1.0.3")


@pytest.mark.parametrize(
    "typed, want",
    [
        ("synthetic_ecg", synthetic.CLASSES),
        ("synthetic_ecg/100hz", synthetic.CLASSES),
        ("synthetic_ecg/100hz:1.0.0", synthetic.CLASSES),
        # the part after '/' is the builder config: the built dataset's labels (superdiagnostic)
        ("ptbxl/500hz", real_labels.PTBXL_SUPERDIAGNOSTIC),
        ("ptbxl/100hz:1.0.3", real_labels.PTBXL_SUPERDIAGNOSTIC),
        ("ptbxl", real_labels.PTBXL_SUPERDIAGNOSTIC),
        # or, for PTB-XL, one of its label sets
        ("ptbxl/rhythm", real_labels.PTBXL_RHYTHM),
        ("cpsc2018", real_labels.CPSC2018_CLASSES),
    ],
)
def test_labels_read_every_spelling(typed, want):
    assert labels.classes(typed) == tuple(want)
    assert list(labels.prompts(typed)) == list(want)
