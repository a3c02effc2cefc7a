"""Label-independent, model-derived removal and the mask-only label probe (METHOD §5, §8).

A per-record removal picked from the record's own positive labels puts the label into the
mask, so AUROC claims rest on class-level removals instead: for class c's AUROC, the same
region is removed from every test record. The oracle rows (regions.oracle_regions) use the
corpus's own region of c; the rows here use the leads (or segments) that matter most for
c to a model, ranked on the VALIDATION split, never on test:

  importance_c(u) = mean over validation positives of c of [s_c(x) - s_c(x without u)]
                  - mean over validation negatives of c of [s_c(x) - s_c(x without u)]

(occlusion of unit u; s_c the zero-shot score of class c): how much removing u narrows the
gap between c's positives and negatives. A unit that moves every record's score alike
does not count. The top round(rho * U) units of c (U = 12 leads or S segments) are then
removed from every test record, positives and negatives alike, and only class c is scored
under that mask (rows `classwise/<whitebox|transfer>/<unit>/rho<rho>`: ranked by the
evaluated model, or by the one reference model outside the comparison).

The mask-only label probe: a logistic regression (linear_probe) from a removal mask alone
(the flattened removed-token pattern [12 * S]) to the labels, fitted on the validation
split's masks, macro AUROC on the test split's masks (chance 0.5). A masker or protocol
whose masks tell the label scores well above 0.5.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from absl import logging

from scar_jax.evaluation import linear_probe
from scar_jax.evaluation import missingness as miss
from scar_jax.evaluation import zeroshot


def occlusion_keeps(observed: np.ndarray, unit: str) -> np.ndarray:
    """observed [B, 12, S] -> [1 + U, B, 12, S]: the observed tokens, then each unit removed."""
    observed = np.asarray(observed, bool)
    _, num_leads, num_segments = observed.shape
    if unit == "lead":
        occl = np.eye(num_leads, dtype=bool)[:, None, :, None]
    elif unit == "segment":
        occl = np.eye(num_segments, dtype=bool)[:, None, None, :]
    else:
        raise ValueError(f"class-level ranking unit {unit!r}; expected lead or segment.")
    return np.concatenate([observed[None], observed[None] & ~occl])


@dataclasses.dataclass
class ClassRanking:
    """Occlusion sums of one model on a split, per unit: positives' and negatives' score drops."""

    pos_sum: np.ndarray  # [K, U]
    neg_sum: np.ndarray  # [K, U]
    n_pos: np.ndarray  # [K]
    n_neg: np.ndarray  # [K]

    @classmethod
    def empty(cls, k: int, u: int) -> "ClassRanking":
        return cls(np.zeros((k, u)), np.zeros((k, u)), np.zeros(k), np.zeros(k))

    def add(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """scores [1 + U, b, K] (clean first) of b examples with labels [b, K]."""
        drop = scores[0][None] - scores[1:]  # [U, b, K]
        pos = np.asarray(labels, np.float64)
        self.pos_sum += np.einsum("ubk,bk->ku", drop, pos)
        self.neg_sum += np.einsum("ubk,bk->ku", drop, 1.0 - pos)
        self.n_pos += pos.sum(0)
        self.n_neg += (1.0 - pos).sum(0)

    def importance(self) -> np.ndarray:
        """[K, U]: mean drop over positives - mean drop over negatives (a missing side: 0)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(self.n_pos[:, None] > 0, self.pos_sum / self.n_pos[:, None], 0.0)
            n = np.where(self.n_neg[:, None] > 0, self.neg_sum / self.n_neg[:, None], 0.0)
        return p - n


def top_units(importance: np.ndarray, rho: float) -> np.ndarray:
    """importance [K, U] -> bool [K, U]: each class's round(rho * U) most important units
    (at least one; ties go to the lower index)."""
    if not 0.0 < rho < 1.0:
        raise ValueError(f"class-level removal ratio rho={rho} must be in (0, 1).")
    k, u = importance.shape
    n = max(1, int(round(rho * u)))
    order = np.argsort(-importance, axis=1, kind="stable")[:, :n]
    out = np.zeros((k, u), bool)
    np.put_along_axis(out, order, True, axis=1)
    return out


def units_to_region(units: np.ndarray, unit: str, num_leads: int, num_segments: int):
    """bool [K, U] -> token regions [K, 12, S]."""
    if unit == "lead":
        return np.repeat(units[:, :, None], num_segments, 2)
    return np.repeat(units[:, None, :], num_leads, 1)


