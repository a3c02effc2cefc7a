"""The trained masker as an adversary at evaluation: its hard removal of a batch at a budget.

`masker_fn(model)` is the jitted removal of one model; `masker_on(...)` binds it to a split's
report tokens and lead observations, for the masker's targeting rows and the mask-only label
probe of the evaluation grid (scar_jax.evaluation.run).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from scar_jax.evaluation import data as data_lib


def masker_removals(module, ecg, lead_observed, text, rho, tau, noise_scale):
    """Model method: the trained masker's hard removal [B, 12, S] at budget rho, given the report.

    Jitted per model (masker_fn; rho, tau and noise_scale are traced; noise_scale 0 gives the
    adversary's mode, its noise-free top-k)."""
    observed = module.observed_tokens(ecg, lead_observed)
    z_txt, _ = module.txt(text)
    tokens = module.ecg.embed_tokens(ecg, observed)
    rho_b = jnp.full((ecg.shape[0],), rho, jnp.float32)
    _, aux = module.masker(tokens, z_txt, observed, tau=tau, rho=rho_b, noise_scale=noise_scale)
    return aux["m_hard"] > 0


def apply_masker(model, variables, ecg, lead_observed, text, rho, tau, noise_scale, rng):
    """model.apply of masker_removals with the 'masker' rng."""
    return model.apply(variables, ecg, lead_observed, text, rho, tau, noise_scale,
                       method=masker_removals, rngs={"masker": rng})


def masker_fn(model) -> Callable[..., Any]:
    """apply_masker of `model`, jitted: f(variables, ecg, lead_observed, text, rho, tau,
    noise_scale, rng) -> removal [B, 12, S] bool."""
    return jax.jit(functools.partial(apply_masker, model))


def masker_on(fn, variables: Any, data: data_lib.EvalData, cfg, bs: int, seed: int):
    """f(ecg, observed, sl, rho, noise) -> the trained masker's removal [bs, 12, S] of the rows
    sl of `data` (its report tokens; rng folded from `seed` and the batch start).

    fn: masker_fn(model); variables: the model's; cfg: config.eval (masker_tau)."""

    def f(ecg, observed, sl, rho, noise):
        text = {k: jnp.asarray(data_lib.pad(v[sl], bs)) for k, v in data.report_tokens.items()}
        lo = jnp.asarray(data_lib.pad(np.asarray(data.lead_observed[sl], bool), bs))
        removed = np.asarray(fn(variables, jnp.asarray(ecg), lo, text, jnp.float32(rho),
                                jnp.float32(cfg.masker_tau), jnp.float32(noise),
                                jax.random.fold_in(jax.random.key(seed), sl.start)))
        return removed & observed

    return f
