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


def _default_masker(arg=""):
    """The default config's masker (structure and budget), as a random masker (no weights)."""
    from configs import scar as scar_config
    from scar_jax.models import scar

    config = scar_config.get_config("text=random-tiny" + ("," + arg if arg else ""))
    return config, scar.build_model(config.model).masker.clone(kind="random")


@pytest.mark.parametrize("arg,segments", [("", 50), ("method=random", 50), ("runlocal", 10)])
def test_default_budget_reaches_the_primary_region(arg, segments):
    """METHOD §5: the default budget removes 3-6 of 12 observed leads (a primary lead region),
    random-mask training the same; the joint unit spends the rest on a few segments. (The
    first defaults, rho in [0.25, 0.5] with lead share 0.5, removed 2-3 leads.)"""
    config, masker = _default_masker(arg)
    base, _ = _default_masker()
    for key in ("unit", "rho_min", "rho_max", "joint_lead_share"):
        assert config.model.masker[key] == base.model.masker[key], key
    assert config.model.masker.unit == "joint"
    b = 4
    observed = jnp.ones((b, L, segments), bool)
    for rho, leads, segs in [("rho_max", 6, {50: 4, 10: 1}), ("rho_min", 3, {50: 2, 10: 0})]:
        m, _ = masker.apply(
            {},
            jnp.zeros((b, L * segments, 4)),
            jnp.zeros((b, 4)),
            observed,
            rho=jnp.full((b,), config.model.masker[rho]),
            rngs={"masker": jax.random.key(0)},
        )
        removed = np.asarray(m) > 0
        whole_leads = removed.all(2).sum(1)
        whole_segs = removed.all(1).sum(1)
        assert whole_leads.tolist() == [leads] * b, rho
        assert whole_segs.tolist() == [segs[segments]] * b, rho
    # one lead missing: the budget counts only the 11 observed leads
    observed = observed.at[:, 7].set(False)
    m, _ = masker.apply(
        {},
        jnp.zeros((b, L * segments, 4)),
        jnp.zeros((b, 4)),
        observed,
        rho=jnp.full((b,), config.model.masker.rho_max),
        rngs={"masker": jax.random.key(0)},
    )
    lead_removed = (np.asarray(m) > 0).all(2) & np.asarray(observed).any(2)
    assert lead_removed.sum(1).tolist() == [round(0.6 * 0.85 * 11)] * b


def test_default_masker_is_conditioned_on_the_ecg_only():
    """METHOD §5: ECG-only conditioning by default: no report projection, and two different
    reports give the same logits."""
    config, _ = _default_masker("runlocal")
    from scar_jax.models import scar

    masker = scar.build_model(config.model).masker
    assert config.model.masker.condition == "ecg" and masker.condition == "ecg"
    rng = np.random.default_rng(7)
    b = 3
    observed = jnp.ones((b, L, S), bool)
    tokens = jnp.asarray(rng.normal(size=(b, L * S, 8)), jnp.float32)
    reports = [jnp.asarray(rng.normal(size=(b, 6)), jnp.float32) for _ in range(2)]
    params = masker.init({"params": jax.random.key(0), "masker": jax.random.key(1)},
                         tokens, reports[0], observed)
    assert "cond_proj" not in params["params"]
    logits = [masker.apply(params, tokens, r, observed, method=masker.logits) for r in reports]
    np.testing.assert_array_equal(np.asarray(logits[0]), np.asarray(logits[1]))
    report_masker = masker.clone(condition="report")
    params_r = report_masker.init({"params": jax.random.key(0), "masker": jax.random.key(1)},
                                  tokens, reports[0], observed)
    logits_r = [report_masker.apply(params_r, tokens, r, observed, method=masker.logits)
                for r in reports]
    assert np.abs(np.asarray(logits_r[0]) - np.asarray(logits_r[1])).max() > 1e-4


