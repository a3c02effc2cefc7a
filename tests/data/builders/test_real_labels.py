"""Every class of every real corpus has several curated phrasings, and no two classes share one."""

from __future__ import annotations

import collections
import re

import pytest

from scar_jax.data import real_labels
from scar_jax.data.builders.chapman_shaoxing import make_dummy_data as csn_dummy

# The 63 acronyms of ConditionNames_SNOMED-CT.csv in PhysioNet ecg-arrhythmia 1.0.0.
CSN_ACRONYMS = (
    "1AVB", "2AVB", "2AVB1", "2AVB2", "3AVB", "ABI", "ALS", "APB", "AQW", "ARS", "AVB", "CCR",
    "CR", "ERV", "FQRS", "IDC", "IVB", "JEB", "JPT", "LBBB", "LBBBB", "LFBBB", "LVH", "LVQRSAL",
    "LVQRSCL", "LVQRSLL", "MI", "MIBW", "MIFW", "MILW", "MISW", "PRIE", "PWC", "QTIE", "RAH",
    "RBBB", "RVH", "STDD", "STE", "STTC", "STTU", "TWC", "TWO", "UW", "VB", "VEB", "VFW", "VPB",
    "VPE", "VET", "WAVN", "WPW", "SB", "SR", "AFIB", "ST", "AF", "SA", "SVT", "AT", "AVNRT",
    "AVRT", "SAAWR",
)  # fmt: skip
# Every class of every label set of the six benchmarks, per corpus.
CORPUS_CLASSES = {
    "ptbxl": tuple(dict.fromkeys(c for s in real_labels.PTBXL_LABEL_SETS.values() for c in s)),
    "cpsc2018": real_labels.CPSC2018_CLASSES,
    "chapman_shaoxing": CSN_ACRONYMS,
}


def _norm(text: str) -> str:
    """Case, punctuation and spacing do not make two phrasings different."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _shared(table: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """{phrasing: classes} for every phrasing that more than one class has."""
    owners = collections.defaultdict(set)
    for name, phrasings in table.items():
        for p in phrasings:
            owners[_norm(p)].add(name)
    return {p: sorted(n) for p, n in owners.items() if len(n) > 1}


@pytest.mark.parametrize("label_set", list(real_labels.PTBXL_LABEL_SETS))
def test_ptbxl_every_class_has_a_prompt(label_set):
    classes = real_labels.classes("ptbxl", label_set)
    assert len(classes) == {"superdiagnostic": 5, "subdiagnostic": 23, "form": 19,
                            "rhythm": 12}[label_set]
    assert len(set(classes)) == len(classes)
    for c in classes:
        assert c in real_labels.PROMPTS["ptbxl"], c


def test_prompt_tables_cover_exactly_the_classes():
    for corpus, classes in CORPUS_CLASSES.items():
        assert set(real_labels.PROMPTS[corpus]) == set(classes), corpus
    assert len(CORPUS_CLASSES["ptbxl"]) == 5 + 23 + 19 + 12 - 3  # NORM, STTC, NST_ repeat


@pytest.mark.parametrize("corpus", list(CORPUS_CLASSES))
def test_every_class_has_several_distinct_well_formed_phrasings(corpus):
    for c in CORPUS_CLASSES[corpus]:
        phrasings = real_labels.prompts(corpus, c)
        assert isinstance(phrasings, tuple) and len(phrasings) >= 3, c
        assert len({_norm(p) for p in phrasings}) == len(phrasings), c
        assert phrasings[0] == real_labels.prompt(corpus, c), c
        for p in phrasings:
            assert p.startswith("ECG shows ") and p == p.strip() and "  " not in p, p
            assert len(p.split()) <= 25, p


@pytest.mark.parametrize("corpus", list(CORPUS_CLASSES))
def test_no_phrasing_is_shared_between_classes(corpus):
    # One table per corpus covers all its label sets, so a class name that appears in two
    # label sets (PTB-XL's NST_ in subdiagnostic and form) has one entry and may share.
    table = {c: real_labels.prompts(corpus, c) for c in CORPUS_CLASSES[corpus]}
    assert _shared(table) == {}
    canonical = [_norm(p[0]) for p in table.values()]
    assert len(set(canonical)) == len(canonical)


def test_shared_phrasings_are_caught():
    """The check above fails on the old table, where CSN's STE and STTU had one prompt."""
    old = {"STE": ("ECG shows ST segment elevation",), "STTU": ("ECG shows ST segment elevation",),
           "STDD": ("ECG shows ST segment depression",)}
    assert _shared(old) == {"ecg shows st segment elevation": ["STE", "STTU"]}
    assert _shared({"A": ("ECG shows a Wave.",), "B": ("ecg shows  A wave",)}) == {
        "ecg shows a wave": ["A", "B"]
    }


def test_csn_ste_and_sttu_follow_their_snomed_codes():
    # STTU "ST tilt up" is SNOMED 164931005 (ST elevation), the code of CPSC2018's STE;
    # STE "ST extension" is 164930006 (ST interval abnormal), not an elevation.
    assert real_labels.prompt("chapman_shaoxing", "STTU") == "ECG shows ST segment elevation"
    assert real_labels.CPSC2018_SNOMED["164931005"] == "STE"
    assert all("elevat" not in p for p in real_labels.prompts("chapman_shaoxing", "STE"))


def test_cpsc_classes_codes_and_prompts():
    assert set(real_labels.PROMPTS["cpsc2018"]) == set(real_labels.CPSC2018_CLASSES)
    assert set(real_labels.CPSC2018_SNOMED.values()) == set(real_labels.CPSC2018_CLASSES)


def test_csn_condition_acronyms_have_prompts_and_fallback():
    for acronym, _, _ in csn_dummy.CONDITIONS:
        assert acronym in real_labels.PROMPTS["chapman_shaoxing"], acronym
    joined = real_labels.prompts("chapman_shaoxing", "WAVN/SAAWR")
    assert joined == real_labels.PROMPTS["chapman_shaoxing"]["WAVN"]
    assert real_labels.prompt("chapman_shaoxing", "WAVN/SAAWR").endswith("atrioventricular node")
    assert real_labels.prompts("chapman_shaoxing", "XYZ/SAAWR")[0] == (
        "ECG shows wandering atrial pacemaker"
    )
    assert real_labels.prompts("chapman_shaoxing", "XYZ", " Odd Rhythm") == (
        "ECG shows odd rhythm",
    )
    assert real_labels.prompt("chapman_shaoxing", "XYZ", "Odd Rhythm") == "ECG shows odd rhythm"
    for call in (real_labels.prompt, real_labels.prompts):
        with pytest.raises(KeyError, match="real_labels.py"):
            call("chapman_shaoxing", "XYZ")
        with pytest.raises(KeyError, match="real_labels.py"):
            call("chapman_shaoxing", "XYZ", "  ")


def test_prompts_are_distinct_within_a_label_set():
    for name, classes in real_labels.PTBXL_LABEL_SETS.items():
        prompts = [real_labels.prompt("ptbxl", c) for c in classes]
        assert len(set(prompts)) == len(prompts), name


def test_label_registry_reads_real_labels():
    from scar_jax.data import labels

    assert labels.classes("ptbxl/rhythm") == real_labels.PTBXL_RHYTHM
    af = labels.prompts("cpsc2018")["AF"]  # the registry carries every phrasing
    assert af == real_labels.prompts("cpsc2018", "AF") and len(af) >= 3
    assert af[0] == "ECG shows atrial fibrillation"
