r"""scar_jax command line.

  python -m scar_jax.main smoke --config=configs/scar.py:runlocal

Commands:
  smoke   build the full SCAR model from the config, run one forward pass, the
          fused objective and its gradient on a generated batch, and print the
          shape of every view, the mask ratio, each loss term and the gradient
          norm of each player.

Leaves of the config are overridden with --config.<path>=<value>
(e.g. --config.model.masker.unit=lead); a misspelled path is an error.
"""

from __future__ import annotations

import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from scar_jax import losses
from scar_jax.models import masker as masker_lib
from scar_jax.models import scar
from scar_jax.models import text_encoder

COMMANDS = ("smoke",)

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file and arg, e.g. configs/scar.py:variant=mu,runlocal.",
    lock_config=True,
)
_SEED = flags.DEFINE_integer("seed", None, "Overrides config.seed.")

_REPORTS = (
    "sinus rhythm. normal ecg.",
    "atrial fibrillation with rapid ventricular response.",
    "sinus bradycardia. inferior st elevation, consider acute infarct.",
    "sinus rhythm. left bundle branch block.",
    "sinus tachycardia. anterior st elevation with reciprocal changes.",
    "first degree av block. otherwise normal ecg.",
)


def generated_batch(config, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of beat-like 12-lead signals with 0-4 absent leads and report text.

    Each beat is a sum of Gaussian P, QRS and T waves with per-lead gains; the
    signal is min-max normalised over the observed leads. (The real synthetic
    corpus with localised evidence is a TFDS builder of its own.)
    """
    rng = np.random.default_rng(seed)
    t = int(round(config.input.sample_rate * config.input.seconds))
    times = np.arange(t) / config.input.sample_rate
    ecg = np.zeros((batch_size, t, 12), np.float32)
    lead_observed = np.ones((batch_size, 12), bool)
    for i in range(batch_size):
        rr = 60.0 / rng.uniform(50, 110)
        gains = rng.normal(1.0, 0.4, size=(3, 12))  # P, QRS, T gain per lead
        for beat in np.arange(rng.uniform(0, rr), times[-1], rr):
            for (offset, width, amp), g in zip(
                [(-0.16, 0.025, 0.15), (0.0, 0.01, 1.0), (0.25, 0.04, 0.3)], gains
            ):
                ecg[i] += (amp * np.exp(-0.5 * ((times - beat - offset) / width) ** 2))[:, None] * g
        ecg[i] += rng.normal(0, 0.02, size=(t, 12))
        lead_observed[i, rng.choice(12, rng.integers(0, 5), replace=False)] = False
        obs = ecg[i][:, lead_observed[i]]
        ecg[i] = (ecg[i] - obs.min()) / (obs.max() - obs.min())
        ecg[i][:, ~lead_observed[i]] = 0.0
    reports = [_REPORTS[j] for j in rng.integers(0, len(_REPORTS), batch_size)]
    return {"ecg": ecg, "lead_observed": lead_observed, "report": reports}


def tokenize_reports(config, reports) -> dict[str, np.ndarray]:
    """Report token ids with the text checkpoint's tokenizer (random ids for random-tiny)."""
    folder = scar.text_checkpoint_folder(config.model.txt.checkpoint)
    n, max_len = len(reports), config.model.txt.max_len
    if folder is None:
        ids = (
            np.random.default_rng(0)
            .integers(1, text_encoder.BertConfig.tiny().vocab_size, (n, max_len))
            .astype(np.int32)
        )
        return {"input_ids": ids, "attention_mask": np.ones((n, max_len), np.int32)}
    return text_encoder.tokenize(text_encoder.load_tokenizer(folder), reports, max_len)


def smoke(config) -> dict[str, float]:
    """One forward + fused objective + gradient of the full model; prints a summary."""
    model = scar.build_model(config.model)
    data = generated_batch(config, config.batch_size, config.seed)
    batch = {
        "ecg": data["ecg"],
        "lead_observed": data["lead_observed"],
        **tokenize_reports(config, data["report"]),
    }
    batch = jax.tree.map(jnp.asarray, batch)
    key = jax.random.key(config.seed)
    rngs = {
        "params": key,
        "masker": jax.random.fold_in(key, 1),
        "dropout": jax.random.fold_in(key, 2),
    }
    t0 = time.perf_counter()
    params = jax.jit(model.init)(rngs, batch)
    params = scar.load_text_weights(params, config.model.txt.checkpoint, config.model.txt.pooling)
    tau = masker_lib.temperature(
        0,
        config.total_steps,
        config.model.masker.tau_start,
        config.model.masker.tau_end,
        config.model.masker.tau_schedule,
    )

    @jax.jit
    def step(params, batch, rngs):
        def objective(p):
            z, out = model.apply(p, batch, tau=tau, train=True, rngs=rngs)
            total, metrics = losses.scar_objective(z, out, config.loss_weights, config.model.loss)
            return total, (metrics, z, out)

        (_, (metrics, z, out)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        norms = {
            f"grad_norm/{k}": jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(v)))
            for k, v in grads["params"].items()
        }
        return metrics | norms, z, out

    metrics, z, out = jax.block_until_ready(step(params, batch, rngs))
    t1 = time.perf_counter()
    metrics, z, out = jax.block_until_ready(step(params, batch, rngs))
    t2 = time.perf_counter()
    observed = np.asarray(out["observed"])
    removed = observed & (np.asarray(out["mask"]) > 0)
    n_params = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params["params"].items()}
    print(
        f"SCAR smoke  method={config.arg.method} variant={config.model.ecg.variant} "
        f"masker={config.model.masker.kind}/{config.model.masker.unit} "
        f"selector={config.model.selector.kind} text={config.model.txt.checkpoint}"
    )
    print(
        f"  ecg batch         {tuple(batch['ecg'].shape)}  observed leads/record "
        f"{np.asarray(batch['lead_observed']).sum(1).tolist()}"
    )
    print(
        f"  tokens            {tuple(out['clean']['tokens'].shape)} (lead x segment grid "
        f"{tuple(observed.shape[1:])})"
    )
    print(f"  ECG embedding     {tuple(z.shape)}   text embedding {tuple(out['z_txt'].shape)}")
    if "z_masked" in out:
        print(
            f"  masked embedding  {tuple(out['z_masked'].shape)}   removed "
            f"{removed.sum() / observed.sum():.1%} of observed tokens"
        )
    print("  parameters        " + "  ".join(f"{k}={v:,}" for k, v in n_params.items()))
    for k, v in sorted(metrics.items()):
        print(f"  {k:<22}{float(v):.4f}")
    print(f"  compile+first step {t1 - t0:.1f}s   step {t2 - t1:.2f}s")
    bad = [k for k, v in metrics.items() if not np.isfinite(float(v))]
    if bad:
        raise FloatingPointError(f"Non-finite values in the smoke run: {bad}")
    return {k: float(v) for k, v in metrics.items()}


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"Usage: python -m scar_jax.main <{'|'.join(COMMANDS)}> "
            f"--config=configs/<file>.py[:arg]  (got {argv[1:]})"
        )
    try:
        config = _CONFIG.value
    except (AttributeError, KeyError, ValueError, TypeError) as e:
        raise app.UsageError(f"Bad --config: {_innermost_message(e)}") from None
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/scar.py:runlocal")
    if _SEED.value is not None:
        config.seed = _SEED.value
    logging.info("config:\n%s", config)
    if argv[1] == "smoke":
        smoke(config)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing; a bad config file, arg or override exits with its message."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
        sys.exit(f"FATAL flags error: {_innermost_message(e)}\nPass --helpfull for every flag.")


def _innermost_message(e: BaseException) -> str:
    """The message of the root cause of a chained or wrapped exception."""
    while True:
        if e.args and isinstance(e.args[0], BaseException):
            e = e.args[0]  # ml_collections wraps KeyErrors in AttributeErrors
        elif not isinstance(e, LookupError) and (e.__cause__ or e.__context__):
            e = e.__cause__ or e.__context__  # absl and ml_collections re-raise the config's error
        else:
            return str(e.args[0]) if e.args else str(e)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
