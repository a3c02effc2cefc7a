"""ECG tower: token layout, no leak from removed tokens, any lead subset, gather == mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scar_jax.models import common
from scar_jax.models import ecg_encoder as E

P, S, L = 20, 8, 12
T = P * S


def _model(selector="adaptive", **kw):
    return E.ECGEncoder(
        variant="mu",
        patch_size=P,
        max_segments=S,
        embed_dim=16,
        selector=selector,
        selector_hidden=8,
        **kw,
    )


def _ecg(seed, b=3):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, T, L)), jnp.float32)


@pytest.fixture(scope="module")
def params():
    return {
        sel: _model(sel).init(jax.random.key(0), _ecg(0), jnp.ones((3, L, S)))
        for sel in E.SELECTOR_KINDS
    }


def test_patchify_layout_matches_numpy():
    ecg = np.random.default_rng(0).normal(size=(2, T, L)).astype(np.float32)
    patches = np.asarray(E.patchify(jnp.asarray(ecg), P))
    assert patches.shape == (2, L, S, P)
    for lead, seg in [(0, 0), (4, 3), (11, S - 1)]:
        np.testing.assert_array_equal(patches[1, lead, seg], ecg[1, seg * P : (seg + 1) * P, lead])
    with pytest.raises(ValueError, match="multiple of patch_size"):
        E.patchify(jnp.zeros((1, T + 3, L)), P)


def test_token_observed_from_leads_and_time():
    lead = jnp.array([[True] * 6 + [False] * 6])
    time = jnp.ones((1, T), bool).at[0, P + 3].set(False)  # one sample lost in segment 1
    obs = np.asarray(E.token_observed(lead, T, P, time))
    assert obs.shape == (1, L, S)
    assert not obs[0, 6:].any() and not obs[0, :, 1].any()
    assert obs[0, :6, [0, 2, 3]].all()


@pytest.mark.parametrize("selector", E.SELECTOR_KINDS)
def test_removed_tokens_do_not_leak(params, selector):
    model = _model(selector)
    rng = np.random.default_rng(1)
    keep = jnp.asarray(rng.random((3, L, S)) > 0.4, jnp.float32)
    ecg = _ecg(2)
    removed = np.repeat(~np.asarray(keep, bool)[:, :, :, None], P, -1)  # [B, L, S, P]
    removed = removed.transpose(0, 2, 3, 1).reshape(3, T, L)
    noisy = np.asarray(ecg).copy()
    noisy[removed] = rng.normal(size=removed.sum()) * 100
    nan = np.asarray(ecg).copy()
    nan[removed] = np.nan
    z, aux = model.apply(params[selector], ecg, keep)
    for other in (noisy, nan):
        z2, aux2 = model.apply(params[selector], jnp.asarray(other), keep)
        np.testing.assert_array_equal(np.asarray(z), np.asarray(z2))
        vis = np.asarray(aux["visible"])
        np.testing.assert_array_equal(
            np.asarray(aux["encoded"])[vis], np.asarray(aux2["encoded"])[vis]
        )


@pytest.mark.parametrize("n_leads", [1, 3, 6, 12])
def test_any_lead_subset_gives_finite_unit_embeddings(params, n_leads):
    model = _model()
    lead_obs = np.zeros((3, L), bool)
    for i in range(3):
        lead_obs[i, np.random.default_rng(i).choice(L, n_leads, replace=False)] = True
    keep = E.token_observed(jnp.asarray(lead_obs), T, P).astype(jnp.float32)
    ecg = np.asarray(_ecg(3)).copy()
    for i in range(3):
        ecg[i][:, ~lead_obs[i]] = np.nan  # absent leads hold no signal at all
    z, aux = model.apply(params["adaptive"], jnp.asarray(ecg), keep)
    assert np.isfinite(np.asarray(z)).all()
    np.testing.assert_allclose(np.linalg.norm(np.asarray(z), axis=-1), 1.0, rtol=1e-5)
    w = np.asarray(aux["weights"])
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert (w[~np.asarray(aux["visible"])] == 0).all()


@pytest.mark.parametrize("selector", E.SELECTOR_KINDS)
def test_gather_kept_equals_masked(params, selector):
    model = _model(selector)
    rng = np.random.default_rng(4)
    lead_keep = rng.random((3, L)) > 0.5
    lead_keep[:, :2] = True
    keep = jnp.asarray(np.repeat(lead_keep[:, :, None], S, -1), jnp.float32)
    k = int(np.asarray(keep).reshape(3, -1).sum(-1).max()) + 5  # some padding in the gather
    ecg = _ecg(5)
    z, _ = model.apply(params[selector], ecg, keep)
    zg, aux = model.apply(params[selector], ecg, keep, num_kept=k)
    np.testing.assert_allclose(np.asarray(zg), np.asarray(z), atol=1e-5)
    assert aux["encoded"].shape[1] == k
    # Gradients w.r.t. the keep weights agree too (straight-through signal survives the gather).
    f = lambda kp, nk: jnp.sum(model.apply(params[selector], ecg, kp, num_kept=nk)[0] ** 3)
    np.testing.assert_allclose(
        np.asarray(jax.grad(f)(keep, k)), np.asarray(jax.grad(f)(keep, None)), atol=1e-5
    )


def test_mean_selector_weights_are_uniform(params):
    keep = jnp.ones((3, L, S)).at[0, :6].set(0.0)
    _, aux = _model("mean").apply(params["mean"], _ecg(6), keep)
    w = np.asarray(aux["weights"])
    np.testing.assert_allclose(w[0][np.asarray(aux["visible"][0])], 1.0 / (6 * S), rtol=1e-6)
    np.testing.assert_allclose(w[1], 1.0 / (L * S), rtol=1e-6)


def test_shape_errors_are_clear(params):
    with pytest.raises(ValueError, match="max_segments"):
        _model().apply(params["adaptive"], jnp.zeros((1, T + 2 * P, L)), jnp.ones((1, L, S + 2)))
    with pytest.raises(ValueError, match="leads"):
        _model().init(jax.random.key(0), jnp.zeros((1, T, 8)), jnp.ones((1, 8, S)))
    with pytest.raises(ValueError, match="selector"):
        _model("attention").init(jax.random.key(0), _ecg(0), jnp.ones((3, L, S)))


def test_variant_presets():
    assert common.decode_variant("tiny") == common.Variant(192, 12, 3, 768)
    assert common.decode_variant("small") == common.Variant(384, 12, 6, 1536)
    assert common.decode_variant("base") == common.Variant(768, 12, 12, 3072)
    assert common.decode_variant("tiny/4").depth == 4
    with pytest.raises(ValueError, match="Unknown model variant"):
        common.decode_variant("huge")


def test_masked_softmax_matches_numpy():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 9)).astype(np.float32)
    vis = rng.random((4, 9)) > 0.4
    vis[3] = False
    got = np.asarray(common.masked_softmax(jnp.asarray(x), jnp.asarray(vis)))
    for i in range(4):
        ref = np.zeros(9)
        if vis[i].any():
            e = np.exp(x[i][vis[i]] - x[i][vis[i]].max())
            ref[vis[i]] = e / e.sum()
        np.testing.assert_allclose(got[i], ref, atol=1e-6)


def _soft_removal_embedding(module, tokens, keep):
    """Reference: keep k weights each token as a key in attention (bias log k) and in pooling
    (softmax scores + log k) and scales its embedding; k = 1 is the clean forward."""
    k = keep.reshape(keep.shape[0], -1)
    log_k = jnp.log(k)
    h = module.encoder(tokens * k[..., None], jnp.ones(k.shape, bool), True, log_k)
    if module.selector == "adaptive":
        scores = module.selector_fc2(jax.nn.gelu(module.selector_fc1(h), approximate=False))[..., 0]
    else:
        scores = jnp.zeros(k.shape)
    w = jax.nn.softmax(scores + log_k, -1)
    return common.l2_normalize(module.head(jnp.einsum("bn,bnd->bd", w, h)))


@pytest.mark.parametrize("selector", ["adaptive", "mean"])
def test_keep_gradient_is_the_soft_removal_derivative(params, selector):
    """With keep_attention_grad the forward is unchanged, and d z / d keep at the clean keep
    equals the derivative of soft removal (token down-weighted in attention and pooling, not
    only its embedding shrunk); without it only the embedding path is left."""
    ecg = _ecg(3)
    keep = jnp.ones((3, L, S))
    target = jnp.asarray(np.random.default_rng(4).normal(size=(3, 16)), jnp.float32)
    on, off = _model(selector), _model(selector, keep_attention_grad=False)
    tokens = on.apply(params[selector], ecg, keep > 0, method=on.embed_tokens)

    def objective(module, method=None):
        def f(k):
            if method is None:
                z, _ = module.apply(params[selector], tokens, k, method=module.encode)
            else:
                z = module.apply(params[selector], tokens, k, method=method)
            return jnp.sum(z * target)
        return f

    np.testing.assert_allclose(objective(on)(keep), objective(off)(keep), rtol=1e-6)
    half = keep.at[:, 2:5].set(0.5).at[:, 7, 1:3].set(0.0)  # fractional and removed keeps
    np.testing.assert_allclose(objective(on)(half), objective(off)(half), rtol=1e-6)
    g_on = jax.grad(objective(on))(keep)
    g_ref = jax.grad(objective(on, _soft_removal_embedding))(keep)
    g_off = jax.grad(objective(off))(keep)
    np.testing.assert_allclose(g_on, g_ref, atol=1e-6)
    assert np.abs(np.asarray(g_on - g_off)).max() > 1e-3  # the attention/pooling path matters
