"""The train state (params, one optax state per player, counters) and its shape-first, sharded init.

`create_train_state` never materialises an unsharded copy: `jax.eval_shape` gives
the state's shapes, the fsdp rules of `scar_jax.sharding` give their shardings,
and `jax.jit(init, out_shardings=...)` creates every parameter and optimizer
leaf directly on its devices. Pretrained text weights are then placed onto the
same shardings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from scar_jax import optim
from scar_jax import sharding as sharding_lib
from scar_jax.leads import NUM_LEADS
from scar_jax.models import scar


@flax.struct.dataclass
class TrainState:
    """step: int32 []; params: the model's 'params' tree; opt_state: {'encoders', 'masker'}.

    `nonfinite` counts the steps whose loss or gradient was non-finite (their update
    was not applied). No rng lives here: the update folds the step into a fixed key.
    """

    step: jax.Array
    params: dict[str, Any]
    opt_state: dict[str, Any]
    nonfinite: jax.Array


def init_batch(config: ml_collections.ConfigDict, batch_spec: Mapping[str, Any]) -> dict:
    """A one-example zero batch with the spec's shapes (token ids always, so BERT is created).

    batch_spec: name -> anything with .shape/.dtype ([B, ...]; B is ignored).
    """
    if "ecg" not in batch_spec:
        raise ValueError(f"batch_spec needs 'ecg' [B, T, 12]; got keys {sorted(batch_spec)}.")
    t = batch_spec["ecg"].shape[1]
    max_len = (
        batch_spec["input_ids"].shape[1] if "input_ids" in batch_spec else config.model.txt.max_len
    )
    return {
        "ecg": jnp.zeros((1, t, NUM_LEADS), jnp.float32),
        "lead_observed": jnp.ones((1, NUM_LEADS), bool),
        "input_ids": jnp.zeros((1, max_len), jnp.int32),
        "attention_mask": jnp.ones((1, max_len), jnp.int32),
    }


def make_init_fn(model: scar.Model, config: ml_collections.ConfigDict, batch_spec: Mapping):
    """init(rng) -> TrainState with freshly initialised params and optimizer states."""

    def init(rng: jax.Array) -> TrainState:
        r_params, r_masker, r_drop = jax.random.split(rng, 3)
        variables = model.init(
            {"params": r_params, "masker": r_masker, "dropout": r_drop},
            init_batch(config, batch_spec),
        )
        params = flax.core.unfreeze(variables)["params"]
        txs = optim.player_optimizers(config, params)
        enc, msk = optim.split_players(params)
        opt_state = {
            "encoders": txs["encoders"][0].init(enc),
            optim.MASKER: txs[optim.MASKER][0].init(msk),
        }
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=opt_state,
            nonfinite=jnp.zeros((), jnp.int32),
        )

    return init


def state_shardings(state_shapes: TrainState, mesh: Mesh, config: ml_collections.ConfigDict):
    """Shardings for every leaf of the state: one shape-based fsdp rule (Adam moments follow
    their parameter), scalars replicated."""
    return sharding_lib.param_shardings(state_shapes, mesh, config.mesh.fsdp_min_size)


def create_train_state(
    model: scar.Model,
    config: ml_collections.ConfigDict,
    batch_spec: Mapping[str, Any],
    mesh: Mesh,
    rng: jax.Array | None = None,
) -> tuple[TrainState, Any]:
    """(state born sharded on `mesh`, its shardings); text weights from config.model.txt."""
    rng = jax.random.key(config.seed) if rng is None else rng
    init = make_init_fn(model, config, batch_spec)
    shapes = jax.eval_shape(init, rng)
    shardings = state_shardings(shapes, mesh, config)
    state = jax.jit(init, out_shardings=shardings)(rng)
    folder = scar.text_checkpoint_folder(config.model.txt.checkpoint)
    if folder is not None:
        loaded = scar.load_text_weights(
            {"params": {"txt": {}}}, config.model.txt.checkpoint, config.model.txt.pooling
        )["params"]["txt"]["bert"]
        want = jax.tree.map(lambda x: x.shape, shapes.params["txt"]["bert"])
        got = jax.tree.map(lambda x: np.shape(x), loaded)
        if want != got:
            raise ValueError(
                f"Text checkpoint {folder} does not match the text tower built from the "
                "config (different BERT architecture or pooling); rebuild the model from "
                "that checkpoint's config.json."
            )
        bert = sharding_lib.put_global(loaded, shardings.params["txt"]["bert"])
        params = dict(state.params)
        params["txt"] = {**state.params["txt"], "bert": bert}
        state = state.replace(params=params)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.params))
    logging.info("train state: %s parameters on mesh %s", f"{n:,}", dict(mesh.shape))
    return state, shardings
