"""The composed SCAR model: views, masks, gradients to each player, cached text, gather."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import scar as scar_config
from scar_jax import losses
from scar_jax.models import scar

B = 4


def _setup(arg="", **leaves):
    config = scar_config.get_config("runlocal,text=random-tiny" + ("," + arg if arg else ""))
    for k, v in leaves.items():
        node = config
        *path, leaf = k.split(".")
        for p in path:
            node = node[p]
        node[leaf] = v
    model = scar.build_model(config.model)
    t = int(config.input.sample_rate * config.input.seconds)
    rng = np.random.default_rng(0)
    lead_obs = rng.random((B, 12)) > 0.25
    lead_obs[:, 1] = True
    batch = {
        "ecg": jnp.asarray(rng.normal(size=(B, t, 12)), jnp.float32),
        "lead_observed": jnp.asarray(lead_obs),
        "input_ids": jnp.asarray(rng.integers(1, 99, (B, 12)), jnp.int32),
        "attention_mask": jnp.ones((B, 12), jnp.int32),
    }
    rngs = {"params": jax.random.key(0), "masker": jax.random.key(1), "dropout": jax.random.key(2)}
    params = model.init(rngs, batch)
    return config, model, params, batch, rngs


def _objective(config, model, batch, rngs):
    def f(p):
        z, out = model.apply(p, batch, tau=0.5, train=True, rngs=rngs)
        return losses.scar_objective(z, out, config.loss_weights, config.model.loss)

    return f


@pytest.mark.parametrize("method", ["scar", "merl", "random"])
def test_methods_forward_and_gradients(method):
    config, model, params, batch, rngs = _setup(f"method={method}")
    z, out = model.apply(params, batch, tau=0.5, train=True, rngs=rngs)
    assert z.shape == (B, config.model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(z), axis=-1), 1.0, rtol=1e-5)
    (total, metrics), grads = jax.value_and_grad(
        _objective(config, model, batch, rngs), has_aux=True
    )(params)
    assert np.isfinite(float(total))
    norm = lambda t: float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(t))))
    assert norm(grads["params"]["ecg"]) > 0 and norm(grads["params"]["txt"]) > 0
    if method == "merl":
        assert "z_masked" not in out and "loss/uni_modal" in metrics
        assert "masker" not in params["params"]
        return
    observed = np.asarray(out["observed"])
    keep_masked = np.asarray(out["masked"]["keep"]).reshape(observed.shape)
    assert (keep_masked[~observed] == 0).all()
    assert 0 < (observed & (keep_masked == 0)).sum() < observed.sum()
    assert "loss/clip_masked" in metrics and "loss/selector_kl" in metrics
    if method == "scar":
        assert norm(grads["params"]["masker"]) > 0
    else:
        assert "masker" not in params["params"]


def test_clean_signal_changes_only_the_masker_gradient():
    config, model, params, batch, rngs = _setup()
    config0, model0, _, _, _ = _setup(**{"model.masker.clean_signal": 0.0})
    (j1, _), g1 = jax.value_and_grad(_objective(config, model, batch, rngs), has_aux=True)(params)
    (j0, _), g0 = jax.value_and_grad(_objective(config0, model0, batch, rngs), has_aux=True)(params)
    assert float(j1) == float(j0)  # the forward pass is unchanged
    for name in ("ecg", "txt", "logit_scale"):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
            g1["params"][name],
            g0["params"][name],
        )
    diff = jax.tree.map(
        lambda a, b: float(jnp.abs(a - b).max()), g1["params"]["masker"], g0["params"]["masker"]
    )
    assert max(jax.tree.leaves(diff)) > 1e-6


def test_cached_text_features_and_inference_entry_points():
    config, model, params, batch, rngs = _setup()
    feats = model.apply(
        params,
        batch["input_ids"],
        batch["attention_mask"],
        method=lambda m, i, a: m.txt.features(i, a),
    )
    cached = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    cached["txt_feats"] = feats
    z1, out1 = model.apply(params, batch, tau=0.5, rngs=rngs)
    z2, out2 = model.apply(params, cached, tau=0.5, rngs=rngs)
    np.testing.assert_allclose(np.asarray(out1["z_txt"]), np.asarray(out2["z_txt"]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(z1), np.asarray(z2), atol=1e-6)
    # Inference needs no text and equals the training forward's clean view.
    ze, _ = model.apply(params, batch["ecg"], batch["lead_observed"], method=model.embed_ecg)
    np.testing.assert_allclose(np.asarray(ze), np.asarray(z1), atol=1e-6)
    zt, _ = model.apply(params, batch, method=model.embed_text)
    np.testing.assert_allclose(np.asarray(zt), np.asarray(out1["z_txt"]), atol=1e-6)


@pytest.mark.parametrize("unit", ["lead", "segment", "joint", "token"])
def test_gather_kept_masked_view_equals_masked_computation(unit):
    config, model, params, batch, rngs = _setup(f"unit={unit}", **{"model.ecg.gather_kept": False})
    _, model_g, _, _, _ = _setup(f"unit={unit}")  # gather_kept is the default
    num_kept = model_g.num_kept((B, 12, 10))
    assert num_kept is not None and num_kept < 12 * 10 and num_kept % scar.GATHER_MULTIPLE == 0
    assert model.num_kept((B, 12, 10)) is None
    _, out = model.apply(params, batch, tau=0.5, rngs=rngs)
    _, out_g = model_g.apply(params, batch, tau=0.5, rngs=rngs)
    assert out_g["masked"]["encoded"].shape[1] == num_kept
    np.testing.assert_allclose(
        np.asarray(out_g["z_masked"]), np.asarray(out["z_masked"]), atol=1e-5
    )


def test_merl_uni_modal_views_are_its_own_projections():
    """MERL (ICML 2024, its public code): the two uni-modal views are dropout(linear_k(h)) of
    the pooled ECG feature h through two bias-free projections of their own (not the shared
    head), compared at the fixed temperature model.uma_temperature (0.07)."""
    config, model, params, batch, rngs = _setup("method=merl")
    p = params["params"]
    kernels = [np.asarray(p[f"uma_proj_{i}"]["kernel"]) for i in (0, 1)]
    assert all(set(p[f"uma_proj_{i}"]) == {"kernel"} for i in (0, 1))  # no bias
    assert not np.allclose(kernels[0], kernels[1])
    z, out = model.apply(params, batch, tau=0.5, rngs=rngs)  # eval: dropout off
    h = np.asarray(out["clean"]["pre_logits"])
    for view, kernel in zip(out["uma_views"], kernels):
        np.testing.assert_allclose(np.asarray(view), h @ kernel, rtol=1e-5, atol=1e-6)
    assert float(out["uma_temperature"]) == pytest.approx(0.07)
    _, metrics = losses.scar_objective(z, out, config.loss_weights, config.model.loss)
    expected = losses.uni_modal_loss(*out["uma_views"], 0.07)
    np.testing.assert_allclose(float(metrics["loss/uni_modal"]), float(expected), rtol=1e-6)
    # training: each view has its own dropout draw
    _, out_t = model.apply(params, batch, tau=0.5, train=True, rngs=rngs)
    drop = [np.asarray(v) == 0 for v in out_t["uma_views"]]
    assert drop[0].any() and not np.array_equal(drop[0], drop[1])


def test_siglip_objective():
    config, model, params, batch, rngs = _setup("loss=siglip")
    assert "logit_bias" in params["params"]
    z, out = model.apply(params, batch, tau=0.5, rngs=rngs)
    total, metrics = losses.scar_objective(z, out, config.loss_weights, "siglip")
    expected = losses.siglip_loss(z, out["z_txt"], out["logit_scale"], out["logit_bias"])
    np.testing.assert_allclose(float(metrics["loss/clip_clean"]), float(expected), rtol=1e-6)
    assert np.isfinite(float(total))


def test_selector_target_is_the_visible_softmax_of_token_report_similarity():
    config, model, params, batch, rngs = _setup()
    _, out = model.apply(params, batch, tau=0.5, rngs=rngs)
    for view, key in (("clean", "sel_target"), ("masked", "sel_target_masked")):
        encoded = out[view]["encoded"]
        tok = np.asarray(model.apply(params, encoded, method=lambda m, h: m.ecg.project(h)))
        cos = np.einsum("bnd,bd->bn", tok, np.asarray(out["z_txt"])) / config.model.selector.tau
        visible = np.asarray(out[view]["visible"])
        ref = np.where(visible, np.exp(cos - cos.max(-1, keepdims=True)), 0.0)
        ref /= ref.sum(-1, keepdims=True)
        np.testing.assert_allclose(np.asarray(out[key]), ref, atol=1e-5)


def test_text_freeze_regex_selects_exactly_the_bert_weights():
    from scar_jax import optim

    config, _, params, _, _ = _setup()
    frozen = optim.regex_mask(params["params"], config.model.txt.freeze)
    paths = optim.param_paths(params["params"])
    flags = jax.tree.leaves(frozen)
    assert [p for p, f in zip(paths, flags) if f] == [p for p in paths if p.startswith("txt/bert/")]
    assert any(flags) and not all(flags)


def _np_masked_softmax(x, visible):
    x = np.where(visible, x, -np.inf)
    e = np.exp(x - x.max(-1, keepdims=True))
    e = np.where(visible, e, 0.0)
    return e / e.sum(-1, keepdims=True)


def test_finding_selector_target_matches_numpy_and_keeps_every_finding():
    """METHOD §6: each valid finding spreads 1/F_valid of the target over its best-matching
    visible tokens; no findings -> uniform over the visible tokens. A finding the report
    embedding does not reflect still holds its share (the report-level target gives it ~0)."""
    rng = np.random.default_rng(3)
    b, n, f, e = 3, 10, 4, 6
    unit_ = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    tok = unit_(rng.normal(size=(b, n, e)))
    zf = unit_(rng.normal(size=(b, f, e)))
    valid = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    visible = rng.random((b, n)) > 0.2
    visible[:, 0] = True
    tau = 0.1
    got = np.asarray(scar.finding_selector_target(
        jnp.asarray(tok, jnp.float32), jnp.asarray(zf, jnp.float32), jnp.asarray(valid),
        jnp.asarray(visible), tau))
    for i in range(b):
        if valid[i].any():
            want = np.mean([_np_masked_softmax(tok[i] @ zf[i, j] / tau, visible[i])
                            for j in np.flatnonzero(valid[i])], 0)
        else:
            want = visible[i] / visible[i].sum()
        np.testing.assert_allclose(got[i], want, atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    assert (got[~visible] == 0).all()
    # Two findings, tokens 0-1 serve finding A, token 5 finding B; the report embedding is A.
    tok = np.zeros((1, n, e))
    tok[0, :, 2] = 1.0
    tok[0, [0, 1], 0], tok[0, 5, 1] = 3.0, 3.0
    tok = unit_(tok)
    a, bb = np.eye(e)[0], np.eye(e)[1]
    q = np.asarray(scar.finding_selector_target(
        jnp.asarray(tok, jnp.float32), jnp.asarray(np.stack([a, bb])[None], jnp.float32),
        jnp.ones((1, 2), bool), jnp.ones((1, n), bool), tau))[0]
    report_q = _np_masked_softmax(tok[0] @ a / tau, np.ones(n, bool))
    assert report_q[5] < 1e-3 and q[5] > 0.45  # B's token keeps its half
    assert q[[0, 1]].sum() > 0.45


def test_model_selector_target_from_the_batch_findings():
    """selector.target=findings: out['sel_target'] is the finding target of the clean view's
    tokens and the projected findings of the batch; without findings in the batch the
    report-level target is used (generated batches)."""
    config, model, params, batch, rngs = _setup(**{"model.selector.target": "findings"})
    assert model.selector_target == "findings"
    rng = np.random.default_rng(4)
    feats = jnp.asarray(rng.normal(size=(B, 3, 32)), jnp.float32)
    ids = jnp.asarray([[0, 1, -1], [2, -1, -1], [0, 3, 4], [-1, -1, -1]], jnp.int32)
    with_f = dict(batch, finding_feats=feats, finding_ids=ids)
    _, out = model.apply(params, with_f, tau=0.5, rngs=rngs)
    tok = model.apply(params, out["clean"]["encoded"], method=lambda m, h: m.ecg.project(h))
    z_f = model.apply(params, feats, method=lambda m, x: m.txt.project(x))
    want = scar.finding_selector_target(tok, z_f, ids >= 0, out["clean"]["visible"], 0.1)
    np.testing.assert_allclose(np.asarray(out["sel_target"]), np.asarray(want), atol=1e-6)
    _, out_r = model.apply(params, batch, tau=0.5, rngs=rngs)
    assert not np.allclose(np.asarray(out_r["sel_target"]), np.asarray(out["sel_target"]))
    with pytest.raises(ValueError, match="selector target"):
        model.clone(selector_target="tokens").apply(params, batch, tau=0.5, rngs=rngs)