def margin_importance(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """scores [1 + U, b, K] (clean first), labels [b, K] -> per-record importance [b, U] of
    the margin over the record's own classes (as missingness.GridEmbedder.importance)."""
    pos = np.asarray(labels, np.float64)
    neg = 1.0 - pos

    def margin(s):
        mp = np.sum(s * pos, -1) / np.maximum(pos.sum(-1), 1.0)
        mn = np.sum(s * neg, -1) / np.maximum(neg.sum(-1), 1.0)
        return mp - mn

    m = np.stack([margin(s) for s in scores])  # [1 + U, b]
    return (m[0][None] - m[1:]).T


@dataclasses.dataclass
class ValidationRanks:
    """A model on the validation split: class importance {unit: [K, U]} and the removal masks
    of its maskers {name: [N, 12 * S] bool} for the mask-only probe."""

    importance: dict[str, np.ndarray]
    removed: dict[str, np.ndarray]


def rank_on_split(
    emb: miss.GridEmbedder,
    z_cls: np.ndarray,
    data: Any,
    observed_fn: Callable[[slice], np.ndarray],
    *,
    units: Sequence[str],
    rhos: Sequence[float],
    batch_size: int,
    whitebox_name: str = "adversarial/whitebox",
    masker: Callable[[np.ndarray, np.ndarray, slice, float, float], np.ndarray] | None = None,
    random_seed: int | None = None,
) -> ValidationRanks:
    """Occlusion of every unit on `data` (an EvalData split; its labels rank the classes).

    observed_fn(sl) -> observed tokens [b, 12, S] of the rows sl. Besides the class
    importance it keeps, per unit and budget in `rhos`, the per-record removal of the
    model's own ranking (`<whitebox_name>/<unit>/rho<rho>`, the protocol's masks), the
    masker's removals when `masker(ecg, observed, sl, rho, noise)` is given
    (`masker/rho<rho>` sampled, `masker_mode/rho<rho>` noise-free), and with `random_seed`
    the random budget twins (`random/<unit>/rho<rho>`) as the probe's chance control.
    """
    n = len(data)
    k_cls = data.labels.shape[1]
    ranks: dict[str, ClassRanking] = {}
    removed: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        b = sl.stop - sl.start
        observed = _pad(observed_fn(sl), batch_size)
        ecg = _pad(np.nan_to_num(data.ecg[sl]).astype(np.float32), batch_size)
        labels = np.asarray(data.labels[sl], bool)
        tok = emb.tokens(ecg, observed)
        for unit in units:
            z, _ = emb.embed(tok, occlusion_keeps(observed, unit))
            scores = np.asarray(z @ np.asarray(z_cls).T)[:, :b]  # [1 + U, b, K]
            ranks.setdefault(unit, ClassRanking.empty(k_cls, scores.shape[0] - 1)).add(
                scores, labels)
            imp = _pad(margin_importance(scores, labels), batch_size)
            for rho in rhos:
                keep = np.asarray(miss.topk_units_keep(observed, imp, unit, float(rho)))
                removed.setdefault(f"{whitebox_name}/{unit}/rho{rho:g}", []).append(
                    _flat(observed & ~keep, b))
                if random_seed is not None:
                    cond = miss.random_units(unit, float(rho))
                    keep = miss.condition_keep(cond, observed,
                                               np.arange(start, start + batch_size), random_seed)
                    removed.setdefault(cond.name, []).append(_flat(observed & ~keep, b))
        if masker is not None:
            for rho in rhos:
                for prefix, noise in (("masker", 1.0), ("masker_mode", 0.0)):
                    rem = masker(ecg, observed, sl, float(rho), noise)
                    removed.setdefault(f"{prefix}/rho{rho:g}", []).append(_flat(rem, b))
    return ValidationRanks({u: r.importance() for u, r in ranks.items()},
                           {k: np.concatenate(v) for k, v in removed.items()})


def _flat(removed: np.ndarray, b: int) -> np.ndarray:
    """[bs, 12, S] -> the first b rows flattened [b, 12 * S] bool."""
    removed = np.asarray(removed, bool)[:b]
    return removed.reshape(b, -1)


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    """Pad axis 0 of x to n rows with zeros."""
    if x.shape[0] == n:
        return x
    return np.concatenate([x, np.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)])


def mask_probe(
    val_removed: np.ndarray,
    val_labels: np.ndarray,
    test_removed: np.ndarray,
    test_labels: np.ndarray,
    class_names: Sequence[str],
    c: float = 1.0,
) -> dict[str, Any]:
    """Logistic regression from removal masks alone to the labels: fitted on the validation
    masks [N_val, F] (inverse L2 strength c), macro AUROC on the test masks [N_test, F].

    -> {'auroc' (chance 0.5), 'per_class', 'skipped', 'removed_share' (test)}.
    """
    x_va = np.asarray(val_removed, np.float64)
    x_te = np.asarray(test_removed, np.float64)
    if x_va.shape[1] != x_te.shape[1]:
        raise ValueError(f"mask probe: validation masks have {x_va.shape[1]} units, test masks "
                         f"{x_te.shape[1]}; both must be flattened over the same token grid.")
    y_va = np.asarray(val_labels, bool)
    probe = linear_probe.fit(x_va, y_va, x_va, y_va, (float(c),))
    out = zeroshot.macro_auroc(test_labels, probe.decision(x_te), class_names)
    out["removed_share"] = float(x_te.mean())
    return out


