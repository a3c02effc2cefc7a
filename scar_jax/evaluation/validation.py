"""Zero-shot macro AUROC while training: `ZeroShotValidator`, built once at start-up.

    validator = ZeroShotValidator.from_config(config, model, mesh)   # reads the records once
    validator(state, step)   # {'val/zeroshot_auroc': 0.71, 'val/zeroshot_examples': 1000.0}

The held-out set is config.train.zeroshot_dataset's zeroshot_split ('' = the training
dataset, config.input.dataset, and its validation split, config.input.eval_split), with
zeroshot_label_set's labels (PTB-XL's four sets; '' = the dataset's own), its first
zeroshot_examples records (0 = all), read through `scar_jax.evaluation.data.load_split` (the
records `main eval` scores). A dataset or split without labels, one unknown or not built,
or one whose records disagree with config.input fails here, at start-up, not mid-run.

Each call scores the current parameters as `main eval`'s clean zero-shot row does: the class
embeddings of `scar_jax.models.scar.class_embeddings` (each class's phrasings from
`scar_jax.data.labels.class_prompts`, averaged, centred as config.eval.center_prompts says),
cosine scores (`zeroshot.scores`) and `zeroshot.macro_auroc`. The records go through the ECG
tower in global batches of config.batch_size, batch-sharded on the training mesh: every JAX
process embeds only its devices' rows; the embeddings are gathered, so the AUROC is the same
number on every process.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from scar_jax import sharding as sharding_lib
from scar_jax.evaluation import zeroshot
from scar_jax.evaluation.data import EvalData, load_split, pad
from scar_jax.models import scar as scar_model

METRIC = "val/zeroshot_auroc"  # what config.train.best_metric names to rank by it (mode max)
EXAMPLES = "val/zeroshot_examples"


def held_out_set(config: ml_collections.ConfigDict) -> tuple[str, str, str]:
    """(dataset, split, label set) the validator scores, the config's defaults filled in."""
    t = config.train
    return (t.zeroshot_dataset or config.input.dataset,
            t.zeroshot_split or config.input.eval_split, t.zeroshot_label_set)


class ZeroShotValidator:
    """The zero-shot evaluator of the training loop (see the module docstring)."""

    def __init__(self, model: scar_model.Model, data: EvalData, mesh: jax.sharding.Mesh, *,
                 chunk: int, text_checkpoint: str, max_len: int, center: bool):
        self.model, self.data, self.center = model, data, center
        self.text_checkpoint, self.max_len = text_checkpoint, int(max_len)
        divisor = sharding_lib.batch_divisor(mesh)
        self.chunk = -(-max(int(chunk), 1) // divisor) * divisor  # a multiple of the devices
        self.batch_sharding = sharding_lib.batch_sharding(mesh)
        self.embed_ecg = jax.jit(
            lambda p, ecg, lo, to: model.apply({"params": p}, ecg, lo, to,
                                               method=model.embed_ecg)[0],
            out_shardings=self.batch_sharding)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, model: scar_model.Model,
                    mesh: jax.sharding.Mesh) -> "ZeroShotValidator":
        """Reads the held-out set (every process the same records) and checks it has labels;
        a bad dataset / split / label set is one ValueError naming the config keys."""
        dataset, split, label_set = held_out_set(config)
        where = (f"config.train.zeroshot_dataset / zeroshot_split / zeroshot_label_set = "
                 f"{dataset!r} / {split!r} / {label_set!r}")
        try:
            data = load_split(config, dataset, split, label_set=label_set or None,
                              max_examples=int(config.train.zeroshot_examples), evidence=False)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise ValueError(f"Zero-shot validation ({where}): {e}") from e
        if not data.labels.shape[1]:
            raise ValueError(
                f"Zero-shot validation ({where}): the split has no labels (no classes); set "
                "config.train.zeroshot_dataset to a labelled dataset (e.g. ptbxl/500hz) or "
                "config.train.zeroshot_every=0.")
        ok = zeroshot.valid_classes(data.labels)
        if not ok.any():
            raise ValueError(
                f"Zero-shot validation ({where}): none of the {len(ok)} classes has both a "
                f"positive and a negative among the {len(data)} records read; read more "
                "(config.train.zeroshot_examples, 0 = all) or choose another split.")
        logging.info("zero-shot validation on %s %s%s: %d records, %d classes (%d with both "
                     "labels)", dataset, split, f" ({label_set})" if label_set else "",
                     len(data), len(ok), int(ok.sum()))
        return cls(model, data, mesh, chunk=config.batch_size,
                   text_checkpoint=config.model.txt.checkpoint,
                   max_len=config.model.txt.max_len,
                   center=bool(config.eval.get("center_prompts", False)))

    def ecg_embeddings(self, params: Any) -> np.ndarray:
        """Clean ECG embeddings [N, E] of the held-out records (gathered on every process)."""
        d, n, out = self.data, len(self.data), []
        for c0 in range(0, n, self.chunk):
            sl = slice(c0, min(c0 + self.chunk, n))
            host = [pad(x[sl], self.chunk) for x in (d.ecg, d.lead_observed, d.time_observed)]
            z = self.embed_ecg(params, *sharding_lib.put_global(host, [self.batch_sharding] * 3))
            out.append(sharding_lib.to_host(z)[: sl.stop - sl.start])
        return np.concatenate(out)

    def __call__(self, state: Any, step: int) -> dict[str, float]:
        """{METRIC: macro AUROC of the state's parameters, EXAMPLES: records scored}."""
        params = state.params
        z_cls = scar_model.class_embeddings(
            self.model, {"params": params}, self.data.prompts,
            text_checkpoint=self.text_checkpoint, max_len=self.max_len, center=self.center)
        scores = zeroshot.scores(self.ecg_embeddings(params), z_cls)
        res = zeroshot.macro_auroc(self.data.labels, scores, self.data.class_names)
        logging.info("zero-shot validation at step %d: macro AUROC %.4f; %s", step,
                     res["auroc"], ", ".join(f"{k} {v:.3f}" for k, v in res["per_class"].items()))
        return {METRIC: res["auroc"], EXAMPLES: float(len(self.data))}
