"""The fused min-max update, the masker's side: signs (the masker ascends), its gradient
from its own terms only, random-mask warm-up and mixing, the alternating ablation and
optim.masker_every. Split from test_update.py (same helpers) so that the two files run on
separate pytest-xdist workers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scar_jax import optim, sharding, train_state, update
from scar_jax.models import scar
from tests.test_update import (B, assert_params_close, counts, flat, host, make_batch,
                               make_config, objective_and_grad, put, setup)


def test_signs_masker_ascends_encoders_descend():
    """One fused step: the masker's update has a positive inner product with dJ/dtheta (it
    ascends), the encoders' a negative one (they descend); a small encoder-only step lowers
    J, the clean and the masked contrastive loss at the same mask draw."""
    config = make_config(
        "unit=lead",
        **{
            "model.masker.warmup_steps": 0,
            "model.masker.p_rand": 0.0,
            "optim.warmup_steps": 0,
            "optim.lr": 1e-4,
        },
    )
    model = scar.build_model(config.model)
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    batch = make_batch(config, informative_lead=1)
    state, _ = train_state.create_train_state(model, config, batch, mesh)
    key = jax.random.key(1)
    value_and_grad = objective_and_grad(model, config, batch, key, 0)
    (j0, terms0), grads = value_and_grad(state.params)
    _, grads_masker = objective_and_grad(model, config, batch, key, 0, "masker")(state.params)
    fused = jax.jit(update.make_update_fn(model, config))
    new, metrics = fused(state, batch, key)
    np.testing.assert_allclose(float(metrics["loss/total"]), float(j0), rtol=1e-6)
    delta = jax.tree.map(lambda a, b: a - b, new.params, state.params)
    inner = lambda t, u: float(
        sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(t), jax.tree.leaves(u)))
    )
    d_enc, d_msk = optim.split_players(delta)
    g_enc, _ = optim.split_players(grads)
    _, g_msk = optim.split_players(grads_masker)  # the masker ascends its own terms only
    assert inner(d_msk, g_msk) > 0  # ascent
    assert inner(d_enc, g_enc) < 0  # descent
    # Adam's first step is lr * sign(g) per coordinate (up to eps and weight decay):
    lr_m = float(metrics["lr/masker"])
    np.testing.assert_allclose(
        inner(d_msk, g_msk),
        lr_m * sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(g_msk)),
        rtol=0.05,
    )

    enc_only = jax.jit(update.make_update_fn(model, config, players=("encoders",)))
    after, _ = enc_only(state, batch, key)
    (j1, terms1), _ = value_and_grad(after.params)
    assert float(j1) < float(j0)
    assert float(terms1["loss/clip_masked"]) < float(terms0["loss/clip_masked"])
    assert float(terms1["loss/clip_clean"]) < float(terms0["loss/clip_clean"])
    for path, v in flat(host(state.params)).items():  # the masker is left alone
        if path.startswith("masker/"):
            np.testing.assert_array_equal(flat(host(after.params))[path], v, err_msg=path)


def test_masker_gradient_ignores_selector_and_consistency_terms():
    """METHOD §7: the masker maximises L_clip(masked) - lambda R only. With the clean-view
    signal off and w_adv = w_ent = 0, the selector KL and the consistency term (both on and
    weighted heavily) give the masker exactly zero gradient, while they do move the encoders;
    w_adv > 0 gives it a non-zero one. (Before the fix both terms reached the masker through
    the masked view's straight-through keep.)"""
    def masker_grad_norm(**w):
        config = make_config(
            "unit=lead",
            **{
                "model.masker.warmup_steps": 0,
                "model.masker.p_rand": 0.0,
                "model.masker.clean_signal": 0.0,
                **{f"loss_weights.{k}": v for k, v in w.items()},
            },
        )
        model = scar.build_model(config.model)
        mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
        batch = make_batch(config, informative_lead=1)
        state, _ = train_state.create_train_state(model, config, batch, mesh)
        _, metrics = jax.jit(update.make_update_fn(model, config))(
            state, batch, jax.random.key(5)
        )
        return float(metrics["grad_norm/masker"]), float(metrics["grad_norm/encoders"])

    g_sel_cons, enc_sel_cons = masker_grad_norm(adv=0.0, ent=0.0, sel=10.0, cons=10.0)
    assert g_sel_cons == 0.0
    _, enc_none = masker_grad_norm(adv=0.0, ent=0.0, sel=0.0, cons=0.0)
    assert abs(enc_sel_cons - enc_none) > 1e-3 * enc_none  # the terms are really there
    g_adv, _ = masker_grad_norm(adv=1.0, ent=0.0, sel=10.0, cons=10.0)
    assert g_adv > 0.0


def test_warmup_random_masks_then_mixing():
    """In warm-up every mask is random (no masker gradient); afterwards about p_rand are."""
    config = make_config(**{"model.masker.warmup_steps": 2, "model.masker.p_rand": 0.25})
    _, state, step, mesh = setup(config)
    shares = []
    for i in range(4):
        state, metrics = step(state, put(make_batch(config, seed=i), mesh), jax.random.key(3))
        shares.append(float(metrics["mask/random_share"]))
        if i < 2:
            assert float(metrics["grad_norm/masker"]) == 0.0  # random masks ignore its logits
        else:
            assert float(metrics["grad_norm/masker"]) > 0.0
        # the same budget as the adversary's: rho in [0.3, 0.6] split over observed leads
        # and segments (joint unit, rounded per unit type)
        assert 0.1 < float(metrics["mask/ratio"]) < 0.8
        if i >= 2:  # masker.swap_share (0.5) of the adversary's examples get another's mask
            assert 0.0 <= float(metrics["mask/swapped_share"]) <= 1.0 - shares[-1]
    assert shares[:2] == [1.0, 1.0]
    assert all(s < 1.0 for s in shares[2:])
    # mixing draws: fraction over many steps is close to p_rand
    draws = [
        update.mask_schedule(config, jnp.int32(10), jax.random.key(i), 64)[1].mean()
        for i in range(50)
    ]
    assert abs(float(np.mean(draws)) - 0.25) < 0.03


def test_per_example_random_masks_ignore_the_masker():
    """use_random [B]: those examples' masks do not depend on the masker's weights."""
    config = make_config("unit=lead")
    model = scar.build_model(config.model)
    batch = make_batch(config)
    variables = model.init({"params": jax.random.key(0), "masker": jax.random.key(1)}, batch)
    other = jax.tree.map(lambda x: x, variables)
    other["params"]["masker"] = jax.tree.map(
        lambda x: x + 0.5 * jax.random.normal(jax.random.key(9), x.shape),
        variables["params"]["masker"],
    )
    use_random = jnp.asarray([True, False] * (B // 2))
    mask_of = jax.jit(
        lambda v: model.apply(
            v, batch, tau=0.5, use_random=use_random, train=True, rngs={"masker": jax.random.key(4)}
        )[1]["mask"]
    )
    masks = [np.asarray(mask_of(v)) for v in (variables, other)]
    r = np.asarray(use_random)
    np.testing.assert_array_equal(masks[0][r], masks[1][r])
    assert not np.array_equal(masks[0][~r], masks[1][~r])


@pytest.mark.slow
def test_alternating_masker_steps_change_only_the_masker():
    config = make_config(
        "minmax=alternating", **{"optim.masker_steps": 2, "model.masker.warmup_steps": 0}
    )
    model, state, step, mesh = setup(config)
    masker_only = jax.jit(update.make_update_fn(model, config, players=("masker",)))
    batch = put(make_batch(config), mesh)
    before = flat(host(state.params))
    s1, _ = masker_only(state, batch, jax.random.key(2))
    after = flat(host(s1.params))
    for path, v in before.items():
        if path.startswith("masker/"):
            continue
        np.testing.assert_array_equal(after[path], v, err_msg=path)
    assert any(not np.array_equal(after[p], v) for p, v in before.items() if "masker/" in p)
    assert counts(s1.opt_state["encoders"]) == counts(state.opt_state["encoders"])
    # The alternating update: k = 2 masker updates, then one encoder update, in one call.
    s2, metrics = step(state, batch, jax.random.key(2))
    assert set(counts(s2.opt_state["masker"])) == {2}
    assert set(counts(s2.opt_state["encoders"])) == {1}
    after2 = flat(host(s2.params))
    assert not np.array_equal(after2["ecg/head/kernel"], before["ecg/head/kernel"])
    assert np.isfinite(float(metrics["loss/total"]))


@pytest.mark.slow
def test_masker_every_k_steps_updates_the_masker_on_those_steps_only():
    """optim.masker_every = 3: on steps 0 and 3 both players step as with masker_every = 1
    from the same state; on steps 1 and 2 the masker's parameters and optimizer state stay
    exactly as they were while the encoders take masker_every = 1's step."""
    leaves = {"model.masker.warmup_steps": 0, "optim.warmup_steps": 0}  # same masker lr
    c1, c3 = make_config(**leaves), make_config(**leaves, **{"optim.masker_every": 3})
    _, state, step1, mesh = setup(c1)
    _, _, step3, _ = setup(c3)
    batch = put(make_batch(c1), mesh)
    lr = c1.optim.lr
    s = state
    for k in range(4):
        before = flat(host(s.params))
        copy = jax.tree.map(jnp.copy, s)  # both steps donate their state
        want, _ = step1(copy, batch, jax.random.key(5))  # masker_every = 1, the same state
        want_params = flat(host(want.params))
        s, metrics = step3(s, batch, jax.random.key(5))
        got = flat(host(s.params))
        updated = k % 3 == 0
        assert float(metrics["masker/updated"]) == float(updated)
        enc = {p: v for p, v in got.items() if not p.startswith("masker/")}
        assert_params_close(enc, {p: v for p, v in want_params.items() if p in enc}, lr, 1)
        masker = [p for p in got if p.startswith("masker/")]
        if updated:
            assert float(metrics["grad_norm/masker"]) > 0
            assert_params_close({p: got[p] for p in masker}, {p: want_params[p] for p in masker},
                                c1.optim.masker_lr, 1)
        else:
            assert float(metrics["grad_norm/masker"]) == 0.0
            for p in masker:
                np.testing.assert_array_equal(got[p], before[p], err_msg=p)
        assert set(counts(s.opt_state["masker"])) == {1 + k // 3}  # steps 0 and 3 only
        assert set(counts(s.opt_state["encoders"])) == {k + 1}


def test_masker_every_is_checked():
    with pytest.raises(ValueError, match="masker_every=0"):
        update.make_update_fn(None, make_config(**{"optim.masker_every": 0}))
    with pytest.raises(ValueError, match="alternating sets the masker's pace"):
        update.make_update_fn(None, make_config("minmax=alternating",
                                                **{"optim.masker_every": 2}))
