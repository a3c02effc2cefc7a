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


def clip_loss(
    za: jax.Array, zb: jax.Array, log_scale: jax.Array, max_scale: float = LOGIT_SCALE_MAX
) -> jax.Array:
    """Symmetric InfoNCE between L2-normalised za, zb: [B, E] (pairs on the diagonal)."""
    logits = capped_scale(log_scale, max_scale) * za @ zb.T
    labels = jnp.arange(za.shape[0])
    la = -jnp.take_along_axis(jax.nn.log_softmax(logits, 1), labels[:, None], 1)
    lb = -jnp.take_along_axis(jax.nn.log_softmax(logits, 0), labels[None, :], 0)
    return 0.5 * (jnp.mean(la) + jnp.mean(lb))


def siglip_loss(
    za: jax.Array,
    zb: jax.Array,
    log_scale: jax.Array,
    bias: jax.Array,
    max_scale: float = LOGIT_SCALE_MAX,
) -> jax.Array:
    """SigLIP: -sum_ij log sigmoid(y_ij (t * za_i.zb_j + b)) / B, y = +1 on the diagonal."""
    logits = capped_scale(log_scale, max_scale) * za @ zb.T + bias
    y = 2.0 * jnp.eye(za.shape[0]) - 1.0
    return -jnp.sum(jax.nn.log_sigmoid(y * logits)) / za.shape[0]


def uni_modal_loss(view_a: jax.Array, view_b: jax.Array, log_scale: jax.Array) -> jax.Array:
    """MERL's uni-modal alignment: CLIP loss between two dropout views of the ECG embedding."""
    return clip_loss(view_a, view_b, log_scale)


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


def contrastive(za: jax.Array, zb: jax.Array, out: Mapping[str, Any], kind: str) -> jax.Array:
    """The configured contrastive loss (clip | siglip) with the model's scale (and bias)."""
    if kind == "siglip":
        return siglip_loss(za, zb, out["logit_scale"], out["logit_bias"])
    return clip_loss(za, zb, out["logit_scale"])


def scar_objective(
    z: jax.Array, out: Mapping[str, Any], weights: Mapping[str, float], kind: str = "clip"
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The fused objective J and its terms, from Model.__call__'s outputs.

    J = L(clean) + w_adv L(masked) + w_sel L_sel + w_cons L_cons + w_uma L_uma + w_ent H(m).
    Encoders, selector and heads descend J; the masker ascends it (its gradient is
    negated in the update), so it maximises the masked-view loss plus the entropy
    bonus. The masker reaches only the masked-view terms and, through the clean
    view's straight-through keep, the first-order effect of its removals; the
    entropy term has no encoder gradient.
    """
    terms = {"clip_clean": contrastive(z, out["z_txt"], out, kind)}
    if "z_masked" in out:
        terms["clip_masked"] = contrastive(out["z_masked"], out["z_txt"], out, kind)
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
    if "uma_views" in out:
        terms["uni_modal"] = uni_modal_loss(*out["uma_views"], out["logit_scale"])
    coef = {
        "clip_clean": 1.0,
        "clip_masked": weights.get("adv", 1.0),
        "selector_kl": weights.get("sel", 0.0),
        "consistency": weights.get("cons", 0.0),
        "uni_modal": weights.get("uma", 0.0),
        "mask_entropy": weights.get("ent", 0.0),
    }
    total = sum(coef[k] * v for k, v in terms.items())
    metrics = {f"loss/{k}": v for k, v in terms.items()}
    metrics["loss/total"] = total
    return total, metrics