def swapped_masks(removed: np.ndarray, share: float, seed: int) -> np.ndarray:
    """The removal masks [N, F] as the masked view sees them in training (METHOD §5): a share
    of the records (each with probability `share`, seeded) takes the mask of its partner on
    one random cycle over the records (no record is its own partner), the rest keep their own.
    The mask-only probe on these measures the shortcut open to the encoder, where the probe on
    the own masks measures the masker's targeting (a mask that finds the evidence tells it)."""
    removed = np.asarray(removed)
    n = removed.shape[0]
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"swapped_masks: share={share} must be in [0, 1].")
    if n < 2 or share == 0.0:
        return removed.copy()
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    partner = np.empty(n, np.int64)
    partner[order] = np.roll(order, -1)  # order[i] takes order[i + 1]'s mask
    swapped = rng.random(n) < share
    return np.where(swapped[:, None], removed[partner], removed)


def mask_probes(
    val: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    val_labels: np.ndarray,
    test_labels: np.ndarray,
    class_names: Sequence[str],
    c: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """mask_probe for every masker present in both splits, {name: result}."""
    out = {}
    for name in sorted(set(val) & set(test)):
        if not zeroshot.valid_classes(val_labels).any():
            logging.warning("mask probe skipped: the validation split has no class with both "
                            "positives and negatives.")
            return {}
        out[name] = mask_probe(val[name], val_labels, test[name], test_labels, class_names, c)
    return out


def removal_score_shift(clean: np.ndarray, removed: np.ndarray, labels: np.ndarray,
                        class_names: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """How a class-level removal moves each class's zero-shot score, split by the label.

    clean, removed: scores [N, K] (removed[:, c]: class c's score with c's region removed
    from every record, as the oracle and classwise rows); labels [N, K]. For each class of
    `classes`: the mean change on its negatives and on its positives, in standard deviations
    of its clean score over all records. A rise on the negatives means the encoder reads
    "this region is missing" as the class — the shortcut a label-telling mask teaches; the
    drop on the positives is the evidence lost. Classes without both positives and negatives,
    or with a constant clean score, are listed under 'skipped'.

    -> {'per_class': {c: {'negatives', 'positives', 'n_neg', 'n_pos'}}, 'negatives',
    'positives' (macro over the scored classes; NaN when none), 'skipped'}.
    """
    clean = np.asarray(clean, np.float64)
    removed = np.asarray(removed, np.float64)
    labels = np.asarray(labels, bool)
    if clean.shape != removed.shape or clean.shape != labels.shape:
        raise ValueError(f"removal_score_shift: clean {clean.shape}, removed {removed.shape} and "
                         f"labels {labels.shape} must have one shape [N, K].")
    valid = zeroshot.valid_classes(labels)
    per_class, skipped = {}, []
    for c in classes:
        j = list(class_names).index(c)
        pos = labels[:, j]
        sd = clean[:, j].std()
        if not valid[j] or not sd > 0:
            skipped.append(c)
            continue
        d = (removed[:, j] - clean[:, j]) / sd
        per_class[c] = {"negatives": float(d[~pos].mean()), "positives": float(d[pos].mean()),
                        "n_neg": int((~pos).sum()), "n_pos": int(pos.sum())}

    def macro(key):
        return float(np.mean([v[key] for v in per_class.values()])) if per_class else float("nan")

    return {"per_class": per_class, "negatives": macro("negatives"),
            "positives": macro("positives"), "skipped": skipped}


def lead_local_classes(class_primary: np.ndarray | None, class_names: Sequence[str],
                       class_secondary: np.ndarray | None = None):
    """Classes whose evidence is local to leads: [names], from the class regions [K, nbins, 12]
    or [K, N, nbins, 12]. The primary region covers some leads but not all, and the class's
    whole evidence (primary and secondary regions) leaves at least one lead without any: a
    class whose secondary evidence fills every other lead (a heart rate, a QRS width, the
    absence of findings) is carried by every lead, so no removal of leads takes it away and
    targeting its primary leads is not what a good adversary does."""
    if class_primary is None:
        return []

    def leads(region):
        reg = np.asarray(region, bool)
        return reg.reshape(reg.shape[0], -1, reg.shape[-1]).any(1)  # [K, 12]

    primary = leads(class_primary)
    evidence = primary if class_secondary is None else primary | leads(class_secondary)
    return [c for c, p, e in zip(class_names, primary, evidence)
            if p.any() and not p.all() and not e.all()]
