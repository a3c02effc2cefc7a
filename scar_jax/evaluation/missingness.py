"""Missingness protocols of METHOD §8 as keep masks over the token grid, and the batched grid.

Every protocol is a keep mask `[B, 12, S]` (lead x time segment) that is a subset
of the record's observed tokens, so a whole grid of conditions runs as one
compiled, batched computation: the ECG tokens are embedded once per batch and the
encoder runs on a fixed-size chunk of stacked keep masks folded into the batch
(`GridEmbedder`). Random protocols draw from a counter-based hash of
(seed, protocol, example index), so a mask depends only on the example, never on
the batch it lands in.

Conditions (names as they appear in results):
  clean                           observed tokens only
  lead_drop/k<k>                  k observed leads dropped at random (at least one lead kept)
  subset/<name>                   only the named leads: I, I+II, limb6, precordial6, II+V1
  temporal/r<r>                   a contiguous fraction r of the observed time segments dropped
  joint/k<k>+r<r>                 lead drop k and temporal drop r at once
  random/<unit>/rho<rho>          round(rho * observed units) random units (budget twin of below)
  adversarial/<mode>/<unit>/rho<rho>
                                  the round(rho * observed units) units most important for the
                                  example's own positive classes; mode whitebox (ranked by the
                                  evaluated model) or transfer (ranked by one reference model);
                                  unit lead | segment (occlusion) | token (gradient x keep)
  oracle/<region>                 region primary | secondary; for class c, c's region removed
                                  from every record (synthetic corpus only), scored on class c
  classwise/<mode>/<unit>/rho<rho>
                                  for class c, the round(rho * U) units that matter most for c
                                  (ranked on the validation split by the evaluated model or the
                                  reference) removed from every record, scored on class c
                                  (scar_jax.evaluation.classwise)
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from scar_jax.leads import LEAD_NAMES, LEAD_SUBSETS, NUM_LEADS
from scar_jax.models import masker as masker_lib

UNITS = ("lead", "segment", "token")
MODES = ("whitebox", "transfer")
FAMILIES = ("clean", "lead_drop", "subset", "temporal", "joint", "random", "adversarial", "oracle",
            "classwise")


@dataclasses.dataclass(frozen=True)
class Condition:
    """One protocol: `family` and its parameters; `rate` is the nominal share removed."""

    name: str
    family: str
    rate: float = 0.0
    k: int = 0  # leads dropped (lead_drop, joint)
    r: float = 0.0  # temporal fraction (temporal, joint)
    subset: str = ""  # subset name
    unit: str = ""  # random / adversarial unit
    rho: float = 0.0  # random / adversarial budget
    mode: str = ""  # adversarial ranking: whitebox | transfer
    region: str = ""  # oracle region: primary | secondary


def clean() -> Condition:
    """The observed tokens, nothing removed."""
    return Condition("clean", "clean")


def lead_drop(k: int) -> Condition:
    """Drop k observed leads at random."""
    if not 0 < k < NUM_LEADS:
        raise ValueError(f"lead_drop k={k} must be in [1, {NUM_LEADS - 1}].")
    return Condition(f"lead_drop/k{k}", "lead_drop", rate=k / NUM_LEADS, k=k)


def subset(name: str) -> Condition:
    """Keep only the named clinical lead subset."""
    if name not in LEAD_SUBSETS:
        raise ValueError(f"Unknown lead subset {name!r}; known: {sorted(LEAD_SUBSETS)}.")
    rate = 1.0 - len(LEAD_SUBSETS[name]) / NUM_LEADS
    return Condition(f"subset/{name}", "subset", rate=rate, subset=name)


def temporal(r: float) -> Condition:
    """Drop a contiguous fraction r of the observed time segments."""
    if not 0.0 < r < 1.0:
        raise ValueError(f"temporal drop fraction r={r} must be in (0, 1).")
    return Condition(f"temporal/r{r:g}", "temporal", rate=r, r=r)


def joint(k: int, r: float) -> Condition:
    """Lead drop k and temporal drop r together."""
    lead_drop(k), temporal(r)  # validate
    rate = 1.0 - (1.0 - k / NUM_LEADS) * (1.0 - r)
    return Condition(f"joint/k{k}+r{r:g}", "joint", rate=rate, k=k, r=r)


def random_units(unit: str, rho: float) -> Condition:
    """Random removal of round(rho * observed units) units (the adversary's budget twin)."""
    _check_unit(unit, rho)
    return Condition(f"random/{unit}/rho{rho:g}", "random", rate=rho, unit=unit, rho=rho)


def adversarial(mode: str, unit: str, rho: float) -> Condition:
    """Primary-evidence removal: the most important units for the example's positive classes."""
    _check_unit(unit, rho)
    if mode not in MODES:
        raise ValueError(f"adversarial mode {mode!r}; expected one of {MODES}.")
    return Condition(
        f"adversarial/{mode}/{unit}/rho{rho:g}",
        "adversarial",
        rate=rho,
        unit=unit,
        rho=rho,
        mode=mode,
    )


def oracle(region: str) -> Condition:
    """Remove class c's evidence region from every record, scored on class c."""
    if region not in ("primary", "secondary"):
        raise ValueError(f"oracle region {region!r}; expected primary or secondary.")
    return Condition(f"oracle/{region}", "oracle", region=region)


def classwise(mode: str, unit: str, rho: float) -> Condition:
    """Class c's most important units (ranked on validation) removed from every record."""
    _check_unit(unit, rho)
    if mode not in MODES or unit == "token":
        raise ValueError(f"classwise removal {mode!r}/{unit!r}; expected a mode of {MODES} and "
                         "unit lead or segment.")
    return Condition(f"classwise/{mode}/{unit}/rho{rho:g}", "classwise", rate=rho, unit=unit,
                     rho=rho, mode=mode)


def _check_unit(unit: str, rho: float) -> None:
    """Validate a removal unit and budget."""
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r}; expected one of {UNITS}.")
    if not 0.0 < rho < 1.0:
        raise ValueError(f"removal ratio rho={rho} must be in (0, 1).")


