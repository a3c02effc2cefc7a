"""SCAR's ECG tower and text projection head in plain PyTorch (exported beside their weights).

This file depends only on torch (safetensors is imported only to read weights). The
export copies it verbatim into the output folder as `ecg_tower.py`. It mirrors
`scar_jax.models.ecg_encoder.ECGEncoder` at inference: lead x time patch tokens
(flattened lead-major, n = l * S + s), token embedding Dense(LayerNorm(patch)) + lead
and time embeddings, keep weights that scale the embeddings and exclude k = 0 tokens from
attention and pooling, a pre-LN transformer, the selector (adaptive / mean / cls), the
projection head and L2 normalisation.

    tower = load_ecg_tower(folder)          # strict state-dict load, eval mode
    z = tower(ecg, lead_observed)           # ecg [B, T, 12], lead_observed [B, 12] bool
"""

from __future__ import annotations

import json
import math
import pathlib

import torch
from torch import nn
from torch.nn import functional as F

NUM_LEADS = 12
LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
SELECTOR_KINDS = ("adaptive", "mean", "cls")
POOLINGS = ("cls", "pooler", "mean")
LAYER_NORM_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon
# The conv stem (mirrors scar_jax.models.ecg_encoder; a test checks they agree).
STEMS = ("linear", "conv")
# In-tower normalisation over the kept tokens (mirrors scar_jax.models.ecg_encoder).
NORMALIZE_KINDS = ("minmax", "zscore", "none")
NORMALIZE_EPS = 1e-6
CONV_STEM = ((16, 7), (32, 5))  # (channels, kernel), stride 2, no padding
STEM_WAVE_SCALE, STEM_LEVEL_SCALE, STEM_SPREAD_SCALE = 4.0, 4.0, 10.0
STEM_SPREAD_FLOOR = 1e-3  # normalize != 'none': the waveform branch divides by max(spread, this)
NEG_INF = -1e30  # selector softmax fill for invisible tokens (as scar_jax.models.common)
LOGIT_SCALE_MAX = 100.0  # the learned logit scale is capped at this (as scar_jax.losses)
ECG_CONFIG = "ecg_tower.json"
ECG_WEIGHTS = "ecg_tower.safetensors"
TEXT_HEAD_CONFIG = "text_head.json"
TEXT_HEAD_WEIGHTS = "text_head.safetensors"


