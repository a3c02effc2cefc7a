"""Every class of every real corpus has a curated prompt."""

from __future__ import annotations

import pytest

from scar_jax.data import real_labels
from scar_jax.data.builders.chapman_shaoxing import make_dummy_data as csn_dummy


@pytest.mark.parametrize("label_set", list(real_labels.PTBXL_LABEL_SETS))
def test_ptbxl_every_class_has_a_prompt(label_set):
    classes = real_labels.classes("ptbxl", label_set)
    assert len(classes) == {"superdiagnostic": 5, "subdiagnostic": 23, "form": 19,
                            "rhythm": 12}[label_set]
    assert len(set(classes)) == len(classes)
    for c in classes:
        assert c in real_labels.PROMPTS["ptbxl"], c


def test_cpsc_classes_codes_and_prompts():
    assert set(real_labels.PROMPTS["cpsc2018"]) == set(real_labels.CPSC2018_CLASSES)
    assert set(real_labels.CPSC2018_SNOMED.values()) == set(real_labels.CPSC2018_CLASSES)


def test_csn_condition_acronyms_have_prompts_and_fallback():
    for acronym, _, _ in csn_dummy.CONDITIONS:
        assert acronym in real_labels.PROMPTS["chapman_shaoxing"], acronym
    assert real_labels.prompt("chapman_shaoxing", "WAVN/SAAWR").endswith("atrioventricular node")
    assert real_labels.prompt("chapman_shaoxing", "XYZ", "Odd Rhythm") == "ECG shows odd rhythm"
    with pytest.raises(KeyError, match="real_labels.py"):
        real_labels.prompt("chapman_shaoxing", "XYZ")


def test_prompts_are_distinct_within_a_label_set():
    for name, classes in real_labels.PTBXL_LABEL_SETS.items():
        prompts = [real_labels.prompt("ptbxl", c) for c in classes]
        assert len(set(prompts)) == len(prompts), name


def test_label_registry_reads_real_labels():
    from scar_jax.data import labels

    assert labels.classes("ptbxl/rhythm") == real_labels.PTBXL_RHYTHM
    assert labels.prompts("cpsc2018")["AF"] == "ECG shows atrial fibrillation"
