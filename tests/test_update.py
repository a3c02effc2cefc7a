"""The fused min-max update: signs, CLIP equivalence, sharding invariance, compile once,
non-finite policy, random-mask warm-up and mixing, the alternating ablation, cached text."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import scar as scar_config
from scar_jax import losses, optim, sharding, train_state, update
from scar_jax.models import scar

B = 8
TXT_DIM = 32  # hidden size of the random-tiny BERT (cached pooled features)


def make_config(arg: str = "", **leaves):
    """A `mu` config on 1 s records with cached text features; `leaves` override dotted keys."""
    config = scar_config.get_config("runlocal,text=random-tiny" + ("," + arg if arg else ""))
    config.input.seconds = 1.0
    config.total_steps = 100
    for dotted, value in leaves.items():
        node = config
        *path, leaf = dotted.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def make_batch(config, seed: int = 0, informative_lead: int | None = None) -> dict:
    """A global batch of B records (ecg, lead_observed, txt_feats) as numpy."""
    rng = np.random.default_rng(seed)
    t = int(config.input.sample_rate * config.input.seconds)
    if informative_lead is None:
        ecg = rng.normal(size=(B, t, 12)).astype(np.float32)
        lead_observed = rng.random((B, 12)) > 0.2
        lead_observed[:, 0] = True
    else:  # every lead but one is the same for all records: only that lead tells them apart
        ecg = np.broadcast_to(np.sin(np.arange(t) / 7.0)[None, :, None], (B, t, 12)).copy()
        ecg[:, :, informative_lead] = rng.normal(size=(B, t))
        ecg = ecg.astype(np.float32)
        lead_observed = np.ones((B, 12), bool)
    return {
        "ecg": ecg,
        "lead_observed": lead_observed,
        "txt_feats": rng.normal(size=(B, TXT_DIM)).astype(np.float32),
    }


def setup(config, devices=None, **update_kwargs):
    """(model, state, jitted donated update, mesh) on `devices` (default: the first one)."""
    model = scar.build_model(config.model)
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1] if devices is None else devices)
    batch = make_batch(config)
    state, shardings = train_state.create_train_state(model, config, batch, mesh)
    fn = update.make_update_fn(model, config, **update_kwargs)
    step = update.jit_update(fn, shardings, sharding.batch_sharding(mesh))
    return model, state, step, mesh


def put(batch, mesh):
    return jax.device_put(batch, sharding.batch_sharding(mesh))


def host(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def flat(tree):
    return dict(zip(optim.param_paths(tree), jax.tree.leaves(tree)))


# Leaves whose gradient is identically zero in exact arithmetic: attention key biases and
# the selector's score bias (softmax is shift invariant), the masker's output and final
# LayerNorm biases (they shift every token's score equally, and the scores are standardised
# per example). Adam turns rounding noise there into +-lr steps, so those leaves are
# compared by that bound only.
NOISE_ONLY = (
    "attn/key/bias",
    "selector_fc2/bias",
    "masker/out/bias",
    "masker/encoder/ln_final/bias",
)


def assert_params_close(got: dict, want: dict, lr: float, steps: int, atol: float = 1e-5):
    """Leaf-wise allclose by path; NOISE_ONLY leaves only within steps * lr of each other."""
    assert set(got) == set(want)
    for path, v in want.items():
        if any(n in path for n in NOISE_ONLY):
            assert np.max(np.abs(got[path] - v)) <= 2 * steps * lr * 1.01, path
        else:
            np.testing.assert_allclose(got[path], v, atol=atol, rtol=1e-5, err_msg=path)


def counts(opt_state) -> list[int]:
    """Every optax step counter in an optimizer state."""
    return [
        int(v)
        for p, v in jax.tree_util.tree_leaves_with_path(opt_state)
        if optim.path_str(p).endswith("count")
    ]


def objective_and_grad(model, config, batch, rng, step, player="encoders"):
    """params -> (J, terms), dJ/dparams at the update's own rngs, tau and random-mask draw.

    player='masker': the masker's objective instead (its terms only, losses.term_weights).
    """
    rngs, tau, use_random = update.step_inputs(
        config, jax.random.fold_in(rng, step), jnp.int32(step), B
    )

    def f(p):
        z, out = model.apply(
            {"params": p}, batch, tau=tau, use_random=use_random, train=True, rngs=rngs
        )
        total, metrics = losses.scar_objective(z, out, config.loss_weights, config.model.loss)
        if player == "masker":
            terms = losses.objective_terms(z, out, config.model.loss)
            coef = losses.term_weights(terms, config.loss_weights, "masker")
            total = sum(coef[k] * v for k, v in terms.items())
        return total, metrics

    return jax.jit(jax.value_and_grad(f, has_aux=True))


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
    signal off and w_adv = w_ent = w_pg = 0, the selector KL and the consistency term (both on and
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

    g_sel_cons, enc_sel_cons = masker_grad_norm(adv=0.0, ent=0.0, pg=0.0, sel=10.0, cons=10.0)
    assert g_sel_cons == 0.0
    _, enc_none = masker_grad_norm(adv=0.0, ent=0.0, pg=0.0, sel=0.0, cons=0.0)
    assert abs(enc_sel_cons - enc_none) > 1e-3 * enc_none  # the terms are really there
    g_adv, _ = masker_grad_norm(adv=1.0, ent=0.0, pg=0.0, sel=10.0, cons=10.0)
    assert g_adv > 0.0


def test_masker_none_equals_plain_clip_step():
    """masker=none, selector=mean: 3 update steps == CLIP loss + clip_by_global_norm + AdamW
    with linear warm-up and cosine decay, written here independently."""
    config = make_config("masker=none,selector=mean", **{"optim.warmup_steps": 2, "total_steps": 6})
    model, state, step, mesh = setup(config)
    params0 = host(state.params)
    o = config.optim

    def lr(count):
        warm = jnp.minimum(1.0, (count + 1.0) / 2.0)
        frac = jnp.clip((count - 2.0) / 4.0, 0.0, 1.0)
        return o.lr * warm * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))

    trainable = {k: v for k, v in params0.items() if k != "txt"}
    trainable["txt_head"] = params0["txt"]["head"]
    bert = params0["txt"]["bert"]

    def clip(tr, batch):
        params = {k: v for k, v in tr.items() if k != "txt_head"}
        params["txt"] = {"bert": bert, "head": tr["txt_head"]}
        z_e, _ = model.apply(
            {"params": params}, batch["ecg"], batch["lead_observed"], method=model.embed_ecg
        )
        x = batch["txt_feats"]
        if config.model.txt.normalize_features:  # the head's input: L2-normalised features
            x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
        feats = x @ tr["txt_head"]["kernel"] + tr["txt_head"].get("bias", 0.0)
        z_t = feats / jnp.linalg.norm(feats, axis=-1, keepdims=True)
        logits = jnp.minimum(jnp.exp(tr["logit_scale"]), 100.0) * z_e @ z_t.T
        diag = jnp.diagonal(logits)
        row = jax.nn.logsumexp(logits, 1) - diag
        col = jax.nn.logsumexp(logits, 0) - diag
        return 0.5 * (jnp.mean(row) + jnp.mean(col))

    tx = optax.chain(
        optax.clip_by_global_norm(o.grad_clip),
        optax.adamw(
            lr,
            b1=o.b1,
            b2=o.b2,
            weight_decay=o.weight_decay,
            mask=lambda t: jax.tree.map(lambda x: x.ndim >= 2, t),
        ),
    )
    ref = jax.tree.map(jnp.asarray, trainable)
    ref_opt = tx.init(ref)

    @jax.jit
    def ref_step(ref, ref_opt, batch):
        loss, g = jax.value_and_grad(clip)(ref, batch)
        upd, ref_opt = tx.update(g, ref_opt, ref)
        return optax.apply_updates(ref, upd), ref_opt, loss

    for i in range(3):
        batch = make_batch(config, seed=i)
        ref, ref_opt, ref_loss = ref_step(ref, ref_opt, batch)
        state, metrics = step(state, put(batch, mesh), jax.random.key(0))
        np.testing.assert_allclose(float(metrics["loss/total"]), float(ref_loss), rtol=1e-5)
        assert float(metrics["grad_norm/masker"]) == 0.0
    got = host(state.params)
    ref = host(ref)
    np.testing.assert_allclose(got["txt"]["head"]["kernel"], ref["txt_head"]["kernel"], atol=1e-5)
    np.testing.assert_allclose(got["logit_scale"], ref["logit_scale"], atol=1e-5)
    assert_params_close(flat(got["ecg"]), flat(ref["ecg"]), o.lr, 3)
    for path, v in flat(bert).items():  # frozen: bit-identical
        np.testing.assert_array_equal(flat(got["txt"]["bert"])[path], v, err_msg=path)
    assert "masker" not in got


@pytest.mark.slow
def test_eight_devices_equal_one_and_compile_once():
    """data=4 x fsdp=2 over 8 devices == 1 device after 3 steps; one trace, one executable."""
    leaves = {"mesh.fsdp_min_size": 1024, "model.masker.warmup_steps": 1}
    results, traces = [], []
    for devices, fsdp in ((jax.devices()[:1], 1), (jax.devices(), 2)):
        config = make_config(**leaves, **{"mesh.fsdp": fsdp})
        model = scar.build_model(config.model)
        mesh = sharding.make_mesh(config.mesh, devices)
        state, shardings = train_state.create_train_state(model, config, make_batch(config), mesh)
        fn = update.make_update_fn(model, config)
        n = [0]

        def counted(state, batch, rng, fn=fn, n=n):
            n[0] += 1
            return fn(state, batch, rng)

        step = update.jit_update(counted, shardings, sharding.batch_sharding(mesh))
        for i in range(3):
            state, metrics = step(state, put(make_batch(config, seed=i), mesh), jax.random.key(5))
        assert n[0] == 1 and step._cache_size() == 1  # no recompilation after the first step
        traces.append(n[0])
        if fsdp > 1:
            specs = {s.spec for s in jax.tree.leaves(shardings.params)}
            assert any("fsdp" in str(s) for s in specs)  # something really is sharded
            kernel = state.params["ecg"]["encoder"]
            assert any(
                len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
                for x in jax.tree.leaves(kernel)
            )
        assert int(state.step) == 3 and np.isfinite(float(metrics["loss/total"]))
        results.append(flat(host(state.params)))
    one, eight = results
    assert_params_close(eight, one, config.optim.lr + config.optim.masker_lr, 3)


@pytest.mark.parametrize("policy", ["skip", pytest.param("stop", marks=pytest.mark.slow)])
def test_nonfinite_batch_leaves_state_and_counts(policy):
    config = make_config(**{"optim.nonfinite": policy})
    _, state, step, mesh = setup(config)
    before = host(state)
    bad = make_batch(config)
    bad["ecg"][0, 3, 0] = np.nan  # lead 0 is observed in every record
    state, metrics = step(state, put(bad, mesh), jax.random.key(0))
    assert not np.isfinite(float(metrics["loss/total"]))
    assert float(metrics["nonfinite"]) == 1.0 and float(metrics["nonfinite/count"]) == 1.0
    assert int(state.nonfinite) == 1 and int(state.step) == 1
    after = host(state)
    for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(before.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(after.opt_state), jax.tree.leaves(before.opt_state)):
        np.testing.assert_array_equal(a, b)
    state, metrics = step(state, put(make_batch(config, seed=1), mesh), jax.random.key(0))
    assert float(metrics["nonfinite"]) == 0.0 and int(state.nonfinite) == 1
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(host(state.params)), jax.tree.leaves(before.params))
    ]
    assert any(changed)


def test_bad_policy_fails():
    with pytest.raises(ValueError, match="nonfinite"):
        update.make_update_fn(None, make_config(**{"optim.nonfinite": "ignore"}))


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


def test_cached_report_features_and_trainable_text_guard():
    config = make_config()
    model = scar.build_model(config.model)
    rng = np.random.default_rng(0)
    tok = {
        "input_ids": rng.integers(1, 99, (11, 12)).astype(np.int32),
        "attention_mask": np.ones((11, 12), np.int32),
    }
    tok["attention_mask"][:, 9:] = 0
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    state, _ = train_state.create_train_state(model, config, make_batch(config), mesh)
    _, aux = model.apply({"params": state.params}, tok, method=model.embed_text)
    want = np.asarray(aux["pre_logits"])  # the text tower on all 11 rows at once

    def text_fn(texts):  # text "i" -> row i of tok; "" (the last chunk's padding) -> row 0
        rows = [int(t) if t else 0 for t in texts]
        return {k: v[rows] for k, v in tok.items()}

    texts = [str(i) for i in range(11)]
    from scar_jax import train

    feats = train.embed_texts(model, state.params, texts, text_fn, mesh, chunk=4)
    assert feats.shape == (11, TXT_DIM)
    np.testing.assert_allclose(feats, want, atol=1e-5)
    # the same batch-sharded over 8 devices (what a multi-process start-up uses)
    mesh8 = sharding.make_mesh(config.mesh)
    params8 = jax.device_put(state.params, sharding.replicated(mesh8))
    np.testing.assert_allclose(train.embed_texts(model, params8, texts, text_fn, mesh8, chunk=4),
                               want, atol=1e-5)
    assert update.text_is_frozen(config, state.params)
    config.model.txt.freeze = ()
    assert not update.text_is_frozen(config, state.params)
    fn = update.make_update_fn(model, config)
    with pytest.raises(ValueError, match="txt_feats"):
        fn(state, make_batch(config), jax.random.key(0))


def _with_findings(batch, f: int = 3, seed: int = 1) -> dict:
    """The batch plus finding_ids [B, F] (some shared, -1 = padding) and finding_feats."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(-1, 5, (B, f)).astype(np.int32)
    ids[:, 0] = np.arange(B) % 4  # every record has a finding; records share them
    feats = rng.normal(size=(B, f, TXT_DIM)).astype(np.float32)
    return dict(batch, finding_ids=ids, finding_feats=np.where(ids[..., None] >= 0, feats, 0))


