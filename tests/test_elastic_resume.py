"""Elastic resume with real processes: a checkpoint written by 2 JAX processes (jax.distributed
on localhost, gloo) resumes on 1, and one written by 1 resumes on 2; the records read before
and after the resume form exactly one pass over the epoch, global batch by global batch the
same records (augmentation included) as one uninterrupted process reads.

The tests launch this file as `python -m tests.test_elastic_resume <id> <port> '<json args>'`
(tests/multiprocess.py), once per process. In the data test each process reads its rows of
the global batches through the pipeline and saves or restores them with the Checkpointer, as
training does; in the training test each process runs train.train (2 processes, then 1).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
import pytest

from tests import multiprocess

DATASET = "synthetic_ecg/tiny"  # 24 train records
BATCH, SEED = 4, 7  # 6 global batches per epoch
PER_EPOCH = 24 // BATCH


def _input_config(data_dir: str):
    from configs import scar as scar_config

    cfg = scar_config.get_config("runlocal").input
    cfg.dataset, cfg.data_dir = DATASET, data_dir
    cfg.sample_rate, cfg.seconds = 100, 10.0  # the tiny corpus: 100 Hz x 10 s
    cfg.lead_drop_prob = cfg.segment_drop_prob = 0.5  # augmentation must follow the records
    return cfg


def _dataset(data_dir: str, **kw):
    from scar_jax.data import pipeline

    return pipeline.make_dataset(_input_config(data_dir), "train", global_batch_size=BATCH,
                                 seed=SEED, train=True, **kw)


def _run(processes: int, **args) -> list[str]:
    """Run `processes` workers with `args` (asserting that they succeed); their outputs."""
    return multiprocess.run_processes("tests.test_elastic_resume",
                                      json.dumps(dict(args, processes=processes)),
                                      processes=processes, devices=2)


def _read(out: pathlib.Path, processes: int) -> dict[int, dict[str, np.ndarray]]:
    """global batch number -> its rows read by the processes of one phase, in process order."""
    parts = []
    for i in range(processes):
        with np.load(out / f"process_{i}.npz") as f:
            parts.append({k: f[k] for k in f.files})
    steps = parts[0]["step"].tolist()
    return {s: {k: np.concatenate([p[k][j] for p in parts]) for k in ("index", "ecg", "leads")}
            for j, s in enumerate(steps)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from scar_jax.data import build

    out = str(tmp_path_factory.mktemp("tfds"))
    build.build_dataset(DATASET, data_dir=out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_resume_on_another_process_count_reads_one_pass(data_dir, tmp_path, before, after):
    cut = 2  # global batches read before the checkpoint
    ref_it = iter(_dataset(data_dir, process_index=0, process_count=1))
    ref = [next(ref_it) for _ in range(PER_EPOCH)]
    ckpt = str(tmp_path / "checkpoints")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    errs = _run(before, data_dir=data_dir, ckpt=ckpt, out=str(first), stop=cut)
    assert not any("remapped" in e for e in errs)
    errs = _run(after, data_dir=data_dir, ckpt=ckpt, out=str(second), stop=PER_EPOCH)
    for e in errs:  # one line on every process says the position was remapped
        assert e.count("data position remapped") == 1, e[-3000:]
        assert f"saved by {before} processes, resumed on {after}; global batch {cut} " in e
    got = _read(first, before) | _read(second, after)
    assert sorted(got) == list(range(PER_EPOCH))  # the second phase began at batch `cut`
    records = np.concatenate([got[k]["index"] for k in sorted(got)])
    assert sorted(records.tolist()) == list(range(24))  # one pass: none lost, none repeated
    for k, batch in got.items():  # the same global batches as one uninterrupted process
        np.testing.assert_array_equal(batch["index"], ref[k]["index"])
        np.testing.assert_array_equal(batch["ecg"], ref[k]["ecg"])
        np.testing.assert_array_equal(batch["leads"], ref[k]["lead_observed"])


@pytest.mark.slow
def test_training_resumed_on_one_process_finishes_the_epoch(data_dir, tmp_path):
    # train.train on 2 processes for 2 steps (checkpoint at 2), then on 1 to the epoch's end
    ref_it = iter(_dataset(data_dir, process_index=0, process_count=1))
    ref = [next(ref_it)["index"].tolist() for _ in range(PER_EPOCH)]
    common = dict(mode="train", data_dir=data_dir, workdir=str(tmp_path / "run"),
                  out=str(tmp_path))
    _run(2, **common, stop=2)
    (err,) = _run(1, **common, stop=PER_EPOCH)
    assert "data position remapped: saved by 2 processes, resumed on 1; global batch 2 " in err
    logs = sorted(tmp_path.glob("steps_*.jsonl"))
    assert [f.name for f in logs] == ["steps_1of1_0.jsonl", "steps_2of2_0.jsonl",
                                      "steps_2of2_1.jsonl"]
    first = [[json.loads(line) for line in f.read_text().splitlines()] for f in logs[1:]]
    second = [json.loads(line) for line in logs[0].read_text().splitlines()]
    read = {s: a + b for (s, a), (_, b) in zip(*first)} | {s: i for s, i in second}
    assert sorted(read) == list(range(1, PER_EPOCH + 1))  # train steps 1..6, once each
    assert [read[s] for s in sorted(read)] == ref  # the global batches of one process
    records = [r for s in sorted(read) for r in read[s]]
    assert sorted(records) == list(range(24))  # one pass


def _train(process_id: int, args: dict) -> None:
    """One process of a training run up to step `stop` (resuming the workdir), logging the
    record indices of each step's rows to steps_<count>of<count>_<process>.jsonl."""
    from configs import scar as scar_config
    from scar_jax import train

    cfg = scar_config.get_config("variant=mu,runlocal,text=random-tiny")
    cfg.input = _input_config(args["data_dir"])
    cfg.input.shuffle_seed = SEED  # the reference's stream
    cfg.batch_size, cfg.total_steps = BATCH, args["stop"]
    cfg.train.checkpoint_every, cfg.train.eval_every = 2, 0
    log = pathlib.Path(args["out"]) / (
        f"steps_{args['processes']}of{args['processes']}_{process_id}.jsonl")

    def on_batch(step, batch):
        with open(log, "a") as f:
            f.write(json.dumps([step, batch["index"].tolist()]) + "\n")

    result = train.train(cfg, args["workdir"], batch_callback=on_batch)
    assert result.step == args["stop"] and not result.preempted


