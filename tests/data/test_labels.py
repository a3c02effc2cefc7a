"""The one prompt lookup (labels.class_prompts) that eval, predict and diagnostics read."""

import pytest

from scar_jax.data import labels, real_labels, synthetic


def test_every_class_of_the_benchmark_label_sets_has_a_prompt():
    sets = {"synthetic_ecg": synthetic.CLASSES, "cpsc2018": real_labels.CPSC2018_CLASSES}
    sets.update({f"ptbxl/{k}": v for k, v in real_labels.PTBXL_LABEL_SETS.items()})
    for ds, classes in sets.items():
        prompts = labels.class_prompts(ds, classes)
        assert len(prompts) == len(classes)
        assert all(p.startswith("ECG shows ") for ph in prompts for p in ph) and all(prompts)
        assert len(set(prompts)) == len(prompts), ds  # distinct classes, distinct phrasings
    with pytest.raises(KeyError, match="No prompt for classes"):
        labels.class_prompts("cpsc2018", ["NOT_A_CLASS"])


def test_class_prompts_default_order_and_the_corpus_fallback():
    # default classes: the dataset's own, in label order, each with its registered phrasings
    assert labels.class_prompts("synthetic_ecg/100hz") == [
        c.prompts for c in synthetic.CLASS_INFO]
    assert [c.name for c in synthetic.CLASS_INFO] == list(synthetic.CLASSES)
    # a class outside the dataset's table (a label set read from a built dataset's metadata)
    # takes the corpus's curated phrasings; the corpus is the parsed builder, version or not
    rhythm = [c for c in real_labels.PTBXL_RHYTHM if c not in real_labels.PTBXL_SUPERDIAGNOSTIC]
    got = labels.class_prompts("ptbxl/superdiagnostic:1.0.3", ["NORM", rhythm[0]])
    assert got == [real_labels.prompts("ptbxl", "NORM"), real_labels.prompts("ptbxl", rhythm[0])]
    assert labels.class_prompts("cpsc2018:1.0.0", ["AF"]) == [real_labels.prompts("cpsc2018", "AF")]
    with pytest.raises(KeyError, match=r"\['XYZ'\] of ptbxl/rhythm"):
        labels.class_prompts("ptbxl/rhythm", ["NORM", "XYZ"])
