"""The fused min-max update (METHOD §5-7): one forward/backward, both players' optax steps.

`make_update_fn(model, config)` returns a pure `update_fn(state, batch, rng) -> (state,
metrics)`. The encoders (ECG tower, text head, selector, logit scale) descend the
objective J of `losses.scar_objective`; the masker ascends only its own terms
(`losses.MASKER_TERMS`: L_clip(masked), its entropy bonus and, through the clean
view's straight-through keep, the first-order effect of its removals), so the
selector and consistency terms never reach it (METHOD §7). Both gradients come
from one forward pass (`jax.vjp`, one backward pass per player); the masker's is
negated before its own optimizer is applied. Inside the step:
the masker temperature from the step, random masks (same budget) for the first
`masker.warmup_steps` steps, then a random mask for each example with
probability `masker.p_rand`. `optim.minmax = alternating` (the ablation) runs
`masker_steps` masker-only steps, then an encoder-only step, in the same
compiled function. `optim.masker_every = k > 1` (fused only) runs the masker's
backward pass and update on every k-th step only (`jax.lax.cond`; in between its
parameters and optimizer state stay as they are), which takes most of that
backward's cost off the step (issue 23's two-view floor) at the price of a
masker that moves k times less often. `jit_update` compiles it with explicit
shardings and a donated state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding

from scar_jax import losses, optim
from scar_jax import sharding as sharding_lib
from scar_jax.models import masker as masker_lib
from scar_jax.models import scar
from scar_jax.train_state import TrainState

NONFINITE_POLICIES = ("skip", "stop")


def tree_norm(tree: Any) -> jax.Array:
    """Global L2 norm of a tree (0 for an empty tree)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def text_is_frozen(config: ml_collections.ConfigDict, params: Any) -> bool:
    """True when config.model.txt.freeze freezes every txt/bert parameter (cached features ok)."""
    return optim.all_frozen(params, tuple(config.model.txt.freeze))


def mask_schedule(
    config: ml_collections.ConfigDict, step: jax.Array, rng: jax.Array, batch_size: int
) -> tuple[jax.Array, jax.Array]:
    """(tau [], use_random [B] bool) at `step`: random masks in warm-up, then with p_rand."""
    m = config.model.masker
    tau = masker_lib.temperature(step, config.total_steps, m.tau_start, m.tau_end, m.tau_schedule)
    mixed = jax.random.bernoulli(rng, m.p_rand, (batch_size,))
    return tau, (step < m.warmup_steps) | mixed


def step_inputs(
    config: ml_collections.ConfigDict, rng: jax.Array, step: jax.Array, batch_size: int
) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """(rngs {'masker', 'dropout'}, tau [], use_random [B]) of one forward pass from its key."""
    r_mask, r_drop, r_rand = jax.random.split(rng, 3)
    tau, use_random = mask_schedule(config, step, r_rand, batch_size)
    return {"masker": r_mask, "dropout": r_drop}, tau, use_random


def _check_config(config: ml_collections.ConfigDict) -> None:
    """Fail early on settings the update cannot honour."""
    o = config.optim
    if o.nonfinite not in NONFINITE_POLICIES:
        raise ValueError(
            f"config.optim.nonfinite={o.nonfinite!r}; expected one of {NONFINITE_POLICIES}."
        )
    if o.minmax not in ("fused", "alternating"):
        raise ValueError(f"config.optim.minmax={o.minmax!r}; expected fused or alternating.")
    if o.minmax == "alternating" and o.masker_steps < 1:
        raise ValueError(f"config.optim.masker_steps={o.masker_steps} must be >= 1.")
    every = o.get("masker_every", 1)
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"config.optim.masker_every={every!r}; expected an integer >= 1 (1 = "
                         "the masker updates on every step).")
    if every > 1 and o.minmax == "alternating":
        raise ValueError(f"config.optim.masker_every={every} is for minmax=fused; alternating "
                         "sets the masker's pace with optim.masker_steps.")


