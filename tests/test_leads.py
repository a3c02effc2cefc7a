"""The lead schema lives in one ground-floor module that everything else reads."""

import pytest

from scar_jax import leads


def test_schema():
    assert leads.NUM_LEADS == 12 == len(leads.LEAD_NAMES) == len(set(leads.LEAD_NAMES))
    assert leads.LIMB + leads.PRECORDIAL == leads.LEAD_NAMES
    assert leads.PRECORDIAL == ("V1", "V2", "V3", "V4", "V5", "V6")
    for name, subset in leads.LEAD_SUBSETS.items():
        assert set(subset) <= set(leads.LEAD_NAMES), name


def test_lead_indices():
    assert leads.lead_indices(["I", "aVR", "V6"]) == [0, 3, 11]
    assert leads.lead_indices([]) == []
    with pytest.raises(ValueError, match=r"Unknown lead name 'avr'"):
        leads.lead_indices(["avr"])


def test_every_module_reads_the_same_order():
    from scar_jax.data import preprocessing, synthetic
    from scar_jax.evaluation import missingness
    from scar_jax.export import torch_modules
    from scar_jax.models import ecg_encoder

    for mod in (preprocessing, synthetic, missingness, ecg_encoder):
        assert mod.LEAD_NAMES is leads.LEAD_NAMES, mod.__name__
    assert missingness.LEAD_SUBSETS is leads.LEAD_SUBSETS
    # torch_modules ships on its own with only torch, so it keeps a copy.
    assert torch_modules.LEAD_NAMES == leads.LEAD_NAMES
    assert torch_modules.NUM_LEADS == leads.NUM_LEADS
