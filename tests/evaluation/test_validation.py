"""Zero-shot validation while training (scar_jax.evaluation.validation): the number the loop
logs is `main eval`'s clean zero-shot macro AUROC of the same checkpoint on the same records;
it lands in metrics.jsonl at its own cadence and ranks the kept checkpoints; two processes
get one process's number; a held-out set that cannot be scored fails at start-up.

The two-process test launches this file twice as `python -m tests.evaluation.test_validation
<id> <port> <out> <data_dir>` (tests/multiprocess.py).
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from tests import multiprocess

DATASET = "synthetic_ecg/tiny"  # 24 / 8 / 8 records at 100 Hz x 10 s


def _config(data_dir: str, **train):
    from configs import scar as scar_config

    cfg = scar_config.get_config("variant=mu,runlocal,text=random-tiny")
    cfg.input.dataset, cfg.input.data_dir = DATASET, data_dir
    cfg.input.sample_rate, cfg.input.seconds = 100, 10.0
    # the 24 train records: more distinct AUROC values than the 8 of validation
    cfg.train.zeroshot_split, cfg.train.zeroshot_examples = "train", 0
    for k, v in train.items():
        cfg.train[k] = v
    return cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from scar_jax.data import build

    out = str(tmp_path_factory.mktemp("tfds"))
    build.build_dataset(DATASET, data_dir=out)
    return out


def _metrics(workdir) -> list[dict]:
    return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").open()]


def _eval_zeroshot(cfg, workdir, step: int) -> float:
    """`main eval`'s clean zero-shot macro AUROC (evaluation.run.evaluate, its grid cut to the
    clean row) of checkpoint `step` on the validator's records."""
    from scar_jax import checkpointing
    from scar_jax.evaluation import run
    from scar_jax.evaluation.data import load_split

    variables, saved = checkpointing.load_checkpoint(pathlib.Path(workdir) / "checkpoints", step)
    spec = run.ModelSpec.from_config("m", cfg, variables)
    data = load_split(cfg, DATASET, "train", evidence=False)
    ev = cfg.eval
    ev.lead_drop = ev.subsets = ev.temporal = ev.joint = ev.rhos = ev.adv_units = ()
    ev.class_rhos, ev.mask_probe, ev.probe, ev.oracle = (), False, False, False
    ev.bootstrap, ev.trace_examples = 0, 0
    results, _ = run.evaluate([spec], data, ev)
    return results["models"]["m"]["zeroshot"]["clean"]["auroc"]


@pytest.mark.slow
def test_training_logs_the_eval_auroc_at_its_steps_and_keeps_the_best(data_dir, tmp_path):
    from scar_jax import checkpointing, train

    cfg = _config(data_dir, zeroshot_every=2, eval_every=3, checkpoint_every=0, keep=1,
                  keep_best=1, best_metric="val/zeroshot_auroc", best_mode="max",
                  async_checkpoint=False, tensorboard=False)
    cfg.total_steps, cfg.log_every = 6, 6
    # gradient ascent on the training loss (a negative learning rate): the zero-shot AUROC
    # falls, so the best checkpoint is not the latest one and keep_best has to pick it
    cfg.optim.lr, cfg.optim.schedule, cfg.optim.weight_decay = -3e-3, "constant", 0.0
    workdir = tmp_path / "run"
    result = train.train(cfg, workdir)
    lines = _metrics(workdir)
    zs = {m["step"]: m["val/zeroshot_auroc"] for m in lines if "val/zeroshot_auroc" in m}
    assert sorted(zs) == [2, 4, 6]  # every zeroshot_every steps and at the end
    assert sorted(m["step"] for m in lines if "val/loss" in m) == [3, 6]  # its own cadence
    assert all(m["val/zeroshot_examples"] == 24 for m in lines if "val/zeroshot_auroc" in m)
    assert result.val_metrics["val/zeroshot_auroc"] == zs[6] and "val/loss" in result.val_metrics
    assert zs[2] > zs[6], zs  # the ranking below must not be "the latest"
    # kept: the latest (keep=1) and the step with the highest zero-shot AUROC
    ck = checkpointing.Checkpointer(workdir / "checkpoints", read_only=True, keep_best=0)
    kept = ck.all_steps()
    ck.close()
    best = max(zs, key=lambda s: (zs[s], s))
    assert kept == sorted({best, 6}), (kept, zs)
    # the logged number is the evaluation's, on the same checkpoint and records
    for step in kept:
        assert zs[step] == pytest.approx(_eval_zeroshot(cfg, workdir, step), abs=1e-6)


