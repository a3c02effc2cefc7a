"""ECG tower: lead x time patch tokens, keep-weighted pre-LN transformer, adaptive selector.

Token (l, s) is patch s of lead l; tokens are flattened lead-major (n = l * S + s).
A keep weight k in [0, 1] per token scales its embedding; tokens with k = 0 are
excluded from attention (as keys) and from pooling, so their signal cannot leak.
With `keep_attention_grad` the keep weight also enters every attention and the
pooling as a log-weight whose forward value is zero (log k - stop_gradient(log k)):
the output is unchanged, but d/dk now carries the first-order effect of removing the
token from attention and pooling, not only of shrinking its embedding (the masker's
learning signal, METHOD §5).

With `normalize` (minmax | zscore, = config.input.normalize) the patches are normalised
inside the encoder over the kept tokens only, so a removed lead or span is one that was
never recorded (METHOD §2): embed_tokens(ecg, kept) sees no statistic of removed data.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scar_jax.leads import LEAD_NAMES, NUM_LEADS  # noqa: F401 (re-exported)
from scar_jax.models import common

SELECTOR_KINDS = ("adaptive", "mean", "cls")
STEMS = ("linear", "conv")
NORMALIZE_KINDS = ("minmax", "zscore", "none")  # in-encoder normalisation over kept tokens
NORMALIZE_EPS = 1e-6  # a spread (minmax) or std (zscore) at most this maps to 0, as at load
# The conv stem: (channels, kernel) of its 1-D convolutions, each stride 2, VALID padding.
CONV_STEM = ((16, 7), (32, 5))
# Input scales of the conv stem, for records min-max normalised to [0, 1] (typical beat
# amplitude ~0.25): the patch minus its level x4, the level minus 0.5 x4, the scale x10.
STEM_WAVE_SCALE, STEM_LEVEL_SCALE, STEM_SPREAD_SCALE = 4.0, 4.0, 10.0
# With in-encoder normalisation (normalize != 'none') the conv stem's waveform branch sees
# each patch standardised by its own spread (at least this floor), so its features do not
# depend on the record's normalisation: the level and scale features carry the voltage.
STEM_SPREAD_FLOOR = 1e-3


def patchify(ecg: jax.Array, patch_size: int) -> jax.Array:
    """ecg: [B, T, L] -> patches [B, L, S, P] with S = T // P (T must be a multiple of P)."""
    b, t, num_leads = ecg.shape
    if t % patch_size:
        raise ValueError(
            f"ECG length {t} is not a multiple of patch_size {patch_size}; crop or pad the "
            "record (padding marked unobserved) before the model."
        )
    return ecg.reshape(b, t // patch_size, patch_size, num_leads).transpose(0, 3, 1, 2)


def token_observed(
    lead_observed: jax.Array,
    num_samples: int,
    patch_size: int,
    time_observed: jax.Array | None = None,
) -> jax.Array:
    """lead_observed: [B, L] bool, time_observed: [B, T] bool | None -> [B, L, S] bool.

    A token is observed when its lead is observed and every sample of its patch is.
    """
    num_segments = num_samples // patch_size
    lead_observed = jnp.asarray(lead_observed, bool)
    if time_observed is None:
        seg = jnp.ones((lead_observed.shape[0], num_segments), bool)
    else:
        seg = jnp.asarray(time_observed, bool).reshape(-1, num_segments, patch_size).all(-1)
    return lead_observed[:, :, None] & seg[:, None, :]


def normalize_patches(
    patches: jax.Array, kept: jax.Array, kind: str, eps: float = NORMALIZE_EPS
) -> jax.Array:
    """patches [B, L, S, P], kept [B, L, S] bool -> patches normalised over the kept ones only.

    METHOD §2: a removed lead or span is one that was never recorded, so the statistics are
    those of the kept tokens: minmax maps the kept samples' record-wide min/max to [0, 1];
    zscore gives each lead mean 0, std 1 over its kept samples; none returns the patches.
    Tokens that are not kept become 0. Both are invariant to the affine map the loader's
    normalisation of the same kind applied (per record / per lead), so a record whose leads or
    spans are removed by a keep mask embeds exactly as one loaded without them.
    """
    if kind not in NORMALIZE_KINDS:
        raise ValueError(f"normalize={kind!r}; expected one of {NORMALIZE_KINDS}.")
    kept = jnp.asarray(kept, bool)
    patches = jnp.where(kept[..., None], patches, 0.0)
    if kind == "none":
        return patches
    if kind == "minmax":
        big = jnp.asarray(jnp.finfo(patches.dtype).max, patches.dtype)
        lo = jnp.min(jnp.where(kept, jnp.min(patches, -1), big), axis=(1, 2))
        hi = jnp.max(jnp.where(kept, jnp.max(patches, -1), -big), axis=(1, 2))
        spread = hi - lo
        inv = jnp.where(spread > eps, 1.0 / jnp.where(spread > eps, spread, 1.0), 0.0)
        out = (patches - lo[:, None, None, None]) * inv[:, None, None, None]
    else:
        w = kept.astype(patches.dtype)[..., None]  # [B, L, S, 1]
        n = jnp.maximum(jnp.sum(w, axis=(2, 3)) * patches.shape[-1], 1.0)
        mean = jnp.sum(patches * w, axis=(2, 3)) / n
        centred = patches - mean[:, :, None, None]
        sd = jnp.sqrt(jnp.sum(jnp.square(centred) * w, axis=(2, 3)) / n)
        inv = jnp.where(sd > eps, 1.0 / jnp.where(sd > eps, sd, 1.0), 0.0)
        out = centred * inv[:, :, None, None]
    return jnp.where(kept[..., None], out, 0.0)


def renormalized_level_spread(
    level: jax.Array,
    spread: jax.Array,
    pmin: jax.Array,
    pmax: jax.Array,
    kept: jax.Array,
    kind: str,
    eps: float = NORMALIZE_EPS,
) -> tuple[jax.Array, jax.Array]:
    """Per-token mean/std [B, L, S] of the patches after `normalize_patches(kind)` over `kept`.

    From the loaded patches' per-token level (mean), spread (std), min and max: the level
    and scale features of the conv stem for any kept set, without redoing the convolutions.
    Tokens that are not kept get 0.
    """
    kept = jnp.asarray(kept, bool)
    if kind == "none":
        return jnp.where(kept, level, 0.0), jnp.where(kept, spread, 0.0)
    if kind == "minmax":
        big = jnp.asarray(jnp.finfo(level.dtype).max, level.dtype)
        lo = jnp.min(jnp.where(kept, pmin, big), axis=(1, 2), keepdims=True)
        hi = jnp.max(jnp.where(kept, pmax, -big), axis=(1, 2), keepdims=True)
        rng = hi - lo
        inv = jnp.where(rng > eps, 1.0 / jnp.where(rng > eps, rng, 1.0), 0.0)
        new_level, new_spread = (level - lo) * inv, spread * inv
    elif kind == "zscore":  # every token has P samples: lead moments are token-moment means
        w = kept.astype(level.dtype)
        n = jnp.maximum(jnp.sum(w, -1, keepdims=True), 1.0)
        mean = jnp.sum(level * w, -1, keepdims=True) / n
        second = jnp.sum((jnp.square(spread) + jnp.square(level - mean)) * w, -1, keepdims=True)
        sd = jnp.sqrt(second / n)
        inv = jnp.where(sd > eps, 1.0 / jnp.where(sd > eps, sd, 1.0), 0.0)
        new_level, new_spread = (level - mean) * inv, spread * inv
    else:
        raise ValueError(f"normalize={kind!r}; expected one of {NORMALIZE_KINDS}.")
    return jnp.where(kept, new_level, 0.0), jnp.where(kept, new_spread, 0.0)


def gather_kept(
    x: jax.Array, keep: jax.Array, num_kept: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x: [B, N, D], keep: [B, N] -> (x_kept [B, K, D], valid [B, K] bool, idx [B, K]).

    Picks the tokens with keep > 0 first (in position order); if an example keeps
    fewer than K tokens the tail is padding with valid = False. Gradients reach the
    gathered keep weights.
    """
    n = keep.shape[-1]
    if not 0 < num_kept <= n:
        raise ValueError(f"num_kept={num_kept} must be in [1, {n}] (number of tokens).")
    # Kept tokens score 1 + a small position tie-break; top_k then keeps position order.
    order = (keep > 0).astype(jnp.float32) * 2.0 - jnp.arange(n, dtype=jnp.float32) / n
    _, idx = jax.lax.top_k(order, num_kept)
    x_kept = jnp.take_along_axis(x, idx[..., None], axis=1)
    valid = jnp.take_along_axis(keep > 0, idx, axis=1)
    return x_kept, valid, idx


class ECGEncoder(nn.Module):
    """ECG tower: [B, T, 12] + keep [B, 12, S] -> L2-normalised embedding [B, E]."""

    variant: str = "mu"
    patch_size: int = 100
    num_leads: int = NUM_LEADS
    max_segments: int = 50
    embed_dim: int = 256
    dropout: float = 0.0
    selector: str = "adaptive"
    selector_hidden: int = 128
    remat: bool = False
    keep_attention_grad: bool = True
    stem: str = "linear"
    normalize: str = "none"
    dtype: Any = jnp.float32  # compute dtype of the convs and Dense kernels (common.py)
    attention: str = "xla"  # common.attention's implementation

    def setup(self):
        if self.normalize not in NORMALIZE_KINDS:
            raise ValueError(f"normalize={self.normalize!r}; expected one of {NORMALIZE_KINDS}.")
        if self.selector not in SELECTOR_KINDS:
            raise ValueError(f"selector={self.selector!r}; expected one of {SELECTOR_KINDS}.")
        if self.stem not in STEMS:
            raise ValueError(f"stem={self.stem!r}; expected one of {STEMS}.")
        v = common.decode_variant(self.variant)
        init = nn.initializers.normal(0.02)
        if self.stem == "linear":
            self.patch_norm = nn.LayerNorm()
        else:
            length = self.patch_size
            for _, kernel in CONV_STEM:
                length = (length - kernel) // 2 + 1
            if length < 1:
                raise ValueError(
                    f"patch_size={self.patch_size} is too short for the conv stem "
                    f"{CONV_STEM} (stride 2 each); use a longer patch or stem='linear'."
                )
            self.stem_convs = [
                nn.Conv(ch, (k,), strides=(2,), padding="VALID", dtype=self.dtype)
                for ch, k in CONV_STEM
            ]
        self.patch_embed = nn.Dense(v.width, dtype=self.dtype)
        self.lead_embed = self.param("lead_embed", init, (self.num_leads, v.width))
        self.time_embed = self.param("time_embed", init, (self.max_segments, v.width))
        if self.selector == "cls":
            self.cls = self.param("cls", init, (1, 1, v.width))
        self.encoder = common.Encoder(
            v.depth, v.num_heads, v.mlp_dim, self.dropout, self.remat, self.dtype, self.attention
        )
        if self.selector == "adaptive":
            self.selector_fc1 = nn.Dense(self.selector_hidden)
            self.selector_fc2 = nn.Dense(1)
        self.head = nn.Dense(self.embed_dim)

    def _conv_waveform(
        self, patches: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """patches [B, L, S, P] -> (pooled CNN features [B, L, S, 2C], level, spread [B, L, S]).

        Shift-invariant waveform features: max and mean over positions of a small 1-D CNN on
        the patch minus its level, scaled by STEM_WAVE_SCALE (normalize='none', the first
        build's stem) or divided by its own spread (in-encoder normalisation: the features
        then do not depend on the record's normalisation).
        """
        b, num_leads, s, p = patches.shape
        level = jnp.mean(patches, -1, keepdims=True)
        spread = jnp.std(patches, -1, keepdims=True)
        if self.normalize == "none":
            h = (patches - level) * STEM_WAVE_SCALE
        else:
            h = (patches - level) / jnp.maximum(spread, STEM_SPREAD_FLOOR)
        h = h.reshape(-1, p, 1)
        for conv in self.stem_convs:
            h = nn.gelu(conv(h), approximate=False)
        pooled = jnp.concatenate([jnp.max(h, 1), jnp.mean(h, 1)], -1).reshape(b, num_leads, s, -1)
        return pooled, level[..., 0], spread[..., 0]

    def _conv_stem(self, patches: jax.Array) -> jax.Array:
        """patches [B, L, S, P] -> per-token features [B, L, S, 2C + 2] of the conv stem.

        The waveform features plus the level and scale a patch LayerNorm would discard
        (voltage and baseline are diagnostic: low QRS voltage, ST shift).
        """
        pooled, level, spread = self._conv_waveform(patches)
        return self._conv_features(pooled, level, spread)

    @staticmethod
    def _conv_features(pooled: jax.Array, level: jax.Array, spread: jax.Array) -> jax.Array:
        """Waveform features [B, L, S, 2C] + level, spread [B, L, S] -> [B, L, S, 2C + 2]."""
        return jnp.concatenate(
            [
                pooled,
                (level[..., None] - 0.5) * STEM_LEVEL_SCALE,
                spread[..., None] * STEM_SPREAD_SCALE,
            ],
            -1,
        )

    def embed_tokens(self, ecg: jax.Array, observed: jax.Array) -> jax.Array:
        """ecg: [B, T, L], observed: [B, L, S] -> token embeddings [B, L*S, D] (not keep-scaled).

        Unobserved patches are zeroed first, so NaN or garbage there never propagates. With
        `normalize` (minmax | zscore) the patches are normalised over the `observed` tokens
        only: pass the kept tokens (keep > 0) to embed a record as if the removed tokens had
        never been recorded (METHOD §2); tokens embedded for one keep set are not valid for
        another.
        """
        return self.tokens_from_stem(self.stem_features(ecg, observed), observed)

    def stem_features(self, ecg: jax.Array, observed: jax.Array) -> dict[str, jax.Array]:
        """The stem's work on the `observed` tokens that no kept subset changes.

        ecg [B, T, L], observed [B, L, S] -> {'patches' [B, L, S, P] (zero where unobserved),
        'observed'; conv stem: 'pooled' waveform features, per-token 'level', 'spread',
        'min', 'max'}. `tokens_from_stem(features, kept)` then embeds any kept subset as
        `embed_tokens(ecg, kept)` would, without re-running the convolutions.
        """
        patches = patchify(ecg, self.patch_size)
        _, num_leads, s, _ = patches.shape
        if num_leads != self.num_leads:
            raise ValueError(
                f"ECG has {num_leads} leads; this encoder was built for "
                f"{self.num_leads} (mark absent leads unobserved instead)."
            )
        if s > self.max_segments:
            raise ValueError(
                f"{s} segments of {self.patch_size} samples exceed max_segments="
                f"{self.max_segments}; raise model.ecg.max_segments."
            )
        observed = jnp.asarray(observed, bool)
        patches = jnp.where(observed[..., None], patches, 0.0)
        out = {"patches": patches, "observed": observed}
        if self.stem == "conv":
            out["pooled"], out["level"], out["spread"] = self._conv_waveform(patches)
            out["min"], out["max"] = jnp.min(patches, -1), jnp.max(patches, -1)
        return out

    def tokens_from_stem(self, features: dict[str, jax.Array], kept: jax.Array) -> jax.Array:
        """Token embeddings [B, L*S, D] of the kept tokens (a subset of the observed ones),
        normalised over them only (METHOD §2)."""
        kept = jnp.asarray(kept, bool) & features["observed"]
        patches = features["patches"]
        b, num_leads, s, _ = patches.shape
        if self.stem == "linear":
            x = self.patch_norm(normalize_patches(patches, kept, self.normalize))
        else:
            level, spread = renormalized_level_spread(
                features["level"], features["spread"], features["min"], features["max"],
                kept, self.normalize,
            )
            pooled = features["pooled"]
            if self.normalize != "none":  # (none: the first build's stem, unchanged)
                pooled = jnp.where(kept[..., None], pooled, 0.0)
            x = self._conv_features(pooled, level, spread)
        x = self.patch_embed(x)
        x = x + self.lead_embed[None, :, None, :] + self.time_embed[None, None, :s, :]
        return x.reshape(b, num_leads * s, -1)

    def encode(
        self,
        tokens: jax.Array,
        keep: jax.Array,
        *,
        deterministic: bool = True,
        num_kept: int | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """tokens: [B, N, D], keep: [B, L, S] in [0, 1] -> (embedding [B, E], aux).

        With `num_kept` (static) the kept tokens are gathered into a length-K sequence
        first; for a hard keep mask with at most K kept tokens this equals the masked
        computation.
        """
        keep = keep.reshape(keep.shape[0], -1).astype(tokens.dtype)
        x = tokens * keep[..., None]
        visible = keep > 0
        idx = None
        kept = keep
        if num_kept is not None:
            x, visible, idx = gather_kept(x, keep, num_kept)
            kept = jnp.take_along_axis(keep, idx, axis=1)
        key_bias = None
        if self.keep_attention_grad:
            log_k = jnp.log(jnp.where(visible, kept, 1.0))
            key_bias = jnp.where(visible, log_k - jax.lax.stop_gradient(log_k), 0.0)
        if self.selector == "cls":
            cls = jnp.broadcast_to(self.cls, (x.shape[0], 1, x.shape[-1])).astype(x.dtype)
            x = jnp.concatenate([cls, x], axis=1)
            visible = jnp.concatenate([jnp.ones((x.shape[0], 1), bool), visible], axis=1)
            if key_bias is not None:
                key_bias = jnp.concatenate([jnp.zeros_like(key_bias[:, :1]), key_bias], axis=1)
        h = self.encoder(x, visible, deterministic, key_bias)
        if self.selector == "cls":
            pooled, h, visible = h[:, 0], h[:, 1:], visible[:, 1:]
            weights = jnp.zeros(visible.shape, h.dtype)
        else:
            if self.selector == "adaptive":
                scores = self.selector_fc2(nn.gelu(self.selector_fc1(h), approximate=False))[..., 0]
            else:
                scores = jnp.zeros(visible.shape, h.dtype)
            if key_bias is not None:
                scores = scores + key_bias
            weights = common.masked_softmax(scores, visible)
            pooled = jnp.einsum("bn,bnd->bd", weights, h)
        z = common.l2_normalize(self.head(pooled))
        aux = {
            "tokens": x,
            "keep": keep,
            "visible": visible,
            "encoded": h,
            "weights": weights,
            "pre_logits": pooled,
        }
        if idx is not None:
            aux["gather_idx"] = idx
        return z, aux

    def project(self, x: jax.Array) -> jax.Array:
        """Projection head + L2 norm: [..., D] -> [..., E] (pooled features or single tokens)."""
        return common.l2_normalize(self.head(x))

    def __call__(
        self,
        ecg: jax.Array,
        keep: jax.Array,
        *,
        deterministic: bool = True,
        num_kept: int | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """ecg: [B, T, 12], keep: [B, 12, S] -> (embedding [B, E], aux)."""
        tokens = self.embed_tokens(ecg, keep > 0)
        return self.encode(tokens, keep, deterministic=deterministic, num_kept=num_kept)
