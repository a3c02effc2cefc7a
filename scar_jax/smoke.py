"""The smoke check: one training update of the full model on generated synthetic records.

    python -m scar_jax.main smoke --config=configs/scar.py:variant=mu,runlocal

runs the update the trainer runs (scar_jax.update.make_update_fn on a train state born as
in training) on a batch generated in memory, at the step where the masker's warm-up ends,
so the adversarial masker acts; `format_report` gives the shapes of every view, the mask
ratio, each loss term and each player's gradient norm. Non-finite metrics raise.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scar_jax import sharding as sharding_lib
from scar_jax import train_state as train_state_lib
from scar_jax import update as update_lib
from scar_jax.models import scar


def generated_batch(
    config: ml_collections.ConfigDict, batch_size: int, seed: int = 0
) -> dict[str, Any]:
    """Synthetic-corpus records generated in memory at config.input's rate and length.

    ecg float32 [B, T, 12] normalised as config.input.normalize, lead_observed [B, 12]
    (a quarter of the records miss a few leads), report texts.
    """
    from scar_jax.data import preprocessing
    from scar_jax.data import synthetic

    records = [
        synthetic.generate_record(
            seed,
            "train",
            i,
            sampling_rate=int(config.input.sample_rate),
            duration_s=float(config.input.seconds),
            missing_lead_fraction=0.25,
        )
        for i in range(batch_size)
    ]
    ecg = np.stack([r.ecg for r in records])
    observed = np.stack([r.lead_observed for r in records])
    rows = np.ones(ecg.shape[:2], bool)
    ecg = preprocessing.normalize_batch(ecg, observed, rows, config.input.normalize)
    return {"ecg": ecg, "lead_observed": observed, "report": [r.report for r in records]}


@dataclasses.dataclass
class SmokeResult:
    """What one smoke update showed: view shapes, metrics of the update, timings."""

    config: ml_collections.ConfigDict
    shapes: dict[str, tuple[int, ...]]
    observed_leads: list[int]  # observed leads per record
    num_params: dict[str, int]  # per top-level module
    metrics: dict[str, float]  # the update's metrics (losses, mask ratio, grad norms, ...)
    compile_s: float  # compile + first update
    step_s: float  # a second update


def run(config: ml_collections.ConfigDict) -> SmokeResult:
    """One update_fn step of `config`'s model on generated records (see the module docstring)."""
    model = scar.build_model(config.model)
    data = generated_batch(config, config.batch_size, config.seed)
    tokens = scar.text_tokenizer(config.model.txt.checkpoint, config.model.txt.max_len)(
        data["report"]
    )
    batch = jax.tree.map(
        jnp.asarray, {"ecg": data["ecg"], "lead_observed": data["lead_observed"], **tokens}
    )
    mesh = sharding_lib.make_mesh(config.mesh)
    state, _ = train_state_lib.create_train_state(
        model, config, batch, mesh, jax.random.key(config.seed)
    )
    # The masker's warm-up (random masks) is over at this step: the adversary acts.
    state = state.replace(step=jnp.asarray(config.model.masker.warmup_steps, jnp.int32))
    update_fn = jax.jit(update_lib.make_update_fn(model, config))
    rng = jax.random.key(config.seed)
    t0 = time.perf_counter()
    _, metrics = jax.block_until_ready(update_fn(state, batch, rng))
    t1 = time.perf_counter()
    _, metrics = jax.block_until_ready(update_fn(state, batch, rng))
    t2 = time.perf_counter()
    variables = {"params": state.params}
    rngs = {"masker": jax.random.key(1), "dropout": jax.random.key(2)}
    z, out = jax.eval_shape(
        lambda v, b: model.apply(v, b, tau=1.0, train=True, rngs=rngs), variables, batch
    )
    shapes = {
        "ecg": tuple(batch["ecg"].shape),
        "tokens": tuple(out["clean"]["tokens"].shape),
        "grid": tuple(out["observed"].shape[1:]),
        "z_ecg": tuple(z.shape),
        "z_txt": tuple(out["z_txt"].shape),
    }
    if "z_masked" in out:
        shapes["z_masked"] = tuple(out["z_masked"].shape)
    metrics = {k: float(v) for k, v in metrics.items()}
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise FloatingPointError(f"Non-finite values in the smoke run: {bad}")
    return SmokeResult(
        config=config,
        shapes=shapes,
        observed_leads=np.asarray(batch["lead_observed"]).sum(1).tolist(),
        num_params={
            k: sum(int(x.size) for x in jax.tree.leaves(v)) for k, v in state.params.items()
        },
        metrics=metrics,
        compile_s=t1 - t0,
        step_s=t2 - t1,
    )


def format_report(r: SmokeResult) -> str:
    """The smoke command's printout."""
    c, s = r.config, r.shapes
    lines = [
        f"SCAR smoke  method={c.arg.method} variant={c.model.ecg.variant} "
        f"masker={c.model.masker.kind}/{c.model.masker.unit} "
        f"selector={c.model.selector.kind} text={c.model.txt.checkpoint}",
        f"  ecg batch         {s['ecg']}  observed leads/record {r.observed_leads}",
        f"  tokens            {s['tokens']} (lead x segment grid {s['grid']})",
        f"  ECG embedding     {s['z_ecg']}   text embedding {s['z_txt']}",
    ]
    if "z_masked" in s:
        lines.append(
            f"  masked embedding  {s['z_masked']}   removed "
            f"{r.metrics['mask/ratio']:.1%} of observed tokens"
        )
    lines.append("  parameters        " + "  ".join(f"{k}={v:,}" for k, v in r.num_params.items()))
    lines += [f"  {k:<22}{v:.4f}" for k, v in sorted(r.metrics.items())]
    lines.append(f"  compile+first step {r.compile_s:.1f}s   step {r.step_s:.2f}s")
    return "\n".join(lines)
