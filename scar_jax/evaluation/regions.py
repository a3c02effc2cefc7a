"""Where each class's evidence lies: the oracle-region rule and its token grid.

`oracle_regions` turns a built corpus's class metadata (each class's leads and time kind)
and the records' per-class evidence time bins into every class's region in every record;
the oracle rows of the evaluation grid remove exactly that region, the class targeting
counts against it, and the synthetic corpus's evidence probe (scar_jax.data.synthetic)
reads the same rule. `region_tokens` puts a batch's regions on the token grid.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from scar_jax.evaluation import missingness as miss
from scar_jax.leads import LEAD_NAMES, NUM_LEADS

LOCALISED_TIME_KINDS = ("pvc", "post_pvc")  # evidence that exists only in some records' spans


def oracle_regions(
    metadata: Mapping[str, Any],
    classes: Sequence[str],
    region: str,
    labels: np.ndarray,
    time_bins: np.ndarray | None,
    num_bins: int,
    seed: int = 0,
) -> np.ndarray | None:
    """Class c's `region` (primary | secondary) in every record: [K, N, nbins, 12] bool.

    From info.metadata['class_info'] (each class's leads and time kind) and the records'
    per-class time bins `time_bins` [N, nbins, K] (evidence_time_<region>, set on positives
    only). A class whose evidence recurs in every beat (time kind not in
    LOCALISED_TIME_KINDS) is removed over its leads for the whole record, in every record.
    A time-localised class (premature beats) is removed over its leads at a positive's own
    spans; a negative gets the spans of a seeded random positive, shifted by a random
    offset, so positives and negatives lose the same kind of region (no label leak).
    """
    info = (metadata or {}).get("class_info")
    if not info:
        return None
    labels = np.asarray(labels, bool)
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    out = np.zeros((len(classes), n, num_bins, NUM_LEADS), bool)
    for j, c in enumerate(classes):
        ci = info.get(c, {})
        cols = [LEAD_NAMES.index(x) for x in ci.get(f"{region}_leads", [])]
        lead_mask = np.zeros(NUM_LEADS, bool)
        lead_mask[cols] = True
        pos = np.flatnonzero(labels[:, j])
        if ci.get(f"{region}_time") in LOCALISED_TIME_KINDS and time_bins is not None and len(pos):
            t = np.asarray(time_bins[:, :, j], bool).copy()  # [N, bins]
            for i in np.flatnonzero(~labels[:, j]):
                t[i] = np.roll(t[rng.choice(pos)], int(rng.integers(0, num_bins)))
        else:
            t = np.ones((n, num_bins), bool)
        out[j] = t[:, :, None] & lead_mask[None, None, :]
    return out


def region_tokens(region: np.ndarray | None, data: Any, patch: int, s: int,
                  sl: slice) -> np.ndarray | None:
    """Class regions [K, nbins, 12] or [K, N, nbins, 12] -> token grid [K, 1|b, 12, S] or None.

    data: its sample_rate and bin_seconds (an EvalData); sl: the batch's rows."""
    if region is None:
        return None
    if region.ndim == 4:  # per example: only this batch's rows are converted
        region = region[:, sl]
    tok = miss.evidence_to_tokens(region, patch, data.sample_rate, s, data.bin_seconds)
    return tok[:, None] if tok.ndim == 3 else tok