def patchify(ecg: torch.Tensor, patch_size: int) -> torch.Tensor:
    """ecg: [B, T, L] -> patches [B, L, S, P] with S = T // P (T must be a multiple of P)."""
    b, t, num_leads = ecg.shape
    if t % patch_size:
        raise ValueError(
            f"ECG length {t} is not a multiple of patch_size {patch_size}; crop the record, "
            "or pad it and mark the padding unobserved in time_observed."
        )
    return ecg.reshape(b, t // patch_size, patch_size, num_leads).permute(0, 3, 1, 2)


def token_observed(
    lead_observed: torch.Tensor,
    num_samples: int,
    patch_size: int,
    time_observed: torch.Tensor | None = None,
) -> torch.Tensor:
    """lead_observed: [B, L] bool, time_observed: [B, T] bool | None -> [B, L, S] bool.

    A token is observed when its lead is observed and every sample of its patch is.
    """
    num_segments = num_samples // patch_size
    lead_observed = lead_observed.to(torch.bool)
    if time_observed is None:
        seg = torch.ones(
            (lead_observed.shape[0], num_segments), dtype=torch.bool, device=lead_observed.device
        )
    else:
        seg = time_observed.to(torch.bool).reshape(-1, num_segments, patch_size).all(-1)
    return lead_observed[:, :, None] & seg[:, None, :]


def masked_softmax(scores: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where `visible`; all-invisible rows give zeros."""
    scores = torch.where(visible, scores, torch.full_like(scores, NEG_INF))
    scores = scores - scores.max(dim=-1, keepdim=True).values
    e = torch.where(visible, torch.exp(scores), torch.zeros_like(scores))
    return e / e.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||, eps) along the last axis: [..., E] -> [..., E]."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True).clamp_min(eps * eps))


class Attention(nn.Module):
    """Multi-head self-attention; keys with visible = False get the most negative float."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width={width} is not a multiple of num_heads={num_heads}.")
        self.num_heads = num_heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D], visible: [B, N] bool -> [B, N, D]."""
        b, n, d = x.shape
        split = lambda y: y.reshape(b, n, self.num_heads, d // self.num_heads)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        q = q / math.sqrt(d // self.num_heads)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k)
        scores = scores.masked_fill(~visible[:, None, None, :], torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1)
        return self.out(torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, n, d))


class Mlp(nn.Module):
    """Transformer MLP with exact GELU: [B, N, D] -> [B, N, D]."""

    def __init__(self, width: int, mlp_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: [B, N, D], visible [B, N] -> [B, N, D]."""

    def __init__(self, width: int, num_heads: int, mlp_dim: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = Attention(width, num_heads)
        self.ln2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(width, mlp_dim)

    def forward(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D], visible: [B, N] bool -> [B, N, D]."""
        x = x + self.attn(self.ln1(x), visible)
        return x + self.mlp(self.ln2(x))


def normalize_patches(
    patches: torch.Tensor, kept: torch.Tensor, kind: str, eps: float = NORMALIZE_EPS
) -> torch.Tensor:
    """patches [B, L, S, P], kept [B, L, S] bool -> normalised over the kept tokens only.

    minmax: the kept samples' record-wide min/max -> [0, 1]; zscore: mean 0, std 1 per lead
    over its kept samples; none: unchanged. Tokens not kept become 0. A removed lead or span
    is thus one that was never recorded.
    """
    if kind not in NORMALIZE_KINDS:
        raise ValueError(f"normalize={kind!r}; expected one of {NORMALIZE_KINDS}.")
    keep4 = kept[..., None]
    patches = torch.where(keep4, patches, torch.zeros_like(patches))
    if kind == "none":
        return patches
    if kind == "minmax":
        big = torch.finfo(patches.dtype).max
        lo = torch.where(kept, patches.amin(-1), torch.full_like(patches[..., 0], big))
        hi = torch.where(kept, patches.amax(-1), torch.full_like(patches[..., 0], -big))
        lo, hi = lo.amin((1, 2)), hi.amax((1, 2))
        spread = hi - lo
        inv = torch.where(spread > eps, 1.0 / torch.where(spread > eps, spread, 1.0), 0.0)
        out = (patches - lo[:, None, None, None]) * inv[:, None, None, None]
    else:
        w = kept.to(patches.dtype)[..., None]
        n = torch.clamp(w.sum((2, 3)) * patches.shape[-1], min=1.0)
        mean = (patches * w).sum((2, 3)) / n
        centred = patches - mean[:, :, None, None]
        sd = torch.sqrt((centred.square() * w).sum((2, 3)) / n)
        inv = torch.where(sd > eps, 1.0 / torch.where(sd > eps, sd, 1.0), 0.0)
        out = centred * inv[:, :, None, None]
    return torch.where(keep4, out, torch.zeros_like(out))


def renormalized_level_spread(
    level: torch.Tensor,
    spread: torch.Tensor,
    pmin: torch.Tensor,
    pmax: torch.Tensor,
    kept: torch.Tensor,
    kind: str,
    eps: float = NORMALIZE_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token mean/std [B, L, S] of the patches after normalize_patches(kind) over `kept`,
    from the loaded patches' per-token mean, std, min and max (0 where not kept)."""
    zero = torch.zeros_like(level)
    if kind == "none":
        return torch.where(kept, level, zero), torch.where(kept, spread, zero)
    if kind == "minmax":
        big = torch.finfo(level.dtype).max
        lo = torch.where(kept, pmin, torch.full_like(pmin, big)).amin((1, 2), keepdim=True)
        hi = torch.where(kept, pmax, torch.full_like(pmax, -big)).amax((1, 2), keepdim=True)
        rng = hi - lo
        inv = torch.where(rng > eps, 1.0 / torch.where(rng > eps, rng, 1.0), 0.0)
        new_level, new_spread = (level - lo) * inv, spread * inv
    elif kind == "zscore":
        w = kept.to(level.dtype)
        n = torch.clamp(w.sum(-1, keepdim=True), min=1.0)
        mean = (level * w).sum(-1, keepdim=True) / n
        second = ((spread.square() + (level - mean).square()) * w).sum(-1, keepdim=True)
        sd = torch.sqrt(second / n)
        inv = torch.where(sd > eps, 1.0 / torch.where(sd > eps, sd, 1.0), 0.0)
        new_level, new_spread = (level - mean) * inv, spread * inv
    else:
        raise ValueError(f"normalize={kind!r}; expected one of {NORMALIZE_KINDS}.")
    return torch.where(kept, new_level, zero), torch.where(kept, new_spread, zero)


class ECGTower(nn.Module):
    """SCAR ECG tower: ecg [B, T, 12] (+ observed/keep masks) -> L2-normalised [B, E]."""

    def __init__(
        self,
        *,
        width: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        patch_size: int = 100,
        num_leads: int = NUM_LEADS,
        max_segments: int = 50,
        embed_dim: int = 256,
        selector: str = "adaptive",
        selector_hidden: int = 128,
        stem: str = "linear",
        normalize: str = "none",
    ):
        super().__init__()
        if normalize not in NORMALIZE_KINDS:
            raise ValueError(f"normalize={normalize!r}; expected one of {NORMALIZE_KINDS}.")
        self.normalize = normalize
        if selector not in SELECTOR_KINDS:
            raise ValueError(f"selector={selector!r}; expected one of {SELECTOR_KINDS}.")
        if stem not in STEMS:
            raise ValueError(f"stem={stem!r}; expected one of {STEMS}.")
        self.patch_size = patch_size
        self.num_leads = num_leads
        self.max_segments = max_segments
        self.selector = selector
        self.stem_kind = stem
        if stem == "linear":
            self.patch_norm = nn.LayerNorm(patch_size, eps=LAYER_NORM_EPS)
            self.patch_embed = nn.Linear(patch_size, width)
        else:
            channels = [1] + [ch for ch, _ in CONV_STEM]
            self.stem = nn.ModuleList(
                nn.Conv1d(channels[i], ch, k, stride=2) for i, (ch, k) in enumerate(CONV_STEM)
            )
            self.patch_embed = nn.Linear(2 * channels[-1] + 2, width)
        self.lead_embed = nn.Parameter(torch.zeros(num_leads, width))
        self.time_embed = nn.Parameter(torch.zeros(max_segments, width))
        if selector == "cls":
            self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_dim) for _ in range(depth))
        self.ln_final = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        if selector == "adaptive":
            self.selector_fc1 = nn.Linear(width, selector_hidden)
            self.selector_fc2 = nn.Linear(selector_hidden, 1)
        self.head = nn.Linear(width, embed_dim)

    def conv_stem(self, patches: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """patches [B, L, S, P] (zero where unobserved), kept [B, L, S] -> conv-stem token
        features [B, L, S, 2C + 2], level and scale normalised over the kept tokens."""
        b, num_leads, s, p = patches.shape
        level = patches.mean(-1, keepdim=True)
        spread = patches.std(-1, keepdim=True, unbiased=False)
        if self.normalize == "none":
            h = (patches - level) * STEM_WAVE_SCALE
        else:
            h = (patches - level) / torch.clamp(spread, min=STEM_SPREAD_FLOOR)
        h = h.reshape(-1, 1, p)
        for conv in self.stem:
            h = F.gelu(conv(h))
        pooled = torch.cat([h.amax(-1), h.mean(-1)], -1).reshape(b, num_leads, s, -1)
        if self.normalize != "none":
            pooled = torch.where(kept[..., None], pooled, torch.zeros_like(pooled))
        lv, sp = renormalized_level_spread(
            level[..., 0], spread[..., 0], patches.amin(-1), patches.amax(-1), kept,
            self.normalize,
        )
        return torch.cat(
            [pooled, (lv[..., None] - 0.5) * STEM_LEVEL_SCALE, sp[..., None] * STEM_SPREAD_SCALE],
            -1,
        )

    def embed_tokens(self, ecg: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """ecg: [B, T, L], observed: [B, L, S] bool -> token embeddings [B, L*S, D].

        Unobserved patches are zeroed first, so NaN or garbage there never propagates; with
        `normalize` the patches are normalised over the `observed` (kept) tokens only.
        """
        patches = patchify(ecg, self.patch_size)
        b, num_leads, s, _ = patches.shape
        if num_leads != self.num_leads:
            raise ValueError(
                f"ECG has {num_leads} leads; this tower was built for {self.num_leads} "
                f"(order {LEAD_NAMES}; mark absent leads unobserved instead of dropping them)."
            )
        if s > self.max_segments:
            raise ValueError(
                f"{s} segments of {self.patch_size} samples exceed max_segments="
                f"{self.max_segments}; crop the record to at most "
                f"{self.max_segments * self.patch_size} samples."
            )
        if self.stem_kind == "linear":
            x = self.patch_embed(self.patch_norm(normalize_patches(patches, observed,
                                                                   self.normalize)))
        else:
            patches = torch.where(observed[..., None], patches, torch.zeros_like(patches))
            x = self.patch_embed(self.conv_stem(patches, observed))
        x = x + self.lead_embed[None, :, None, :] + self.time_embed[None, None, :s, :]
        return x.reshape(b, num_leads * s, -1)

    def encode(
        self, tokens: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """tokens: [B, N, D], keep: [B, L, S] in [0, 1] -> (embedding [B, E], aux)."""
        keep = keep.reshape(keep.shape[0], -1).to(tokens.dtype)
        x = tokens * keep[..., None]
        visible = keep > 0
        if self.selector == "cls":
            x = torch.cat([self.cls.expand(x.shape[0], 1, x.shape[-1]).to(x.dtype), x], dim=1)
            ones = torch.ones((x.shape[0], 1), dtype=torch.bool, device=x.device)
            visible = torch.cat([ones, visible], dim=1)
        h = x
        for block in self.blocks:
            h = block(h, visible)
        h = self.ln_final(h)
        if self.selector == "cls":
            pooled, h, visible = h[:, 0], h[:, 1:], visible[:, 1:]
            weights = torch.zeros(visible.shape, dtype=h.dtype, device=h.device)
        else:
            if self.selector == "adaptive":
                scores = self.selector_fc2(F.gelu(self.selector_fc1(h)))[..., 0]
            else:
                scores = torch.zeros(visible.shape, dtype=h.dtype, device=h.device)
            weights = masked_softmax(scores, visible)
            pooled = torch.einsum("bn,bnd->bd", weights, h)
        z = l2_normalize(self.head(pooled))
        aux = {
            "keep": keep,
            "visible": visible,
            "encoded": h,
            "weights": weights,
            "pre_logits": pooled,
        }
        return z, aux

    def embed(
        self,
        ecg: torch.Tensor,
        lead_observed: torch.Tensor,
        time_observed: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ecg [B, T, 12], lead_observed [B, 12], time_observed [B, T], keep [B, 12, S] -> (z, aux).

        `keep` removes further tokens (0 = removed) on top of the observed ones.
        """
        observed = token_observed(lead_observed, ecg.shape[1], self.patch_size, time_observed)
        keep_w = observed.to(ecg.dtype) if keep is None else keep.to(ecg.dtype) * observed
        tokens = self.embed_tokens(ecg, keep_w > 0)
        return self.encode(tokens, keep_w)

    def forward(
        self,
        ecg: torch.Tensor,
        lead_observed: torch.Tensor,
        time_observed: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ecg [B, T, 12], lead_observed [B, 12] bool (, time_observed [B, T], keep [B, 12, S])
        -> L2-normalised embedding [B, E]."""
        return self.embed(ecg, lead_observed, time_observed, keep)[0]


class TextHead(nn.Module):
    """Pooling of BertModel outputs + projection + L2 norm -> [B, E]; holds the logit scale."""

    def __init__(self, *, hidden_size: int, embed_dim: int, pooling: str, loss: str = "clip",
                 head_bias: bool = True, normalize_features: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}.")
        self.pooling = pooling
        self.loss = loss
        self.normalize_features = normalize_features  # L2-normalise the pooled features first
        self.proj = nn.Linear(hidden_size, embed_dim, bias=head_bias)
        self.logit_scale = nn.Parameter(torch.zeros(()))  # log of the scale, uncapped
        if loss == "siglip":
            self.logit_bias = nn.Parameter(torch.zeros(()))

    def pool(
        self,
        last_hidden_state: torch.Tensor,
        attention_mask: torch.Tensor,
        pooler_output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """BertModel outputs [B, L, H], mask [B, L] (, pooler [B, H]) -> pooled [B, H]."""
        if self.pooling == "cls":
            return last_hidden_state[:, 0]
        if self.pooling == "pooler":
            if pooler_output is None:
                raise ValueError("pooling='pooler' needs BertModel's pooler_output.")
            return pooler_output
        m = attention_mask.to(last_hidden_state.dtype)[..., None]
        return (last_hidden_state * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(
        self,
        last_hidden_state: torch.Tensor,
        attention_mask: torch.Tensor,
        pooler_output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """BertModel outputs -> L2-normalised text embedding [B, E]."""
        pooled = self.pool(last_hidden_state, attention_mask, pooler_output)
        if self.normalize_features:
            pooled = l2_normalize(pooled)
        return l2_normalize(self.proj(pooled))

    def logits(self, z_ecg: torch.Tensor, z_txt: torch.Tensor) -> torch.Tensor:
        """ECG-text similarity logits [B_ecg, B_txt] with the learned (capped) scale."""
        scale = torch.exp(self.logit_scale.clamp(max=math.log(LOGIT_SCALE_MAX)))
        logits = scale * z_ecg @ z_txt.T
        return logits + self.logit_bias if self.loss == "siglip" else logits


def _load_strict(module: nn.Module, weights: pathlib.Path) -> nn.Module:
    """Loads safetensors weights with strict=True; returns the module in eval mode."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(weights)), strict=True)
    return module.eval()


def load_ecg_tower(folder: str | pathlib.Path) -> ECGTower:
    """ECGTower from an export folder (ecg_tower.json + ecg_tower.safetensors), eval mode."""
    folder = pathlib.Path(folder)
    kwargs = json.loads((folder / ECG_CONFIG).read_text())
    return _load_strict(ECGTower(**kwargs), folder / ECG_WEIGHTS)


def load_text_head(folder: str | pathlib.Path) -> TextHead:
    """TextHead from an export folder (text_head.json + text_head.safetensors), eval mode."""
    folder = pathlib.Path(folder)
    kwargs = json.loads((folder / TEXT_HEAD_CONFIG).read_text())
    return _load_strict(TextHead(**kwargs), folder / TEXT_HEAD_WEIGHTS)
