"""The training loop: kill -9 and resume == uninterrupted (bitwise, same data order), the
non-finite policies, JSONL metrics, resuming an existing workdir; and the loop's helpers.

The end-to-end runs are subprocesses on the synthetic `tiny` corpus with the `mu` model and
the random tiny text tower. They share a persistent XLA compilation cache: the first run
compiles, the others load. (On CPU an executable loaded from that cache can differ from a
freshly compiled one in the last bits, so bitwise comparisons are made only between runs
that loaded it; the first run is the non-finite 'skip' run, compared with nothing.)
"""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import ml_collections
import numpy as np
import pytest

from configs import scar as scar_config
from scar_jax import checkpointing
from scar_jax import metrics
from scar_jax import train

REPO = pathlib.Path(__file__).resolve().parents[1]
TOTAL_STEPS = 6

_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    import numpy as np
    args = json.loads(sys.argv[1])
    import jax
    from configs import scar as scar_config
    from scar_jax import train
    from scar_jax.data import build

    build.build_dataset("synthetic_ecg/tiny", data_dir=args["data_dir"])
    cfg = scar_config.get_config("variant=mu,runlocal,text=random-tiny")
    cfg.input.data_dir = args["data_dir"]
    cfg.input.sample_rate, cfg.input.seconds = 100, 10.0  # the tiny corpus: 100 Hz x 10 s
    cfg.input.lead_drop_prob = cfg.input.segment_drop_prob = 0.5  # exercise augmentation
    cfg.total_steps = args["total_steps"]
    cfg.log_every = 1
    cfg.train.checkpoint_every = cfg.train.eval_every = 2
    cfg.train.eval_batches = 1
    cfg.optim.nonfinite = args["policy"]

    started = threading.Event()

    def on_batch(step, batch):
        started.set()
        with open(args["index_log"], "a") as f:
            f.write(json.dumps([step, batch["index"].tolist()]) + "\\n")
        if step == args.get("nan_step"):
            batch["ecg"][0] = np.nan  # every sample, so some observed ones
        if step == args.get("sigterm_step"):
            os.kill(os.getpid(), signal.SIGTERM)  # as a preemption notice would

    if args.get("kill_while_saving"):
        # SIGKILL this process as soon as orbax starts writing a checkpoint (its temporary
        # folder appears): the kill lands while the save is in progress. Armed once the
        # loop runs, after orbax has removed what an earlier kill left half-written.
        ckpt_dir = os.path.join(args["workdir"], "checkpoints")
        def killer():
            started.wait()
            while True:
                if os.path.isdir(ckpt_dir) and any(
                    ".orbax-checkpoint-tmp" in n for n in os.listdir(ckpt_dir)
                ):
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(0.0002)
        threading.Thread(target=killer, daemon=True).start()

    try:
        evaluators = [lambda state, step: {"val/echo": float(state.step) + 0.5}]
        result = train.train(
            cfg,
            args["workdir"],
            batch_callback=on_batch,
            evaluators=evaluators if args.get("evaluator") else (),
        )
    except FloatingPointError as e:
        print("FloatingPointError:", e, file=sys.stderr)
        sys.exit(3)
    params = {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(x)
        for path, x in jax.tree_util.tree_leaves_with_path(result.state.params)
    }
    np.savez(args["params_out"], **params)
    print(json.dumps({"step": result.step, "resumed_from": result.resumed_from,
                      "nonfinite": int(result.state.nonfinite), "preempted": result.preempted}))
    """
)


def _env(cache_dir: str) -> dict:
    return dict(
        os.environ,
        PYTHONPATH=str(REPO),
        JAX_COMPILATION_CACHE_DIR=cache_dir,
        # every program, whatever the caller's environment says (conftest only defaults to
        # it): the bitwise comparisons need every run after the first to load all of them
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


class Runs:
    """Starts child training runs in one scratch folder with a shared compile cache."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.data_dir = str(root / "tfds")
        self.cache = str(root / "xla_cache")

    def args(self, name: str, **kw) -> dict:
        base = {
            "data_dir": self.data_dir,
            "workdir": str(self.root / name),
            "total_steps": TOTAL_STEPS,
            "policy": "skip",
            "index_log": str(self.root / f"{name}.indices.jsonl"),
            "params_out": str(self.root / f"{name}.params.npz"),
        }
        return base | kw

    def start(self, args: dict) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(args)],
            env=_env(self.cache),
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, args: dict, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = self.start(args)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _indices(path: str) -> dict[int, list[int]]:
    """step -> record indices consumed (a later line for a step replaces an earlier one)."""
    return dict(_index_lines(path))