@pytest.mark.parametrize("unit", ["lead", "joint"])
def test_swapped_examples_get_their_partners_mask_with_their_own_budget(unit):
    """swap_share: a swapped example ranks its own observed units by its partner's perturbed
    scores (the partner's rho): with the same observed units it gets exactly the partner's
    mask; otherwise the partner's ranking restricted to its own observed units, the budget
    exact over them and no unobserved unit removed. Not swapped, or swap=False: unchanged."""
    rng = np.random.default_rng(11)
    b, d = 8, 8
    tokens = jnp.asarray(rng.normal(size=(b, L * S, d)), jnp.float32)
    report = jnp.zeros((b, 4))
    rho = jnp.asarray(rng.uniform(0.3, 0.6, b), jnp.float32)
    masker = M.Masker(kind="adversarial", unit=unit, width=16, depth=1, num_heads=2,
                      joint_lead_share=0.85, swap_share=0.6)
    same = jnp.ones((b, L, S), bool)
    params = masker.init({"params": jax.random.key(0), "masker": jax.random.key(1)},
                         tokens, report, same)

    def run(observed, swap):
        return masker.apply(params, tokens, report, observed, rho=rho, tau=0.3, swap=swap,
                            rngs={"masker": jax.random.key(4)})

    m0, aux0 = run(same, False)
    m1, aux1 = run(same, True)
    partner = np.asarray(aux1["swap_partner"])
    swapped = np.asarray(aux1["swapped"])
    assert 0 < swapped.sum() < b and (partner != np.arange(b)).all()
    assert sorted(partner.tolist()) == list(range(b))  # a permutation
    h0, h1 = np.asarray(aux0["m_hard"]), np.asarray(aux1["m_hard"])
    np.testing.assert_array_equal(h1[swapped], h0[partner[swapped]])
    np.testing.assert_array_equal(h1[~swapped], h0[~swapped])
    np.testing.assert_array_equal(np.asarray(aux1["rho"]),
                                  np.where(swapped, np.asarray(rho)[partner], np.asarray(rho)))
    assert "swapped" not in aux0

    # Different observed leads per example.
    observed = np.ones((b, L, S), bool)
    for i in range(b):
        observed[i, rng.choice(L, size=i % 4 + 1, replace=False)] = False
    observed[:, :, -1] &= np.arange(b)[:, None] % 2 == 0  # odd examples lose the last segment
    m2, aux2 = run(jnp.asarray(observed), True)
    _, aux_own = run(jnp.asarray(observed), False)
    np.testing.assert_array_equal(np.asarray(aux2["swap_partner"]), partner)
    h2 = np.asarray(aux2["m_hard"]) > 0
    assert not h2[~observed].any()
    rho2 = np.asarray(aux2["rho"])
    kinds = [("lead", 0.85, 2)] if unit == "joint" else [("", 1.0, 2)]
    if unit == "joint":
        kinds.append(("segment", 0.15, 1))
    for name, share, axis in kinds:
        sfx = f"_{name}" if unit == "joint" else ""
        ranked = np.asarray(aux2["ranked" + sfx])
        ranked_own = np.asarray(aux_own["ranked" + sfx])
        obs_u = observed.any(axis)
        removed = (h2 | ~observed).all(axis) & obs_u if unit == "joint" else h2.any(axis)
        for i in range(b):
            k = int(np.round(rho2[i] * share * obs_u[i].sum()))
            if unit != "joint":
                assert removed[i].sum() == k  # exact budget over its own observed units
            if swapped[i]:
                p = partner[i]
                # the partner's perturbed scores on the units both observe
                both = obs_u[i] & obs_u[p]
                np.testing.assert_array_equal(ranked[i][both], ranked_own[p][both])
                # the top-k of those scores over its own observed units
                s = np.where(obs_u[i], ranked[i], -np.inf)
                top = np.zeros_like(obs_u[i])
                top[np.argsort(-s, kind="stable")[:k]] = True
                assert (top <= removed[i]).all()
            else:
                np.testing.assert_array_equal(ranked[i], ranked_own[i])


