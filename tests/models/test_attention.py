"""common.attention (jax.nn.dot_product_attention) equals the einsum reference and flax's
attention, with padding masks, key biases and fully masked rows, in both towers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scar_jax.models import common
from scar_jax.models import ecg_encoder as E
from scar_jax.models import text_encoder as te

B, N, H, D = 3, 10, 2, 8


def _inputs(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(B, N, H, D)), dtype) for _ in range(3))
    visible = rng.random((B, N)) > 0.3
    visible[0, 0] = True
    visible[2] = False  # an example with no visible key: finite, uniform over the keys
    bias = jnp.asarray(rng.normal(size=(B, N)), jnp.float32)
    return q, k, v, jnp.asarray(visible), bias


def _numpy_attention(q, k, v, visible, bias):
    """softmax(q k^T / sqrt(D) + bias) v over visible keys; no visible key: uniform."""
    q, k, v, bias = (np.asarray(x, np.float64) for x in (q, k, v, bias))
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D) + bias[:, None, None, :]
    vis = np.asarray(visible)[:, None, None, :]
    s = np.where(vis, s, -np.inf)
    s = np.where(vis.any(-1, keepdims=True), s, 0.0)  # all masked: equal logits
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("impl", ["xla", "auto", "einsum"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_attention_matches_numpy(impl, with_bias):
    q, k, v, visible, bias = _inputs()
    bias = bias if with_bias else None
    got = common.attention(q, k, v, visible, bias, impl)
    want = _numpy_attention(q, k, v, visible, np.zeros((B, N)) if bias is None else bias)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-6)


def test_xla_equals_einsum_and_flax_with_gradients():
    """Values and gradients w.r.t. q, k, v and the key bias (the masker's signal)."""
    q, k, v, visible, bias = _inputs()
    mask = visible[:, None, None, :]

    def loss(fn):
        return lambda *a: jnp.sum(jnp.sin(fn(*a)))

    xla = lambda q, k, v, b: common.attention(q, k, v, visible, b, "xla")
    ein = lambda q, k, v, b: common.attention(q, k, v, visible, b, "einsum")
    flax_ref = lambda q, k, v, b: nn.dot_product_attention(q, k, v, bias=b[:, None, None, :],
                                                           mask=mask)  # the previous ECG path
    args = (q, k, v, bias)
    want = jax.grad(loss(ein), argnums=(0, 1, 2, 3))(*args)
    for fn in (xla, flax_ref):
        np.testing.assert_allclose(np.asarray(fn(*args)), np.asarray(ein(*args)), atol=1e-6)
        got = jax.grad(loss(fn), argnums=(0, 1, 2, 3))(*args)
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5)


def test_bfloat16_inputs_keep_float32_softmax():
    """bf16 q, k, v: xla and einsum agree to bf16's output rounding (float32 softmax inside)."""
    q, k, v, visible, bias = _inputs(jnp.bfloat16)
    got = common.attention(q, k, v, visible, bias, "xla")
    ref = common.attention(q, k, v, visible, bias, "einsum")
    assert got.dtype == jnp.bfloat16
    exact = _numpy_attention(q.astype(jnp.float32), k.astype(jnp.float32),
                             v.astype(jnp.float32), visible, bias)
    # |out| <= max|v| ~ 3: one bf16 rounding of the output is <= 3 * 2^-8
    for out in (got, ref):
        np.testing.assert_allclose(np.asarray(out, np.float32), exact, atol=3 * 2.0**-8)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_cudnn_additive_bias_equals_the_masked_attention(dtype):
    """The cuDNN path folds the key mask into its one additive bias (CPU has no cuDNN: the
    bias is checked through XLA's attention): the same output as mask + key bias."""
    q, k, v, visible, bias = _inputs(dtype)
    additive = common.cudnn_bias(visible, bias, N, dtype)
    assert additive.shape == (B, 1, N, N) and additive.dtype == dtype
    got = jax.nn.dot_product_attention(q, k, v, bias=additive, implementation="xla")
    want = common.attention(q, k, v, visible, bias, "xla")
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               atol=1e-6 if dtype == jnp.float32 else 3 * 2.0**-8)


def test_unknown_implementation_fails():
    q, k, v, visible, _ = _inputs()
    with pytest.raises(ValueError, match="attention='flash'"):
        common.attention(q, k, v, visible, None, "flash")
    with pytest.raises(ValueError, match="model.dtype"):
        common.compute_dtype("float16")
    assert common.compute_dtype("auto", "cpu") == jnp.float32
    assert common.compute_dtype("auto", "gpu") == jnp.bfloat16
    assert common.compute_dtype("auto", "tpu") == jnp.bfloat16


def test_ecg_tower_xla_equals_einsum_with_removed_and_gathered_tokens():
    """The ECG tower on the same parameters: removed tokens (key mask), soft keep weights
    (key bias) and the gathered masked view give the same embedding and keep gradient."""
    p, s = 20, 8
    kw = dict(variant="mu", patch_size=p, max_segments=s, embed_dim=16, selector_hidden=8)
    ecg = jnp.asarray(np.random.default_rng(1).normal(size=(3, p * s, 12)), jnp.float32)
    keep = np.ones((3, 12, s), np.float32)
    keep[0, 3:7] = 0.0  # leads removed
    keep[1, :, 2:5] = 0.0  # a span removed
    keep[2] = np.random.default_rng(2).uniform(0.2, 1.0, (12, s))  # soft weights
    keep = jnp.asarray(keep)
    models = {a: E.ECGEncoder(attention=a, **kw) for a in ("xla", "einsum")}
    variables = models["xla"].init(jax.random.key(0), ecg, keep)
    for num_kept in (None, 96):
        keep_nk = keep if num_kept is None else keep.at[2].set(1.0).at[2, :4].set(0.0)
        f = lambda a, kp: jnp.sum(models[a].apply(variables, ecg, kp, num_kept=num_kept)[0] ** 3)
        z = {a: models[a].apply(variables, ecg, keep_nk, num_kept=num_kept)[0] for a in models}
        np.testing.assert_allclose(np.asarray(z["xla"]), np.asarray(z["einsum"]), atol=1e-6)
        g = {a: jax.grad(f, argnums=1)(a, keep_nk) for a in models}
        np.testing.assert_allclose(np.asarray(g["xla"]), np.asarray(g["einsum"]), atol=1e-5)


def test_text_tower_xla_equals_einsum_with_padding():
    config = te.BertConfig.tiny()
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 99, (3, 9)), jnp.int32)
    mask = jnp.asarray([[1] * 9, [1] * 4 + [0] * 5, [1] + [0] * 8], jnp.int32)
    modules = {a: te.BertEncoder(config, pooling="mean", attention=a) for a in ("xla", "einsum")}
    variables = modules["xla"].init(jax.random.key(0), ids, mask)
    out = {a: modules[a].apply(variables, ids, mask) for a in modules}
    np.testing.assert_allclose(np.asarray(out["xla"][0]), np.asarray(out["einsum"][0]),
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["xla"][1]["hidden"]),
                               np.asarray(out["einsum"][1]["hidden"]), atol=1e-5)
