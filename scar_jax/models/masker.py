"""The adversarial masker (METHOD §5): relaxed top-k with Gumbel-sigmoid noise in jax.lax.

Units: `token` (L*S units), `lead` (L), `segment` (S, a time span across all
leads), `joint` (L lead units and S segment units, each with its share of the
budget; a token is removed when its lead or its segment is). The budget is
k = round(rho * n_observed) observed units per example, exact for the hard mask.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scar_jax.models import common

KINDS = ("adversarial", "random", "none")
CONDITIONS = ("ecg", "report")  # what the adversary sees besides the observed-token layout
UNITS = ("token", "lead", "segment", "joint")
SCHEDULES = ("cosine", "linear", "constant")


def temperature(
    step: jax.Array | int,
    total_steps: int,
    start: float = 1.0,
    end: float = 0.1,
    schedule: str = "cosine",
) -> jax.Array:
    """Masker temperature tau at `step`: start -> end over total_steps (then held at end)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"tau schedule {schedule!r}; expected one of {SCHEDULES}.")
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
    if schedule == "constant":
        return jnp.asarray(start, jnp.float32)
    if schedule == "linear":
        return start + (end - start) * frac
    return end + 0.5 * (start - end) * (1.0 + jnp.cos(math.pi * frac))


def logistic_noise(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Logistic(0, 1) noise = difference of two Gumbel(0, 1) samples."""
    u = jax.random.uniform(rng, shape, minval=1e-6, maxval=1.0 - 1e-6)
    return jnp.log(u) - jnp.log1p(-u)


def budget(n_observed: jax.Array, rho: jax.Array) -> jax.Array:
    """k = round(rho * n_observed) as int32 (rho, n_observed: [B])."""
    return jnp.round(rho * n_observed).astype(jnp.int32)


def max_kept_tokens(
    unit: str, num_leads: int, num_segments: int, rho_min: float, joint_lead_share: float = 0.5
) -> int:
    """Most tokens any example keeps under the minimum budget rho_min (static gather length).

    n - round(rho * n) never decreases with n, so a fully observed record bounds it.
    """
    kept = lambda n, rho: n - round(rho * n)
    if unit == "token":
        return kept(num_leads * num_segments, rho_min)
    if unit == "lead":
        return kept(num_leads, rho_min) * num_segments
    if unit == "segment":
        return num_leads * kept(num_segments, rho_min)
    if unit == "joint":
        return kept(num_leads, rho_min * joint_lead_share) * kept(
            num_segments, rho_min * (1 - joint_lead_share)
        )
    raise ValueError(f"masker unit {unit!r}; expected one of {UNITS}.")


def soft_threshold(
    scores: jax.Array, k: jax.Array, observed: jax.Array, tau: jax.Array, iters: int = 40
) -> jax.Array:
    """Threshold t [B] with sum_i sigmoid((s_i - t) / tau) = k over observed units.

    Found by bisection in lax.fori_loop (no gradient); the returned t carries the
    implicit-function gradient dt/ds_i = w_i = sigma'_i / sum_j sigma'_j.
    """
    s_sg = jax.lax.stop_gradient(scores)
    big = jnp.finfo(scores.dtype).max / 4
    lo = jnp.min(jnp.where(observed, s_sg, big), -1) - 40.0 * tau
    hi = jnp.max(jnp.where(observed, s_sg, -big), -1) + 40.0 * tau
    kf = k.astype(scores.dtype)

    def mass(t):
        return jnp.sum(jnp.where(observed, jax.nn.sigmoid((s_sg - t[:, None]) / tau), 0.0), -1)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        too_much = mass(mid) > kf  # mass decreases in t: move lo up.
        return jnp.where(too_much, mid, lo), jnp.where(too_much, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
    t = jax.lax.stop_gradient(0.5 * (lo + hi))
    p = jax.nn.sigmoid((s_sg - t[:, None]) / tau)
    dsig = jnp.where(observed, p * (1.0 - p), 0.0)
    w = jax.lax.stop_gradient(dsig / jnp.maximum(jnp.sum(dsig, -1, keepdims=True), 1e-30))
    return t + jnp.sum(w * (scores - s_sg), -1)


def mask_log_prob(
    z: jax.Array, m_hard: jax.Array, k: jax.Array, observed: jax.Array,
    noise_scale: jax.Array | float = 1.0, iters: int = 40,
) -> jax.Array:
    """Log-probability [B] of the hard mask m_hard under the masker's own noise (the score
    function of METHOD §5's policy-gradient signal).

    With s = z + noise_scale * g, g ~ Logistic(0, 1), a unit clears a fixed threshold t with
    probability sigmoid((z - t) / noise_scale) (the logistic CDF), independently of the other
    units; t is set so that these probabilities sum to the budget k (`soft_threshold`, with
    its implicit gradient), so the top-k draw is read as k-on-average independent draws:
    log p = sum over observed units of m log sigmoid((z - t)/c) + (1 - m) log sigmoid((t - z)/c).
    The gradient reaches z only (m_hard is a sample). noise_scale 0 (the noise-free mode) has
    no log-probability: 0.
    """
    c = jnp.maximum(jnp.asarray(noise_scale, jnp.float32), 1e-6)
    t = soft_threshold(z, k, observed, c, iters)
    u = (z - t[:, None]) / c
    m = jax.lax.stop_gradient(m_hard)
    ll = m * jax.nn.log_sigmoid(u) + (1.0 - m) * jax.nn.log_sigmoid(-u)
    logp = jnp.sum(jnp.where(observed, ll, 0.0), -1)
    return jnp.where(jnp.asarray(noise_scale) > 0, logp, 0.0)


def hard_topk(scores: jax.Array, k: jax.Array, observed: jax.Array) -> jax.Array:
    """1.0 for the k highest-scoring observed units per row (lax.top_k ranking), else 0.0."""
    n = scores.shape[-1]
    s = jnp.where(observed, jax.lax.stop_gradient(scores), -jnp.inf)
    _, order = jax.lax.top_k(s, n)
    rank = (
        jnp.zeros_like(order)
        .at[jnp.arange(order.shape[0])[:, None], order]
        .set(jnp.broadcast_to(jnp.arange(n), order.shape))
    )
    return ((rank < k[:, None]) & observed).astype(scores.dtype)


def relaxed_topk(
    scores: jax.Array, k: jax.Array, observed: jax.Array, tau: jax.Array, iters: int = 40
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """scores: [B, U], k: [B] int, observed: [B, U] bool -> (m, m_hard, m_soft), each [B, U].

    m = m_hard + m_soft - stop_gradient(m_soft): exactly the hard top-k forward,
    the soft mask's gradient backward. Unobserved units are never selected.
    """
    observed = jnp.asarray(observed, bool)
    t = soft_threshold(scores, k, observed, tau, iters)
    m_soft = jnp.where(observed, jax.nn.sigmoid((scores - t[:, None]) / tau), 0.0)
    m_hard = hard_topk(scores, k, observed)
    m = m_hard + (m_soft - jax.lax.stop_gradient(m_soft))  # exactly m_hard forward
    return m, m_hard, m_soft


def unit_observed(observed: jax.Array, unit: str) -> jax.Array:
    """observed tokens [B, L, S] -> observed units [B, U] for unit in token|lead|segment."""
    if unit == "token":
        return observed.reshape(observed.shape[0], -1)
    if unit == "lead":
        return observed.any(-1)
    if unit == "segment":
        return observed.any(-2)
    raise ValueError(f"unit {unit!r} has no single unit axis; expected token|lead|segment.")


def unit_scores(token_scores: jax.Array, observed: jax.Array, unit: str) -> jax.Array:
    """Token scores [B, L, S] -> unit scores [B, U]: mean over the unit's observed tokens."""
    if unit == "token":
        return token_scores.reshape(token_scores.shape[0], -1)
    axis = -1 if unit == "lead" else -2
    w = observed.astype(token_scores.dtype)
    return jnp.sum(token_scores * w, axis) / jnp.maximum(jnp.sum(w, axis), 1.0)


def unit_to_tokens(m: jax.Array, unit: str, num_leads: int, num_segments: int) -> jax.Array:
    """Unit mask [B, U] -> token mask [B, L, S]."""
    b = m.shape[0]
    if unit == "token":
        return m.reshape(b, num_leads, num_segments)
    if unit == "lead":
        return jnp.broadcast_to(m[:, :, None], (b, num_leads, num_segments))
    return jnp.broadcast_to(m[:, None, :], (b, num_leads, num_segments))


def standardize(x: jax.Array, observed: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Per-row zero mean, unit variance over observed entries (unobserved -> 0)."""
    w = observed.astype(x.dtype)
    n = jnp.maximum(jnp.sum(w, -1, keepdims=True), 1.0)
    mean = jnp.sum(x * w, -1, keepdims=True) / n
    var = jnp.sum(jnp.square(x - mean) * w, -1, keepdims=True) / n
    return jnp.where(observed, (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


def binary_entropy(p: jax.Array, observed: jax.Array) -> jax.Array:
    """Mean binary entropy (nats) of p over observed entries, per row: [B, U] -> [B]."""
    p = jnp.clip(p, 1e-6, 1.0 - 1e-6)
    h = -(p * jnp.log(p) + (1.0 - p) * jnp.log1p(-p))
    w = observed.astype(p.dtype)
    return jnp.sum(h * w, -1) / jnp.maximum(jnp.sum(w, -1), 1.0)


class Masker(nn.Module):
    """Removal mask over observed tokens: tokens [B, N, D] (+ report [B, E]) -> keep [B, L, S].

    `kind`: adversarial (a small transformer scores tokens), random (scores are noise only),
    none (keep = observed). `condition`: ecg (the default: the scores see the ECG tokens only)
    or report (the paired report embedding is added to every token first). `swap_share`: in
    training (`swap=True`), this share of the examples gets another example's mask (METHOD §5:
    so a mask pattern stops telling its own record's label). Call with the rng collection
    'masker' (noise, per-example budgets, swaps).
    """

    kind: str = "adversarial"
    unit: str = "lead"
    width: int = 128
    depth: int = 2
    num_heads: int = 4
    rho_min: float = 0.25
    rho_max: float = 0.5
    joint_lead_share: float = 0.5
    score_scale: float = 2.0
    standardize: bool = True
    bisection_iters: int = 40
    condition: str = "ecg"
    swap_share: float = 0.0
    dtype: Any = jnp.float32  # compute dtype of its transformer; logits, top-k in float32
    attention: str = "xla"  # common.attention's implementation

    def setup(self):
        if self.kind not in KINDS:
            raise ValueError(f"masker kind {self.kind!r}; expected one of {KINDS}.")
        if self.unit not in UNITS:
            raise ValueError(f"masker unit {self.unit!r}; expected one of {UNITS}.")
        if not 0.0 <= self.rho_min <= self.rho_max <= 1.0:
            raise ValueError(
                f"masker budget needs 0 <= rho_min <= rho_max <= 1, got "
                f"[{self.rho_min}, {self.rho_max}]."
            )
        if not 0.0 <= self.joint_lead_share <= 1.0:
            raise ValueError(f"joint_lead_share={self.joint_lead_share} must be in [0, 1].")
        if self.condition not in CONDITIONS:
            raise ValueError(f"masker condition {self.condition!r}; expected one of {CONDITIONS}.")
        if not 0.0 <= self.swap_share <= 1.0:
            raise ValueError(f"masker swap_share={self.swap_share} must be in [0, 1].")
        if self.kind == "adversarial":
            self.in_proj = nn.Dense(self.width, dtype=self.dtype)
            if self.condition == "report":
                self.cond_proj = nn.Dense(self.width, dtype=self.dtype)
            self.encoder = common.Encoder(
                self.depth, self.num_heads, 2 * self.width, dtype=self.dtype,
                attention=self.attention,
            )
            self.out = nn.Dense(1, kernel_init=nn.initializers.normal(0.02))

    def logits(self, tokens: jax.Array, report: jax.Array, observed: jax.Array) -> jax.Array:
        """Removal logits alpha [B, L, S] from tokens [B, L*S, D] (and report [B, E])."""
        b, num_leads, num_segments = observed.shape
        if self.kind != "adversarial":
            return jnp.zeros(observed.shape, jnp.float32)
        visible = observed.reshape(b, -1)
        x = self.in_proj(tokens)
        if self.condition == "report":
            x = x + self.cond_proj(report)[:, None, :]
        x = self.encoder(x, visible)
        return self.out(x)[..., 0].astype(jnp.float32).reshape(b, num_leads, num_segments)

    def _mask_units(
        self, alpha, observed, unit, rho, tau, rng, use_random, noise_scale=1.0, swap=None
    ):
        """One unit type: token logits [B, L, S] -> (m, m_hard, m_soft, unit_obs, z, ranked, logp).

        Each unit-shaped: z the scaled (standardised) logits, ranked the perturbed scores the
        top-k ranks; logp [B] the hard mask's log-probability (`mask_log_prob`; 0 for a random
        or swapped example, whose mask is not drawn from its own scores).

        swap: (partner [B] int, swapped [B] bool) or None. A swapped example ranks its own
        observed units by its partner's perturbed scores (stop-gradient; rho is already the
        partner's): with the same observed units it gets exactly the partner's mask, otherwise
        the partner's ranking restricted to its own observed units, with its exact budget.
        """
        obs_u = unit_observed(observed, unit)
        z = unit_scores(alpha, observed, unit)
        if self.standardize:
            z = standardize(z, obs_u)
        z = self.score_scale * z
        if use_random is not None:
            z = jnp.where(use_random[:, None], 0.0, z)
        scores = z + noise_scale * logistic_noise(rng, z.shape)
        if swap is not None:
            partner, swapped = swap
            theirs = jax.lax.stop_gradient(scores[partner])
            # The partner's unobserved units carry no score: rank them last.
            theirs = jnp.where(obs_u[partner], theirs, jnp.min(theirs, -1, keepdims=True) - 1.0)
            scores = jnp.where(swapped[:, None], theirs, scores)
        k = budget(jnp.sum(obs_u, -1), rho)
        m, m_hard, m_soft = relaxed_topk(scores, k, obs_u, tau, self.bisection_iters)
        logp = mask_log_prob(z, m_hard, k, obs_u, noise_scale, self.bisection_iters)
        if use_random is not None:
            logp = jnp.where(use_random, 0.0, logp)
        if swap is not None:
            logp = jnp.where(swap[1], 0.0, logp)
        return m, m_hard, m_soft, obs_u, z, scores, logp

    def __call__(
        self,
        tokens: jax.Array,
        report: jax.Array,
        observed: jax.Array,
        *,
        tau: jax.Array | float = 1.0,
        rho: jax.Array | None = None,
        use_random: jax.Array | None = None,
        noise_scale: float = 1.0,
        swap: bool = False,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """tokens: [B, N, D], report: [B, E], observed: [B, L, S] bool -> (removal m [B, L, S], aux).

        m is straight-through (hard forward); keep = observed * (1 - m). `rho` [B]
        fixes the removal ratio (else drawn from [rho_min, rho_max]); `use_random`
        [B] bool gives those examples a random mask with the same budget.
        `noise_scale` scales the logistic noise (training: 1; 0 gives the adversary's
        mode, its noise-free top-k, for evaluation). `swap` (training) gives a share
        `swap_share` of the examples another example's mask (aux: swap_partner, swapped).
        """
        observed = jnp.asarray(observed, bool)
        b, num_leads, num_segments = observed.shape
        if self.kind == "none":
            zeros = jnp.zeros(observed.shape, jnp.float32)
            return zeros, {"m_hard": zeros, "entropy": jnp.zeros((b,)), "logit_std": jnp.zeros(())}
        tokens = jax.lax.stop_gradient(tokens)
        report = jax.lax.stop_gradient(report)
        alpha = self.logits(tokens, report, observed)
        tau = jnp.asarray(tau, jnp.float32)
        if rho is None:
            rho = jax.random.uniform(
                self.make_rng("masker"), (b,), minval=self.rho_min, maxval=self.rho_max
            )
        rng = self.make_rng("masker")
        pair = None
        if swap and self.swap_share > 0 and b > 1:
            r_perm, r_swap = jax.random.split(self.make_rng("masker"))
            # Partners along a random cycle: never the example itself.
            perm = jax.random.permutation(r_perm, b)
            partner = jnp.zeros((b,), jnp.int32).at[perm].set(jnp.roll(perm, -1).astype(jnp.int32))
            swapped = jax.random.bernoulli(r_swap, self.swap_share, (b,))
            if use_random is not None:  # a random mask stays that example's own
                swapped = swapped & ~use_random
            rho = jnp.where(swapped, rho[partner], rho)
            pair = (partner, swapped)
        if self.unit == "joint":
            r_lead, r_seg = jax.random.split(rng)
            lead = self._mask_units(
                alpha,
                observed,
                "lead",
                rho * self.joint_lead_share,
                tau,
                r_lead,
                use_random,
                noise_scale,
                pair,
            )
            seg = self._mask_units(
                alpha,
                observed,
                "segment",
                rho * (1 - self.joint_lead_share),
                tau,
                r_seg,
                use_random,
                noise_scale,
                pair,
            )
            tok = lambda i: (
                1.0
                - (
                    (1.0 - unit_to_tokens(lead[i], "lead", num_leads, num_segments))
                    * (1.0 - unit_to_tokens(seg[i], "segment", num_leads, num_segments))
                )
            )
            m, m_hard = tok(0), tok(1)
            logp = lead[6] + seg[6]
            entropy = 0.5 * (binary_entropy(lead[2], lead[3]) + binary_entropy(seg[2], seg[3]))
            aux = {
                "m_soft_lead": lead[2],
                "m_soft_segment": seg[2],
                "scores_lead": lead[4],
                "scores_segment": seg[4],
                "ranked_lead": lead[5],
                "ranked_segment": seg[5],
            }
        else:
            m_u, m_hard_u, m_soft_u, obs_u, z, ranked, logp = self._mask_units(
                alpha, observed, self.unit, rho, tau, rng, use_random, noise_scale, pair
            )
            m = unit_to_tokens(m_u, self.unit, num_leads, num_segments)
            m_hard = unit_to_tokens(m_hard_u, self.unit, num_leads, num_segments)
            entropy = binary_entropy(m_soft_u, obs_u)
            aux = {
                "m_unit": m_u,
                "m_soft": m_soft_u,
                "unit_observed": obs_u,
                "scores": z,
                "ranked": ranked,
            }
        m = m * observed
        aux.update(
            {
                "m_hard": m_hard * observed,
                "alpha": alpha,
                "rho": rho,
                "logp": logp,
                "entropy": entropy,
                "logit_std": jnp.mean(jnp.sqrt(jnp.var(alpha, axis=(-2, -1)))),
            }
        )
        if pair is not None:
            aux["swap_partner"], aux["swapped"] = pair
        return m, aux
