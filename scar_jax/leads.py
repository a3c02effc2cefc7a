"""The 12-lead ECG schema: lead names in the order of every `[T, 12]` array, and named subsets.

Every array in the package (records, `lead_observed`, keep masks, evidence maps) puts
lead j in column j of `LEAD_NAMES`. Data code, the network, evaluation and export all
read the order from here. (`scar_jax/export/torch_modules.py` keeps its own copy,
since it ships on its own with only torch; a test checks the two agree.)
"""

from __future__ import annotations

from typing import Iterable

LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
NUM_LEADS = len(LEAD_NAMES)
LIMB = LEAD_NAMES[:6]
PRECORDIAL = LEAD_NAMES[6:]
# Clinical lead subsets by name (evaluation's subset/<name> conditions).
LEAD_SUBSETS = {
    "I": ("I",),
    "I+II": ("I", "II"),
    "limb6": LIMB,
    "precordial6": PRECORDIAL,
    "II+V1": ("II", "V1"),
}


def lead_indices(names: Iterable[str]) -> list[int]:
    """Lead names (exact spelling, e.g. 'aVR', 'V1') -> their columns; unknown names raise."""
    out = []
    for name in names:
        if name not in LEAD_NAMES:
            raise ValueError(f"Unknown lead name {name!r}; the leads are {LEAD_NAMES}.")
        out.append(LEAD_NAMES.index(name))
    return out