def make_update_fn(
    model: scar.Model,
    config: ml_collections.ConfigDict,
    *,
    players: Sequence[str] | None = None,
):
    """The pure update_fn(state, batch, rng) -> (state, metrics) for `config`.

    batch: ecg [B, T, 12], lead_observed [B, 12] and either input_ids/attention_mask [B, L]
    or txt_feats [B, H] (cached pooled report features; only with a frozen text tower).
    `players` restricts which players' updates are applied (default: both, or the
    alternating schedule); ('masker',) and ('encoders',) give one player's step alone.
    """
    _check_config(config)
    weights = dict(config.loss_weights)
    kind = config.model.loss
    alternating = players is None and config.optim.minmax == "alternating"
    players = tuple(optim.PLAYERS if players is None else players)
    unknown = set(players) - set(optim.PLAYERS)
    if unknown or not players:
        raise ValueError(f"players={players}; expected a non-empty subset of {optim.PLAYERS}.")
    k_masker = config.optim.masker_steps if alternating else 1
    every = optim.masker_every(config)

    def objective(enc, msk, batch, rngs, tau, use_random):
        """(J's unweighted terms, metrics) for the player trees (enc, msk)."""
        frozen = frozen_mask(optim.merge_players(enc, msk))
        params = optim.merge_players(enc, msk)
        # Frozen parameters carry no gradient, so XLA drops their backward pass.
        params = jax.tree.map(lambda f, x: jax.lax.stop_gradient(x) if f else x, frozen, params)
        z, out = model.apply(
            {"params": params}, batch, tau=tau, use_random=use_random, train=True, rngs=rngs
        )
        terms = losses.objective_terms(z, out, kind, weights)  # once; gated terms absent
        _, metrics = losses.weighted_objective(terms, weights)
        observed = out["observed"].astype(jnp.float32)
        removed = out["masker"]["m_hard"] * observed
        ent = losses.mask_entropy(out["masker"]["entropy"])
        metrics["mask/ratio"] = jnp.sum(removed) / jnp.maximum(jnp.sum(observed), 1.0)
        metrics["masker/entropy"] = ent
        metrics["masker/logit_std"] = out["masker"]["logit_std"]
        if "swapped" in out["masker"]:  # masker.swap_share: examples given another's mask
            metrics["mask/swapped_share"] = jnp.mean(out["masker"]["swapped"].astype(jnp.float32))
        masked = metrics.get("loss/clip_masked", jnp.zeros(()))
        metrics["masker/objective"] = weights.get("adv", 1.0) * masked + weights.get("ent", 0) * ent
        metrics["logit_scale"] = losses.capped_scale(out["logit_scale"])
        return terms, metrics

    def frozen_mask(params):
        """Tree of bools: parameters config.model.txt.freeze freezes."""
        patterns = tuple(config.model.txt.freeze)
        if not patterns:
            return jax.tree.map(lambda _: False, params)
        return optim.regex_mask(params, patterns)

    def player_step(params, opt_state, batch, rng, step, active):
        """One forward/backward; the `active` players' updates. -> (params, opt_state, metrics)."""
        txs = optim.player_optimizers(config, params)
        rngs, tau, use_random = step_inputs(config, rng, step, batch["ecg"].shape[0])
        enc, msk = optim.split_players(params)
        # One forward pass, one backward pass per active player: the encoders get the
        # gradient of J, the masker only that of its own terms (losses.MASKER_TERMS), so the
        # selector and consistency terms see the mask through stop_gradient (METHOD §7).
        terms, vjp_fn, metrics = jax.vjp(
            lambda e, m: objective(e, m, batch, rngs, tau, use_random), enc, msk, has_aux=True
        )
        total = metrics["loss/total"]
        new = {"encoders": (enc, opt_state["encoders"]), optim.MASKER: (msk, opt_state["masker"])}
        finite = jnp.isfinite(total)
        metrics.update({f"grad_norm/{p}": jnp.zeros(()) for p in optim.PLAYERS})
        enc_grads = {}

        def apply(i, player):
            """(params, opt_state, grad, grad norm) after `player`'s backward pass and step."""
            g = vjp_fn(losses.term_weights(terms, weights, player))[i]
            if player == optim.MASKER:
                g = jax.tree.map(jnp.negative, g)  # the masker ascends J
            p, s = new[player]
            updates, s = txs[player][0].update(g, s, p)
            return optax.apply_updates(p, updates), s, g, tree_norm(g)

        for i, player in enumerate(optim.PLAYERS):
            if player not in active:
                continue
            if player == optim.MASKER and every > 1:
                # its backward pass and step on every `every`-th step only; the skipped
                # branch computes nothing (a finite zero norm)
                def step_masker(i=i, player=player):
                    p, s, _, gnorm = apply(i, player)
                    return p, s, gnorm

                p, s, gnorm = jax.lax.cond(
                    step % every == 0,
                    step_masker,
                    lambda player=player: (*new[player], jnp.zeros((), jnp.float32)),
                )
                metrics["masker/updated"] = (step % every == 0).astype(jnp.float32)
            else:
                p, s, g, gnorm = apply(i, player)
                if player == "encoders":
                    enc_grads = g
            new[player] = (p, s)
            finite &= jnp.isfinite(gnorm)
            metrics[f"grad_norm/{player}"] = gnorm
        metrics["grad_norm/ecg"] = tree_norm(enc_grads.get("ecg", {}))
        metrics["grad_norm/txt"] = tree_norm(enc_grads.get("txt", {}))
        metrics["masker/tau"] = tau
        metrics["mask/random_share"] = jnp.mean(use_random.astype(jnp.float32))
        new_params = optim.merge_players(new["encoders"][0], new[optim.MASKER][0])
        new_opt = {"encoders": new["encoders"][1], optim.MASKER: new[optim.MASKER][1]}
        # Skip the whole update when anything is non-finite (policy 'stop' also keeps the
        # last finite state; the loop then raises).
        keep = lambda n, o: jnp.where(finite, n, o)
        new_params = jax.tree.map(keep, new_params, params)
        new_opt = jax.tree.map(keep, new_opt, opt_state)
        return new_params, new_opt, metrics, finite

    def update_fn(state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array):
        """(state, global batch, base rng key) -> (state at step + 1, flat scalar metrics)."""
        if "txt_feats" in batch and not text_is_frozen(config, state.params):
            raise ValueError(
                "The batch carries cached txt_feats but the text tower is trainable; freeze "
                "every txt/bert parameter (config.model.txt.freeze) or feed token ids."
            )
        rng = jax.random.fold_in(rng, state.step)
        params, opt_state, finite = state.params, state.opt_state, jnp.bool_(True)
        if alternating:
            for i in range(k_masker):
                params, opt_state, masker_metrics, ok = player_step(
                    params,
                    opt_state,
                    batch,
                    jax.random.fold_in(rng, i),
                    state.step,
                    (optim.MASKER,),
                )
                finite &= ok
            sub_rng = jax.random.fold_in(rng, k_masker)
            params, opt_state, metrics, ok = player_step(
                params, opt_state, batch, sub_rng, state.step, ("encoders",)
            )
            metrics["grad_norm/masker"] = masker_metrics["grad_norm/masker"]
            metrics["masker/objective_before"] = masker_metrics["masker/objective"]
        else:
            params, opt_state, metrics, ok = player_step(
                params, opt_state, batch, rng, state.step, players
            )
        finite &= ok
        if alternating:  # a non-finite masker step also discards the encoder step
            params = jax.tree.map(lambda n, o: jnp.where(finite, n, o), params, state.params)
            opt_state = jax.tree.map(
                lambda n, o: jnp.where(finite, n, o), opt_state, state.opt_state
            )
        txs = optim.player_optimizers(config, state.params)
        enc, msk = optim.split_players(params)
        metrics["param_norm/encoders"] = tree_norm(enc)
        metrics["param_norm/masker"] = tree_norm(msk)
        metrics["lr/encoders"] = txs["encoders"][1](state.step)
        metrics["lr/masker"] = txs[optim.MASKER][1](state.step * k_masker // every)
        nonfinite = state.nonfinite + (~finite).astype(jnp.int32)
        metrics["nonfinite"] = (~finite).astype(jnp.float32)
        metrics["nonfinite/count"] = nonfinite.astype(jnp.float32)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        new_state = TrainState(
            step=state.step + 1, params=params, opt_state=opt_state, nonfinite=nonfinite
        )
        return new_state, metrics

    return update_fn


def jit_update(update_fn, state_shardings: Any, batch_sharding: NamedSharding):
    """jax.jit(update_fn) with explicit in/out shardings and the state donated."""
    rep = sharding_lib.replicated(batch_sharding.mesh)
    return jax.jit(
        update_fn,
        in_shardings=(state_shardings, batch_sharding, rep),
        out_shardings=(state_shardings, rep),
        donate_argnums=0,
    )


def _text_features(module: scar.Model, input_ids, attention_mask):
    """Pooled BERT features [B, H] of the text tower (eval mode)."""
    return module.txt.features(input_ids, attention_mask, deterministic=True)
