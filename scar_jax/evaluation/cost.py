"""What the evaluation grid costs: C keep masks in one batched pass vs C clean passes.

`grid_cost` times one batch (shared by the grid's report, `results["timing"]`, and the
benchmarks, scar_jax.benchmarks); `measure_cost` runs it on a split's first batch under the
model-independent conditions and adds the run's totals.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from scar_jax.evaluation import data as data_lib
from scar_jax.evaluation import missingness as miss


def grid_cost(emb: miss.GridEmbedder, ecg: np.ndarray, observed: np.ndarray,
              keeps: np.ndarray, reps: int) -> dict[str, float]:
    """Cost of embedding one batch under C keep masks vs C clean passes, everything compiled.

    ecg [B, T, 12], observed [B, 12, S] bool, keeps [C, B, 12, S] bool. The clean pass is the
    model's own jitted `embed_ecg` on the batch; the grid is every condition through
    `emb` (token embedding included). Both are timed interleaved, best of `reps`, so a busy
    machine slows both alike; then each chunk of conditions is timed right after a clean
    pass (paired, robust to load drift). Shared by `evaluate` and `scar_jax.benchmarks`.
    """
    ecg = jnp.asarray(ecg)
    model = emb.model
    clean_fn = jax.jit(lambda v, e, k: model.apply(v, e, jnp.ones(e.shape[:1] + (12,), bool),
                                                   keep=k, method=model.embed_ecg)[0])
    keep0 = jnp.asarray(observed, jnp.float32)
    clean = lambda: clean_fn(emb.variables, ecg, keep0)  # noqa: E731
    grid = lambda: emb.embed(emb.tokens(ecg, observed), keeps)  # noqa: E731
    clean(), grid()
    t_clean, t_grid = [], []
    for _ in range(int(reps)):
        t_clean.append(miss.timed(clean)[1])
        t_grid.append(miss.timed(grid)[1])
    c = int(keeps.shape[0])
    ratio = min(t_grid) / (c * min(t_clean))
    tok = emb.tokens(ecg, observed)
    kj = np.asarray(keeps, np.float32)
    pad = (-c) % emb.chunk  # whole chunks only (the compiled shape); padding counts as work
    kj = np.concatenate([kj] + [kj[:1]] * pad) if pad else kj
    paired = []
    for i in range(0, kj.shape[0], emb.chunk):
        part = kj[i : i + emb.chunk]
        tc = miss.timed(clean)[1]
        tg = miss.timed(lambda: emb.grid_chunk(tok, part))[1]  # noqa: B023
        paired.append(tg / (emb.chunk * tc))
    logging.info("grid cost: %d conditions in %.3fs vs %.3fs per clean pass -> %.2fx", c,
                 min(t_grid), min(t_clean), ratio)
    return {
        "conditions_static": c,
        "clean_pass_s": min(t_clean),
        "grid_s": min(t_grid),
        "ratio": ratio,
        "ratio_paired_median": float(np.median(paired)),
        "chunk": emb.chunk,
    }


def measure_cost(emb: miss.GridEmbedder, data: data_lib.EvalData, cfg, patch: int,
                 static: Sequence[miss.Condition], timing: dict[str, Any]) -> dict[str, float]:
    """`grid_cost` of the model-independent conditions `static` on the first batch of `data`,
    plus the run's totals from `timing` (rank_s, grid_s, conditions)."""
    bs = int(cfg.batch_size)
    sl = slice(0, min(bs, len(data)))
    observed = data_lib.pad(data_lib.observed_tokens(data, sl, patch), bs)
    ecg = data_lib.pad(np.nan_to_num(data.ecg[sl]).astype(np.float32), bs)
    keeps = miss.stack_keeps([miss.condition_keep(c, observed, np.arange(bs), cfg.seed)
                              for c in static])
    out = grid_cost(emb, ecg, observed, keeps, int(cfg.timing_reps))
    out.update(
        total_rank_s=timing["rank_s"],
        total_grid_s=timing["grid_s"],
        conditions_per_model=timing["conditions"],
        traces=emb.traces,
    )
    return out