def _worker(process_id: int, port: int, args: dict) -> None:
    """One process: read global batches up to `stop` (resuming from the checkpoint when there
    is one), save a checkpoint of a sharded state and the iterator at `stop`, write what it read."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.get("mode") == "train":  # train.initialize_distributed reads the environment
        os.environ.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                          JAX_NUM_PROCESSES=str(args["processes"]), JAX_PROCESS_ID=str(process_id))
        return _train(process_id, args)
    if args["processes"] > 1:
        jax.distributed.initialize(f"localhost:{port}", num_processes=args["processes"],
                                   process_id=process_id)
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    from scar_jax import checkpointing

    assert jax.process_count() == args["processes"]
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
    sharding = NamedSharding(mesh, P("data"))

    def state(step: int):
        return {"w": jax.make_array_from_callback(
            (8,), sharding, lambda i: np.arange(8, dtype=np.float32)[i] * step)}

    it = iter(_dataset(args["data_dir"]))
    ckpt = checkpointing.Checkpointer(args["ckpt"], keep=2, keep_best=0)
    start = 0
    if ckpt.latest_step() is not None:
        restored, start = ckpt.restore(state(0), data_iterator=it)
        want = state(start)["w"]
        for a, b in zip(restored["w"].addressable_shards, want.addressable_shards):
            np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    batches = [next(it) for _ in range(start, args["stop"])]
    ckpt.save(args["stop"], state(args["stop"]), data_iterator=it)
    ckpt.close()
    np.savez(pathlib.Path(args["out"]) / f"process_{jax.process_index()}.npz",
             step=np.arange(start, args["stop"]),
             index=np.stack([b["index"] for b in batches]),
             ecg=np.stack([b["ecg"] for b in batches]),
             leads=np.stack([b["lead_observed"] for b in batches]))
    if args["processes"] > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
