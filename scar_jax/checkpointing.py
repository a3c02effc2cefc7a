"""orbax checkpoints of the train state, the grain iterator state and the config.

One step directory holds three items:

  state   the train state (sharded jax.Arrays; restored onto the template's shardings)
  data    the input iterator state, one JSON file per JAX process (grain's handler)
  config  the run config (JSON)

The state and the data position restore on another number of processes or devices too
(elastic resume): orbax reshards the state onto the template, and a training stream's
iterator state is its global position (pipeline.StreamIterator), which every process of
the saving run wrote alike and which the iterator remaps onto this run's processes.

Saves are asynchronous; orbax writes into a temporary directory and renames it
(or writes a commit marker on object stores) only once every item is finalised,
so a process killed while saving leaves the previous checkpoint as the latest
complete one. Retention keeps the last `keep` steps and the `keep_best` best by a
validation metric. A state with a non-finite float anywhere is never saved.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from typing import Any, Mapping

from absl import logging
from etils import epath
import grain
import grain.checkpoint as grain_checkpoint
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from scar_jax import optim

STATE, DATA, CONFIG = "state", "data", "config"


class NonFiniteStateError(FloatingPointError):
    """The train state holds NaN/Inf: saving it would poison every resume."""


# --- the state pytree <-> what orbax stores ---------------------------------------------------


def _is_key(x: Any) -> bool:
    """True for a typed PRNG key array (jax.random.key)."""
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(tree: Any) -> Any:
    """Typed PRNG keys -> their uint32 key data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract(x: Any) -> Any:
    """An array or ShapeDtypeStruct -> ShapeDtypeStruct with its sharding (keys as key data)."""
    if isinstance(x, jax.ShapeDtypeStruct):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.eval_shape(jax.random.key_data, x)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)
        return x
    if isinstance(x, jax.Array):
        if _is_key(x):
            x = jax.random.key_data(x)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x  # python scalars and numpy arrays restore as they were saved


