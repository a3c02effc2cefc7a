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


@pytest.fixture(scope="module")
def conv_params():
    return _model(stem="conv").init(jax.random.key(1), _ecg(0), jnp.ones((3, L, S)))


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


@pytest.mark.parametrize(
    "selector,stem", [(sel, "linear") for sel in E.SELECTOR_KINDS] + [("adaptive", "conv")]
)
def test_removed_tokens_do_not_leak(params, conv_params, selector, stem):
    model = _model(selector, stem=stem)
    variables = params[selector] if stem == "linear" else conv_params
    rng = np.random.default_rng(1)
    keep = jnp.asarray(rng.random((3, L, S)) > 0.4, jnp.float32)
    ecg = _ecg(2)
    removed = np.repeat(~np.asarray(keep, bool)[:, :, :, None], P, -1)  # [B, L, S, P]
    removed = removed.transpose(0, 2, 3, 1).reshape(3, T, L)
    noisy = np.asarray(ecg).copy()
    noisy[removed] = rng.normal(size=removed.sum()) * 100
    nan = np.asarray(ecg).copy()
    nan[removed] = np.nan
    z, aux = model.apply(variables, ecg, keep)
    for other in (noisy, nan):
        z2, aux2 = model.apply(variables, jnp.asarray(other), keep)
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


# ----------------------------------------------------------------------------- conv stem.


def _np_conv1d_valid(x, kernel, bias, stride):
    """x [n, P, Cin], Flax kernel [k, Cin, Cout] -> [n, P_out, Cout] (loops, float64)."""
    k = kernel.shape[0]
    n_out = (x.shape[1] - k) // stride + 1
    out = np.zeros((x.shape[0], n_out, kernel.shape[2]))
    for j in range(n_out):
        window = x[:, j * stride : j * stride + k, :]  # [n, k, Cin]
        out[:, j] = np.einsum("nkc,kco->no", window, kernel) + bias
    return out


def test_conv_stem_matches_numpy(conv_params):
    from scipy.special import erf

    p = jax.tree.map(np.asarray, conv_params["params"])
    patches = np.asarray(_ecg(7)).reshape(3, S, P, L).transpose(0, 3, 1, 2).astype(np.float64)
    got = _model(stem="conv").apply(conv_params, jnp.asarray(patches, jnp.float32),
                                    method=lambda m, x: m._conv_stem(x))
    level = patches.mean(-1, keepdims=True)
    h = ((patches - level) * E.STEM_WAVE_SCALE).reshape(-1, P, 1)
    for i in range(len(E.CONV_STEM)):
        h = _np_conv1d_valid(h, p[f"stem_convs_{i}"]["kernel"], p[f"stem_convs_{i}"]["bias"], 2)
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))  # exact GELU
    want = np.concatenate(
        [
            np.concatenate([h.max(1), h.mean(1)], -1).reshape(3, L, S, -1),
            (level - 0.5) * E.STEM_LEVEL_SCALE,
            patches.std(-1, keepdims=True) * E.STEM_SPREAD_SCALE,
        ],
        -1,
    )
    assert got.shape == (3, L, S, 2 * E.CONV_STEM[-1][0] + 2)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-4)


def test_conv_stem_keeps_the_voltage_a_patch_layernorm_discards(params, conv_params):
    # Low QRS voltage and ST shifts are amplitude and level: the linear stem's per-patch
    # LayerNorm maps a*x + c to (almost) the same token; the conv stem does not.
    ecg = _ecg(8)
    keep = jnp.ones((3, L, S))
    scaled = 0.3 * ecg + 0.2
    embed = lambda m, v, x: m.apply(v, x, keep > 0, method=lambda mod, e, o: mod.embed_tokens(e, o))
    lin = [np.asarray(embed(_model(), params["adaptive"], x)) for x in (ecg, scaled)]
    conv = [np.asarray(embed(_model(stem="conv"), conv_params, x)) for x in (ecg, scaled)]
    assert np.abs(lin[0] - lin[1]).max() < 1e-3
    assert np.abs(conv[0] - conv[1]).max() > 1e-1


def test_stem_errors_are_clear():
    with pytest.raises(ValueError, match="stem"):
        _model(stem="resnet").init(jax.random.key(0), _ecg(0), jnp.ones((3, L, S)))
    short = E.ECGEncoder(variant="mu", patch_size=5, max_segments=32, embed_dim=8, stem="conv")
    with pytest.raises(ValueError, match="too short for the conv stem"):
        short.init(jax.random.key(0), jnp.zeros((1, 160, L)), jnp.ones((1, L, 32)))