def test_a_held_out_set_that_cannot_be_scored_fails_at_start_up(data_dir, tmp_path, monkeypatch):
    from scar_jax import sharding, train
    from scar_jax.evaluation import validation
    from scar_jax.evaluation.data import EvalData
    from scar_jax.models import scar

    cfg = _config(data_dir, zeroshot_every=2, zeroshot_dataset="no_such_corpus")
    with pytest.raises(ValueError, match="Zero-shot validation .*'no_such_corpus'"):
        train.train(cfg, tmp_path / "unknown")  # before any state or step
    assert not (tmp_path / "unknown" / "checkpoints").exists()
    cfg = _config(data_dir, zeroshot_every=2, zeroshot_split="no_such_split")
    with pytest.raises(ValueError, match="no split 'no_such_split'"):
        train.train(cfg, tmp_path / "split")
    cfg = _config(data_dir, zeroshot_every=2, zeroshot_label_set="rhythm")
    with pytest.raises(ValueError, match="no label set 'rhythm'"):
        train.train(cfg, tmp_path / "label_set")

    model = scar.build_model(cfg.model)
    mesh = sharding.make_mesh(cfg.mesh)
    n, t = 4, 1000
    base = dict(ecg=np.zeros((n, t, 12), np.float32), lead_observed=np.ones((n, 12), bool),
                time_observed=np.ones((n, t), bool))
    cases = [  # (labels [n, K], the error)
        (np.zeros((n, 0), bool), "the split has no labels"),  # e.g. MIMIC-IV-ECG's
        (np.ones((n, 2), bool), "none of the 2 classes has both"),
    ]
    for labels, match in cases:
        k = labels.shape[1]
        data = EvalData(labels=labels, class_names=[f"c{i}" for i in range(k)],
                        prompts=[("x",)] * k, **base)
        monkeypatch.setattr(validation, "load_split", lambda *a, _d=data, **kw: _d)
        with pytest.raises(ValueError, match=match):
            validation.ZeroShotValidator.from_config(cfg, model, mesh)


def test_best_metric_zeroshot_needs_the_evaluator_and_mode_max(data_dir):
    from scar_jax import train

    train._check_train_config(_config(data_dir, zeroshot_every=2, keep_best=1,
                                      best_metric="val/zeroshot_auroc", best_mode="max"))
    for kw, match in [
        (dict(zeroshot_every=0, best_mode="max"), "zeroshot_every > 0"),
        (dict(zeroshot_every=2, best_mode="min"), "best_mode='max'"),
        (dict(zeroshot_every=-1, best_mode="max"), "zeroshot_every=-1 must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            train._check_train_config(_config(data_dir, keep_best=1,
                                              best_metric="val/zeroshot_auroc", **kw))


def _validator_auroc(data_dir: str) -> tuple[float, np.ndarray]:
    """(AUROC, gathered ECG embeddings) of a fresh state on 8 devices, params fsdp-sharded."""
    from scar_jax import sharding, train, train_state
    from scar_jax.evaluation import validation
    from scar_jax.models import scar

    cfg = _config(data_dir, zeroshot_every=1, zeroshot_examples=20)  # 20: a padded chunk
    cfg.mesh.fsdp, cfg.mesh.fsdp_min_size = 2, 1024
    model = scar.build_model(cfg.model)
    mesh = sharding.make_mesh(cfg.mesh)
    state, _ = train_state.create_train_state(model, cfg, train._batch_spec(cfg), mesh,
                                              jax.random.key(0))
    v = validation.ZeroShotValidator.from_config(cfg, model, mesh)
    first = v(state, 1)[validation.METRIC]
    compiled = (v.embed_ecg._cache_size(), scar._embed_prompts._cache_size())
    assert v(state, 2)[validation.METRIC] == first  # a second pass compiles nothing new
    assert (v.embed_ecg._cache_size(), scar._embed_prompts._cache_size()) == compiled
    assert compiled[0] == 1  # every chunk, the padded last one too, is one program
    return first, v.ecg_embeddings(state.params)


@pytest.mark.slow
def test_two_processes_give_the_one_process_auroc(data_dir, tmp_path):
    multiprocess.run_processes("tests.evaluation.test_validation", tmp_path, data_dir)
    want, z = _validator_auroc(data_dir)
    assert z.shape[0] == 20
    for i in range(2):
        got = np.load(tmp_path / f"zeroshot_{i}.npz")
        np.testing.assert_allclose(got["z"], z, atol=1e-5)
        assert float(got["auroc"]) == pytest.approx(want, abs=1e-6)


def _worker(process_id: int, port: int, out: str, data_dir: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_default_matmul_precision", "highest")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    auroc, z = _validator_auroc(data_dir)
    np.savez(pathlib.Path(out) / f"zeroshot_{process_id}.npz", auroc=auroc, z=z)
    jax.distributed.shutdown()


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
