"""Shared fixtures: one `mu` SCAR model (random tiny BERT) initialised once per session."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import scar as scar_config
from scar_jax.models import scar


@dataclasses.dataclass
class Mu:
    """A mu-sized SCAR model on 2 s records at 500 Hz (10 segments of 100 samples)."""

    config: object
    model: scar.Model
    variables: dict
    num_samples: int


def build_mu(seed: int = 0, arg: str = "") -> Mu:
    """Config runlocal + random-tiny text; variables from a jitted init."""
    config = scar_config.get_config("runlocal,text=random-tiny" + ("," + arg if arg else ""))
    model = scar.build_model(config.model)
    t = int(config.input.sample_rate * config.input.seconds)
    batch = {"ecg": jnp.zeros((2, t, 12)), "lead_observed": jnp.ones((2, 12), bool),
             "input_ids": jnp.ones((2, 8), jnp.int32),
             "attention_mask": jnp.ones((2, 8), jnp.int32)}
    rngs = {"params": jax.random.key(seed), "masker": jax.random.key(seed + 1)}
    variables = jax.jit(model.init)(rngs, batch)
    return Mu(config, model, variables, t)


@pytest.fixture(scope="session")
def mu() -> Mu:
    return build_mu(0)


def ecg_batch(n: int, t: int, seed: int = 0):
    """(ecg [n, t, 12] float32, lead_observed [n, 12]) with some absent leads."""
    rng = np.random.default_rng(seed)
    ecg = rng.normal(size=(n, t, 12)).astype(np.float32)
    lead_obs = rng.random((n, 12)) > 0.2
    lead_obs[:, 1] = True
    ecg[~np.repeat(lead_obs[:, None, :], t, 1)] = 0.0
    return ecg, lead_obs