@pytest.mark.parametrize("find", [0.0, 0.5])
def test_finding_term_is_computed_only_with_weight(monkeypatch, find):
    """At loss_weights.find = 0 the O((B F)^2) finding loss is never traced into the step (and
    is absent from the metrics); the total is the ungated objective's. At > 0 it is computed."""
    traced = []
    real = losses.finding_loss
    monkeypatch.setattr(losses, "finding_loss", lambda *a, **k: traced.append(1) or real(*a, **k))
    config = make_config(**{"loss_weights.find": find})
    model, state, step, mesh = setup(config)
    batch = _with_findings(make_batch(config))
    params = host(state.params)
    _, metrics = step(state, put(batch, mesh), jax.random.key(0))
    assert bool(traced) == (find > 0)
    assert ("loss/finding" in metrics) == (find > 0)
    # The ungated objective (every term, the finding loss weighted by `find`) at the step's
    # own rngs gives the same total.
    rngs, tau, use_random = update.step_inputs(config, jax.random.fold_in(jax.random.key(0), 0),
                                               jnp.int32(0), B)
    z, out = model.apply({"params": params}, batch, tau=tau, use_random=use_random, train=True,
                         rngs=rngs)
    terms = losses.objective_terms(z, out, config.model.loss)
    assert "finding" in terms
    total, _ = losses.weighted_objective(terms, config.loss_weights)
    np.testing.assert_allclose(float(metrics["loss/total"]), float(total), rtol=1e-5)


