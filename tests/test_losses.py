"""SCAR's losses against independent float64 numpy references.

The loss values are compared in float64 (`jax.enable_x64`): with the logit
scale capped at 100, float32 logits carry ~1e-5 absolute rounding, so a 1e-6
check is only meaningful in double precision. One float32 test checks the
default-dtype path with a relative tolerance, and the sharded test runs in
float32 (sharded vs single-device, same dtype).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from scar_jax import losses

ATOL = 1e-6


# ---------------------------------------------------------------------------
# Independent numpy references (float64, explicit loops).
# ---------------------------------------------------------------------------

def np_lse(x: np.ndarray) -> float:
  m = np.max(x)
  return float(m + np.log(np.sum(np.exp(x - m))))


def np_log_sigmoid(x: float) -> float:
  # log(1 / (1 + exp(-x))), stable for both signs.
  return -float(np.logaddexp(0.0, -x))


def np_clip(za, zb, log_scale, max_scale=100.0):
  za = np.asarray(za, np.float64)
  zb = np.asarray(zb, np.float64)
  t = min(math.exp(float(log_scale)), max_scale)
  b = za.shape[0]
  logits = np.zeros((b, b))
  for i in range(b):
    for j in range(b):
      logits[i, j] = t * float(np.dot(za[i], zb[j]))
  row = [np_lse(logits[i, :]) - logits[i, i] for i in range(b)]
  col = [np_lse(logits[:, j]) - logits[j, j] for j in range(b)]
  return 0.5 * (sum(row) / b + sum(col) / b)


def np_siglip(za, zb, log_scale, bias, max_scale=100.0):
  za = np.asarray(za, np.float64)
  zb = np.asarray(zb, np.float64)
  t = min(math.exp(float(log_scale)), max_scale)
  b = za.shape[0]
  total = 0.0
  for i in range(b):
    for j in range(b):
      y = 1.0 if i == j else -1.0
      total += np_log_sigmoid(y * (t * float(np.dot(za[i], zb[j])) + float(bias)))
  return -total / b


def np_selector_kl(q, w, visible):
  q = np.asarray(q, np.float64)
  w = np.asarray(w, np.float64)
  b, n = q.shape
  rows = []
  for i in range(b):
    s = 0.0
    for j in range(n):
      if visible[i, j] and q[i, j] > 0:
        s += q[i, j] * (math.log(q[i, j]) - math.log(w[i, j]))
    rows.append(s)
  return sum(rows) / b


def np_consistency(zm, zc):
  zm = np.asarray(zm, np.float64)
  zc = np.asarray(zc, np.float64)
  return float(np.mean([1.0 - float(np.dot(zm[i], zc[i])) for i in range(zm.shape[0])]))


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------

def unit(rng, b, e, dtype=np.float64):
  z = rng.normal(size=(b, e))
  return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(dtype)


def simplex(rng, b, n, visible):
  """Rows of positive weights summing to 1 over the visible tokens."""
  w = rng.uniform(0.1, 1.0, size=(b, n)) * visible
  return w / w.sum(1, keepdims=True)


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


# ---------------------------------------------------------------------------
# Individual losses.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("log_scale", [0.0, math.log(1 / 0.07), math.log(100.0)])
def test_clip_loss_matches_reference(x64, log_scale):
  rng = np.random.default_rng(0)
  za, zb = unit(rng, 8, 12), unit(rng, 8, 12)
  got = losses.clip_loss(jnp.asarray(za), jnp.asarray(zb), jnp.asarray(log_scale))
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(float(got), np_clip(za, zb, log_scale), rtol=0, atol=ATOL)


def test_clip_loss_is_asymmetric_in_rows_and_columns_and_averages_them(x64):
  # B != E and unequal za/zb so row- and column-wise CE differ; swapping the
  # arguments transposes the logits, which leaves the symmetric mean unchanged.
  rng = np.random.default_rng(1)
  za, zb = unit(rng, 7, 10), unit(rng, 7, 10)
  s = jnp.asarray(math.log(20.0))
  a = float(losses.clip_loss(jnp.asarray(za), jnp.asarray(zb), s))
  b = float(losses.clip_loss(jnp.asarray(zb), jnp.asarray(za), s))
  np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
  np.testing.assert_allclose(a, np_clip(za, zb, math.log(20.0)), rtol=0, atol=ATOL)


def test_clip_loss_perfect_alignment_known_value(x64):
  # Orthonormal pairs: logits = t * I; row CE = log(e^t + (B-1)) - t.
  b, t = 6, 5.0
  z = jnp.eye(b, 8)
  got = float(losses.clip_loss(z, z, jnp.asarray(math.log(t))))
  np.testing.assert_allclose(got, math.log(math.exp(t) + b - 1) - t, rtol=0, atol=1e-12)


def test_clip_loss_scale_capped_at_100(x64):
  rng = np.random.default_rng(2)
  za, zb = unit(rng, 9, 16), unit(rng, 9, 16)
  capped = float(losses.clip_loss(jnp.asarray(za), jnp.asarray(zb), jnp.asarray(math.log(500.0))))
  at_cap = float(losses.clip_loss(jnp.asarray(za), jnp.asarray(zb), jnp.asarray(math.log(100.0))))
  np.testing.assert_allclose(capped, at_cap, rtol=0, atol=1e-12)
  np.testing.assert_allclose(capped, np_clip(za, zb, math.log(100.0)), rtol=0, atol=ATOL)
  # Without the cap the loss would be different (sanity that the cap matters here).
  assert abs(np_clip(za, zb, math.log(500.0), max_scale=1e9) - capped) > 1e-3
  np.testing.assert_allclose(float(losses.capped_scale(jnp.asarray(math.log(500.0)))), 100.0,
                             rtol=1e-12)
  np.testing.assert_allclose(float(losses.capped_scale(jnp.asarray(math.log(7.0)))), 7.0,
                             rtol=1e-12)


def test_clip_loss_float32_default_dtype():
  rng = np.random.default_rng(3)
  za, zb = unit(rng, 8, 12, np.float32), unit(rng, 8, 12, np.float32)
  for s in (math.log(1 / 0.07), math.log(100.0)):
    got = losses.clip_loss(jnp.asarray(za), jnp.asarray(zb), jnp.float32(s))
    assert got.dtype == jnp.float32
    # float32 logits up to 100 carry ~1e-5 absolute rounding.
    np.testing.assert_allclose(float(got), np_clip(za, zb, s), rtol=1e-6, atol=3e-5)


@pytest.mark.parametrize("log_scale,bias", [(math.log(10.0), -10.0), (math.log(1.0), 0.5),
                                            (math.log(300.0), -3.0)])
def test_siglip_loss_matches_reference(x64, log_scale, bias):
  rng = np.random.default_rng(4)
  za, zb = unit(rng, 8, 12), unit(rng, 8, 12)
  got = float(losses.siglip_loss(jnp.asarray(za), jnp.asarray(zb), jnp.asarray(log_scale),
                                 jnp.asarray(bias)))
  np.testing.assert_allclose(got, np_siglip(za, zb, log_scale, bias), rtol=0, atol=ATOL)


def np_merl_uma(va, vb, temperature=0.07):
  """MERL's utils_loss.clip_loss on (view_1, view_2): L2-normalise, cosine / T, cross-entropy
  in both directions (averaged here, as clip_loss averages; MERL sums both in both terms)."""
  va = np.asarray(va, np.float64)
  vb = np.asarray(vb, np.float64)
  va = va / np.linalg.norm(va, axis=1, keepdims=True)
  vb = vb / np.linalg.norm(vb, axis=1, keepdims=True)
  sim = va @ vb.T / temperature
  n = sim.shape[0]
  rows = [np_lse(sim[i]) - sim[i, i] for i in range(n)]
  cols = [np_lse(sim[:, j]) - sim[j, j] for j in range(n)]
  return 0.5 * (np.mean(rows) + np.mean(cols))


def test_uni_modal_loss_is_merls_fixed_temperature_infonce(x64):
  # Unnormalised views (MERL normalises inside its loss) at MERL's fixed temperature 0.07;
  # the learned CLIP scale plays no part.
  rng = np.random.default_rng(5)
  va, vb = 3.0 * rng.normal(size=(10, 8)), 0.5 * rng.normal(size=(10, 8))
  got = float(losses.uni_modal_loss(jnp.asarray(va), jnp.asarray(vb), 0.07))
  np.testing.assert_allclose(got, np_merl_uma(va, vb, 0.07), rtol=0, atol=ATOL)
  assert losses.MERL_TEMPERATURE == 0.07
  got_default = float(losses.uni_modal_loss(jnp.asarray(va), jnp.asarray(vb)))
  np.testing.assert_allclose(got_default, got, rtol=0, atol=ATOL)
  got_t = float(losses.uni_modal_loss(jnp.asarray(va), jnp.asarray(vb), 0.5))
  np.testing.assert_allclose(got_t, np_merl_uma(va, vb, 0.5), rtol=0, atol=ATOL)


def _selector_case(rng, b=6, n=10):
  visible = rng.uniform(size=(b, n)) < 0.7
  visible[:, 0] = True
  visible[0, :] = True                  # a fully visible row
  visible[1, 1:] = False                # a row with one visible token
  q = simplex(rng, b, n, visible)
  w = simplex(rng, b, n, visible)
  # Row 2: some visible q entries exactly 0 (0 log 0 = 0).
  vis2 = np.flatnonzero(visible[2])
  assert len(vis2) >= 2
  q[2, vis2[1:]] = 0.0
  q[2, vis2[0]] = 1.0
  # Garbage in invisible slots must be ignored entirely.
  garbage_q = np.where(rng.uniform(size=(b, n)) < 0.5, 1e30, -7.0)
  garbage_w = np.where(rng.uniform(size=(b, n)) < 0.5, 0.0, 1e30)
  q = np.where(visible, q, garbage_q)
  w = np.where(visible, w, garbage_w)
  return q, w, visible


def test_selector_kl_matches_reference_and_ignores_invisible(x64):
  rng = np.random.default_rng(6)
  q, w, visible = _selector_case(rng)
  got = float(losses.selector_kl(jnp.asarray(q), jnp.asarray(w), jnp.asarray(visible)))
  assert np.isfinite(got)
  np.testing.assert_allclose(got, np_selector_kl(q, w, visible), rtol=0, atol=ATOL)
  # Changing the invisible garbage does not change the value.
  q2 = np.where(visible, q, np.inf)
  w2 = np.where(visible, w, np.nan)
  got2 = float(losses.selector_kl(jnp.asarray(q2), jnp.asarray(w2), jnp.asarray(visible)))
  np.testing.assert_allclose(got2, got, rtol=0, atol=1e-12)
  # KL(q || q) = 0.
  same = float(losses.selector_kl(jnp.asarray(q), jnp.asarray(np.where(visible, q, 0.5)),
                                  jnp.asarray(visible)))
  # Row 2's zero q entries would give w = 0 there; the clamp to 1e-30 keeps it finite.
  np.testing.assert_allclose(same, 0.0, rtol=0, atol=1e-12)


def test_selector_kl_gradient_wrt_weights(x64):
  # d/dw_ij KL(q||w) / B = -q_ij / (w_ij B) on visible tokens, exactly 0 elsewhere.
  rng = np.random.default_rng(7)
  q, w, visible = _selector_case(rng)
  g = jax.grad(losses.selector_kl, argnums=1)(jnp.asarray(q), jnp.asarray(w),
                                               jnp.asarray(visible))
  g = np.asarray(g)
  assert np.all(np.isfinite(g))
  expected = np.where(visible, -np.where(visible, q, 0.0) / np.where(visible, w, 1.0), 0.0)
  expected /= q.shape[0]
  np.testing.assert_allclose(g, expected, rtol=1e-12, atol=0)


def test_consistency_loss_value_and_stop_gradient(x64):
  rng = np.random.default_rng(8)
  zm, zc = unit(rng, 8, 12), unit(rng, 8, 12)
  got = float(losses.consistency_loss(jnp.asarray(zm), jnp.asarray(zc)))
  np.testing.assert_allclose(got, np_consistency(zm, zc), rtol=0, atol=ATOL)
  g_clean = jax.grad(losses.consistency_loss, argnums=1)(jnp.asarray(zm), jnp.asarray(zc))
  assert np.all(np.asarray(g_clean) == 0.0)
  g_masked = jax.grad(losses.consistency_loss, argnums=0)(jnp.asarray(zm), jnp.asarray(zc))
  np.testing.assert_allclose(np.asarray(g_masked), -zc / zc.shape[0], rtol=1e-12, atol=0)
  # Identical views: zero loss.
  np.testing.assert_allclose(float(losses.consistency_loss(jnp.asarray(zc), jnp.asarray(zc))),
                             0.0, rtol=0, atol=1e-12)


def test_mask_entropy_is_batch_mean(x64):
  ent = np.array([0.1, 0.7, 2.3, 0.0, 1.25])
  got = float(losses.mask_entropy(jnp.asarray(ent)))
  np.testing.assert_allclose(got, sum(ent.tolist()) / len(ent), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# The fused objective.
# ---------------------------------------------------------------------------

def _fake_out(rng, b=8, e=12, n=10):
  z = unit(rng, b, e)
  zt = unit(rng, b, e)
  zm = unit(rng, b, e)
  vis_c = rng.uniform(size=(b, n)) < 0.8
  vis_c[:, 0] = True
  vis_m = vis_c & (rng.uniform(size=(b, n)) < 0.7)
  vis_m[:, 0] = True
  out = {
      "z_txt": zt,
      "z_masked": zm,
      "clean": {"weights": simplex(rng, b, n, vis_c), "visible": vis_c},
      "masked": {"weights": simplex(rng, b, n, vis_m), "visible": vis_m},
      "sel_target": simplex(rng, b, n, vis_c),
      "sel_target_masked": simplex(rng, b, n, vis_m),
      "masker": {"entropy": rng.uniform(0.0, 2.0, size=(b,))},
      "uma_views": (unit(rng, b, e), unit(rng, b, e)),
      "logit_scale": np.asarray(math.log(1 / 0.07)),
      "logit_bias": np.asarray(-4.0),
  }
  return z, out


def _to_jnp(tree):
  return jax.tree.map(jnp.asarray, tree)


def test_scar_objective_full_weighted_sum(x64):
  rng = np.random.default_rng(9)
  z, out = _fake_out(rng)
  weights = {"adv": 0.7, "sel": 0.3, "cons": 1.5, "uma": 0.25, "ent": 0.05}
  s = float(out["logit_scale"])
  ref = {
      "clip_clean": np_clip(z, out["z_txt"], s),
      "clip_masked": np_clip(out["z_masked"], out["z_txt"], s),
      "selector_kl": 0.5 * (
          np_selector_kl(out["sel_target"], out["clean"]["weights"], out["clean"]["visible"])
          + np_selector_kl(out["sel_target_masked"], out["masked"]["weights"],
                           out["masked"]["visible"])),
      "consistency": np_consistency(out["z_masked"], z),
      "uni_modal": np_merl_uma(out["uma_views"][0], out["uma_views"][1], 0.07),
      "mask_entropy": float(np.mean(out["masker"]["entropy"])),
  }
  assert ref["selector_kl"] > 0
  expected_total = (ref["clip_clean"] + 0.7 * ref["clip_masked"] + 0.3 * ref["selector_kl"]
                    + 1.5 * ref["consistency"] + 0.25 * ref["uni_modal"]
                    + 0.05 * ref["mask_entropy"])

  total, metrics = losses.scar_objective(jnp.asarray(z), _to_jnp(out), weights)
  np.testing.assert_allclose(float(total), expected_total, rtol=0, atol=ATOL)
  assert set(metrics) == {f"loss/{k}" for k in ref} | {"loss/total"}
  for k, v in ref.items():
    np.testing.assert_allclose(float(metrics[f"loss/{k}"]), v, rtol=0, atol=ATOL, err_msg=k)
  np.testing.assert_allclose(float(metrics["loss/total"]), expected_total, rtol=0, atol=ATOL)

  # Under jit as well.
  total_j, _ = jax.jit(lambda z, o: losses.scar_objective(z, o, weights))(
      jnp.asarray(z), _to_jnp(out))
  np.testing.assert_allclose(float(total_j), expected_total, rtol=0, atol=ATOL)


def test_term_weights_masker_gets_only_its_terms(x64):
  # The masker's coefficients: w_adv on L(masked), w_ent on H(m), 1 on L(clean) (reached only
  # through the clean view's straight-through keep); 0 on the selector, consistency, UMA.
  rng = np.random.default_rng(12)
  z, out = _fake_out(rng)
  weights = {"adv": 0.7, "sel": 0.3, "cons": 1.5, "uma": 0.25, "ent": 0.05}
  terms = losses.objective_terms(jnp.asarray(z), _to_jnp(out))
  enc = {k: float(v) for k, v in losses.term_weights(terms, weights).items()}
  msk = {k: float(v) for k, v in losses.term_weights(terms, weights, "masker").items()}
  assert enc == pytest.approx({"clip_clean": 1.0, "clip_masked": 0.7, "selector_kl": 0.3,
                               "consistency": 1.5, "uni_modal": 0.25, "mask_entropy": 0.05})
  assert msk == pytest.approx({"clip_clean": 1.0, "clip_masked": 0.7, "selector_kl": 0.0,
                               "consistency": 0.0, "uni_modal": 0.0, "mask_entropy": 0.05})
  with pytest.raises(ValueError, match="player"):
    losses.term_weights(terms, weights, "selector")


def test_contrastive_rows_are_each_pairs_share_of_the_loss(x64):
  # clip: pair i's (row CE + column CE) / 2; siglip: row i's sum; their means are the losses.
  rng = np.random.default_rng(14)
  b, e = 6, 5
  za, zb = unit(rng, b, e), unit(rng, b, e)
  s, bias = math.log(1 / 0.07), -3.0
  logits = math.exp(s) * za @ zb.T
  ref_clip = [0.5 * ((np_lse(logits[i]) - logits[i, i]) + (np_lse(logits[:, i]) - logits[i, i]))
              for i in range(b)]
  out = {"logit_scale": jnp.asarray(s), "logit_bias": jnp.asarray(bias)}
  rows = losses.contrastive_rows(jnp.asarray(za), jnp.asarray(zb), out, "clip")
  np.testing.assert_allclose(np.asarray(rows), ref_clip, rtol=0, atol=ATOL)
  np.testing.assert_allclose(float(jnp.mean(rows)), np_clip(za, zb, s), rtol=0, atol=ATOL)
  ref_sig = [-sum(np_log_sigmoid((1.0 if i == j else -1.0) * (logits[i, j] + bias))
                  for j in range(b)) for i in range(b)]
  rows = losses.contrastive_rows(jnp.asarray(za), jnp.asarray(zb), out, "siglip")
  np.testing.assert_allclose(np.asarray(rows), ref_sig, rtol=0, atol=ATOL)
  np.testing.assert_allclose(float(jnp.mean(rows)), np_siglip(za, zb, s, bias), rtol=0,
                             atol=ATOL)


def test_masker_policy_gradient_value_and_what_it_differentiates(x64):
  # A_i = (masked_i - clean_i) - mean over own-mask examples (logp != 0); term = mean A_i logp_i.
  masked = np.array([3.0, 1.0, 2.0, 5.0])
  clean = np.array([1.0, 1.0, 1.0, 1.0])
  logp = np.array([-2.0, -1.0, 0.0, -4.0])  # example 2 drew no mask of its own
  damage = masked - clean  # 2, 0, 1, 4
  base = (2.0 + 0.0 + 4.0) / 3.0
  adv = np.where(logp != 0, damage - base, 0.0)
  want = float(np.mean(adv * logp))
  got = losses.masker_policy_gradient(jnp.asarray(masked), jnp.asarray(clean), jnp.asarray(logp))
  np.testing.assert_allclose(float(got), want, rtol=0, atol=1e-12)
  gm, gc, gl = jax.grad(losses.masker_policy_gradient, (0, 1, 2))(
      jnp.asarray(masked), jnp.asarray(clean), jnp.asarray(logp))
  np.testing.assert_array_equal(np.asarray(gm), 0.0)  # the losses are rewards: no gradient
  np.testing.assert_array_equal(np.asarray(gc), 0.0)
  np.testing.assert_allclose(np.asarray(gl), adv / 4.0, rtol=0, atol=1e-12)


def test_masker_policy_gradient_term_is_the_maskers_alone(x64):
  # Computed only with loss_weights.pg > 0 and the masker's logp; coefficient w_pg for the
  # masker, 0 for the encoders, so J (loss/total) is unchanged by it.
  rng = np.random.default_rng(15)
  z, out = _fake_out(rng)
  out["masker"]["logp"] = -rng.uniform(1.0, 3.0, size=z.shape[0])
  weights = {"adv": 0.7, "ent": 0.05, "pg": 0.5}
  terms = losses.objective_terms(jnp.asarray(z), _to_jnp(out), weights=weights)
  s = float(out["logit_scale"])
  out_j = _to_jnp(out)
  rows_m = losses.contrastive_rows(out_j["z_masked"], out_j["z_txt"], out_j, "clip")
  rows_c = losses.contrastive_rows(jnp.asarray(z), out_j["z_txt"], out_j, "clip")
  want = losses.masker_policy_gradient(rows_m, rows_c, out_j["masker"]["logp"])
  np.testing.assert_allclose(float(terms["masker_pg"]), float(want), rtol=0, atol=ATOL)
  assert float(terms["masker_pg"]) != 0.0
  enc = losses.term_weights(terms, weights)
  msk = losses.term_weights(terms, weights, "masker")
  assert float(enc["masker_pg"]) == 0.0 and float(msk["masker_pg"]) == 0.5
  total, metrics = losses.weighted_objective(terms, weights)
  np.testing.assert_allclose(
      float(total), np_clip(z, out["z_txt"], s) + 0.7 * np_clip(out["z_masked"], out["z_txt"], s)
      + 0.05 * float(np.mean(out["masker"]["entropy"])) + float(terms["consistency"]) * 0.0
      + float(terms["selector_kl"]) * 0.0, rtol=0, atol=ATOL)
  assert "loss/masker_pg" in metrics
  # pg = 0 (or absent): not computed.
  off = losses.objective_terms(jnp.asarray(z), _to_jnp(out), weights={"adv": 0.7})
  assert "masker_pg" not in off


def test_scar_objective_default_weights(x64):
  # adv defaults to 1, every other coefficient to 0 (terms still reported).
  rng = np.random.default_rng(10)
  z, out = _fake_out(rng)
  s = float(out["logit_scale"])
  total, metrics = losses.scar_objective(jnp.asarray(z), _to_jnp(out), {})
  expected = np_clip(z, out["z_txt"], s) + np_clip(out["z_masked"], out["z_txt"], s)
  np.testing.assert_allclose(float(total), expected, rtol=0, atol=ATOL)
  assert "loss/consistency" in metrics and "loss/uni_modal" in metrics


def test_scar_objective_selector_without_masked_target(x64):
  rng = np.random.default_rng(11)
  z, out = _fake_out(rng)
  del out["sel_target_masked"]
  _, metrics = losses.scar_objective(jnp.asarray(z), _to_jnp(out), {"sel": 1.0})
  ref = np_selector_kl(out["sel_target"], out["clean"]["weights"], out["clean"]["visible"])
  np.testing.assert_allclose(float(metrics["loss/selector_kl"]), ref, rtol=0, atol=ATOL)


def test_scar_objective_masker_none_only_clean_clip(x64):
  rng = np.random.default_rng(12)
  z, full = _fake_out(rng)
  out = {"z_txt": full["z_txt"], "logit_scale": full["logit_scale"]}
  weights = {"adv": 0.7, "sel": 0.3, "cons": 1.5, "uma": 0.25, "ent": 0.05}
  total, metrics = losses.scar_objective(jnp.asarray(z), _to_jnp(out), weights)
  expected = np_clip(z, out["z_txt"], float(out["logit_scale"]))
  np.testing.assert_allclose(float(total), expected, rtol=0, atol=ATOL)
  assert set(metrics) == {"loss/clip_clean", "loss/total"}
  np.testing.assert_allclose(float(metrics["loss/clip_clean"]), expected, rtol=0, atol=ATOL)


def test_scar_objective_siglip_kind(x64):
  rng = np.random.default_rng(13)
  z, full = _fake_out(rng)
  out = {k: full[k] for k in ("z_txt", "z_masked", "masker", "logit_scale", "logit_bias")}
  total, metrics = losses.scar_objective(jnp.asarray(z), _to_jnp(out), {"adv": 0.5},
                                         kind="siglip")
  s, bias = float(out["logit_scale"]), float(out["logit_bias"])
  clean = np_siglip(z, out["z_txt"], s, bias)
  masked = np_siglip(out["z_masked"], out["z_txt"], s, bias)
  np.testing.assert_allclose(float(metrics["loss/clip_clean"]), clean, rtol=0, atol=ATOL)
  np.testing.assert_allclose(float(metrics["loss/clip_masked"]), masked, rtol=0, atol=ATOL)
  np.testing.assert_allclose(float(total), clean + 0.5 * masked, rtol=0, atol=ATOL)


# ---------------------------------------------------------------------------
# Global-batch negatives under data sharding.
# ---------------------------------------------------------------------------

def test_clip_loss_sharded_over_8_devices_matches_single_device():
  assert len(jax.devices()) == 8
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  rng = np.random.default_rng(14)
  b, e = 16, 12
  za, zb = unit(rng, b, e, np.float32), unit(rng, b, e, np.float32)
  s = jnp.float32(math.log(1 / 0.07))

  za_s = jax.device_put(za, sharding)
  zb_s = jax.device_put(zb, sharding)
  assert len(za_s.sharding.device_set) == 8
  assert za_s.addressable_shards[0].data.shape == (b // 8, e)

  dev0 = jax.devices()[0]
  za_1 = jax.device_put(za, dev0)
  zb_1 = jax.device_put(zb, dev0)

  loss_fn = jax.jit(losses.clip_loss)
  sharded = float(loss_fn(za_s, zb_s, s))
  single = float(loss_fn(za_1, zb_1, s))
  np.testing.assert_allclose(sharded, single, rtol=0, atol=1e-6)
  # And it is the global-batch loss (all 16 x 16 negatives), not a per-shard mean.
  np.testing.assert_allclose(single, np_clip(za, zb, float(s)), rtol=1e-6, atol=1e-6)
  per_shard = np.mean([np_clip(za[i:i + 2], zb[i:i + 2], float(s)) for i in range(0, b, 2)])
  assert abs(per_shard - single) > 1e-2

  grad_fn = jax.jit(jax.grad(losses.clip_loss))
  g_sharded = np.asarray(grad_fn(za_s, zb_s, s))
  g_single = np.asarray(grad_fn(za_1, zb_1, s))
  assert g_sharded.shape == (b, e)
  np.testing.assert_allclose(g_sharded, g_single, rtol=0, atol=1e-6)
  assert np.abs(g_single).max() > 1e-3
