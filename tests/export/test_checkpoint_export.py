"""Export of an orbax checkpoint trained a few steps by the real fused update: parity, round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scar_jax import checkpointing
from scar_jax import sharding as sharding_lib
from scar_jax import train_state as train_state_lib
from scar_jax import update as update_lib
from scar_jax.export import to_torch
from scar_jax.models import scar
from tests.export import parity as h

STEPS = 3


def _train_a_few_steps(config):
    """(state after STEPS fused updates on random batches, params at init) on 8 CPU devices."""
    model = scar.build_model(config.model)
    mesh = sharding_lib.make_mesh(config.mesh)
    b, t, length = config.batch_size, h.T, config.model.txt.max_len
    spec = {
        "ecg": jax.ShapeDtypeStruct((b, t, 12), jnp.float32),
        "input_ids": jax.ShapeDtypeStruct((b, length), jnp.int32),
    }
    state, shardings = train_state_lib.create_train_state(model, config, spec, mesh)
    init_params = jax.tree.map(np.asarray, state.params)
    batch_sharding = sharding_lib.batch_sharding(mesh)
    update_fn = update_lib.jit_update(
        update_lib.make_update_fn(model, config), shardings, batch_sharding
    )
    rng = np.random.default_rng(0)
    tokens = h.tokens(config.model.txt.checkpoint, h.PROMPTS * (b // len(h.PROMPTS)))
    for step in range(STEPS):
        batch = {
            "ecg": rng.random((b, t, 12)).astype(np.float32),
            "lead_observed": rng.random((b, 12)) > 0.2,
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
        }
        batch = jax.device_put(batch, batch_sharding)
        state, metrics = update_fn(state, batch, jax.random.key(step))
        assert np.isfinite(float(metrics["loss/total"]))
    return model, state, init_params


@pytest.mark.slow
def test_export_checkpoint_trained_a_few_steps(text_source, tmp_path):
    config = h.make_config("variant=mu", str(text_source))
    config.optim.lr = 1e-2  # a few steps visibly move the weights
    model, state, init_params = _train_a_few_steps(config)
    assert int(state.step) == STEPS
    moved = np.abs(
        np.asarray(state.params["ecg"]["head"]["kernel"]) - init_params["ecg"]["head"]["kernel"]
    ).max()
    assert moved > 1e-3, moved
    ckpt = checkpointing.Checkpointer(
        tmp_path / "run" / "checkpoints", async_save=False, keep_best=0
    )
    ckpt.save(STEPS, state, config=config)
    ckpt.close()

    out_dir = tmp_path / "export"
    manifest = to_torch.run(str(tmp_path / "run"), str(out_dir))  # the CLI entry point
    assert manifest["source"]["step"] == STEPS
    assert manifest["source"]["checkpoint"].endswith("run/checkpoints")

    params = jax.tree.map(np.asarray, state.params)
    variables = {"params": params}
    ecg, lead_obs, time_obs, keep = h.ecg_inputs()
    text = h.tokens(out_dir / "text")
    want = h.jax_outputs(model, variables, ecg, lead_obs, time_obs, keep, text)
    got = h.torch_outputs(out_dir, ecg, lead_obs, time_obs, keep, text)
    diffs = {k: float(np.max(np.abs(got[k] - want[k]))) for k in want}
    print("trained checkpoint, max-abs torch vs jax:", diffs)
    scale = float(np.exp(min(float(params["logit_scale"]), np.log(100.0))))
    assert diffs.pop("logits") <= h.TOL * scale
    assert max(diffs.values()) <= h.TOL, diffs

    _, back = to_torch.load_exported_params(out_dir)
    want_params = {k: v for k, v in params.items() if k != "masker"}
    assert jax.tree.structure(back) == jax.tree.structure(want_params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(want_params)):
        np.testing.assert_array_equal(a, b)
