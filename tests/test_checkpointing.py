"""orbax checkpoints: bitwise round trip with shardings, retention, non-finite refusal, kill -9."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from scar_jax import checkpointing

REPO = pathlib.Path(__file__).resolve().parents[1]


def _state(seed: int = 0, mesh=None):
    """A train-state-like pytree: sharded params, AdamW state, step, typed rng key."""
    mesh = mesh or jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    k = jax.random.key(seed)
    params = {
        "w": jax.device_put(
            jax.random.normal(k, (8, 6)), NamedSharding(mesh, P("data", "fsdp"))
        ),
        "b": jax.device_put(jnp.arange(3.0) + seed, NamedSharding(mesh, P())),
    }
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = tx.update(grads, opt_state, params)  # non-trivial moments
    return {
        "step": jnp.asarray(seed, jnp.int32),
        "params": params,
        "opt_state": opt_state,
        "rng": jax.random.key(seed + 7),
    }


def _plain(tree):
    """Host numpy copy, typed keys as key data."""
    return jax.tree.map(
        lambda x: np.asarray(jax.random.key_data(x) if checkpointing._is_key(x) else x), tree
    )


def _dataset():
    return grain.MapDataset.range(64).shuffle(seed=3).batch(4).to_iter_dataset()


def test_round_trip_bitwise_with_shardings_and_iterator(tmp_path):
    state = _state(1)
    it = iter(_dataset())
    for _ in range(3):
        next(it)
    ck = checkpointing.Checkpointer(tmp_path, keep=2, keep_best=0)
    assert ck.latest_step() is None
    assert ck.save(3, state, data_iterator=it, config={"seed": 1, "tags": ("a", "b")})
    expected_next = [next(it) for _ in range(2)]  # the loop goes on while the save runs
    ck.close()

    # A new manager (a new process would do the same) sees the finalised step.
    ck = checkpointing.Checkpointer(tmp_path, keep=2, keep_best=0)
    assert ck.latest_step() == 3
    # The template decides the shardings: restore 'w' replicated, 'b' sharded on 8 devices.
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    template = _state(0)
    template["params"]["w"] = jax.device_put(template["params"]["w"], NamedSharding(mesh, P()))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template
    )
    abstract["params"]["b"] = jax.ShapeDtypeStruct(
        (3,), jnp.float32, sharding=NamedSharding(mesh, P())
    )
    fresh = iter(_dataset())
    restored, step = ck.restore(abstract, data_iterator=fresh)
    assert step == 3
    assert restored["params"]["w"].sharding == NamedSharding(mesh, P())
    assert restored["params"]["b"].sharding == NamedSharding(mesh, P())
    assert jax.random.key_impl(restored["rng"]) == jax.random.key_impl(state["rng"])
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(_plain(restored)), jax.tree.leaves(_plain(state))):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # bitwise (no NaN in the state)
    # The restored iterator goes on where the saved one was, not where it was when the
    # asynchronous save finished.
    assert [next(fresh).tolist() for _ in range(2)] == [x.tolist() for x in expected_next]
    assert ck.restore_config() == {"seed": 1, "tags": ["a", "b"]}
    ck.close()


def test_iterator_resumes_at_the_saved_position(tmp_path):
    it = iter(_dataset())
    for _ in range(5):
        next(it)
    ck = checkpointing.Checkpointer(tmp_path, keep=1, keep_best=0, async_save=False)
    ck.save(5, {"x": jnp.zeros(2)}, data_iterator=it)
    after = [next(it).tolist() for _ in range(4)]
    fresh = iter(_dataset())
    ck.restore({"x": jnp.zeros(2)}, data_iterator=fresh)
    assert [next(fresh).tolist() for _ in range(4)] == after
    ck.close()


def test_iterator_state_of_another_process_count(tmp_path):
    # This (single) process's file is missing: the processes that saved the checkpoint must
    # have written one global position (tests/test_elastic_resume.py: the real thing).
    def saved(*states):
        folder = tmp_path / f"data{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        for i, st in enumerate(states):
            (folder / f"process_{i}-of-{len(states)}.json").write_text(json.dumps(st))
        return folder

    pos = {"batches": 3, "global_batch_size": 8, "process_count": 2}
    got = checkpointing._saved_iterator_state(saved(dict(pos, process_index=0),
                                                    dict(pos, process_index=1)))
    assert json.loads(got) == dict(pos, process_index=0)
    with pytest.raises(ValueError, match="without a global data position: resume it on 2 "):
        checkpointing._saved_iterator_state(saved({"next_index": 3}, {"next_index": 3}))
    with pytest.raises(ValueError, match=r"disagree on the data position: \[\(3, 8\), \(4, 8\)\]"):
        checkpointing._saved_iterator_state(saved(pos, dict(pos, batches=4)))
    with pytest.raises(FileNotFoundError, match="no data iterator state"):
        checkpointing._saved_iterator_state(tmp_path / "nothing")


def test_relative_directory_saves_restores_and_is_found(tmp_path, monkeypatch):
    # the README's demo command passes --workdir=demo_run: orbax refuses relative paths
    # ("Checkpoint path should be absolute") at the first save unless they are made absolute
    monkeypatch.chdir(tmp_path)
    ck = checkpointing.Checkpointer(os.path.join("run", "checkpoints"), keep_best=0)
    assert ck.directory == str(tmp_path / "run" / "checkpoints")
    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "step": jnp.asarray(3)}
    assert ck.save(3, state, config={"seed": 1})
    ck.close()
    assert checkpointing.latest_step("run") == 3
    params, config = checkpointing.restore_params("run")
    np.testing.assert_array_equal(params["w"], np.arange(6.0).reshape(2, 3))
    assert config == {"seed": 1}
    assert checkpointing.absolute("gs://bucket/run") == "gs://bucket/run"


def test_restoring_into_a_model_of_another_shape_names_the_parameters(tmp_path):
    # `train` on a workdir after a change of model config (embed_dim, a selector kind):
    # orbax's own error came after a long traceback and named one array by shape only
    state = {"params": {"head": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones(8)},
                        "enc": {"w": jnp.ones(3)}}, "step": jnp.asarray(2)}
    ck = checkpointing.Checkpointer(tmp_path, keep_best=0, async_save=False)
    assert ck.save(2, state)
    other = {"params": {"head": {"kernel": jnp.ones((4, 6)), "bias": jnp.ones(6)},
                        "sel": {"w": jnp.ones(3)}}, "step": jnp.asarray(0)}
    with pytest.raises(ValueError) as err:
        ck.restore(other)
    assert str(err.value) == (
        f"Checkpoint 2 in {tmp_path} holds a model of another shape than this config's: "
        "head/bias: saved (8,) vs (6,) now; head/kernel: saved (4, 8) vs (4, 6) now; "
        "enc/w: only in the checkpoint; sel/w: only in this model. Resume with the model "
        "config it was trained with, or train into a new workdir.")
    restored, step = ck.restore(jax.tree.map(jnp.zeros_like, state))  # the same model: fine
    assert step == 2 and float(restored["params"]["enc"]["w"][0]) == 1.0
    ck.close()


def test_checkpoint_folder_of_a_gs_workdir_is_checked_through_epath(gcs):
    # A pod run trains into gs://bucket/run (launch/tpu_pod.sh); eval/export/predict then
    # take that URL. It used to be checked with os.path.isdir, which never sees GCS, so
    # they stopped with "does not exist". (Only the folder resolution: orbax's restore
    # itself needs google-cloud-storage.)
    (gcs / "bucket" / "run" / "checkpoints").mkdir(parents=True)
    (gcs / "bucket" / "bare").mkdir()
    assert checkpointing.checkpoint_folder("gs://bucket/run") == "gs://bucket/run/checkpoints"
    assert (
        checkpointing.checkpoint_folder("gs://bucket/run/checkpoints")
        == "gs://bucket/run/checkpoints"
    )
    assert checkpointing.checkpoint_folder("gs://bucket/bare") == "gs://bucket/bare"
    with pytest.raises(FileNotFoundError, match="gs://bucket/missing does not exist"):
        checkpointing.checkpoint_folder("gs://bucket/missing")
    assert checkpointing.latest_step("gs://bucket/missing") is None


def test_keep_last_k_and_best(tmp_path):
    ck = checkpointing.Checkpointer(tmp_path, keep=2, keep_best=1, best_metric="val/loss")
    state = {"x": jnp.zeros(2)}
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: None, 5: 3.0, 6: 6.0}
    for step, loss in losses.items():
        ck.save(step, state, metrics=None if loss is None else {"val/loss": loss, "other": 0.0})
    ck.wait()
    # The last two (5, 6) plus the best validated one (2, loss 1.0).
    assert ck.all_steps() == [2, 5, 6]
    assert ck.best_step() == 2
    ck.close()
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [2, 5, 6]

    maxed = checkpointing.Checkpointer(
        tmp_path / "max", keep=1, keep_best=2, best_metric="val/auroc", best_mode="max"
    )
    for step, auroc in enumerate([0.6, 0.9, 0.7, 0.8, 0.5], start=1):
        maxed.save(step, state, metrics={"val/auroc": auroc})
    maxed.wait()
    assert maxed.all_steps() == [2, 4, 5] and maxed.best_step() == 2
    maxed.close()


def test_nonfinite_state_is_never_saved(tmp_path):
    ck = checkpointing.Checkpointer(tmp_path, keep=3, keep_best=0)
    good = _state(0)
    ck.save(1, good)
    ck.wait()
    bad = _state(0)
    bad["params"]["w"] = bad["params"]["w"].at[2, 3].set(jnp.nan)
    bad["opt_state"][1][0].mu["b"] = bad["opt_state"][1][0].mu["b"].at[0].set(jnp.inf)
    assert sorted(checkpointing.nonfinite_leaves(bad)) == ["opt_state/1/0/mu/b", "params/w"]
    with pytest.raises(checkpointing.NonFiniteStateError, match="params/w"):
        ck.save(2, bad)
    ck.wait()
    assert ck.all_steps() == [1]
    assert checkpointing.nonfinite_leaves(good) == []
    ck.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name[0].isdigit()) == ["1"]


_KILL_WHILE_SAVING = textwrap.dedent(
    """
    import os, sys, threading, time, signal
    import jax, jax.numpy as jnp
    from scar_jax import checkpointing
    from test_checkpointing import _state
    directory = {directory!r}
    ck = checkpointing.Checkpointer(directory, keep=3, keep_best=0)
    ck.save(1, _state(1))
    ck.wait()

    def killer():
        # SIGKILL this process as soon as orbax's temporary directory of step 2 exists.
        while True:
            if any(name.startswith("2") and "tmp" in name for name in os.listdir(directory)):
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.0005)

    threading.Thread(target=killer, daemon=True).start()
    big = _state(2)
    big["extra"] = jnp.ones((4096, 4096))  # 64 MiB: a save that takes a while to write
    ck.save(2, big)
    ck.wait()
    time.sleep(5)
    print("NOT KILLED")
    """
)


@pytest.mark.slow
def test_kill_9_while_saving_leaves_previous_checkpoint(tmp_path):
    directory = str(tmp_path / "ckpt")
    script = _KILL_WHILE_SAVING.format(directory=directory)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr[-3000:]
    leftovers = [n for n in os.listdir(directory) if "tmp" in n]
    assert leftovers, "the kill came after the save finished; the test proved nothing"
    ck = checkpointing.Checkpointer(directory, keep=3, keep_best=0)
    assert ck.latest_step() == 1 and ck.all_steps() == [1]
    restored, step = ck.restore(_state(0))
    for a, b in zip(jax.tree.leaves(_plain(restored)), jax.tree.leaves(_plain(_state(1)))):
        assert np.array_equal(a, b)
    ck.close()
    # The half-written step is cleaned up on restart (cleanup_tmp_directories).
    assert not [n for n in os.listdir(directory) if "tmp" in n]
