"""Masker: exact budgets, unit semantics, the implicit threshold gradient, schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scar_jax.models import masker as M

L, S = 12, 10


def _observed(rng, b):
    """Random token observation [B, L, S] with whole unobserved leads and unobserved tail spans."""
    lead = rng.random((b, L)) > 0.3
    lead[:, 0] = True
    seg = np.ones((b, S), bool)
    for i in range(b):
        seg[i, S - rng.integers(0, 4) :] = False
    tok = lead[:, :, None] & seg[:, None, :]
    tok &= rng.random((b, L, S)) > 0.1  # scattered unobserved tokens too
    return jnp.asarray(tok)


@pytest.mark.parametrize("tau", [1.0, 0.3, 0.1])
@pytest.mark.parametrize("rho", [0.0, 0.25, 0.5, 1.0])
def test_relaxed_topk_budget_exact(tau, rho):
    rng = np.random.default_rng(1)
    b, u = 6, 40
    scores = jnp.asarray(rng.normal(size=(b, u)) * 3, jnp.float32)
    observed = jnp.asarray(rng.random((b, u)) > 0.35)
    k = M.budget(observed.sum(-1), jnp.full((b,), rho))
    m, hard, soft = jax.jit(M.relaxed_topk)(scores, k, observed, tau)
    expected_k = np.round(rho * np.asarray(observed).sum(-1))
    np.testing.assert_array_equal(np.asarray(hard).sum(-1), expected_k)
    assert float(jnp.sum(hard * ~observed)) == 0.0
    np.testing.assert_allclose(np.asarray(soft).sum(-1), expected_k, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(m), np.asarray(hard))  # straight-through forward
    # The hard mask is the numpy top-k of the observed scores.
    for i in range(b):
        obs_idx = np.flatnonzero(np.asarray(observed[i]))
        top = obs_idx[np.argsort(-np.asarray(scores[i])[obs_idx])[: int(expected_k[i])]]
        np.testing.assert_array_equal(np.flatnonzero(np.asarray(hard[i])), np.sort(top))


def test_relaxed_topk_gradients_and_implicit_budget():
    rng = np.random.default_rng(2)
    b, u, tau = 3, 16, 0.5
    scores = jnp.asarray(rng.normal(size=(b, u)), jnp.float32)
    observed = jnp.asarray(rng.random((b, u)) > 0.2)
    k = M.budget(observed.sum(-1), jnp.full((b,), 0.4))
    c = jnp.asarray(rng.normal(size=(b, u)), jnp.float32)
    g = jax.grad(lambda s: jnp.sum(M.relaxed_topk(s, k, observed, tau)[0] * c))(scores)
    assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 1e-3
    # The budget holds under differentiation: d(sum m_soft)/ds = 0.
    g_sum = jax.grad(lambda s: jnp.sum(M.relaxed_topk(s, k, observed, tau)[2]))(scores)
    np.testing.assert_allclose(np.asarray(g_sum), 0.0, atol=1e-5)
    # The implicit gradient equals the finite-difference derivative of the exact
    # (re-bisected) soft mask.
    f = lambda s: jnp.sum(M.relaxed_topk(s, k, observed, tau, 60)[2] * c)
    eps = 1e-2
    for i, j in [(0, 0), (1, 5), (2, 11)]:
        if not observed[i, j]:
            continue
        d = jnp.zeros_like(scores).at[i, j].set(eps)
        fd = (f(scores + d) - f(scores - d)) / (2 * eps)
        np.testing.assert_allclose(
            float(jax.grad(f)(scores)[i, j]), float(fd), rtol=2e-2, atol=2e-3
        )


@pytest.mark.parametrize("unit", ["token", "lead", "segment", "joint"])
@pytest.mark.parametrize("kind", ["adversarial", "random"])
def test_masker_units_and_budget(unit, kind):
    rng = np.random.default_rng(3)
    b, d = 5, 16
    observed = _observed(rng, b)
    tokens = jnp.asarray(rng.normal(size=(b, L * S, d)), jnp.float32)
    report = jnp.asarray(rng.normal(size=(b, 8)), jnp.float32)
    masker = M.Masker(
        kind=kind, unit=unit, width=16, depth=1, num_heads=2, rho_min=0.3, rho_max=0.6
    )
    params = masker.init(
        {"params": jax.random.key(0), "masker": jax.random.key(1)}, tokens, report, observed
    )
    m, aux = jax.jit(
        lambda p, r: masker.apply(p, tokens, report, observed, tau=0.5, rngs={"masker": r})
    )(params, jax.random.key(2))
    m = np.asarray(m)
    obs = np.asarray(observed)
    rho = np.asarray(aux["rho"])
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert (m[~obs] == 0).all(), "an unobserved token was 'removed'"
    lead_obs, seg_obs = obs.any(2), obs.any(1)
    for i in range(b):
        removed = m[i] > 0
        if unit == "token":
            assert removed.sum() == np.round(rho[i] * obs[i].sum())
        elif unit == "lead":
            full = removed.any(1)
            np.testing.assert_array_equal(removed, full[:, None] & obs[i])  # whole leads only
            assert full.sum() == np.round(rho[i] * lead_obs[i].sum())
        elif unit == "segment":
            full = removed.any(0)
            np.testing.assert_array_equal(removed, full[None, :] & obs[i])  # whole spans only
            assert full.sum() == np.round(rho[i] * seg_obs[i].sum())
        else:
            leads = np.asarray(aux["m_hard"][i]).astype(bool)
            # Joint: the removed set is a union of whole observed leads and whole observed spans.
            lead_rm = np.round(np.asarray(aux["m_soft_lead"][i]).sum()).astype(int)
            seg_rm = np.round(np.asarray(aux["m_soft_segment"][i]).sum()).astype(int)
            assert lead_rm == np.round(rho[i] * 0.5 * lead_obs[i].sum())
            assert seg_rm == np.round(rho[i] * 0.5 * seg_obs[i].sum())
            full_leads = (removed | ~obs[i]).all(1) & lead_obs[i]
            full_segs = (removed | ~obs[i]).all(0) & seg_obs[i]
            np.testing.assert_array_equal(
                removed, (full_leads[:, None] | full_segs[None, :]) & obs[i]
            )
            assert full_leads.sum() >= lead_rm and full_segs.sum() >= seg_rm
            np.testing.assert_array_equal(leads, removed)


def test_masker_none_and_use_random():
    rng = np.random.default_rng(4)
    b, d = 4, 8
    observed = _observed(rng, b)
    tokens = jnp.asarray(rng.normal(size=(b, L * S, d)), jnp.float32)
    report = jnp.ones((b, 4))
    none = M.Masker(kind="none")
    m, _ = none.apply({}, tokens, report, observed)
    assert float(jnp.abs(m).sum()) == 0.0
    adv = M.Masker(kind="adversarial", unit="lead", width=8, depth=1, num_heads=2)
    params = adv.init(
        {"params": jax.random.key(0), "masker": jax.random.key(1)}, tokens, report, observed
    )
    use_random = jnp.array([True, False, True, False])
    _, aux = adv.apply(
        params, tokens, report, observed, use_random=use_random, rngs={"masker": jax.random.key(5)}
    )
    scores = np.asarray(aux["scores"])
    assert (scores[[0, 2]] == 0).all() and np.abs(scores[[1, 3]]).max() > 0
    # Standardised logits: zero mean, unit variance over observed units.
    obs_u = np.asarray(aux["unit_observed"][1])
    z = scores[1][obs_u] / adv.score_scale
    np.testing.assert_allclose([z.mean(), z.std()], [0.0, 1.0], atol=1e-3)


def test_max_kept_tokens_bounds_every_budget():
    rng = np.random.default_rng(5)
    for unit in M.UNITS:
        bound = M.max_kept_tokens(unit, L, S, 0.25, 0.5)
        observed = _observed(rng, 8)
        masker = M.Masker(kind="random", unit=unit, rho_min=0.25, rho_max=0.5)
        m, _ = masker.apply(
            {},
            jnp.zeros((8, L * S, 4)),
            jnp.zeros((8, 4)),
            jnp.ones((8, L, S), bool),
            rngs={"masker": jax.random.key(0)},
        )
        kept = (1 - np.asarray(m)).reshape(8, -1).sum(-1)
        assert kept.max() <= bound
        m, _ = masker.apply(
            {},
            jnp.zeros((8, L * S, 4)),
            jnp.zeros((8, 4)),
            observed,
            rho=jnp.full((8,), 0.25),
            rngs={"masker": jax.random.key(0)},
        )
        kept = (np.asarray(observed) & (np.asarray(m) == 0)).reshape(8, -1).sum(-1)
        assert kept.max() <= bound


def test_temperature_schedule():
    np.testing.assert_allclose(M.temperature(0, 100, 1.0, 0.1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(M.temperature(50, 100, 1.0, 0.1), 0.55, rtol=1e-6)
    np.testing.assert_allclose(M.temperature(100, 100, 1.0, 0.1), 0.1, rtol=1e-6)
    np.testing.assert_allclose(M.temperature(500, 100, 1.0, 0.1), 0.1, rtol=1e-6)
    np.testing.assert_allclose(M.temperature(25, 100, 1.0, 0.0, "linear"), 0.75, rtol=1e-6)
    np.testing.assert_allclose(M.temperature(25, 100, 0.7, 0.0, "constant"), 0.7, rtol=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        M.temperature(0, 10, schedule="cosin")


def test_bad_masker_settings_fail_clearly():
    x = (jnp.zeros((1, L * S, 4)), jnp.zeros((1, 4)), jnp.ones((1, L, S), bool))
    with pytest.raises(ValueError, match="unit"):
        M.Masker(unit="leads").init(jax.random.key(0), *x)
    with pytest.raises(ValueError, match="rho_min"):
        M.Masker(rho_min=0.6, rho_max=0.5).init(jax.random.key(0), *x)


def test_logistic_noise_distribution():
    g = np.asarray(M.logistic_noise(jax.random.key(0), (200_000,)))
    # Logistic(0, 1): mean 0, variance pi^2 / 3, median 0.
    np.testing.assert_allclose(g.mean(), 0.0, atol=0.02)
    np.testing.assert_allclose(g.var(), np.pi**2 / 3, rtol=0.03)