def parse_joint(spec: str) -> tuple[int, float]:
    """'6+0.5' -> (6, 0.5): lead count + temporal fraction of a joint condition."""
    try:
        k, r = spec.split("+")
        return int(k), float(r)
    except ValueError:
        raise ValueError(f"joint condition {spec!r}: expected '<leads>+<fraction>', e.g. '6+0.5'.")


def grid_from_config(cfg: Any, *, with_transfer: bool = True, with_oracle: bool = False):
    """config.eval -> the list of Conditions (clean first)."""
    conds = [clean()]
    conds += [lead_drop(int(k)) for k in cfg.lead_drop]
    conds += [subset(s) for s in cfg.subsets]
    conds += [temporal(float(r)) for r in cfg.temporal]
    conds += [joint(*parse_joint(s)) for s in cfg.joint]
    for unit in cfg.adv_units:
        for rho in cfg.rhos:
            conds.append(random_units(unit, float(rho)))
            for mode in cfg.adv_modes:
                if mode == "transfer" and not with_transfer:
                    continue
                conds.append(adversarial(mode, unit, float(rho)))
    if with_oracle:
        conds += [oracle("primary"), oracle("secondary")]
    names = [c.name for c in conds]
    if len(set(names)) != len(names):
        raise ValueError(f"config.eval lists a condition twice: {names}.")
    return conds


# ----------------------------------------------------------------------------- Randomness.

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (a counter-based hash)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def uniform(seed: int, stream: str, index: np.ndarray, width: int) -> np.ndarray:
    """Uniforms in [0, 1) of shape [B, width], a pure function of (seed, stream, example index)."""
    index = np.asarray(index, np.uint64)
    key = np.uint64((int(seed) * 1_000_003 + zlib.crc32(stream.encode())) & 0xFFFFFFFFFFFFFFFF)
    x = _splitmix(_splitmix(key ^ _splitmix(index))[:, None] + np.arange(width, dtype=np.uint64))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# ----------------------------------------------------------------------------- Masks (numpy).


def lead_drop_keep(observed: np.ndarray, k: int, u: np.ndarray) -> np.ndarray:
    """observed [B, 12, S] bool, u [B, 12] uniforms -> keep without k random observed leads.

    Records with n <= k observed leads lose n - 1 (one lead is always kept).
    """
    lead_obs = observed.any(-1)
    n_obs = lead_obs.sum(-1)
    drop_n = np.minimum(k, np.maximum(n_obs - 1, 0))
    key = np.where(lead_obs, u, np.inf)
    rank = np.argsort(np.argsort(key, axis=-1, kind="stable"), axis=-1, kind="stable")
    dropped = rank < drop_n[:, None]
    return observed & ~dropped[:, :, None]


def subset_keep(observed: np.ndarray, name: str) -> np.ndarray:
    """observed [B, 12, S] -> keep of the named lead subset only."""
    leads = np.isin(np.asarray(LEAD_NAMES), LEAD_SUBSETS[name])
    return observed & leads[None, :, None]


