"""Parameter-path regexes and freezing (scar_jax.optim)."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scar_jax import optim


def make_params(seed: int = 0):
  rng = np.random.default_rng(seed)

  def a(*shape):
    return jnp.asarray(rng.normal(size=shape).astype(np.float32))

  return {
      "txt": {
          "bert": {
              "embeddings": {"word": a(11, 4), "position": a(6, 4)},
              "encoder": {"layer_0": {"kernel": a(4, 4), "bias": a(4)},
                          "layer_1": {"kernel": a(4, 4), "bias": a(4)}},
          },
          "head": {"kernel": a(4, 3), "bias": a(3)},
      },
      "ecg": {"conv": {"kernel": a(5, 2, 4)}, "proj": {"kernel": a(4, 3), "bias": a(3)}},
  }


# Dicts flatten in sorted-key order.
EXPECTED_PATHS = [
    "ecg/conv/kernel",
    "ecg/proj/bias",
    "ecg/proj/kernel",
    "txt/bert/embeddings/position",
    "txt/bert/embeddings/word",
    "txt/bert/encoder/layer_0/bias",
    "txt/bert/encoder/layer_0/kernel",
    "txt/bert/encoder/layer_1/bias",
    "txt/bert/encoder/layer_1/kernel",
    "txt/head/bias",
    "txt/head/kernel",
]


def flat(tree):
  return dict(zip(optim.param_paths(tree), jax.tree.leaves(tree)))


def test_param_paths():
  assert optim.param_paths(make_params()) == EXPECTED_PATHS


def test_param_paths_sequences_and_scalars():
  tree = {"layers": [jnp.zeros(1), {"w": jnp.zeros(2)}], "s": jnp.zeros(())}
  assert optim.param_paths(tree) == ["layers/0", "layers/1/w", "s"]


@pytest.mark.parametrize("patterns,expected", [
    (["^txt/bert/"], {p for p in EXPECTED_PATHS if p.startswith("txt/bert/")}),
    (["bias$"], {p for p in EXPECTED_PATHS if p.endswith("/bias")}),
    (["embeddings", "^ecg/conv"], {"txt/bert/embeddings/position", "txt/bert/embeddings/word",
                                   "ecg/conv/kernel"}),
    (["layer_1/kernel$", "^txt/head/kernel$"], {"txt/bert/encoder/layer_1/kernel",
                                                "txt/head/kernel"}),
    # re.search, not re.match: an unanchored pattern may match mid-path.
    (["proj"], {"ecg/proj/bias", "ecg/proj/kernel"}),
    # Overlapping patterns still give a plain bool per leaf.
    (["^txt/", "head"], {p for p in EXPECTED_PATHS if p.startswith("txt/")}),
])
def test_regex_mask_marks_exactly_matching_leaves(patterns, expected):
  params = make_params()
  mask = optim.regex_mask(params, patterns)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  got = flat(mask)
  assert all(type(v) is bool for v in got.values())
  assert {p for p, v in got.items() if v} == expected


def test_regex_mask_strict_raises_on_unmatched_pattern():
  params = make_params()
  with pytest.raises(ValueError, match=re.escape("^txt/bret/")):
    optim.regex_mask(params, ["^txt/bert/", "^txt/bret/"])
  # Not strict: the unmatched pattern is simply ignored.
  mask = optim.regex_mask(params, ["^txt/bert/", "^txt/bret/"], strict=False)
  assert {p for p, v in flat(mask).items() if v} == {
      p for p in EXPECTED_PATHS if p.startswith("txt/bert/")}


def test_freeze_no_patterns_returns_tx():
  tx = optax.adamw(1e-2)
  assert optim.freeze(tx, make_params(), []) is tx


def test_freeze_typo_fails():
  with pytest.raises(ValueError, match=re.escape("^txt/bret/")):
    optim.freeze(optax.adamw(1e-2), make_params(), ["^txt/bret/"])


def _without_frozen(tree):
  """The unfrozen subtree (txt/bert dropped)."""
  return {"txt": {"head": tree["txt"]["head"]}, "ecg": tree["ecg"]}


def test_freeze_adamw():
  params0 = make_params()
  tx = optim.freeze(optax.adamw(1e-2), params0, ["^txt/bert/"])
  ref_tx = optax.adamw(1e-2)

  params = params0
  state = tx.init(params)
  ref_params = _without_frozen(params0)
  ref_state = ref_tx.init(ref_params)

  # No optimiser state is kept for frozen leaves: Adam's mu and nu cover only
  # the unfrozen parameters.
  n_train = sum(x.size for x in jax.tree.leaves(ref_params))
  n_state = sum(x.size for x in jax.tree.leaves(state) if hasattr(x, "ndim") and x.ndim > 0)
  assert n_state == 2 * n_train

  rng = np.random.default_rng(1)
  for step in range(3):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape).astype(np.float32)),
                         params)
    updates, state = tx.update(grads, state, params)
    ref_updates, ref_state = ref_tx.update(_without_frozen(grads), ref_state, ref_params)

    upd = flat(updates)
    for path, u in upd.items():
      if path.startswith("txt/bert/"):
        assert np.all(np.asarray(u) == 0.0), (step, path)
    ref_upd = flat(ref_updates)
    assert set(ref_upd) == {p for p in upd if not p.startswith("txt/bert/")}
    for path, u in ref_upd.items():
      # Same elementwise ops on the same inputs: bit-identical.
      np.testing.assert_array_equal(np.asarray(upd[path]), np.asarray(u), err_msg=path)

    params = optax.apply_updates(params, updates)
    ref_params = optax.apply_updates(ref_params, ref_updates)

  before, after = flat(params0), flat(params)
  for path in EXPECTED_PATHS:
    b, a = np.asarray(before[path]), np.asarray(after[path])
    if path.startswith("txt/bert/"):
      assert a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32)), path
    else:
      assert np.all(a != b), path
  for path, p in flat(ref_params).items():
    np.testing.assert_array_equal(np.asarray(after[path]), np.asarray(p), err_msg=path)


def test_freeze_adamw_under_jit_matches_eager():
  params = make_params()
  tx = optim.freeze(optax.adamw(1e-2), params, ["^txt/bert/"])
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  new, _ = step(params, state, grads)
  eager, _ = tx.update(grads, state, params)
  eager = optax.apply_updates(params, eager)
  for path, v in flat(new).items():
    np.testing.assert_allclose(np.asarray(v), np.asarray(flat(eager)[path]), rtol=1e-6,
                               atol=1e-7, err_msg=path)
    if path.startswith("txt/bert/"):
      np.testing.assert_array_equal(np.asarray(v), np.asarray(flat(params)[path]))


def test_masker_lr_is_constant_after_warmup_by_default():
    """Issue 19 item 8: the adversary's lr no longer decays to 0 with the encoders' cosine
    (the first build's masker lr was ~0 over its last adversarial steps); masker_schedule
    cosine restores the decay."""
    from configs import scar as scar_config

    config = scar_config.get_config("runlocal,text=random-tiny")
    config.total_steps, config.optim.warmup_steps = 100, 10
    assert config.optim.masker_schedule == "constant"
    _, sched = optim.masker_tx(config)
    peak = config.optim.masker_lr
    np.testing.assert_allclose([float(sched(s)) for s in (9, 50, 99, 200)], [peak] * 4,
                               rtol=1e-6)
    assert float(sched(0)) < peak  # the warm-up stays
    config.optim.masker_schedule = "cosine"
    _, sched = optim.masker_tx(config)
    assert float(sched(99)) < 0.01 * peak
    enc_sched = optim.lr_schedule(config.optim.lr, 10, 100, config.optim.schedule,
                                  config.optim.end_lr_factor)  # what encoder_tx uses
    assert float(enc_sched(99)) < 0.01 * config.optim.lr  # the encoders still decay
