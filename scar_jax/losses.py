"""SCAR's loss terms (METHOD §6-7) and the fused min-max objective.

Every contrastive loss runs over the batch it is given; under `jax.jit` with a
batch sharded over a mesh that batch is the *global* batch, so the negatives
come from every device.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

LOGIT_SCALE_MAX = 100.0


def capped_scale(log_scale: jax.Array, max_scale: float = LOGIT_SCALE_MAX) -> jax.Array:
    """exp(log_scale) capped at max_scale (CLIP's learned temperature)."""
    return jnp.exp(jnp.minimum(log_scale, jnp.log(max_scale)))


def clip_rows(
    za: jax.Array, zb: jax.Array, log_scale: jax.Array, max_scale: float = LOGIT_SCALE_MAX
) -> jax.Array:
    """Pair i's share [B] of the symmetric InfoNCE: (its row's + its column's CE) / 2."""
    logits = capped_scale(log_scale, max_scale) * za @ zb.T
    labels = jnp.arange(za.shape[0])
    la = -jnp.take_along_axis(jax.nn.log_softmax(logits, 1), labels[:, None], 1)[:, 0]
    lb = -jnp.take_along_axis(jax.nn.log_softmax(logits, 0), labels[None, :], 0)[0]
    return 0.5 * (la + lb)


def clip_loss(
    za: jax.Array, zb: jax.Array, log_scale: jax.Array, max_scale: float = LOGIT_SCALE_MAX
) -> jax.Array:
    """Symmetric InfoNCE between L2-normalised za, zb: [B, E] (pairs on the diagonal)."""
    return jnp.mean(clip_rows(za, zb, log_scale, max_scale))


def siglip_rows(
    za: jax.Array,
    zb: jax.Array,
    log_scale: jax.Array,
    bias: jax.Array,
    max_scale: float = LOGIT_SCALE_MAX,
) -> jax.Array:
    """Row i's share [B] of the SigLIP loss: -sum_j log sigmoid(y_ij (t * za_i.zb_j + b))."""
    logits = capped_scale(log_scale, max_scale) * za @ zb.T + bias
    y = 2.0 * jnp.eye(za.shape[0]) - 1.0
    return -jnp.sum(jax.nn.log_sigmoid(y * logits), 1)


def siglip_loss(za: jax.Array, zb: jax.Array, log_scale: jax.Array, bias: jax.Array,
                max_scale: float = LOGIT_SCALE_MAX) -> jax.Array:
    """SigLIP: -sum_ij log sigmoid(y_ij (t * za_i.zb_j + b)) / B, y = +1 on the diagonal."""
    return jnp.mean(siglip_rows(za, zb, log_scale, bias, max_scale))


def finding_loss(
    z: jax.Array, z_findings: jax.Array, finding_ids: jax.Array, log_scale: jax.Array,
    max_scale: float = LOGIT_SCALE_MAX,
) -> jax.Array:
    """Multi-positive InfoNCE between ECGs and the findings of the batch's reports.

    z [B, E]: ECG embeddings; z_findings [B, F, E]: the embeddings of each report's findings
    (its sentences); finding_ids [B, F] int: an id per distinct finding text, -1 = padding.
    A finding is a positive of every ECG whose report contains the same text, so records
    that share a finding (or a whole label set) are never each other's negatives. Each
    distinct finding counts once however many reports of the batch contain it (its copies
    carry log-weight -log(count)). ECG -> findings: mean over the ECG's distinct findings of
    -log p(finding | ECG), p a softmax over the batch's distinct findings; findings -> ECG:
    for each distinct finding, mean over its ECGs of -log softmax over the B ECGs. The loss
    is the mean of the two directions.
    """
    b, f, e = z_findings.shape
    ids = finding_ids.reshape(b * f)
    valid = ids >= 0
    zf = z_findings.reshape(b * f, e)
    logits = capped_scale(log_scale, max_scale) * z @ zf.T  # [B, BF]
    same = (ids[:, None] == ids[None, :]) & valid[:, None] & valid[None, :]  # [BF, BF]
    count = jnp.maximum(jnp.sum(same, 1), 1).astype(logits.dtype)
    # pos[i, s]: slot s's finding is one of report i's findings
    pos = jnp.any(
        (finding_ids[:, :, None] == ids[None, None, :]) & (finding_ids[:, :, None] >= 0), 1
    ) & valid[None, :]
    w = jnp.where(valid, 1.0 / count, 0.0)  # each distinct finding sums to weight 1
    neg_inf = jnp.finfo(logits.dtype).min
    weighted = jnp.where(valid[None, :], logits + jnp.log(jnp.maximum(w, 1e-30))[None, :],
                         neg_inf)
    log_p = logits - jax.nn.logsumexp(weighted, axis=1, keepdims=True)  # per distinct finding
    wp = jnp.where(pos, w[None, :], 0.0)  # [B, BF]
    n_pos = jnp.sum(wp, 1)
    has = n_pos > 0
    l_ecg = -jnp.sum(wp * jnp.where(pos, log_p, 0.0), 1) / jnp.maximum(n_pos, 1e-12)
    loss_ecg = jnp.sum(jnp.where(has, l_ecg, 0.0)) / jnp.maximum(jnp.sum(has), 1)
    # findings -> ECG: softmax over the B ECGs of each slot, positives are its reports
    log_q = jax.nn.log_softmax(logits, axis=0)  # [B, BF]
    n_ecg = jnp.sum(pos, 0)
    l_f = -jnp.sum(jnp.where(pos, log_q, 0.0), 0) / jnp.maximum(n_ecg, 1)
    wf = jnp.where(valid & (n_ecg > 0), w, 0.0)
    loss_f = jnp.sum(wf * l_f) / jnp.maximum(jnp.sum(wf), 1e-12)
    return 0.5 * (loss_ecg + loss_f)


MERL_TEMPERATURE = 0.07  # MERL's fixed temperature (utils_loss.clip_loss) for both its terms


def uni_modal_loss(
    view_a: jax.Array, view_b: jax.Array, temperature: float | jax.Array = MERL_TEMPERATURE
) -> jax.Array:
    """MERL's uni-modal alignment (ICML 2024): InfoNCE between two views of the ECG feature.

    view_a, view_b: [B, F], MERL's dropout(linear_1(h)) and dropout(linear_2(h)) of the pooled
    ECG feature h (two bias-free projections of its own, not the shared head). They are
    L2-normalised here and compared at a *fixed* temperature (MERL: 0.07), not the learned CLIP
    scale. MERL sums the two directions in both its terms (L = L_cma + L_uma); clip_loss averages
    them, so averaging here keeps MERL's 1:1 ratio between the two terms.
    """
    za, zb = (v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
              for v in (view_a, view_b))
    return clip_loss(za, zb, -jnp.log(jnp.asarray(temperature, za.dtype)), max_scale=jnp.inf)


def selector_kl(target: jax.Array, weights: jax.Array, visible: jax.Array) -> jax.Array:
    """Mean over the batch of KL(q || w) over visible tokens; q, w: [B, N]."""
    q = jnp.where(visible, target, 0.0)
    log_q = jnp.log(jnp.where(visible & (q > 0), q, 1.0))
    log_w = jnp.log(jnp.where(visible, jnp.maximum(weights, 1e-30), 1.0))
    return jnp.mean(jnp.sum(q * (log_q - log_w), -1))


def consistency_loss(z_masked: jax.Array, z_clean: jax.Array) -> jax.Array:
    """mean(1 - cos(z_masked, stop_gradient(z_clean))); inputs L2-normalised [B, E]."""
    return jnp.mean(1.0 - jnp.sum(z_masked * jax.lax.stop_gradient(z_clean), -1))


def mask_entropy(entropy: jax.Array) -> jax.Array:
    """Masker entropy bonus H(m_soft): mean of the per-example entropies [B]."""
    return jnp.mean(entropy)


def contrastive_rows(za: jax.Array, zb: jax.Array, out: Mapping[str, Any], kind: str) -> jax.Array:
    """Each pair's share [B] of the configured contrastive loss (its mean is `contrastive`)."""
    if kind == "siglip":
        return siglip_rows(za, zb, out["logit_scale"], out["logit_bias"])
    return clip_rows(za, zb, out["logit_scale"])


def contrastive(za: jax.Array, zb: jax.Array, out: Mapping[str, Any], kind: str) -> jax.Array:
    """The configured contrastive loss (clip | siglip) with the model's scale (and bias)."""
    return jnp.mean(contrastive_rows(za, zb, out, kind))


def masker_policy_gradient(
    rows_masked: jax.Array, rows_clean: jax.Array, logp: jax.Array
) -> jax.Array:
    """The masker's score-function surrogate (METHOD §5): mean_i A_i log p_i, whose gradient
    in the masker's parameters is the REINFORCE estimate of d E[L(masked)].

    A_i = the damage of example i's removal, L_i(masked) - L_i(clean) (stop-gradient; the
    clean loss is the per-example baseline), minus its mean over the examples that drew
    their own mask (logp != 0): the whole removed set is scored at once, so removals that
    only hurt together (redundant evidence) are rewarded, which the straight-through
    gradient's one-unit-at-a-time signal cannot see.
    """
    damage = jax.lax.stop_gradient(rows_masked - rows_clean)
    own = (logp != 0).astype(damage.dtype)
    base = jnp.sum(damage * own) / jnp.maximum(jnp.sum(own), 1.0)
    return jnp.mean((damage - base) * own * logp)


# The terms the masker ascends (METHOD §7): L_clip(masked), the first-order effect of its
# removals on L_clip(clean) through the clean view's straight-through keep, its entropy
# bonus and its policy-gradient surrogate (masker_policy_gradient). The selector KL, the
# consistency and the uni-modal term see the mask through stop_gradient: the update gives
# the masker only these terms' gradient.
MASKER_TERMS = ("clip_clean", "clip_masked", "mask_entropy", "masker_pg")
# Terms only the masker ascends: no encoder gradient and no share in J (loss/total).
MASKER_ONLY_TERMS = ("masker_pg",)


# Terms computed only when their weight is > 0 (weights are static config): the finding-level
# loss is an O((B F)^2) matrix on the step's path. The other terms cost O(B^2) or O(B N) and
# are logged at weight 0 too (monitors of the ablations that switch them off).
GATED_TERMS = ("finding", "masker_pg")


def objective_terms(
    z: jax.Array,
    out: Mapping[str, Any],
    kind: str = "clip",
    weights: Mapping[str, float] | None = None,
) -> dict[str, jax.Array]:
    """The unweighted terms of the fused objective, from Model.__call__'s outputs.

    With `weights`, a term of GATED_TERMS whose weight is 0 is not computed (absent).
    """
    gated = {k for k in GATED_TERMS if weights is not None and not _WEIGHT_KEYS[k](weights)}
    rows_clean = contrastive_rows(z, out["z_txt"], out, kind)
    terms = {"clip_clean": jnp.mean(rows_clean)}
    if "z_masked" in out:
        rows_masked = contrastive_rows(out["z_masked"], out["z_txt"], out, kind)
        terms["clip_masked"] = jnp.mean(rows_masked)
        if "masker_pg" not in gated and "logp" in out["masker"]:
            terms["masker_pg"] = masker_policy_gradient(rows_masked, rows_clean,
                                                        out["masker"]["logp"])
    if "sel_target" in out:
        kls = [selector_kl(out["sel_target"], out["clean"]["weights"], out["clean"]["visible"])]
        if "sel_target_masked" in out:
            kls.append(
                selector_kl(
                    out["sel_target_masked"], out["masked"]["weights"], out["masked"]["visible"]
                )
            )
        terms["selector_kl"] = sum(kls) / len(kls)
    if "z_masked" in out:
        terms["consistency"] = consistency_loss(out["z_masked"], z)
        terms["mask_entropy"] = mask_entropy(out["masker"]["entropy"])
    if "z_findings" in out and "finding" not in gated:
        terms["finding"] = finding_loss(z, out["z_findings"], out["finding_ids"],
                                        out["logit_scale"])
    if "uma_views" in out:
        temperature = out.get("uma_temperature", MERL_TEMPERATURE)
        terms["uni_modal"] = uni_modal_loss(*out["uma_views"], temperature)
    return terms


_WEIGHT_KEYS = {"finding": lambda w: w.get("find", 0.0) > 0,
                "masker_pg": lambda w: w.get("pg", 0.0) > 0}


def term_weights(
    terms: Mapping[str, jax.Array], weights: Mapping[str, float], player: str = "encoders"
) -> dict[str, jax.Array]:
    """Each term's coefficient for `player`: encoders (J: every term but MASKER_ONLY_TERMS)
    or masker (MASKER_TERMS).

    The masker's coefficients are zero for every other term: its gradient is that of
    w_adv L(masked) + w_ent H(m) + w_pg (policy-gradient surrogate) (+ L(clean) through the
    clean view's straight-through keep).
    """
    if player not in ("encoders", "masker"):
        raise ValueError(f"player={player!r}; expected encoders or masker.")
    coef = {
        "clip_clean": 1.0,
        "clip_masked": weights.get("adv", 1.0),
        "selector_kl": weights.get("sel", 0.0),
        "consistency": weights.get("cons", 0.0),
        "uni_modal": weights.get("uma", 0.0),
        "finding": weights.get("find", 0.0),
        "mask_entropy": weights.get("ent", 0.0),
        "masker_pg": weights.get("pg", 0.0),
    }

    def takes(k):
        return k in MASKER_TERMS if player == "masker" else k not in MASKER_ONLY_TERMS

    return {k: jnp.asarray(coef[k] if takes(k) else 0.0, v.dtype) for k, v in terms.items()}


def weighted_objective(
    terms: Mapping[str, jax.Array], weights: Mapping[str, float]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(J = sum of the encoders' coefficients x terms, {'loss/<term>', 'loss/total'})."""
    coef = term_weights(terms, weights)
    total = sum(coef[k] * v for k, v in terms.items())
    metrics = {f"loss/{k}": v for k, v in terms.items()}
    metrics["loss/total"] = total
    return total, metrics


def scar_objective(
    z: jax.Array, out: Mapping[str, Any], weights: Mapping[str, float], kind: str = "clip"
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The fused objective J and its terms, from Model.__call__'s outputs.

    J = L(clean) + w_adv L(masked) + w_sel L_sel + w_cons L_cons + w_uma L_uma + w_ent H(m)
    (+ w_find L_find, computed only when w_find > 0).
    Encoders, selector and heads descend J; the masker ascends only its part of it,
    J_masker = sum over MASKER_TERMS (see `term_weights`; the update differentiates the two
    players' objectives from one forward pass), so the selector and consistency terms never
    reach it. The entropy term has no encoder gradient.
    """
    return weighted_objective(objective_terms(z, out, kind, weights), weights)