def temporal_drop_keep(observed: np.ndarray, r: float, u: np.ndarray) -> np.ndarray:
    """observed [B, 12, S], u [B] -> keep without a contiguous run of round(r * n_seg) segments.

    n_seg counts the observed segments (any lead observed); the run covers consecutive
    observed segments starting at a uniformly drawn position.
    """
    seg_obs = observed.any(1)  # [B, S]
    n_seg = seg_obs.sum(-1)
    n_drop = np.round(r * n_seg).astype(np.int64)
    start = np.floor(u * (n_seg - n_drop + 1)).astype(np.int64)
    rank = np.cumsum(seg_obs, -1) - 1
    dropped = seg_obs & (rank >= start[:, None]) & (rank < (start + n_drop)[:, None])
    return observed & ~dropped[:, None, :]


def units_observed(observed: np.ndarray | jax.Array, unit: str):
    """observed tokens [B, 12, S] -> observed units [B, U] (lead 12, segment S, token 12*S)."""
    return masker_lib.unit_observed(observed, unit)


@functools.partial(jax.jit, static_argnames=("unit",))
def topk_units_keep(observed: jax.Array, importance: jax.Array, unit: str, rho: float) -> jax.Array:
    """Remove the round(rho * n_observed_units) most important observed units: -> keep [B, 12, S].

    importance: [B, U] (higher = removed first); ties go to the lower index.
    """
    observed = jnp.asarray(observed, bool)
    _, num_leads, num_segments = observed.shape
    obs_u = masker_lib.unit_observed(observed, unit)
    k = masker_lib.budget(jnp.sum(obs_u, -1), jnp.asarray(rho, jnp.float32))
    removed = masker_lib.hard_topk(importance.astype(jnp.float32), k, obs_u)
    removed = masker_lib.unit_to_tokens(removed, unit, num_leads, num_segments)
    return observed & (removed == 0)


def evidence_to_tokens(
    evidence: np.ndarray, patch_size: int, sample_rate: float, num_segments: int,
    bin_seconds: float = 0.1,
) -> np.ndarray:
    """Evidence bins [..., nbins, 12] bool (bin_seconds each) -> token grid [..., 12, S] bool.

    A token (lead l, segment s) covers [s, s + 1) * patch_size / sample_rate seconds and is
    marked when any marked bin of lead l overlaps that span.
    """
    evidence = np.asarray(evidence, bool)
    nbins = evidence.shape[-2]
    seg_len = patch_size / sample_rate
    edges = np.arange(num_segments + 1) * seg_len
    lo = np.floor(edges[:-1] / bin_seconds + 1e-9).astype(int)  # first bin overlapping s
    hi = np.ceil(edges[1:] / bin_seconds - 1e-9).astype(int)  # one past the last one
    overlap = np.zeros((nbins, num_segments), bool)  # [bin, segment]
    for s in range(num_segments):
        overlap[max(lo[s], 0) : min(hi[s], nbins), s] = True
    # [S, b] @ [..., b, 12] as a float32 matmul (BLAS; the counts stay exact): an integer
    # einsum runs without BLAS, 9x slower on the demo's test-split regions [12, 1000, 100, 12]
    counts = np.matmul(overlap.T.astype(np.float32), evidence.astype(np.float32))
    return np.swapaxes(counts, -1, -2) > 0


def region_keep(observed: np.ndarray, region: np.ndarray) -> np.ndarray:
    """observed [B, 12, S], region [12, S] or [B, 12, S] bool -> keep without the region."""
    return observed & ~np.asarray(region, bool)


