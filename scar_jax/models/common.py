"""Shared building blocks: size presets, attention, masked pre-LN transformer, masked softmax.

Mixed precision (`dtype`, config `model.dtype`): parameters stay float32 (flax's
param_dtype) and so does the optimizer state; the Dense kernels and the attention's
q/k/v compute in `dtype`. The residual stream, LayerNorm statistics, attention
logits and softmax, pooling, heads and losses stay float32.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

# Large negative used instead of -inf so fully masked rows stay finite.
NEG_INF = -1e30

DTYPES = ("float32", "bfloat16", "auto")  # config model.dtype
# config model.attention: how attention is computed (see `attention`)
ATTENTION = ("xla", "cudnn", "auto", "einsum")
CUDNN_NEG = -float(2 << 40)  # masked keys' logit bias on the cuDNN path (as jax's for bf16)


def compute_dtype(name: str, backend: str | None = None) -> Any:
    """config model.dtype -> the compute dtype; 'auto' = bfloat16 off CPU, float32 on CPU.

    `backend` (default: jax.default_backend(), read when the model is built, so after
    jax.distributed.initialize) decides 'auto'.
    """
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}; expected one of {DTYPES}.")
    if name == "auto":
        name = "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
    return jnp.dtype(name)


def _einsum_attention(q, k, v, mask, bias):
    """The reference: float32 logits and softmax, masked keys at the most negative float."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    scores = scores * (q.shape[-1] ** -0.5)
    if bias is not None:
        scores = scores + bias
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def cudnn_bias(
    visible: jax.Array, key_bias: jax.Array | None, num_queries: int, dtype: Any
) -> jax.Array:
    """The cuDNN path's one additive bias [B, 1, Nq, Nk] in the inputs' dtype: key_bias, and
    CUDNN_NEG on keys that are not visible (cuDNN takes no boolean mask with a bias)."""
    bias = jnp.where(visible, 0.0 if key_bias is None else key_bias.astype(jnp.float32),
                     CUDNN_NEG)[:, None, None, :]
    b, nk = visible.shape
    return jnp.broadcast_to(bias, (b, 1, num_queries, nk)).astype(dtype)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    visible: jax.Array,
    key_bias: jax.Array | None = None,
    implementation: str = "xla",
) -> jax.Array:
    """Multi-head attention over the visible keys: q, k, v [B, N, H, Dh] -> [B, N, H, Dh].

    visible [B, Nk] bool: keys with False take no part (a row with no visible key attends
    uniformly, finite); key_bias [B, Nk] float32 is added to every query's logit of that key.
    implementation: 'xla' = jax.nn.dot_product_attention (float32 logits and softmax for
    bfloat16 inputs); 'cudnn' = its cuDNN flash attention (GPU, bfloat16/float16 only);
    'auto' = cuDNN on GPU with half-precision inputs when it accepts the shapes (at trace
    time), else xla; 'einsum' = the plain reference (float32 logits and softmax).
    """
    if implementation not in ATTENTION:
        raise ValueError(f"attention={implementation!r}; expected one of {ATTENTION}.")
    mask = visible[:, None, None, :]  # [B, 1, Nq, Nk] over heads and queries
    bias = None if key_bias is None else key_bias[:, None, None, :].astype(jnp.float32)
    if implementation == "einsum":
        return _einsum_attention(q, k, v, mask, bias)
    half = q.dtype in (jnp.bfloat16, jnp.float16)
    if implementation == "cudnn" or (
        implementation == "auto" and half and jax.default_backend() == "gpu"
    ):
        bias_c = cudnn_bias(visible, key_bias, q.shape[1], q.dtype)
        try:
            return jax.nn.dot_product_attention(q, k, v, bias=bias_c, implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError) as e:
            if implementation == "cudnn":
                raise
            logging.warning("cuDNN attention refused %s (%s); using XLA's.", q.shape, e)
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation="xla")