def _from_storable(restored: Any, template: Any) -> Any:
    """Wrap key data back into typed keys where the template has keys."""

    def back(r, t):
        if _is_key(t):
            return jax.random.wrap_key_data(r, impl=jax.random.key_impl(t))
        if isinstance(t, jax.ShapeDtypeStruct) and jnp.issubdtype(t.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(r, impl=t.dtype._impl)  # no public getter for SDS
        return r

    return jax.tree.map(back, restored, template)


@jax.jit
def _finite_flags(tree: Any) -> Any:
    """Per-leaf bool: every element of an inexact leaf is finite (True for other leaves)."""
    return jax.tree.map(
        lambda x: jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else True,
        tree,
    )


def nonfinite_leaves(tree: Any) -> list[str]:
    """Paths ('params/ecg/...') of the array leaves holding NaN or Inf; empty when all finite."""
    arrays = jax.tree.map(
        lambda x: x if isinstance(x, (jax.Array, np.ndarray)) and not _is_key(x) else np.zeros(()),
        tree,
    )
    flags = jax.device_get(_finite_flags(arrays))
    return [
        optim.path_str(p) for p, ok in jax.tree_util.tree_leaves_with_path(flags) if not bool(ok)
    ]


# --- the data iterator -----------------------------------------------------------------------


class _IteratorSnapshot:
    """The iterator state taken at save time, in the shape grain's orbax handler expects.

    grain's handler serialises `get_state()` in the background thread of an
    asynchronous save; snapshotting first pins the state to the saved step.
    """

    def __init__(self, state: Any):
        if not isinstance(state, bytes):
            state = (state if isinstance(state, str) else json.dumps(state)).encode()
        self.state = state

    def get_state(self) -> bytes:
        """The snapshot as bytes (grain writes it as the process's JSON file)."""
        return self.state


_PROCESS_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")  # grain's name for a process's state


def _saved_iterator_state(data_item: str | os.PathLike) -> bytes:
    """This process's iterator state in a checkpoint's data item folder (grain's layout:
    process_<i>-of-<n>.json).

    When the checkpoint was written by another number of processes, the position they all
    saved: states that hold a global position ('batches', as pipeline.StreamIterator
    writes) and agree on it; the iterator's set_state remaps it. Per-process states of
    another kind (a plain grain iterator) restore only on the process count that saved them.
    """
    folder = epath.Path(data_item)
    mine = folder / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if mine.exists():
        return mine.read_bytes()
    saved = {}
    for f in folder.glob("process_*-of-*.json") if folder.exists() else ():
        match = _PROCESS_FILE.fullmatch(f.name)
        if match:
            saved[int(match[1])] = (int(match[2]), json.loads(f.read_text()))
    if not saved:
        raise FileNotFoundError(f"{folder} holds no data iterator state (the checkpoint was "
                                "saved without a data iterator).")
    count = max(n for n, _ in saved.values())
    states = [st for _, (_, st) in sorted(saved.items())]
    if not all(isinstance(st, dict) and "batches" in st for st in states):
        raise ValueError(
            f"{folder} holds the data iterator states of {count} processes, this run has "
            f"{jax.process_count()}, and they are per-process states without a global data "
            f"position: resume it on {count} processes.")
    if len({(st["batches"], st.get("global_batch_size")) for st in states}) > 1:
        raise ValueError(f"The processes that saved {folder} disagree on the data position: "
                         f"{[(st['batches'], st.get('global_batch_size')) for st in states]}.")
    return json.dumps(states[0]).encode()


def set_iterator_state(iterator: Any, saved: bytes) -> None:
    """Give `iterator` a state saved by `save` (dict-state and bytes-state iterators alike)."""
    if isinstance(iterator, grain.DatasetIterator) or not isinstance(
        iterator.get_state(), (bytes, str)
    ):
        iterator.set_state(json.loads(saved))
    else:
        iterator.set_state(saved)


# --- the manager -----------------------------------------------------------------------------


class Checkpointer:
    """orbax CheckpointManager over `directory` with steps holding state, data and config.

    keep: the most recent checkpoints kept; keep_best: additionally kept, the best
    by `best_metric` ('min' or 'max' per `best_mode`) among checkpoints saved with
    that metric (0 disables). `save_every`: `should_save(step)` cadence. `read_only`: for
    readers (restore_params, latest_step): no folder is created and no unfinished save is
    cleaned up (orbax's own read_only mode warns on every open).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int = 1000,
        keep: int = 3,
        keep_best: int = 1,
        best_metric: str = "val/loss",
        best_mode: str = "min",
        async_save: bool = True,
        read_only: bool = False,
    ):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode={best_mode!r}; use 'min' or 'max'.")
        if keep < 1:
            raise ValueError(f"keep={keep}: keep at least the latest checkpoint (keep >= 1).")
        self.directory = absolute(directory)
        self.save_every = save_every
        self.best_metric = best_metric
        policies = [ocp.checkpoint_managers.LatestN(n=keep)]
        best_fn = None
        if keep_best > 0:
            best_fn = lambda m: float(m[best_metric])  # noqa: E731
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=best_fn,
                    reverse=best_mode == "min",
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn,
            best_mode=best_mode,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            # a save cut short by a kill is removed on restart; a reader removes nothing (a
            # run may be saving), and starts no background cleanup that could outlive it
            cleanup_tmp_directories=not read_only,
            create=not read_only,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=(STATE, DATA, CONFIG), options=options
        )

    # steps
    def latest_step(self) -> int | None:
        """The newest complete (finalised) checkpoint step, or None."""
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The best step by the validation metric (the latest when none has the metric)."""
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        """Every complete checkpoint step kept on disk, ascending."""
        return sorted(self.manager.all_steps())

    def should_save(self, step: int) -> bool:
        """True on the `save_every` cadence."""
        return self.save_every > 0 and step % self.save_every == 0

    # save / restore
    def save(
        self,
        step: int,
        state: Any,
        *,
        data_iterator: Any = None,
        config: ml_collections.ConfigDict | Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> bool:
        """Start an asynchronous save of `state` (+ iterator state, config) at `step`.

        Raises NonFiniteStateError (naming the leaves) instead of saving a state
        with NaN/Inf. Returns False when `step` is already saved. `metrics` with
        `best_metric` make the checkpoint a candidate for keep-best.
        """
        bad = nonfinite_leaves(state)
        if bad:
            raise NonFiniteStateError(
                f"Refusing to save the checkpoint of step {step}: non-finite values in "
                f"{bad[:5]}{' ...' if len(bad) > 5 else ''}. The last saved checkpoint "
                f"({self.latest_step()}) is intact; lower the learning rate or set "
                "config.train.nonfinite='skip'."
            )
        if step in self.manager.all_steps():
            return False
        items = {STATE: ocp.args.StandardSave(_to_storable(state))}
        if data_iterator is not None:
            items[DATA] = grain_checkpoint.CheckpointSave(
                _IteratorSnapshot(data_iterator.get_state())
            )
        if config is not None:
            cfg = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
            items[CONFIG] = ocp.args.JsonSave(json.loads(json.dumps(cfg, default=str)))
        tracked = None
        if metrics is not None and self.best_metric in metrics:
            value = float(np.asarray(metrics[self.best_metric]))
            if np.isfinite(value):
                tracked = {self.best_metric: value}
        saved = self.manager.save(
            step, args=ocp.args.Composite(**items), metrics=tracked, force=True
        )
        if saved:
            logging.info("Checkpoint of step %d started (%s).", step, self.directory)
        return saved

    def restore(
        self,
        state_template: Any,
        *,
        step: int | None = None,
        data_iterator: Any = None,
    ) -> tuple[Any, int]:
        """(state, step) from checkpoint `step` (default: latest) onto the template's shardings.

        `state_template`: the state pytree (arrays or ShapeDtypeStructs with
        shardings). When `data_iterator` is given, its state is set to the saved one
        (`_saved_iterator_state`: from a checkpoint of another process count, the global
        position of a training stream).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"No complete checkpoint in {self.directory}; start a fresh run instead."
            )
        abstract = jax.tree.map(_abstract, state_template)
        self._check_param_shapes(step, abstract)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract)}))
        state = _from_storable(restored[STATE], state_template)
        if data_iterator is not None:  # read here: grain's handler wants this process count
            data_item = os.path.join(self.directory, str(step), DATA)
            set_iterator_state(data_iterator, _saved_iterator_state(data_item))
        logging.info("Restored checkpoint of step %d from %s.", step, self.directory)
        return state, step

    def _check_param_shapes(self, step: int, abstract: Any) -> None:
        """Stop with the differing parameters when the checkpoint's model is not the
        template's (a resume after a change of model config: orbax's own error comes after
        a long traceback and names one array)."""
        want = _params(abstract)
        if want is None:
            return
        saved = _state_metadata(os.path.join(self.directory, str(step), STATE))
        saved = _params(getattr(saved, "tree", saved))  # orbax's TreeMetadata -> its dict
        if saved is None:
            return
        saved, want = _leaf_shapes(saved), _leaf_shapes(want)
        both = sorted(saved.keys() & want.keys())
        diff = [f"{k}: saved {saved[k]} vs {want[k]} now" for k in both if saved[k] != want[k]]
        diff += [f"{k}: only in the checkpoint" for k in sorted(saved.keys() - want.keys())]
        diff += [f"{k}: only in this model" for k in sorted(want.keys() - saved.keys())]
        if diff:
            more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
            raise ValueError(
                f"Checkpoint {step} in {self.directory} holds a model of another shape than "
                f"this config's: {'; '.join(diff[:8])}{more}. Resume with the model config it "
                "was trained with, or train into a new workdir."
            )

    def restore_config(self, step: int | None = None) -> dict[str, Any]:
        """The config dict saved with checkpoint `step` (default: latest)."""
        step = self.latest_step() if step is None else step
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
            CONFIG
        ]

    def wait(self) -> None:
        """Block until every pending asynchronous save is finalised."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


# --- preemption ------------------------------------------------------------------------------


class PreemptionGuard:
    """SIGTERM -> `requested(step)` turns True so the loop saves and exits cleanly.

    One process: a Python SIGTERM handler sets a flag. Several processes: jax's
    preemption sync service (started by jax.distributed.initialize) picks the
    step at which every process saves; the Python handler is not installed then,
    as it would replace the service's own.
    """

    def __init__(self):
        self._flag = threading.Event()
        self._previous = None
        self._multi = jax.process_count() > 1

    def __enter__(self) -> "PreemptionGuard":
        if not self._multi and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        """Record the request; the loop acts on it at the end of the current step."""
        del frame
        logging.warning("Signal %d received: saving a checkpoint and stopping.", signum)
        self._flag.set()

    def request(self) -> None:
        """Ask for a save-and-stop as SIGTERM would (tests, notebooks)."""
        self._flag.set()

    def requested(self, step: int) -> bool:
        """True once a stop was requested (all processes agree on the step when several)."""
        if self._multi:
            try:
                return multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # preemption service off: fall back to the local flag
                return self._flag.is_set()
        return self._flag.is_set()


def _state_metadata(item: str) -> Any:
    """The saved state's tree of array metadata (shape, dtype) at the step's `item` folder.

    Read by the item's handler: StandardCheckpointer.metadata also looks for a step-level
    metadata file inside the item and warns 'Metadata file does not exist' on every read."""
    handler = ocp.StandardCheckpointHandler()
    try:
        return handler.metadata(epath.Path(item))
    finally:
        handler.close()


def _params(tree: Any) -> Any:
    """The 'params' subtree of a train state (a dict or a dataclass), or None."""
    return tree.get("params") if isinstance(tree, Mapping) else getattr(tree, "params", None)


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{'ecg/encoder/.../kernel': shape} of a tree of arrays or array metadata."""
    def name(k):
        return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(map(name, path)): tuple(x.shape) for path, x in flat if hasattr(x, "shape")}


WORKDIR_SUBDIR = "checkpoints"  # where a training workdir keeps its orbax checkpoints


def is_url(path: str | os.PathLike) -> bool:
    """True for a URL such as gs://bucket/run (pathlib would collapse it to gs:/bucket/run)."""
    return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
    """`path` made absolute (orbax refuses relative paths: a relative --workdir failed at the
    first save); URLs such as gs://bucket/run are returned unchanged."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def checkpoint_folder(path: str | os.PathLike) -> str:
    """The orbax checkpoint folder of `path` (absolute): a training workdir or that folder.

    Checked through etils.epath, as orbax reads it, so a pod run's gs://bucket/run workdir
    is found as well as a local folder."""
    path = absolute(path)
    sub = epath.Path(path) / WORKDIR_SUBDIR
    if sub.is_dir():
        return os.fspath(sub)
    if not epath.Path(path).is_dir():
        raise FileNotFoundError(
            f"Checkpoint folder {path} does not exist; pass a training workdir or its "
            f"'{WORKDIR_SUBDIR}' folder."
        )
    return path


def latest_step(path: str | os.PathLike) -> int | None:
    """The newest complete checkpoint step under `path` (a training workdir or its
    checkpoints folder, local or gs://), read without saving anything; None when there
    is none."""
    try:
        folder = checkpoint_folder(path)
    except FileNotFoundError:
        return None
    ckpt = Checkpointer(folder, async_save=False, keep_best=0, read_only=True)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def restore_params(path: str | os.PathLike, step: int | None = None) -> tuple[Any, dict | None]:
    """(params, saved config dict or None) of a checkpoint, on this process's first device.

    For evaluation, export and inference on any machine: the arrays are restored from the
    checkpoint's own metadata onto one local device, whatever mesh or process count saved
    them (a run trained on 8 devices or a pod slice loads on a laptop). `path` is a training
    workdir or its checkpoints folder; `step` defaults to the latest complete checkpoint.
    """
    folder = checkpoint_folder(path)
    ckpt = Checkpointer(folder, async_save=False, keep_best=0, read_only=True)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No complete checkpoint in {folder}.")
        try:
            config = ckpt.restore_config(step)
        except Exception as e:  # noqa: BLE001  (a checkpoint saved without its config)
            logging.warning("checkpoint %s step %d has no config (%s).", folder, step, e)
            config = None
    finally:
        ckpt.close()
    item = os.path.join(folder, str(step), STATE)
    tree = _state_metadata(item)
    reader = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree
    )
    state = reader.restore(item, abstract)
    reader.close()
    if "params" not in state:
        raise KeyError(f"Checkpoint {item} holds no 'params' (found {sorted(state)}).")
    return state["params"], config


def load_checkpoint(path: str | os.PathLike, step: int | None = None) -> tuple[Any, dict | None]:
    """(variables {'params': ...}, saved config dict or None) of a training workdir / checkpoint.

    The checkpoint -> variables reader of evaluation, export and predict: `restore_params`
    (this process's first device, whatever topology saved it) wrapped as flax variables.
    """
    params, saved_config = restore_params(path, step)
    return {"params": params}, saved_config
