"""Shared building blocks: size presets, masked pre-LN transformer, masked softmax."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Large negative used instead of -inf so fully masked rows stay finite.
NEG_INF = -1e30


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
    """

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        visible: jax.Array,
        deterministic: bool = True,
        key_bias: jax.Array | None = None,
    ):
        mask = visible[:, None, None, :]  # [B, 1, Nq, Nk] broadcast over heads and queries.
        attention_fn = nn.dot_product_attention
        if key_bias is not None:
            attention_fn = functools.partial(attention_fn, bias=key_bias[:, None, None, :])
        y = nn.LayerNorm(name="ln1")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, attention_fn=attention_fn, name="attn"
        )(y, y, mask=mask, deterministic=True)
        x = x + nn.Dropout(self.dropout)(y, deterministic)
        y = nn.LayerNorm(name="ln2")(x)
        y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, name="mlp")(y, deterministic)
        return x + nn.Dropout(self.dropout)(y, deterministic)


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
                self.num_heads, self.mlp_dim, self.dropout, self.dtype, name=f"block_{i}"
            )(x, visible, deterministic, key_bias)
        return nn.LayerNorm(name="ln_final")(x)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) along `axis`."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))
