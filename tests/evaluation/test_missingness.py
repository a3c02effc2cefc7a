"""Missingness protocols: exact counts, named subsets, contiguity, budgets, evidence grid, grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scar_jax.evaluation import missingness as miss
from tests.evaluation.conftest import ecg_batch

S = 10


def _observed(n=64, seed=0, s=S):
    """[n, 12, s] observed tokens: some absent leads, some records padded at the end."""
    rng = np.random.default_rng(seed)
    lead = rng.random((n, 12)) > 0.2
    lead[:, 0] = True
    valid = rng.integers(s // 2, s + 1, n)
    seg = np.arange(s)[None] < valid[:, None]
    return lead[:, :, None] & seg[:, None, :]


@pytest.mark.parametrize("k", [3, 6, 9])
def test_lead_drop_removes_exactly_k_observed_leads(k):
    obs = _observed()
    keep = miss.condition_keep(miss.lead_drop(k), obs, np.arange(len(obs)), seed=0)
    n_obs = obs.any(-1).sum(-1)
    n_kept = keep.any(-1).sum(-1)
    np.testing.assert_array_equal(n_obs - n_kept, np.minimum(k, n_obs - 1))
    assert (keep <= obs).all()
    # whole leads go: a kept lead keeps all its observed tokens
    kept_lead = keep.any(-1)
    np.testing.assert_array_equal(keep, obs & kept_lead[:, :, None])


def test_masks_depend_on_example_not_batch_and_seed_matters():
    obs = _observed()
    idx = np.arange(len(obs))
    cond = miss.joint(6, 0.5)
    whole = miss.condition_keep(cond, obs, idx, seed=3)
    halves = np.concatenate([miss.condition_keep(cond, obs[:20], idx[:20], seed=3),
                             miss.condition_keep(cond, obs[20:], idx[20:], seed=3)])
    np.testing.assert_array_equal(whole, halves)
    other = miss.condition_keep(cond, obs, idx, seed=4)
    assert (other != whole).any()


@pytest.mark.parametrize("name,leads", [("I", [0]), ("I+II", [0, 1]), ("limb6", range(6)),
                                        ("precordial6", range(6, 12)), ("II+V1", [1, 6])])
def test_named_subsets(name, leads):
    obs = _observed()
    keep = miss.condition_keep(miss.subset(name), obs, np.arange(len(obs)), seed=0)
    want = np.zeros(12, bool)
    want[list(leads)] = True
    np.testing.assert_array_equal(keep, obs & want[None, :, None])


@pytest.mark.parametrize("r", [0.25, 0.5, 0.75])
def test_temporal_drop_is_one_contiguous_run_of_the_observed_segments(r):
    obs = _observed(s=20)
    keep = miss.condition_keep(miss.temporal(r), obs, np.arange(len(obs)), seed=0)
    for o, k in zip(obs, keep):
        seg_obs = o.any(0)
        dropped = seg_obs & ~k.any(0)
        assert dropped.sum() == round(r * seg_obs.sum())
        where = np.flatnonzero(dropped)
        assert (np.diff(where) == 1).all()  # contiguous
        np.testing.assert_array_equal(k, o & ~dropped[None])  # across all leads, nothing else


def test_joint_is_lead_drop_and_temporal_drop():
    obs = _observed(s=20)
    keep = miss.condition_keep(miss.joint(3, 0.5), obs, np.arange(len(obs)), seed=0)
    for o, k in zip(obs, keep):
        n_obs, n_seg = o.any(-1).sum(), o.any(0).sum()
        assert n_obs - k.any(-1).sum() == min(3, n_obs - 1)
        assert n_seg - k.any(0).sum() == round(0.5 * n_seg)
        np.testing.assert_array_equal(k, o & k.any(-1)[:, None] & k.any(0)[None])


@pytest.mark.parametrize("unit", ["lead", "segment", "token"])
def test_topk_units_removes_the_most_important_within_budget(unit):
    obs = _observed(n=8)
    u = miss.units_observed(obs, unit)
    imp = np.random.default_rng(1).normal(size=u.shape)
    keep = np.asarray(miss.topk_units_keep(jnp.asarray(obs), jnp.asarray(imp), unit, 0.3))
    removed_u = np.asarray(miss.units_observed(obs & ~keep, unit)) if unit == "token" else None
    for i in range(len(obs)):
        n = int(np.asarray(u[i]).sum())
        k = int(np.round(0.3 * n))
        order = np.argsort(-np.where(u[i], imp[i], -np.inf), kind="stable")[:k]
        want = np.zeros(u.shape[1], bool)
        want[order] = True
        if unit == "token":
            got = removed_u[i]
        elif unit == "lead":
            got = (obs[i] & ~keep[i]).any(-1)
        else:
            got = (obs[i] & ~keep[i]).any(0)
        np.testing.assert_array_equal(got, want)


def test_random_units_budget_is_exact():
    obs = _observed()
    keep = miss.condition_keep(miss.random_units("segment", 0.2), obs, np.arange(64), seed=0)
    n_seg = obs.any(1).sum(-1)
    np.testing.assert_array_equal(n_seg - keep.any(1).sum(-1), np.round(0.2 * n_seg))


def test_evidence_bins_to_token_grid():
    # 2 s at 500 Hz, patch 100 -> 10 segments of 0.2 s; 20 bins of 0.1 s.
    ev = np.zeros((20, 12), bool)
    ev[3, 6] = True  # 0.3-0.4 s in V1 -> segment 1
    ev[10:14, 1] = True  # 1.0-1.4 s in II -> segments 5, 6
    tok = miss.evidence_to_tokens(ev, patch_size=100, sample_rate=500, num_segments=10)
    want = np.zeros((12, 10), bool)
    want[6, 1] = True
    want[1, 5:7] = True
    np.testing.assert_array_equal(tok, want)
    # patch 125 at 500 Hz = 0.25 s, 8 segments: bin 0.4-0.5 s lies in segment 1 (0.25-0.5),
    # bin 0.7-0.8 s straddles segments 2 (0.5-0.75) and 3 (0.75-1.0)
    ev2 = np.zeros((20, 12), bool)
    ev2[4, 0] = True
    ev2[7, 1] = True
    tok2 = miss.evidence_to_tokens(ev2, patch_size=125, sample_rate=500, num_segments=8)
    np.testing.assert_array_equal(np.flatnonzero(tok2[0]), [1])
    np.testing.assert_array_equal(np.flatnonzero(tok2[1]), [2, 3])
    # the oracle keeps everything observed outside the region
    obs = _observed(n=4)
    keep = miss.region_keep(obs, want)
    np.testing.assert_array_equal(keep, obs & ~want[None])


def test_evidence_to_tokens_batched_equals_the_overlap_definition():
    # any leading axes ([K, N, bins, 12], as the evaluation's class regions): token (l, s)
    # is marked iff some marked bin of lead l overlaps segment s, checked bin by bin
    rng = np.random.default_rng(0)
    ev = rng.random((3, 5, 20, 12)) < 0.05
    tok = miss.evidence_to_tokens(ev, patch_size=125, sample_rate=500, num_segments=8)
    want = np.zeros((3, 5, 12, 8), bool)
    for b in range(20):  # bin [0.1 b, 0.1 (b + 1)) s vs segment [0.25 s, 0.25 (s + 1)) s
        for seg in range(8):
            if 0.1 * b < 0.25 * (seg + 1) - 1e-9 and 0.1 * (b + 1) > 0.25 * seg + 1e-9:
                want[..., seg] |= ev[..., b, :]
    assert tok.shape == want.shape and want.any()
    np.testing.assert_array_equal(tok, want)


@pytest.fixture(scope="module")
def mu_model(mu):
    ecg, lead_obs = ecg_batch(8, mu.num_samples)
    obs = np.asarray(mu.model.apply(mu.variables, jnp.asarray(ecg), jnp.asarray(lead_obs),
                                    method=mu.model.observed_tokens))
    return mu.model, mu.variables, ecg, lead_obs, obs


def _embed_ecg(model):
    """Jitted model.embed_ecg(ecg, lead_observed, keep=keep) -> (z, pooled)."""

    def f(v, ecg, lead_obs, keep):
        z, aux = model.apply(v, ecg, lead_obs, keep=keep, method=model.embed_ecg)
        return z, aux["pre_logits"]

    jf = jax.jit(f)
    return lambda v, e, lo, k: jf(v, jnp.asarray(e), jnp.asarray(lo), jnp.asarray(k, jnp.float32))


@pytest.mark.parametrize("buckets", [0, 4])
def test_grid_equals_one_by_one_and_compiles_once_per_length(mu_model, buckets):
    model, variables, ecg, lead_obs, obs = mu_model
    emb = miss.GridEmbedder(model, variables, chunk=4, buckets=buckets)
    conds = [miss.clean(), miss.lead_drop(3), miss.subset("II+V1"), miss.temporal(0.5),
             miss.joint(6, 0.25), miss.random_units("token", 0.3), miss.subset("I"),
             miss.lead_drop(9)]
    keeps = miss.stack_keeps([miss.condition_keep(c, obs, np.arange(8), 0) for c in conds])
    tok = emb.tokens(ecg, obs)
    z, pooled = emb.embed(tok, keeps)
    one = _embed_ecg(model)
    assert z.shape[:2] == (len(conds), 8) and pooled.shape[:2] == (len(conds), 8)
    for i in range(len(conds)):
        want, want_pooled = one(variables, ecg, lead_obs, keeps[i])
        np.testing.assert_allclose(z[i], np.asarray(want), atol=2e-5)
        np.testing.assert_allclose(pooled[i], np.asarray(want_pooled), atol=2e-5)
    n = keeps[0, 0].size
    # chunks [clean..temporal] need all tokens; [joint, random, I, lead_drop 9] keep at most
    # 70 % of them: with 4 buckets that chunk runs on the gathered tokens (3 of 4 lengths)
    lengths = [emb.num_kept(keeps[i : i + 4]) for i in (0, 4)]
    assert lengths == ([None, None] if not buckets else [None, 3 * -(-n // 4)])
    # more conditions, other data, one condition: no new compilation for a seen length
    traces = emb.traces
    assert traces == len(set(lengths))
    emb.embed(emb.tokens(ecg[::-1].copy(), obs[::-1].copy()), np.concatenate([keeps, keeps]))
    emb.embed(tok, keeps[:1])
    assert emb.traces == traces


def test_identical_masks_are_encoded_once_with_the_same_result(mu_model):
    # a reference model's transfer masks are its white-box masks; classes share regions
    model, variables, ecg, lead_obs, obs = mu_model
    emb = miss.GridEmbedder(model, variables, chunk=1, buckets=4)
    a, b, c = (miss.condition_keep(x, obs, np.arange(8), 0)
               for x in (miss.lead_drop(3), miss.subset("I"), miss.temporal(0.5)))
    stacked = miss.stack_keeps([a, b, a, c, b, a])
    encoded = []
    grid_chunk = emb.grid_chunk
    emb.grid_chunk = lambda t, k: encoded.append(np.asarray(k)) or grid_chunk(t, k)
    tok = emb.tokens(ecg, obs)
    z, pooled = emb.embed(tok, stacked)
    assert len(encoded) == 3  # a, b, c, in their first order
    for got, want in zip(encoded, (a, b, c)):
        np.testing.assert_array_equal(got[0], want)
    z3, pooled3 = emb.embed(tok, miss.stack_keeps([a, b, c]))
    for i, j in enumerate([0, 1, 0, 2, 1, 0]):
        np.testing.assert_array_equal(z[i], z3[j])
        np.testing.assert_array_equal(pooled[i], pooled3[j])


def test_grid_length_buckets():
    emb = miss.GridEmbedder(None, None, chunk=1, buckets=4)  # num_kept needs no model
    keeps = np.zeros((1, 2, 12, 10), bool)  # 120 tokens: lengths 30, 60, 90, all
    assert emb.num_kept(keeps) == 30  # nothing kept: the shortest length
    keeps[0, 0, :3] = True  # 30 kept
    assert emb.num_kept(keeps) == 30
    keeps[0, 1, :3] = True
    keeps[0, 1, 5, 0] = True  # the other example: 31 kept -> the batch needs 60
    assert emb.num_kept(keeps) == 60
    keeps[0, 1, :10] = True  # 100 kept: more than the longest bucket -> no gathering
    assert emb.num_kept(keeps) is None
    assert miss.GridEmbedder(None, None, buckets=0).num_kept(keeps[:, :, :1]) is None
    with pytest.raises(ValueError, match="buckets=-1"):
        miss.GridEmbedder(None, None, buckets=-1)


def test_occlusion_importance_is_the_margin_drop(mu_model):
    model, variables, ecg, lead_obs, obs = mu_model
    emb = miss.GridEmbedder(model, variables, chunk=4)
    z_cls = np.array(jax.random.normal(jax.random.key(5), (3, 32)))
    z_cls /= np.linalg.norm(z_cls, axis=-1, keepdims=True)
    labels = np.zeros((8, 3), bool)
    labels[:, 0] = True
    labels[::2, 2] = True
    tok = emb.tokens(ecg, obs)
    imp = emb.importance(tok, obs, "lead", z_cls, labels)

    one = _embed_ecg(model)

    def margin(keep):
        z, _ = one(variables, ecg, lead_obs, keep)
        s = np.asarray(z) @ z_cls.T
        pos = (s * labels).sum(-1) / labels.sum(-1)
        neg = (s * ~labels).sum(-1) / (~labels).sum(-1)
        return pos - neg

    base = margin(obs)
    for lead in (1, 7):
        k = obs.copy()
        k[:, lead] = False
        np.testing.assert_allclose(imp[:, lead], base - margin(k), atol=2e-5)
    g = emb.importance(tok, obs, "token", z_cls, labels)
    assert g.shape == (8, 12 * S) and (g[~obs.reshape(8, -1)] == 0).all()


@pytest.mark.parametrize("normalize", ["minmax", "zscore"])
def test_grid_removal_equals_never_recorded_with_the_conv_stem(normalize):
    """METHOD §2 for the evaluation grid: removing leads / a time span by keep mask gives the
    embedding of the record loaded without them (the conv stem's level and scale features and
    the normalisation are recomputed over what is kept). Fails when the grid embeds the
    tokens once over the observed record (the conv stem then differs by up to 0.05)."""
    from configs import scar as scar_config
    from scar_jax.models import scar

    config = scar_config.get_config("runlocal,text=random-tiny")
    config.model.ecg.stem = "conv"
    config.input.normalize = normalize
    model = scar.build_model(config.model)
    t = int(config.input.sample_rate * config.input.seconds)
    init = {"ecg": jnp.zeros((2, t, 12)), "lead_observed": jnp.ones((2, 12), bool),
            "input_ids": jnp.ones((2, 8), jnp.int32), "attention_mask": jnp.ones((2, 8), jnp.int32)}
    variables = jax.jit(model.init)({"params": jax.random.key(3), "masker": jax.random.key(4)},
                                    init)
    ecg, lead_obs = ecg_batch(4, t)
    ecg = ecg * np.linspace(0.2, 3.0, 12)[None, None, :]  # leads of other scales and levels
    lead_obs = np.ones_like(lead_obs)
    obs = np.asarray(model.apply(variables, jnp.asarray(ecg), jnp.asarray(lead_obs),
                                 method=model.observed_tokens))
    s = obs.shape[-1]
    no_chest = obs.copy()
    no_chest[:, 6:] = False
    late_gone = obs.copy()
    late_gone[:, :, s // 2:] = False
    emb = miss.GridEmbedder(model, variables, chunk=2, buckets=0)
    z, _ = emb.embed(emb.tokens(ecg, obs), np.stack([no_chest, late_gone]))

    def never_recorded(lo, to):
        out, _ = model.apply(variables, jnp.asarray(ecg), jnp.asarray(lo), jnp.asarray(to),
                             method=model.embed_ecg)
        return np.asarray(out)

    chest_off = lead_obs.copy()
    chest_off[:, 6:] = False
    to_all = np.ones((4, t), bool)
    to_late = to_all.copy()
    to_late[:, (s // 2) * (t // s):] = False
    np.testing.assert_allclose(z[0], never_recorded(chest_off, to_all), atol=1e-4)
    np.testing.assert_allclose(z[1], never_recorded(lead_obs, to_late), atol=1e-4)
