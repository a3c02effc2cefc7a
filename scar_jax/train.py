"""The training loop: setup -> state (fresh or resumed) -> for step: update, log, validate, save.

  python -m scar_jax.main train --config=configs/scar.py:variant=mu,runlocal --workdir=/tmp/run

`train(config, workdir)` is the whole run and is callable from tests. A workdir
holds `checkpoints/` (orbax: train state, data iterator state, config),
`metrics.jsonl` (+ `tensorboard/` when installed). Started on a workdir that has
a complete checkpoint, the run resumes from it, data order included: the
resumed run's parameters equal an uninterrupted run's bitwise on CPU. It resumes
on another number of processes or devices too (elastic): the state is resharded
onto this run's mesh and the data position, global batches read
(pipeline.StreamIterator), is remapped onto this run's processes; the global batch
(config.batch_size) must stay the same.

Multi-host: `initialize_distributed` calls `jax.distributed.initialize` before
anything touches a device: automatically on TPU pods and under SLURM, with an
explicit coordinator (arguments or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID) for a local cluster. Every process runs the same loop on its
rows of every global batch; only process 0 writes metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import io
import os
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scar_jax import checkpointing
from scar_jax import losses
from scar_jax import metrics as metrics_lib
from scar_jax import sharding as sharding_lib
from scar_jax import train_state as train_state_lib
from scar_jax import update as update_lib
from scar_jax.leads import NUM_LEADS
from scar_jax.data import findings as findings_lib
from scar_jax.data import pipeline
from scar_jax.data import reports as reports_lib
from scar_jax.models import scar

# An evaluator gets (state, step) at every validation loss pass (eval_every) and returns
# named scalars ('val/my_metric': 0.71); they are logged and can rank checkpoints
# (best_metric). The zero-shot AUROC has its own cadence (train.zeroshot_every):
# scar_jax.evaluation.validation.ZeroShotValidator, built from the config.
Evaluator = Callable[[Any, int], Mapping[str, float]]
# Called with (step, this process's numpy batch) before the batch is used; it may read it
# (data audits: batch['index'] holds the record indices) or modify it in place.
BatchCallback = Callable[[int, dict[str, np.ndarray]], None]

CHECKPOINT_DIR = checkpointing.WORKDIR_SUBDIR  # <workdir>/checkpoints: the orbax steps


# --- multi-host ------------------------------------------------------------------------------


def _int_env(name: str) -> int | None:
    """An integer environment variable, or None when unset/empty."""
    value = os.environ.get(name, "")
    return int(value) if value.strip() else None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """jax.distributed.initialize when this is one process of several; True if it was called.

    Explicit (a local cluster): coordinator_address 'host:port', num_processes and
    process_id, from the arguments or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID. Automatic: under SLURM with more than one task and on a TPU
    slice with more than one worker. Otherwise (one process) nothing is done.
    """
    if jax.distributed.is_initialized():
        return True
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num = num_processes if num_processes is not None else _int_env("JAX_NUM_PROCESSES")
    pid = process_id if process_id is not None else _int_env("JAX_PROCESS_ID")
    if address is not None:
        if num is None or pid is None:
            raise ValueError(
                f"Coordinator {address!r} given without num_processes/process_id; pass all "
                "three (or set JAX_NUM_PROCESSES and JAX_PROCESS_ID)."
            )
        if num > 1:
            logging.info("jax.distributed.initialize(%s, %d processes, id %d)", address, num, pid)
            jax.distributed.initialize(address, num_processes=num, process_id=pid)
            return True
        return False
    slurm_tasks = _int_env("SLURM_STEP_NUM_TASKS") or _int_env("SLURM_NTASKS") or 1
    tpu_workers = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if ("SLURM_JOB_ID" in os.environ and slurm_tasks > 1) or len(tpu_workers) > 1:
        logging.info("jax.distributed.initialize() with the cluster's auto-detected settings")
        jax.distributed.initialize()
        return True
    return False


# --- text ------------------------------------------------------------------------------------


@contextlib.contextmanager
def exclusive_lock(path: str, what: str):
    """Hold an exclusive advisory lock (fcntl.flock on `path`) for the block, so that
    concurrent runs on one machine do `what` once; logs when it has to wait. Where the
    filesystem has no such locks the block runs unlocked (logged)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logging.info("waiting for another run to finish %s (lock %s)", what, path)
                fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:
            logging.warning("no file lock on %s (%s): %s unlocked", path, e, what)
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def text_features(
    model: scar.Model, params: Any, config: ml_collections.ConfigDict, split: str, text_fn, mesh,
    workdir: str | None = None,
) -> pipeline.ReportFeatures:
    """The frozen text tower's pooled features of `split`'s distinct reports (and, when
    `needs_findings`, of their distinct findings), for the pipeline's txt_feats.

    Reads the split's report table, written by its builder (scar_jax.data.reports): no
    record is read. The embedding is split over the JAX processes (`embed_texts`). With
    a text cache folder (`text_cache_dir`: by default WORKDIR/text_cache, so a resumed run
    reads them) and a text tower loaded from a checkpoint (not the random one), each feature
    array is kept there under a hash of (checkpoint, pooling, max_len, and the report
    table's id digest or the finding texts) (`cached_text_features`), and the finding table
    under a hash of the report table (`cached_finding_table`): runs and processes that share
    a corpus and a text tower embed it once, and a later start-up only reads files (local
    ones memory-mapped: `cached_array`). Each stage logs its time.
    """
    t0 = time.perf_counter()
    table = pipeline.report_table(config.input.dataset, split, config.input.data_dir or None)
    logging.info("%s: report table read, %d distinct reports (%.2fs)", split, len(table),
                 time.perf_counter() - t0)
    feats = cached_text_features(model, params, config, table.texts, text_fn, mesh,
                                 f"the {len(table)} distinct reports of {split}", workdir,
                                 digest=table.digest())
    if not needs_findings(config):
        return pipeline.ReportFeatures(table, feats)
    max_f = int(config.model.txt.max_findings)
    t0 = time.perf_counter()
    unique, ids, counts = cached_finding_table(config, table, max_f, workdir)
    logging.info("%s: %d distinct findings in %d distinct reports (%d reports have more than "
                 "model.txt.max_findings=%d; their later findings are not used) (%.2fs)",
                 split, len(unique), len(table), int(np.sum(counts > max_f)), max_f,
                 time.perf_counter() - t0)
    f_feats = cached_text_features(model, params, config, unique, text_fn, mesh,
                                   f"the {len(unique)} distinct findings of {split}", workdir)
    return pipeline.ReportFeatures(table, feats, ids, f_feats)