def _np_log_prob(z, m, observed, k, c):
    """Reference: t solves sum over observed sigmoid((z - t)/c) = k (scipy brentq), then the
    independent-Bernoulli log-likelihood of m over the observed units."""
    from scipy.optimize import brentq

    out = []
    for zi, mi, oi, ki in zip(z, m, observed, k):
        zo, mo = np.asarray(zi, np.float64)[oi], np.asarray(mi, np.float64)[oi]
        sig = lambda t: 1.0 / (1.0 + np.exp(-(zo - t) / c))
        t = brentq(lambda t: sig(t).sum() - ki, zo.min() - 60 * c, zo.max() + 60 * c, xtol=1e-12)
        p = sig(t)
        out.append(float(np.sum(mo * np.log(p) + (1 - mo) * np.log1p(-p))))
    return np.asarray(out)


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_mask_log_prob_matches_reference(c):
    """log p of a hard mask under the masker's logistic noise: the threshold that spends the
    budget in expectation, then independent Bernoulli draws (numpy + scipy reference); the
    noise-free mode (noise_scale 0) has none (0)."""
    rng = np.random.default_rng(21)
    b, u = 5, 12
    z = rng.normal(size=(b, u)) * 2.0
    observed = rng.random((b, u)) > 0.2
    observed[:, :4] = True
    k = np.asarray(M.budget(jnp.asarray(observed.sum(-1)), jnp.full((b,), 0.3)))
    m = np.asarray(M.hard_topk(jnp.asarray(z + rng.logistic(size=(b, u)), jnp.float32),
                               jnp.asarray(k), jnp.asarray(observed)))
    got = M.mask_log_prob(jnp.asarray(z, jnp.float32), jnp.asarray(m), jnp.asarray(k),
                          jnp.asarray(observed), c, iters=60)
    np.testing.assert_allclose(np.asarray(got), _np_log_prob(z, m, observed, k, c),
                               rtol=1e-4, atol=1e-4)
    zero = M.mask_log_prob(jnp.asarray(z, jnp.float32), jnp.asarray(m), jnp.asarray(k),
                           jnp.asarray(observed), 0.0)
    np.testing.assert_array_equal(np.asarray(zero), 0.0)


def test_masker_log_prob_is_zero_where_the_mask_is_not_its_own():
    """aux['logp']: the drawn mask's log-probability for the examples that drew their own
    (< 0), 0 for a random mask (use_random) and for a swapped example (its partner's mask);
    joint adds the lead and segment draws."""
    rng = np.random.default_rng(5)
    b, d = 8, 8
    tokens = jnp.asarray(rng.normal(size=(b, L * S, d)), jnp.float32)
    report = jnp.zeros((b, 4))
    observed = jnp.ones((b, L, S), bool)
    use_random = jnp.asarray(np.arange(b) % 4 == 1)
    for unit in ("lead", "joint"):
        masker = M.Masker(kind="adversarial", unit=unit, width=16, depth=1, num_heads=2,
                          swap_share=0.5)
        params = masker.init({"params": jax.random.key(0), "masker": jax.random.key(1)},
                             tokens, report, observed)
        _, aux = masker.apply(params, tokens, report, observed, tau=0.5, swap=True,
                              use_random=use_random, rngs={"masker": jax.random.key(3)})
        logp, swapped = np.asarray(aux["logp"]), np.asarray(aux["swapped"])
        own = ~swapped & ~np.asarray(use_random)
        assert own.any() and swapped.any()
        assert (logp[own] < 0).all() and (logp[~own] == 0).all()


def test_policy_gradient_finds_a_removal_that_only_pays_as_a_group():
    """The score-function term learns what one-unit-at-a-time signals cannot: the damage is
    paid only when most of a 4-unit group is removed together (damage = (removed in group)^3,
    so one group unit alone is worth almost nothing). Ascending losses.masker_policy_gradient
    on masks drawn as the masker draws them (logistic noise, exact top-k) moves the whole
    budget into the group."""
    import optax

    from scar_jax import losses

    u, k, b = 12, 3, 256
    group = np.zeros(u, bool)
    group[[2, 5, 7, 10]] = True
    observed = jnp.ones((b, u), bool)
    kk = jnp.full((b,), k, jnp.int32)
    tx = optax.adam(0.05)

    def draw(z, rng):
        s = jnp.broadcast_to(z, (b, u)) + M.logistic_noise(rng, (b, u))
        return M.hard_topk(s, kk, observed)

    @jax.jit
    def step(z, opt, rng):
        m = draw(z, rng)
        damage = jnp.sum(m * group, -1) ** 3
        surrogate = lambda z: losses.masker_policy_gradient(
            damage, jnp.zeros((b,)), M.mask_log_prob(jnp.broadcast_to(z, (b, u)), m, kk,
                                                      observed))
        g = jax.tree.map(jnp.negative, jax.grad(surrogate)(z))  # ascend
        upd, opt = tx.update(g, opt, z)
        return optax.apply_updates(z, upd), opt

    z = jnp.zeros((u,))
    opt = tx.init(z)
    share = lambda z: float(jnp.mean(jnp.sum(draw(z, jax.random.key(99)) * group, -1)) / k)
    assert share(z) < 0.5  # chance: 4/12
    for i in range(150):
        z, opt = step(z, opt, jax.random.key(i))
    assert share(z) > 0.9
