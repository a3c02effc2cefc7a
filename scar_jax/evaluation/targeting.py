"""Targeting: how much of what a remover takes lies in the evidence, against chance.

A remover (the trained masker, a white-box or random protocol) targets the evidence when
the share of its removed tokens inside the primary region (scar_jax.evaluation.regions)
exceeds the region's share of the observed tokens (chance); `lift` = share / chance.
The grid collects per-example count rows batch by batch (`target_counts`,
`class_target_counts`) and aggregates them once (`targeting_from_counts`,
`targeting_by_class`); `targeting` does both for one batch.

Where a remover aims needs no evidence regions (real corpora have none): `lead_counts` and
`lead_profile` give the lift of its removals per lead, over every example and over each
class's positives.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from scar_jax.evaluation import data as data_lib
from scar_jax.evaluation import regions as regions_lib


def target_counts(removed: np.ndarray, primary: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per example [b, 4]: removed, removed in primary, primary observed, observed token counts."""
    primary = primary & observed
    return np.stack(
        [removed.sum((1, 2)), (removed & primary).sum((1, 2)), primary.sum((1, 2)),
         observed.sum((1, 2))], -1)


def targeting_from_counts(rows: np.ndarray) -> dict[str, float]:
    """Aggregate [N, 4] count rows into share / chance / lift, averaged over the examples with
    a primary region and at least one removal."""
    ok = (rows[:, 0] > 0) & (rows[:, 2] > 0)
    if not ok.any():
        return {"share": float("nan"), "chance": float("nan"), "lift": float("nan"), "n": 0}
    share = float(np.mean(rows[ok, 1] / rows[ok, 0]))
    chance = float(np.mean(rows[ok, 2] / rows[ok, 3]))
    return {"share": share, "chance": chance, "lift": share / chance, "n": int(ok.sum())}


def targeting(removed: np.ndarray, primary: np.ndarray, observed: np.ndarray) -> dict[str, float]:
    """Share of removed tokens inside the primary region vs the share expected by chance.

    removed, primary, observed: [B, 12, S] bool. Chance for an example is the primary
    share of its observed tokens. Averaged over examples with a primary region and at
    least one removal; `lift` = share / chance.
    """
    return targeting_from_counts(target_counts(removed & observed, primary, observed))


def class_region_batch(region, data, patch, s, sl, bs) -> np.ndarray | None:
    """Every class's region as tokens for the batch `sl`, padded: [K, bs, 12, S] bool or None."""
    reg = regions_lib.region_tokens(region, data, patch, s, sl)
    if reg is None:
        return None
    if reg.shape[1] == 1:
        return np.broadcast_to(reg, (reg.shape[0], bs) + reg.shape[2:])
    return np.stack([data_lib.pad(r, bs) for r in reg])


def class_target_counts(removed: np.ndarray, class_region: np.ndarray, observed: np.ndarray,
                        labels: np.ndarray) -> np.ndarray:
    """Per example and class [b, K, 4] count rows (as target_counts) against class k's own
    region [K, b, 12, S]; rows of examples that are not positive for k are zero (skipped)."""
    rows = np.stack([target_counts(removed, class_region[k], observed)
                     for k in range(class_region.shape[0])], 1)
    return rows * np.asarray(labels, bool)[:, :, None]


def targeting_by_class(rows: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """[N, K, 4] count rows -> per class share / chance / lift over its positives, and the
    macro mean of the lifts over classes with at least one counted positive."""
    out = {c: targeting_from_counts(rows[:, k]) for k, c in enumerate(classes)}
    lifts = [v["lift"] for v in out.values() if v["n"] and math.isfinite(v["lift"])]
    return {"classes": out, "macro_lift": float(np.mean(lifts)) if lifts else float("nan")}


def add_lead_local(results: dict[str, Any], lead_local: Sequence[str]) -> None:
    """Mark the classes whose primary evidence is local to leads and add, per remover, the
    macro lift over those classes only (`targeting_by_class[...]['lead_local_macro_lift']`)."""
    results["lead_local_classes"] = list(lead_local)
    for res in results["models"].values():
        for t in res.get("targeting_by_class", {}).values():
            lifts = [t["classes"][c]["lift"] for c in lead_local
                     if c in t["classes"] and t["classes"][c]["n"]
                     and math.isfinite(t["classes"][c]["lift"])]
            t["lead_local_macro_lift"] = float(np.mean(lifts)) if lifts else float("nan")


def lead_counts(removed: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per example [b, 2, 12]: removed and observed tokens in each lead."""
    observed = np.asarray(observed, bool)
    return np.stack([(np.asarray(removed, bool) & observed).sum(2), observed.sum(2)], 1)


def lead_profile(rows: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Where a remover aims, lead by lead: [N, 2, 12] `lead_counts` rows and labels [N, K] ->
    {'all': profile, 'classes': {class: profile over its positives | None}}.

    A profile is {'share': [12], 'lift': [12], 'n'}: share = the lead's share of an example's
    removed tokens, lift = share / the lead's share of that example's observed tokens (1:
    chance), each averaged over the examples with at least one removal, as `targeting`
    averages (NaN for a lead that none of them observed); None without such an example.
    """
    rows = np.asarray(rows, np.float64)
    labels = np.asarray(labels, bool)

    def profile(r):
        r = r[r[:, 0].sum(1) > 0]
        if not len(r):
            return None
        share = np.mean(r[:, 0] / r[:, 0].sum(1, keepdims=True), 0)
        chance = np.mean(r[:, 1] / r[:, 1].sum(1, keepdims=True), 0)
        lift = np.where(chance > 0, share / np.where(chance > 0, chance, 1.0), np.nan)
        return {"share": share.tolist(), "lift": lift.tolist(), "n": int(len(r))}

    return {"all": profile(rows),
            "classes": {c: profile(rows[labels[:, k]]) for k, c in enumerate(classes)}}