def condition_keep(
    cond: Condition,
    observed: np.ndarray,
    index: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Keep mask [B, 12, S] of a model-independent condition (not adversarial / oracle)."""
    observed = np.asarray(observed, bool)
    b, num_leads, num_segments = observed.shape
    if cond.family == "clean":
        return observed
    if cond.family == "lead_drop":
        return lead_drop_keep(observed, cond.k, uniform(seed, cond.name, index, num_leads))
    if cond.family == "subset":
        return subset_keep(observed, cond.subset)
    if cond.family == "temporal":
        return temporal_drop_keep(observed, cond.r, uniform(seed, cond.name, index, 1)[:, 0])
    if cond.family == "joint":
        keep = lead_drop_keep(observed, cond.k, uniform(seed, cond.name + "/lead", index, 12))
        u = uniform(seed, cond.name + "/time", index, 1)[:, 0]
        # The time span is drawn over the record's observed segments, not the kept ones.
        return keep & temporal_drop_keep(observed, cond.r, u)
    if cond.family == "random":
        width = masker_lib.unit_observed(observed[:1], cond.unit).shape[-1]
        u = uniform(seed, cond.name, index, width)
        return np.asarray(topk_units_keep(observed, jnp.asarray(u), cond.unit, cond.rho))
    raise ValueError(
        f"condition {cond.name!r} ({cond.family}) needs a model or evidence regions; "
        "use GridEmbedder.importance / region_keep."
    )


# ----------------------------------------------------------------------------- The grid.


def margin_objective(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """scores [B, K], labels [B, K] -> mean positive score - mean negative score [B].

    A missing side (no positives or no negatives) contributes 0.
    """
    pos = labels.astype(scores.dtype)
    neg = 1.0 - pos
    mp = jnp.sum(scores * pos, -1) / jnp.maximum(jnp.sum(pos, -1), 1.0)
    mn = jnp.sum(scores * neg, -1) / jnp.maximum(jnp.sum(neg, -1), 1.0)
    return mp - mn


def _stem_method(module, ecg, observed):
    """Model method: ecg [B, T, 12], observed [B, 12, S] -> the stem's features of the observed
    tokens (ECGEncoder.stem_features), from which any kept subset is embedded."""
    return module.ecg.stem_features(ecg, observed)


def _encode_method(module, stem, keep, num_kept=None):
    """Model method: stem features, keep [B, 12, S] -> (z [B, E], pooled [B, D]).

    The tokens are embedded from the stem over the kept tokens only (keep > 0), so a removal
    equals "never recorded" (METHOD §2: no statistic of the kept signal depends on removed
    data). num_kept (static): encode only the gathered kept tokens, padded to this length.
    """
    tokens = module.ecg.tokens_from_stem(stem, jax.lax.stop_gradient(keep) > 0)
    z, aux = module.ecg.encode(tokens, keep, num_kept=num_kept)
    return z, aux["pre_logits"]


class GridEmbedder:
    """One model's batched ECG embedding under many keep masks, compiled once per batch shape.

    `embed(ecg, observed, keeps)`: keeps [C, B, 12, S] -> (z [C, B, E], pooled [C, B, D]);
    conditions run `chunk` at a time (folded into the batch), so the number of conditions never
    changes the compiled shapes. With `buckets` > 0 the kept tokens of each chunk are gathered
    and padded to the smallest of `buckets` evenly spaced lengths that holds them (at most
    `buckets` compiled shapes): a condition that keeps a quarter of the tokens then costs
    about a quarter of a full pass, with the same result (removed tokens are neither
    attended nor pooled). `traces` counts compilations of the grid function.
    """

    def __init__(self, model: Any, variables: Any, chunk: int = 1, buckets: int = 0):
        self.model, self.variables, self.chunk = model, variables, int(chunk)
        self.buckets = int(buckets)
        if self.buckets < 0:
            raise ValueError(f"buckets={buckets} must be >= 0 (0 = no gathering).")
        self.traces = 0
        self._tokens = jax.jit(lambda v, e, o: model.apply(v, e, o, method=_stem_method))
        self._grid = jax.jit(self._grid_fn, static_argnums=3)
        self._grad = jax.jit(self._grad_fn)

    def num_kept(self, keeps: np.ndarray) -> int | None:
        """Static gather length for keeps [c, B, 12, S] (None: all tokens, no gathering)."""
        n = int(np.prod(keeps.shape[2:]))
        if not self.buckets:
            return None
        step = -(-n // self.buckets)
        most = int(np.max(np.sum(np.asarray(keeps) > 0, axis=(2, 3)), initial=0))
        length = max(step, -(-most // step) * step)
        return None if length >= n else length

    def _grid_fn(self, variables, tokens, keeps, num_kept=None):
        """stem features of B examples, keeps [c, B, 12, S] -> (z [c, B, E], pooled [c, B, D])."""
        self.traces += 1  # runs only while tracing
        c, b = keeps.shape[:2]
        # Conditions are folded into the batch (as [c * B] examples) rather than vmapped:
        # XLA:CPU runs the plain batched encoder markedly faster than its vmapped form.
        flat_tokens = jax.tree.map(
            lambda x: jnp.broadcast_to(x[None], (c,) + x.shape).reshape((c * b,) + x.shape[1:]),
            tokens)
        flat_keeps = keeps.astype(jnp.float32).reshape((c * b,) + keeps.shape[2:])
        z, pooled = self.model.apply(variables, flat_tokens, flat_keeps, num_kept,
                                     method=_encode_method)
        return z.reshape(c, b, -1), pooled.reshape(c, b, -1)

    def grid_chunk(self, tokens: jax.Array, keeps: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """One chunk of conditions, keeps [chunk, B, 12, S] -> (z, pooled) on the device."""
        return self._grid(self.variables, tokens, jnp.asarray(keeps, jnp.float32),
                          self.num_kept(keeps))

    def _grad_fn(self, variables, tokens, keep, z_cls, labels):
        """Gradient x keep of the margin objective: -> [B, 12, S]."""

        def f(k):
            z, _ = self.model.apply(variables, tokens, k, method=_encode_method)
            return jnp.sum(margin_objective(z @ z_cls.T, labels))

        return jax.grad(f)(keep) * keep

    def tokens(self, ecg: np.ndarray, observed: np.ndarray) -> dict[str, jax.Array]:
        """ecg [B, T, 12], observed [B, 12, S] -> the stem's features of the observed tokens:
        every keep mask passed with them to `embed` / `importance` is embedded over its kept
        tokens only (normalisation and stem statistics recomputed: removed = never recorded)."""
        return self._tokens(self.variables, jnp.asarray(ecg), jnp.asarray(observed))

    def embed(
        self, tokens: jax.Array, keeps: np.ndarray | jax.Array
    ) -> tuple[np.ndarray, np.ndarray]:
        """stem features (`tokens`), keeps [C, B, 12, S] -> (z [C, B, E], pooled [C, B, D]) as numpy.

        Identical keep masks are encoded once (an embedding depends on its mask only): classes
        can share an evidence region (the demo's oracle rows: SBRAD and STACH, NORM and LBBB,
        ...) or a class-level lead set (the classwise rows).
        """
        keeps = np.asarray(keeps, np.float32)
        position: dict[bytes, int] = {}  # a mask's bytes -> its place among the distinct ones
        distinct, inverse = [], np.empty(len(keeps), int)
        for i, k in enumerate(keeps):
            key = k.tobytes()
            if key not in position:
                position[key] = len(distinct)
                distinct.append(i)
            inverse[i] = position[key]
        if len(distinct) < len(keeps):
            z, p = self.embed(tokens, keeps[distinct])
            return z[inverse], p[inverse]
        c = keeps.shape[0]
        pad = (-c) % self.chunk
        if pad:
            keeps = np.concatenate([keeps, np.zeros((pad,) + keeps.shape[1:], keeps.dtype)])
        zs, ps = [], []
        for i in range(0, c + pad, self.chunk):
            z, p = self.grid_chunk(tokens, keeps[i : i + self.chunk])
            zs.append(z)
            ps.append(p)
        z = np.asarray(jnp.concatenate(zs))[:c]
        p = np.asarray(jnp.concatenate(ps))[:c]
        return z, p

    def importance(
        self,
        tokens: jax.Array,
        observed: np.ndarray,
        unit: str,
        z_cls: np.ndarray,
        labels: np.ndarray,
    ) -> np.ndarray:
        """Per-unit importance [B, U] for the example's positive classes (higher = more critical).

        lead / segment: occlusion, margin(x) - margin(x without the unit);
        token: gradient x keep of the margin at the observed keep.
        """
        observed = np.asarray(observed, bool)
        z_cls = jnp.asarray(z_cls)
        labels_j = jnp.asarray(labels)
        if unit == "token":
            g = self._grad(self.variables, tokens, jnp.asarray(observed, jnp.float32), z_cls,
                           labels_j)
            return np.asarray(g).reshape(observed.shape[0], -1)
        b, num_leads, num_segments = observed.shape
        n_units = num_leads if unit == "lead" else num_segments
        eye = np.eye(n_units, dtype=bool)
        if unit == "lead":
            occl = eye[:, None, :, None]  # [U, 1, 12, 1]
        elif unit == "segment":
            occl = eye[:, None, None, :]  # [U, 1, 1, S]
        else:
            raise ValueError(f"unit {unit!r}; expected one of {UNITS}.")
        keeps = np.concatenate([observed[None], observed[None] & ~occl])  # [1 + U, B, 12, S]
        z, _ = self.embed(tokens, keeps)
        m = np.asarray(margin_objective(jnp.asarray(z @ np.asarray(z_cls).T), labels_j[None]))
        return (m[0][None] - m[1:]).T  # [B, U]


def stack_keeps(keeps: Sequence[np.ndarray]) -> np.ndarray:
    """List of C masks [B, 12, S] -> [C, B, 12, S] bool."""
    return np.stack([np.asarray(k, bool) for k in keeps])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds), blocking on jax results."""
    import time

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0
