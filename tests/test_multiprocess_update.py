"""Two real JAX processes (jax.distributed on localhost, 4 CPU devices each, gloo
collectives) run the sharded update on one global batch and end with the same parameters
as one process with 8 devices.

The test launches this file twice as `python -m tests.test_multiprocess_update <id> <port>
<out>`; each process feeds only its own rows of the global batch.
"""

from __future__ import annotations

import itertools
import pathlib
import sys

import jax
import numpy as np
import pytest

from tests import multiprocess

STEPS = 3


def _config():
    from tests import test_update as tu

    return tu.make_config(
        **{"mesh.fsdp": 2, "mesh.fsdp_min_size": 1024, "model.masker.warmup_steps": 1}
    )


def local_rows(x: np.ndarray, batch_sharding) -> np.ndarray:
    """The rows of a global batch leaf that this process's devices hold (contiguous)."""
    idx = batch_sharding.addressable_devices_indices_map(x.shape).values()
    spans = sorted({(i[0].start or 0, x.shape[0] if i[0].stop is None else i[0].stop) for i in idx})
    for (_, stop), (start, _) in itertools.pairwise(spans):
        assert stop == start, f"process rows are not contiguous: {spans}"
    return x[spans[0][0] : spans[-1][1]]


def run(steps: int = STEPS) -> tuple[dict[str, np.ndarray], list[float]]:
    """`steps` updates on the 8 (global) devices; -> (host params by path, losses)."""
    from scar_jax import optim, sharding, train_state, update
    from scar_jax.models import scar
    from tests import test_update as tu

    config = _config()
    model = scar.build_model(config.model)
    mesh = sharding.make_mesh(config.mesh)
    state, shardings = train_state.create_train_state(model, config, tu.make_batch(config), mesh)
    bs = sharding.batch_sharding(mesh)
    step = update.jit_update(update.make_update_fn(model, config), shardings, bs)
    loss = []
    for i in range(steps):
        full = tu.make_batch(config, seed=i)
        batch = {
            k: jax.make_array_from_process_local_data(bs, local_rows(v, bs), v.shape)
            for k, v in full.items()
        }
        state, metrics = step(state, batch, jax.random.key(5))
        loss.append(float(metrics["loss/total"]))
    params = sharding.to_host(state.params)
    return dict(zip(optim.param_paths(params), jax.tree.leaves(params))), loss


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    multiprocess.run_processes("tests.test_multiprocess_update", tmp_path, timeout=900)
    from tests import test_update as tu

    config = _config()
    ref, ref_loss = run()
    for i in range(2):
        got = np.load(tmp_path / f"params_{i}.npz")
        np.testing.assert_allclose(got["__loss__"], ref_loss, rtol=1e-5)
        params = {k: got[k] for k in got.files if k != "__loss__"}
        tu.assert_params_close(params, ref, config.optim.lr + config.optim.masker_lr, STEPS)


def _worker(process_id: int, port: int, out: str) -> None:
    """One of the two processes: initialise jax.distributed, run, write its params."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_default_matmul_precision", "highest")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    params, loss = run()
    np.savez(pathlib.Path(out) / f"params_{process_id}.npz", __loss__=np.asarray(loss), **params)
    jax.distributed.shutdown()


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