def test_bfloat16_compute_stays_close_to_float32():
    """model.dtype=bfloat16 against float32 from the same parameters, one step on CPU.

    Tolerances: bf16 rounds to 2^-8 (3.9e-3) relative; the matmuls accumulate in float32
    and the logits, softmax and loss are float32, so the loss moves by a fraction of that
    (measured 1.1e-4 relative): |dloss| <= 2e-3 |loss|. The gradient norm likewise (measured
    4e-4): 1e-2. Adam's first step is +-lr on every coordinate whose gradient exceeds eps,
    so coordinates with a near-zero true gradient (attention key biases, rounding noise)
    flip sign under any perturbation: the update is compared by its direction (measured
    cosine 0.994): cosine >= 0.98. Parameters and optimizer state stay float32.
    """
    got = {}
    for dtype in ("float32", "bfloat16"):
        config = make_config(**{"model.dtype": dtype, "optim.warmup_steps": 0})
        _, state, step, mesh = setup(config)
        before = flat(host(state.params))
        state, metrics = step(state, put(make_batch(config), mesh), jax.random.key(0))
        after = flat(host(state.params))
        got[dtype] = (metrics, before, after, state)
    (m32, b32, a32, _), (m16, b16, a16, s16) = got["float32"], got["bfloat16"]
    assert all(np.array_equal(b32[k], b16[k]) for k in b32)  # the same initial parameters
    for leaf in jax.tree.leaves((s16.params, s16.opt_state)):
        assert not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.dtype == jnp.float32
    loss32, loss16 = float(m32["loss/total"]), float(m16["loss/total"])
    assert abs(loss16 - loss32) <= 2e-3 * abs(loss32)
    g32, g16 = float(m32["grad_norm/encoders"]), float(m16["grad_norm/encoders"])
    assert abs(g16 - g32) <= 1e-2 * g32
    d32 = np.concatenate([(a32[k] - b32[k]).ravel() for k in sorted(b32)])
    d16 = np.concatenate([(a16[k] - b16[k]).ravel() for k in sorted(b32)])
    assert d16 @ d32 / (np.linalg.norm(d16) * np.linalg.norm(d32)) >= 0.98