def _index_lines(path: str) -> list[tuple[int, list[int]]]:
    """(step, record indices) per line; a line still being written is left out."""
    out = []
    for line in pathlib.Path(path).read_text().splitlines():
        try:
            out.append(tuple(json.loads(line)))
        except json.JSONDecodeError:
            break
    return out


def _params(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _assert_bitwise(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _fail(proc) -> str:
    return f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Scratch folder; its first run (non-finite 'skip', NaN at step 3) fills the XLA cache."""
    r = Runs(tmp_path_factory.mktemp("train_runs"))
    proc = r.run(r.args("skip", nan_step=3, evaluator=True))
    r.skip_result = proc
    return r


@pytest.mark.slow
def test_nonfinite_skip_counts_and_saves_only_finite_states(runs):
    proc = runs.skip_result
    assert proc.returncode == 0, _fail(proc)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == {
        "step": TOTAL_STEPS, "resumed_from": None, "nonfinite": 1, "preempted": False
    }
    lines = metrics.read_jsonl(os.path.join(runs.args("skip")["workdir"], metrics.JSONL_NAME))
    train_lines = [r for r in lines if "train/loss/total" in r]
    val_lines = [r for r in lines if "val/loss" in r]
    # log_every=1: one train line per step; validation at steps 2, 4, 6.
    assert [r["step"] for r in train_lines] == list(range(1, TOTAL_STEPS + 1))
    assert [r["step"] for r in val_lines] == [2, 4, 6]
    assert [r["train/nonfinite"] for r in train_lines] == [0, 0, 1, 0, 0, 0]
    assert [r["train/nonfinite/count"] for r in train_lines] == [0, 0, 1, 1, 1, 1]
    assert train_lines[2]["train/loss/total"] == "nan"
    assert all(np.isfinite(r["val/loss"]) for r in val_lines)
    # The evaluator hook ran at each validation on the state of that step.
    assert [r["val/echo"] for r in val_lines] == [2.5, 4.5, 6.5]
    ck = checkpointing.Checkpointer(os.path.join(runs.args("skip")["workdir"], "checkpoints"))
    assert ck.all_steps() == [2, 4, 6]
    for p in _params(runs.args("skip")["params_out"]).values():
        assert np.all(np.isfinite(p))
    ck.close()


@pytest.mark.slow
def test_nonfinite_stop_raises_and_keeps_last_finite_checkpoint(runs):
    args = runs.args("stop", policy="stop", nan_step=3)
    proc = runs.run(args)
    assert proc.returncode == 3, _fail(proc)
    assert "Non-finite loss or gradient at step 3" in proc.stderr
    assert "config.optim.nonfinite='skip'" in proc.stderr
    ck = checkpointing.Checkpointer(os.path.join(args["workdir"], "checkpoints"))
    assert ck.all_steps() == [2]
    ck.close()
    # The stopped run wrote no line after its last good step.
    lines = metrics.read_jsonl(os.path.join(args["workdir"], metrics.JSONL_NAME))
    assert max(r["step"] for r in lines) == 2


@pytest.mark.slow
def test_kill_9_and_resume_equals_uninterrupted(runs):
    ref = runs.args("ref")
    proc = runs.run(ref)
    assert proc.returncode == 0, _fail(proc)
    ref_params, ref_order = _params(ref["params_out"]), _indices(ref["index_log"])
    assert sorted(ref_order) == list(range(1, TOTAL_STEPS + 1))

    # One workdir, four processes: (1) kill -9 at a random step (while it runs);
    # (2) resume, kill -9 while its first checkpoint is being written; (3) resume, SIGTERM
    # during its first step: it saves that step and exits cleanly; (4) resume to the end.
    kill_step = random.Random(os.getpid()).randint(3, TOTAL_STEPS)
    a = runs.args("killed")
    ckpt_dir = os.path.join(a["workdir"], "checkpoints")
    child = runs.start(a)
    deadline = time.time() + 600
    while time.time() < deadline and child.poll() is None:
        if os.path.exists(a["index_log"]) and kill_step in _indices(a["index_log"]):
            break
        time.sleep(0.01)
    assert child.poll() is None, "the run ended before the kill step: " + child.stderr.read()
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert child.returncode == -9
    n_lines_1 = len(_index_lines(a["index_log"]))
    # Checkpoints are asynchronous: the newest may not have been finalised at the kill.
    ck = checkpointing.Checkpointer(ckpt_dir)
    first_resume = ck.latest_step()
    ck.close()
    assert first_resume in (None, 2, 4) and (first_resume or 0) < kill_step

    proc = runs.run(dict(a, kill_while_saving=True))
    assert proc.returncode == -9, _fail(proc)
    assert any(".orbax-checkpoint-tmp" in n for n in os.listdir(ckpt_dir))  # cut mid-write
    lines_2 = _index_lines(a["index_log"])[n_lines_1:]
    assert lines_2[0][0] == (first_resume or 0) + 1
    ck = checkpointing.Checkpointer(ckpt_dir)
    second_resume = ck.latest_step()  # the half-written checkpoint does not count
    ck.close()
    assert second_resume == first_resume

    term_step = (second_resume or 0) + 1
    proc = runs.run(dict(a, sigterm_step=term_step))
    assert proc.returncode == 0, _fail(proc)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["preempted"] and summary["step"] == term_step
    assert summary["resumed_from"] == second_resume
    ck = checkpointing.Checkpointer(ckpt_dir)
    assert ck.latest_step() == term_step  # the preemption save was finalised before exit
    ck.close()
    n_lines_3 = len(_index_lines(a["index_log"]))

    proc = runs.run(a)
    assert proc.returncode == 0, _fail(proc)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == term_step and not summary["preempted"]
    lines_4 = _index_lines(a["index_log"])[n_lines_3:]
    assert [s for s, _ in lines_4] == list(range(term_step + 1, TOTAL_STEPS + 1))
    # The same data order, step for step, in all four processes; the same parameters.
    for step, idx in _index_lines(a["index_log"]):
        assert idx == ref_order[step], step
    _assert_bitwise(_params(a["params_out"]), ref_params)
    # Metrics logged after the restored step were dropped on resume: each step once.
    lines = metrics.read_jsonl(os.path.join(a["workdir"], metrics.JSONL_NAME))
    assert [r["step"] for r in lines if "train/loss/total" in r] == list(range(1, 7))
    assert [r["step"] for r in lines if "val/loss" in r] == [2, 4, 6]


# --- helpers (no compilation) -----------------------------------------------------------------


def test_initialize_distributed_single_process_and_errors(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    assert train.initialize_distributed() is False
    assert train.initialize_distributed("localhost:1234", 1, 0) is False  # one process
    with pytest.raises(ValueError, match="num_processes/process_id"):
        train.initialize_distributed("localhost:1234")
    # SLURM with a single task is a single process too.
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert train.initialize_distributed() is False
    assert jax.process_count() == 1


def test_train_config_checks():
    cfg = scar_config.get_config("variant=mu,runlocal,text=random-tiny")
    train._check_train_config(cfg)
    for leaf, value, match in [
        ("optim.nonfinite", "ignore", "nonfinite"),
        ("train.keep", 0, "keep"),
        ("train.eval_every", -1, "eval_every"),
    ]:
        bad = ml_collections.ConfigDict(cfg.to_dict())
        section, name = leaf.split(".")
        bad[section][name] = value
        with pytest.raises(ValueError, match=match):
            train._check_train_config(bad)


# --- launch/ ---------------------------------------------------------------------------------


def _launch_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_launch_{name}", REPO / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_needs_findings_for_the_finding_term_or_the_selectors_finding_target():
    config = scar_config.get_config("runlocal,text=random-tiny")
    assert config.model.selector.target == "findings" and train.needs_findings(config)
    config.model.selector.target = "report"
    assert not train.needs_findings(config)
    config.loss_weights.find = 0.5
    assert train.needs_findings(config)
    merl = scar_config.get_config("runlocal,text=random-tiny,method=merl")  # mean selector
    assert not train.needs_findings(merl)
    off = scar_config.get_config("runlocal,text=random-tiny,supervision=false")
    assert not train.needs_findings(off)


def test_sweep_expands_config_entries_into_commands():
    sweep = _launch_module("sweep")
    commands = sweep.expand(
        "configs/scar.py",
        base_arg="variant=mu",
        workdir="/runs/abl/",
        base_overrides=("--config.total_steps=10",),
    )
    assert commands[0] == (
        "python -m scar_jax.main train --config=configs/scar.py:variant=mu,method=scar "
        "--workdir=/runs/abl/scar --config.total_steps=10"
    )
    assert (
        "python -m scar_jax.main train --config=configs/scar.py:variant=mu "
        "--workdir=/runs/abl/rho_max_0.7 --config.total_steps=10 --config.model.masker.rho_max=0.7"
    ) in commands
    names = [c.split("--workdir=/runs/abl/")[1].split()[0] for c in commands]
    assert len(set(names)) == len(names) >= 15  # one workdir per entry
    launched = sweep.expand("configs/scar.py", workdir="w", launcher="launch/local.sh")
    assert launched[1] == "launch/local.sh configs/scar.py:method=merl w/merl"


def test_sweep_without_sweep_function_fails_with_its_name(tmp_path):
    sweep = _launch_module("sweep")
    cfg = tmp_path / "plain.py"
    cfg.write_text("def get_config(arg=None):\n    return None\n")
    with pytest.raises(SystemExit, match="defines no sweep"):
        sweep.expand(str(cfg), workdir="w")


def test_aot_topology_needs_libtpu_or_gives_its_devices():
    aot = _launch_module("aot_compile")
    assert aot.topology_devices("host") == jax.devices()
    try:
        import libtpu  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit, match="libtpu is not installed"):
            aot.topology_devices("v5e:2x2")
    else:
        assert len(aot.topology_devices("v5e:2x2")) == 4


def test_cached_array_is_computed_once_by_concurrent_callers(tmp_path):
    """The second caller arrives while the first computes: it waits on the file lock and reads
    the first one's array (without the lock it would find no file and compute again)."""
    import threading

    path = str(tmp_path / "cache" / "features.npy")
    want = np.arange(6.0).reshape(2, 3)
    calls, computing = [], threading.Event()

    def compute():
        calls.append(threading.get_ident())
        computing.set()
        time.sleep(0.5)
        return want

    out = {}

    def caller(k):
        out[k] = train.cached_array(path, "test features", compute)

    first = threading.Thread(target=caller, args=(0,))
    first.start()
    assert computing.wait(10)
    second = threading.Thread(target=caller, args=(1,))
    second.start()
    first.join(10)
    second.join(10)
    assert len(calls) == 1
    np.testing.assert_array_equal(out[0], want)
    np.testing.assert_array_equal(out[1], want)
    assert sorted(os.listdir(tmp_path / "cache")) == ["features.npy", "features.npy.lock"]
    np.testing.assert_array_equal(train.cached_array(path, "test features", compute), want)
    assert len(calls) == 1  # a later caller reads the file too