@dataclasses.dataclass(frozen=True)
class Variant:
    """Transformer size: width, depth, heads, MLP width."""

    width: int
    depth: int
    num_heads: int
    mlp_dim: int


_VARIANTS = {
    "mu": Variant(width=32, depth=2, num_heads=2, mlp_dim=64),
    "tiny": Variant(width=192, depth=12, num_heads=3, mlp_dim=768),
    "small": Variant(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "base": Variant(width=768, depth=12, num_heads=12, mlp_dim=3072),
}


def decode_variant(name: str) -> Variant:
    """'tiny' -> Variant(192, 12, 3, 768); 'tiny/4' overrides the depth to 4."""
    base, _, depth = name.partition("/")
    if base not in _VARIANTS:
        raise ValueError(
            f"Unknown model variant {name!r}; known: {sorted(_VARIANTS)} "
            "(optionally '<name>/<depth>', e.g. 'tiny/4')."
        )
    variant = _VARIANTS[base]
    if depth:
        if not depth.isdigit() or int(depth) < 1:
            raise ValueError(f"Bad depth in variant {name!r}: expected a positive integer.")
        variant = dataclasses.replace(variant, depth=int(depth))
    return variant


def masked_softmax(scores: jax.Array, visible: jax.Array, axis: int = -1) -> jax.Array:
    """Softmax over entries where `visible`; all-invisible rows give zeros."""
    scores = jnp.where(visible, scores, NEG_INF)
    scores = scores - jax.lax.stop_gradient(jnp.max(scores, axis=axis, keepdims=True))
    e = jnp.where(visible, jnp.exp(scores), 0.0)
    return e / jnp.maximum(jnp.sum(e, axis=axis, keepdims=True), 1e-30)


class MlpBlock(nn.Module):
    """Transformer MLP: [B, N, D] -> [B, N, D]."""

    mlp_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        d = x.shape[-1]
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        x = nn.Dropout(self.dropout)(x, deterministic)
        return nn.Dense(d, dtype=self.dtype, name="fc2")(x)


class EncoderBlock(nn.Module):
    """Pre-LN block; `visible` [B, N] bool excludes keys from attention.

    `key_bias` [B, N] (optional) is added to every query's attention logits of key n.
    `attention` picks the attention's implementation (see `attention`).
    """

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        visible: jax.Array,
        deterministic: bool = True,
        key_bias: jax.Array | None = None,
    ):
        attention_fn = functools.partial(
            _mha_attention, visible=visible, key_bias=key_bias, implementation=self.attention
        )
        y = nn.LayerNorm(name="ln1")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, attention_fn=attention_fn, name="attn"
        )(y, y, deterministic=True)
        x = x + nn.Dropout(self.dropout)(y, deterministic)
        y = nn.LayerNorm(name="ln2")(x)
        y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, name="mlp")(y, deterministic)
        return x + nn.Dropout(self.dropout)(y, deterministic)


def _mha_attention(query, key, value, *, visible, key_bias, implementation):
    """nn.MultiHeadDotProductAttention's attention_fn: `attention` on its q, k, v."""
    return attention(query, key, value, visible, key_bias, implementation)


class Encoder(nn.Module):
    """Stack of pre-LN blocks + final LayerNorm: [B, N, D] -> [B, N, D].

    `key_bias` [B, N] (optional) is added to the attention logits of every block.
    """

    depth: int
    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    remat: bool = False
    dtype: Any = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        visible: jax.Array,
        deterministic: bool = True,
        key_bias: jax.Array | None = None,
    ):
        block_cls = nn.remat(EncoderBlock, static_argnums=(3,)) if self.remat else EncoderBlock
        for i in range(self.depth):
            x = block_cls(
                self.num_heads, self.mlp_dim, self.dropout, self.dtype, self.attention,
                name=f"block_{i}",
            )(x, visible, deterministic, key_bias)
        return nn.LayerNorm(name="ln_final")(x)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) along `axis`."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))