def text_cache_dir(config: ml_collections.ConfigDict, workdir: str | None = None) -> str | None:
    """Where frozen-text features are kept: config.train.text_cache_dir, '' = WORKDIR/text_cache
    (None without a workdir: library calls), 'off' = nowhere."""
    value = str(config.train.text_cache_dir)
    if value == "off":
        return None
    if not value:
        return None if workdir is None else os.path.join(os.fspath(workdir), "text_cache")
    return value


def cached_finding_table(
    config: ml_collections.ConfigDict, table: reports_lib.Table, max_findings: int,
    workdir: str | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """findings.finding_table(table.texts, max_findings), kept in the text cache folder
    (`text_cache_dir`) under a hash of the table's ids, max_findings and the splitting rule:
    splitting every distinct report grows with the corpus, reading two arrays barely does."""
    compute = functools.cache(lambda: findings_lib.finding_table(table.texts, max_findings))
    folder = text_cache_dir(config, workdir)
    if folder is None:
        return compute()
    key = hashlib.sha256("\n".join([table.digest(), str(max_findings),
                                    findings_lib.SPLIT_RULE]).encode()).hexdigest()[:24]
    folder = epath.Path(folder)
    what = f"the finding table of {len(table)} distinct reports"

    def ids_and_counts() -> np.ndarray:
        _, ids, counts = compute()
        return np.concatenate([ids, counts[:, None]], axis=1)

    def texts() -> np.ndarray:  # a finding never holds a line break (one ends a statement)
        return np.frombuffer("\n".join(compute()[0]).encode("utf-8"), np.uint8)

    packed = cached_array(folder / f"finding_ids_{key}.npy", what, ids_and_counts)
    blob = bytes(cached_array(folder / f"finding_texts_{key}.npy", what, texts))
    unique = blob.decode("utf-8").split("\n") if blob else []
    return unique, np.asarray(packed[:, :-1]), np.asarray(packed[:, -1])


def cached_text_features(
    model: scar.Model, params: Any, config: ml_collections.ConfigDict, texts: Sequence[str],
    text_fn, mesh, what: str, workdir: str | None = None, digest: str | None = None,
) -> np.ndarray:
    """embed_texts(texts) [U, H], through the text cache folder (`text_cache_dir`) when there
    is one and the text tower is a checkpoint's (the random tower's features depend on the
    seed). The cache key hashes the texts, or `digest` when given (a report table's: its ids
    hash the texts, so a warm start-up decodes none of them)."""
    txt = config.model.txt

    def compute() -> np.ndarray:
        t0 = time.perf_counter()
        out = embed_texts(model, params, texts, text_fn, mesh, max(config.batch_size, 8))
        logging.info("embedded %s with the frozen text tower (%.1fs, %d processes)", what,
                     time.perf_counter() - t0, jax.process_count())
        return out

    folder = text_cache_dir(config, workdir)
    if folder is None or txt.checkpoint == scar.RANDOM_TEXT:
        return compute()
    key = hashlib.sha256("\n".join(
        [str(txt.checkpoint), txt.pooling, str(txt.max_len)]
        + ([f"table:{digest}"] if digest is not None else list(texts))).encode()
    ).hexdigest()[:24]
    path = epath.Path(folder) / f"text_features_{key}.npy"
    return cached_array(path, what, compute)


def _process_rows(batch_sharding: jax.sharding.Sharding, rows: int) -> tuple[int, int]:
    """[start, stop) of the rows of a [rows, ...] batch-sharded array this process holds."""
    spans = sorted({(i[0].start or 0, rows if i[0].stop is None else i[0].stop)
                    for i in batch_sharding.addressable_devices_indices_map((rows,)).values()})
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        if stop != start:
            raise ValueError(f"this process's batch rows are not contiguous: {spans}")
    return spans[0][0], spans[-1][1]


def embed_texts(
    model: scar.Model, params: Any, texts: Sequence[str], text_fn, mesh, chunk: int
) -> np.ndarray:
    """Pooled frozen-text features [U, H] float32 of `texts`, the work split over processes.

    The texts go in global chunks of `chunk` rows (rounded up to the batch axes' devices),
    batch-sharded on `mesh`: every process tokenizes and feeds only its own rows of each
    chunk; the chunk's features come back replicated (gathered) on every process. Runs
    the same compiled program for every chunk (the last one padded with empty texts).
    """
    if not len(texts):
        raise ValueError("embed_texts: no texts to embed (an empty report table?).")
    divisor = sharding_lib.batch_divisor(mesh)
    chunk = -(-max(int(chunk), 1) // divisor) * divisor
    batch_sharding = sharding_lib.batch_sharding(mesh)
    start, stop = _process_rows(batch_sharding, chunk)
    fn = jax.jit(
        lambda p, i, a: model.apply({"params": p}, i, a, method=update_lib._text_features),
        out_shardings=sharding_lib.replicated(mesh),
    )
    out = []
    for c0 in range(0, len(texts), chunk):
        mine = [str(t) for t in texts[c0 + start : c0 + stop]]
        tokens = text_fn(mine + [""] * (stop - start - len(mine)))
        ids, mask = (np.asarray(tokens[k], np.int32) for k in ("input_ids", "attention_mask"))
        shape = (chunk, ids.shape[1])
        ids, mask = (jax.make_array_from_process_local_data(batch_sharding, x, shape)
                     for x in (ids, mask))
        feats = np.asarray(fn(params, ids, mask).addressable_data(0))
        out.append(feats[: min(chunk, len(texts) - c0)])
    return np.concatenate(out).astype(np.float32)


def needs_findings(config: ml_collections.ConfigDict) -> bool:
    """Whether training batches must carry the reports' findings: the finding-level
    contrastive term (loss_weights.find) or the selector's finding-level target."""
    sel = config.model.selector
    sel_findings = (
        sel.kind == "adaptive"
        and sel.supervision
        and float(config.loss_weights.get("sel", 0.0)) > 0
        and sel.get("target", "report") == "findings"
    )
    return float(config.loss_weights.get("find", 0.0)) > 0 or sel_findings


def cached_array(path: str | os.PathLike, what: str, compute: Callable[[], np.ndarray]
                 ) -> np.ndarray:
    """The array kept in the .npy file `path` (local or gs://, through epath): read when it
    is there, else `compute()`d and written atomically by process 0.

    In a single-process run on a local path the check and the compute hold a file lock
    (`exclusive_lock`), so runs started together compute it once while the others wait and
    read it. Several JAX processes compute together (a sharded computation): process 0's
    view of the file decides for all of them (broadcast), so none waits on a collective the
    others skip, and no lock is taken.
    """
    path = epath.Path(path)
    local = not checkpointing.is_url(path)
    lock = (
        exclusive_lock(os.fspath(path) + ".lock", f"computing {what}")
        if jax.process_count() == 1 and local
        else contextlib.nullcontext()
    )
    with lock:
        found = path.exists()
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            found = bool(multihost_utils.broadcast_one_to_all(np.int32(found)))
        if found:
            t0 = time.perf_counter()
            if local:  # pages are read on use and shared by the processes of a host
                value = np.load(os.fspath(path), mmap_mode="r", allow_pickle=False)
            else:
                value = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
            logging.info("%s from the cache %s (%.2fs%s)", what, path, time.perf_counter() - t0,
                         ", memory-mapped" if local else "")
            return value
        value = np.asarray(compute())
        if jax.process_index() == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f"{path.name}.{os.getpid()}.tmp"
            buf = io.BytesIO()
            np.save(buf, value)
            tmp.write_bytes(buf.getvalue())
            tmp.replace(path)  # atomic on a local disk: a reader sees all of it or nothing
    return value


# --- validation ------------------------------------------------------------------------------


def make_embed_fn(model: scar.Model) -> Callable:
    """jitted (params, global batch) -> (z_ecg [B, E], z_txt [B, E]) in eval mode, no masker."""

    def embed(params, batch):
        z_e, _ = model.apply(
            {"params": params},
            batch["ecg"],
            batch["lead_observed"],
            batch.get("time_observed"),
            method=model.embed_ecg,
        )
        text = {k: batch[k] for k in ("input_ids", "attention_mask", "txt_feats") if k in batch}
        z_t, _ = model.apply({"params": params}, text, method=model.embed_text)
        return z_e, z_t

    return jax.jit(embed)


def validation_loss(
    embed_fn: Callable,
    params: Any,
    batches: Any,
    batch_sharding: jax.sharding.Sharding,
    loss_kind: str,
    max_batches: int,
) -> dict[str, float]:
    """{'val/loss': contrastive loss of the clean view, 'val/examples': n} over the first
    `max_batches` global batches (padding rows dropped; batches weighted by their rows)."""
    out = {"logit_scale": params["logit_scale"]}
    if "logit_bias" in params:
        out["logit_bias"] = params["logit_bias"]
    out = jax.device_get(out)
    total, count = 0.0, 0
    for i, local in enumerate(batches):
        if i >= max_batches:
            break
        batch = pipeline.global_batch(local, batch_sharding)
        z_e, z_t, valid = sharding_lib.to_host(
            (*embed_fn(params, batch), batch["valid"])
        )
        valid = np.asarray(valid, bool)
        if valid.sum() < 2:
            continue  # a contrastive loss needs at least one negative
        loss = float(losses.contrastive(z_e[valid], z_t[valid], out, loss_kind))
        total += loss * int(valid.sum())
        count += int(valid.sum())
    if count == 0:
        raise ValueError(
            "Validation saw fewer than 2 real examples per batch; use a bigger validation split "
            "or set config.train.eval_every=0."
        )
    return {"val/loss": total / count, "val/examples": float(count)}


# --- the loop --------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What a run ends with: the final state and step, the last logged train/val scalars."""

    state: Any
    step: int
    train_metrics: dict[str, float]
    val_metrics: dict[str, float]
    preempted: bool
    resumed_from: int | None


def _batch_spec(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of a global batch for the shape-first state init."""
    t = pipeline.num_samples(config.input)
    b, length = config.batch_size, config.model.txt.max_len
    return {
        "ecg": jax.ShapeDtypeStruct((b, t, NUM_LEADS), jnp.float32),
        "input_ids": jax.ShapeDtypeStruct((b, length), jnp.int32),
    }


def _abstract(tree: Any) -> Any:
    """Arrays -> ShapeDtypeStructs with their shardings (a restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a.b': leaf}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _warn_config_changes(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> None:
    """Log the config leaves that differ from those the checkpoint was written with."""
    now, before = _flatten(config.to_dict()), _flatten(saved)
    changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    if changed:
        logging.warning(
            "Resuming with a config that differs from the checkpoint's in %s",
            ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:20]),
        )


def _check_train_config(config: ml_collections.ConfigDict) -> None:
    """Fail early on loop settings that cannot work."""
    t = config.train
    if config.optim.nonfinite not in update_lib.NONFINITE_POLICIES:
        raise ValueError(
            f"config.optim.nonfinite={config.optim.nonfinite!r}; expected one of "
            f"{update_lib.NONFINITE_POLICIES}."
        )
    for name in ("checkpoint_every", "eval_every", "keep_best", "zeroshot_every",
                 "zeroshot_examples"):
        if t[name] < 0:
            raise ValueError(f"config.train.{name}={t[name]} must be >= 0.")
    if t.keep_best and t.best_metric == "val/zeroshot_auroc":  # evaluation.validation.METRIC
        if not t.zeroshot_every:
            raise ValueError(
                "config.train.best_metric='val/zeroshot_auroc' ranks checkpoints by the "
                "zero-shot validation, which is off: set config.train.zeroshot_every > 0.")
        if t.best_mode != "max":
            raise ValueError(
                f"config.train.best_metric='val/zeroshot_auroc' with best_mode={t.best_mode!r}: "
                "a higher AUROC is better; set config.train.best_mode='max'.")
    if t.keep < 1:
        raise ValueError(f"config.train.keep={t.keep}: keep at least the latest checkpoint.")
    if t.eval_every > 0 and t.eval_batches < 1:
        raise ValueError("config.train.eval_batches must be >= 1 when eval_every > 0.")
    if config.log_every < 1:
        raise ValueError(f"config.log_every={config.log_every} must be >= 1.")


def train(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    evaluators: Sequence[Evaluator] = (),
    batch_callback: BatchCallback | None = None,
) -> TrainResult:
    """Train (or resume) the run in `workdir` up to config.total_steps; see the module doc."""
    initialize_distributed()
    _check_train_config(config)
    workdir = os.fspath(workdir)
    t_cfg, policy = config.train, config.optim.nonfinite
    is_main = jax.process_index() == 0
    if is_main:
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)

    mesh = sharding_lib.make_mesh(config.mesh)
    batch_sharding = sharding_lib.batch_sharding(mesh)
    if config.batch_size % sharding_lib.batch_divisor(mesh):
        raise ValueError(
            f"config.batch_size={config.batch_size} is not divisible by the "
            f"{sharding_lib.batch_divisor(mesh)} devices on the batch axes; use a multiple."
        )
    model = scar.build_model(config.model)
    zeroshot_validator = None
    if t_cfg.zeroshot_every:  # its held-out records are read once, here: a bad set fails now
        from scar_jax.evaluation import validation as validation_lib

        zeroshot_validator = validation_lib.ZeroShotValidator.from_config(config, model, mesh)
    state, state_shardings = train_state_lib.create_train_state(
        model, config, _batch_spec(config), mesh, jax.random.key(config.seed)
    )

    # Data: report tokens, or features of the frozen text tower computed once.
    text_fn = scar.text_tokenizer(config.model.txt.checkpoint, config.model.txt.max_len)
    cache = t_cfg.cache_text_features and update_lib.text_is_frozen(config, state.params)
    train_split, val_split = config.input.train_split, config.input.eval_split
    if needs_findings(config) and not cache:
        raise ValueError(
            "loss_weights.find > 0 and model.selector.target='findings' (with the adaptive "
            "selector's supervision on) need the frozen text tower's cached features "
            "(train.cache_text_features=True and the BERT frozen by model.txt.freeze); "
            "set loss_weights.find=0 and model.selector.target='report' to train the text "
            "tower.")
    feats = {}
    if cache:
        for split in sorted({train_split, val_split} if t_cfg.eval_every else {train_split}):
            feats[split] = text_features(model, state.params, config, split, text_fn, mesh,
                                         workdir)
    data_seed = config.input.shuffle_seed if config.input.shuffle_seed >= 0 else config.seed

    def dataset(split: str, train_mode: bool):
        return pipeline.make_dataset(
            config.input,
            split,
            global_batch_size=config.batch_size,
            seed=data_seed,
            train=train_mode,
            text=None if cache else text_fn,
            report_features=feats.get(split),
        )

    train_iter = iter(dataset(train_split, True))
    val_ds = dataset(val_split, False) if t_cfg.eval_every else None

    # Fresh or resumed.
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, CHECKPOINT_DIR),
        save_every=t_cfg.checkpoint_every,
        keep=t_cfg.keep,
        keep_best=t_cfg.keep_best,
        best_metric=t_cfg.best_metric,
        best_mode=t_cfg.best_mode,
        async_save=t_cfg.async_checkpoint,
    )
    start = ckpt.latest_step()
    if start is not None:
        _warn_config_changes(ckpt.restore_config(start), config)
        template = _abstract(state)
        del state  # free the fresh copy before the restored one is loaded
        state, start = ckpt.restore(template, step=start, data_iterator=train_iter)
        logging.info("Resuming from step %d of %s.", start, workdir)
    step = 0 if start is None else start

    update_fn = update_lib.jit_update(
        update_lib.make_update_fn(model, config), state_shardings, batch_sharding
    )
    embed_fn = make_embed_fn(model)
    # Made under jit so that it is a global (replicated) array on every process.
    make_key = jax.jit(
        lambda: jax.random.key(config.seed), out_shardings=sharding_lib.replicated(mesh)
    )
    rng = make_key()
    writer = metrics_lib.MetricWriter(  # drops lines a killed run logged after `start`
        workdir, enabled=is_main, tensorboard=t_cfg.tensorboard, resume_step=start or 0
    )
    throughput = metrics_lib.Throughput(config.total_steps, window=t_cfg.throughput_window)

    pending: list[dict[str, jax.Array]] = []
    last_train: dict[str, float] = {}
    last_val: dict[str, float] = {}
    skipped_in_a_row, preempted = 0, False
    config_dict = config.to_dict()

    def save(step: int, metrics: Mapping[str, float] | None = None) -> None:
        ckpt.save(step, state, data_iterator=train_iter, config=config_dict, metrics=metrics)

    def due(step: int, every: int) -> bool:
        return bool(every) and (step % every == 0 or step == config.total_steps)

    def validate(step: int, loss: bool, zeroshot: bool) -> dict[str, float]:
        t0 = time.perf_counter()
        out = {}
        if loss:
            out = validation_loss(embed_fn, state.params, val_ds, batch_sharding,
                                  config.model.loss, t_cfg.eval_batches)
            for evaluator in evaluators:
                out.update({k: float(v) for k, v in evaluator(state, step).items()})
        if zeroshot:
            out.update(zeroshot_validator(state, step))
        writer.write(step, out)
        logging.info(
            "validation at step %d (%.1fs): %s",
            step,
            time.perf_counter() - t0,
            ", ".join(f"{k} {v:.4f}" for k, v in out.items()),
        )
        throughput.reset()
        return out

    try:
        with checkpointing.PreemptionGuard() as guard:
            throughput.mark(step, step * config.batch_size)
            while step < config.total_steps:
                local = next(train_iter)
                if batch_callback is not None:
                    batch_callback(step + 1, local)
                batch = pipeline.global_batch(local, batch_sharding)
                t0 = time.perf_counter()
                state, metrics = update_fn(state, batch, rng)
                step += 1
                pending.append(metrics)
                if step == (start or 0) + 1:
                    jax.block_until_ready(metrics)
                    logging.info(
                        "first step (compile + run) %.1fs", time.perf_counter() - t0
                    )
                    throughput.reset()
                    throughput.mark(step, step * config.batch_size)
                if policy == "stop" and float(metrics["nonfinite"]) > 0:
                    raise FloatingPointError(
                        f"Non-finite loss or gradient at step {step} (its update was not "
                        "applied). Stopping as config.optim.nonfinite='stop'; the last "
                        f"checkpoint is step {ckpt.latest_step()}. Lower the learning rate, "
                        "check the data, or set config.optim.nonfinite='skip'."
                    )
                throughput.mark(step, step * config.batch_size)

                if step % config.log_every == 0 or step == config.total_steps:
                    window = jax.device_get(pending)
                    pending.clear()
                    flags = [float(m["nonfinite"]) for m in window]
                    for f in flags:
                        skipped_in_a_row = skipped_in_a_row + 1 if f > 0 else 0
                        if skipped_in_a_row >= t_cfg.max_skipped_in_a_row > 0:
                            raise FloatingPointError(
                                f"{skipped_in_a_row} steps in a row had a non-finite loss or "
                                f"gradient (up to step {step}); the run is not recovering. "
                                f"The last checkpoint is step {ckpt.latest_step()}."
                            )
                    last_train = {
                        f"train/{k}": float(np.mean([float(m[k]) for m in window]))
                        for k in window[-1]
                    }
                    last_train["train/nonfinite/count"] = float(window[-1]["nonfinite/count"])
                    steps_s, ex_s = throughput.rates()
                    if np.isfinite(ex_s):
                        last_train["train/examples_per_s"] = ex_s
                        last_train["train/steps_per_s"] = steps_s
                    writer.write(step, last_train)
                    metrics_lib.log_progress(
                        step, config.total_steps, last_train, throughput, keys=("train/loss/total",)
                    )

                val = None
                loss_due = due(step, t_cfg.eval_every)
                zeroshot_due = zeroshot_validator is not None and due(step, t_cfg.zeroshot_every)
                if loss_due or zeroshot_due:
                    val = validate(step, loss_due, zeroshot_due)
                    last_val = {**last_val, **val}
                if guard.requested(step):
                    logging.warning("Preemption: saving step %d and stopping.", step)
                    save(step, val)
                    preempted = True
                    break
                if (
                    ckpt.should_save(step)
                    or step == config.total_steps
                    or (val is not None and t_cfg.keep_best > 0)
                ):
                    save(step, val)
    finally:
        ckpt.close()  # waits for the asynchronous saves to be finalised
        writer.close()
    return TrainResult(
        state=state,
        step=step,
        train_metrics=last_train,
        val_metrics=last_val,
        preempted=preempted,
        resumed_from=start,
    )


def run(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
    """The `scar_jax.main train` command: train (or resume) and log a one-line summary."""
    result = train(config, workdir)
    logging.info(
        "%s at step %d/%d; last train loss %s, val %s; workdir %s",
        "Preempted" if result.preempted else "Finished",
        result.step,
        config.total_steps,
        result.train_metrics.get("train/loss/total"),
        result.val_metrics.get("val/loss"),
        workdir,
    )
    return result
