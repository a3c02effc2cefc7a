"""Parameter-path regexes (freezing, per-player selection) for optax transforms."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax


def path_str(path: tuple[Any, ...]) -> str:
    """A key path as 'txt/bert/encoder/layer_0/...'."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def param_paths(params: Any) -> list[str]:
    """Every leaf's '/'-joined path, in tree order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]


def regex_mask(params: Any, patterns: Sequence[str], *, strict: bool = True) -> Any:
    """Tree of bools: True where the leaf's path matches any of `patterns` (re.search).

    With `strict`, a pattern that matches no parameter fails: a typo would
    otherwise silently freeze nothing.
    """
    compiled = [re.compile(p) for p in patterns]
    hits = {p.pattern: 0 for p in compiled}

    def match(path, _):
        s = path_str(path)
        found = False
        for c in compiled:
            if c.search(s):
                hits[c.pattern] += 1
                found = True
        return found

    mask = jax.tree_util.tree_map_with_path(match, params)
    unused = [p for p, n in hits.items() if n == 0]
    if strict and unused:
        raise ValueError(
            f"Regex(es) {unused} match no parameter path; paths look like "
            f"{param_paths(params)[:3]}."
        )
    return mask


def freeze(
    tx: optax.GradientTransformation, params: Any, patterns: Sequence[str]
) -> optax.GradientTransformation:
    """`tx` for parameters not matching `patterns`; matching ones get zero updates (no state)."""
    if not patterns:
        return tx
    frozen = regex_mask(params, patterns)
    labels = jax.tree.map(lambda f: "frozen" if f else "train", frozen)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


# --- Per-player optimisers (the fused min-max update, METHOD §7) -------------------------------

MASKER = "masker"  # the adversary's parameter subtree; every other top-level entry is an encoder
PLAYERS = ("encoders", MASKER)
SCHEDULES = ("cosine", "linear", "constant")


def split_players(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model params -> (encoders: every top-level entry but 'masker', masker subtree or {})."""
    enc = {k: v for k, v in params.items() if k != MASKER}
    return enc, dict(params.get(MASKER, {}))


def merge_players(enc: Mapping[str, Any], masker: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of split_players (an empty masker subtree is left out, as flax does)."""
    out = dict(enc)
    if masker:
        out[MASKER] = dict(masker)
    return out


def lr_schedule(
    peak: float,
    warmup_steps: int,
    total_steps: int,
    kind: str = "cosine",
    end_factor: float = 0.0,
) -> optax.Schedule:
    """Linear warm-up to `peak` (step 0 already > 0), then decay to end_factor * peak.

    kind: cosine | linear (decay over the remaining total_steps - warmup_steps) | constant.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"config.optim.schedule={kind!r}; expected one of {SCHEDULES}.")
    warmup = max(int(warmup_steps), 0)
    span = max(int(total_steps) - warmup, 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = jnp.minimum(1.0, (step + 1.0) / warmup) if warmup else jnp.float32(1.0)
        frac = jnp.clip((step - warmup) / span, 0.0, 1.0)
        if kind == "cosine":
            decay = end_factor + (1.0 - end_factor) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        elif kind == "linear":
            decay = 1.0 + (end_factor - 1.0) * frac
        else:
            decay = jnp.float32(1.0)
        return peak * warm * decay

    return schedule


def decay_mask(params: Any) -> Any:
    """Weight decay only on matrices and embeddings (ndim >= 2), not biases, norms, scales."""
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def _adamw(
    schedule: optax.Schedule, weight_decay: float, b1: float, b2: float, grad_clip: float
) -> optax.GradientTransformation:
    """Global-norm clipping (if grad_clip > 0) followed by AdamW with `schedule`."""
    adamw = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask)
    return optax.chain(optax.clip_by_global_norm(grad_clip), adamw) if grad_clip > 0 else adamw


def encoder_tx(config: Any, enc_params: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Encoders' (ECG tower, text head, selector, logit scale) AdamW and its lr schedule.

    `config` is the full config; parameters matching config.model.txt.freeze are frozen.
    """
    o = config.optim
    schedule = lr_schedule(o.lr, o.warmup_steps, config.total_steps, o.schedule, o.end_lr_factor)
    tx = _adamw(schedule, o.weight_decay, o.b1, o.b2, o.grad_clip)
    return freeze(tx, enc_params, tuple(config.model.txt.freeze)), schedule


def masker_tx(config: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The masker's AdamW (its own lr, config.optim.masker_lr) and lr schedule.

    The schedule after the warm-up is config.optim.masker_schedule (default constant: the
    adversary keeps its learning rate to the end, issue 19 item 8; configs without the key:
    optim.schedule, as the encoders). Under `minmax = alternating` the masker takes
    masker_steps updates per step, so its schedule is stretched by that factor; with
    `optim.masker_every = k` it takes one every k steps, so the schedule is k times shorter.
    """
    o = config.optim
    k = o.masker_steps if o.minmax == "alternating" else 1
    every = masker_every(config)  # updates on every `every`-th step: the schedule shrinks
    kind = o.get("masker_schedule", o.schedule)
    schedule = lr_schedule(o.masker_lr, -(-o.warmup_steps * k // every),
                           -(-config.total_steps * k // every), kind, o.end_lr_factor)
    return _adamw(schedule, o.masker_weight_decay, o.b1, o.b2, o.grad_clip), schedule


def masker_every(config: Any) -> int:
    """config.optim.masker_every (1 where the key is absent): the masker updates on every
    k-th step of the fused min-max game (scar_jax.update)."""
    return int(config.optim.get("masker_every", 1))


def all_frozen(params: Any, patterns: Sequence[str], prefix: str = "txt/bert/") -> bool:
    """True when every parameter under `prefix` matches one of `patterns` (a frozen tower)."""
    compiled = [re.compile(p) for p in patterns]
    paths = [p for p in param_paths(params) if p.startswith(prefix)]
    return bool(paths) and all(any(c.search(p) for c in compiled) for p in paths)


def player_optimizers(
    config: Any, params: Any
) -> dict[str, tuple[optax.GradientTransformation, optax.Schedule]]:
    """{'encoders': (tx, lr schedule), 'masker': (tx, lr schedule)} for model params (or shapes)."""
    enc, _ = split_players(params)
    return {"encoders": encoder_tx(config, enc), MASKER: masker_tx(config)}
