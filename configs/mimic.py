r"""SCAR pretraining on MIMIC-IV-ECG at paper scale (METHOD §3-4), the recipe launch/ runs.

  python -m scar_jax.main build --dataset=mimic_iv_ecg --data_dir=$TFDS_DATA_DIR \
      --manual_dir=/data/mimic-iv-ecg-1.0
  huggingface-cli download ncbi/MedCPT-Query-Encoder --local-dir MedCPT-Query-Encoder
  python -m scar_jax.main train --config=configs/mimic.py --workdir=gs://bucket/runs/mimic_scar \
      --config.input.data_dir=$TFDS_DATA_DIR

pretrains SCAR for 75,000 steps of 512 pairs (about 50 epochs of an estimated ~770k training
pairs: ~800k records less skipped reports and the 2 % validation subjects), a ViT-tiny ECG
tower on 500 Hz x 10 s records (600 tokens of 0.2 s per lead), the MedCPT-Query-Encoder text
tower with its embeddings and first 6 of 12 layers frozen (CLS pooling and 64 tokens, as
MedCPT), bfloat16 compute, a checkpoint, the validation loss on the validation split and
the zero-shot macro AUROC on PTB-XL's validation fold (`val/zeroshot_auroc`: the first 2,000
records of `ptbxl/500hz` built in the same data dir, its superdiagnostic labels; MIMIC-IV-ECG
has no labels) every 2,000 steps; the best checkpoint by that AUROC is kept besides the last
3. Not run here: no MIMIC-IV-ECG, no TPU, no network; the result is for `main eval` on the
benchmarks. Without PTB-XL built, `--config.train.zeroshot_every=0
--config.train.best_metric=val/loss --config.train.best_mode=min` ranks by the loss.
The text folder is relative to the working directory (every launcher runs in the repository
root; `launch/tpu_pod.sh setup` copies it to the workers with the checkout). Any local
Hugging Face BERT folder works (`text=/path`): safetensors, sharded or not, with or without
MLM/NSP heads; a folder with only pytorch_model.bin needs torch (`.[torch]`) or a one-time
conversion, whose command the loader's error prints (scar_jax/models/hf_checkpoint.py).

`arg` takes the keys of configs/scar.py (method=scar|merl|random, variant, masker, unit,
selector, supervision, loss, text, minmax, runlocal) plus:

  frozen_layers  text tower: embeddings and this many bottom BERT layers frozen; the rest
                 train with the ECG tower (0: all train; >= depth: frozen, features cached) [6]

With the top layers trainable the reports are tokenized per batch (no feature cache), so
the selector's supervision targets the report embedding (`model.selector.target=report`);
the finding-level targets need the frozen, cached tower. `runlocal` is configs/scar.py's
CPU smoke run (the tiny synthetic corpus, `mu` encoder) with this recipe's text-tower split:
pair it with `text=random-tiny` or a small local BERT.
"""

from __future__ import annotations

import pathlib

import ml_collections

from scar_jax import config_files

scar = config_files.load_module(pathlib.Path(__file__).with_name("scar.py"))

TEXT = "MedCPT-Query-Encoder"  # local HF folder (METHOD §4: the paper-scale text tower)
_MIMIC_KEYS = {"frozen_layers": 6}


def text_freeze(frozen_layers: int) -> tuple[str, ...]:
    """model.txt.freeze regexes: the embeddings and BERT layers 0..frozen_layers-1."""
    if frozen_layers < 0:
        raise ValueError(f"Config arg frozen_layers={frozen_layers}: expected >= 0.")
    if frozen_layers == 0:
        return ()
    layers = "|".join(str(i) for i in range(frozen_layers))
    return ("^txt/bert/embeddings/", f"^txt/bert/encoder/layer_({layers})/")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The MIMIC-IV-ECG pretraining config for `arg` (see the module docstring)."""
    items = [kv for kv in (arg or "").split(",") if kv.strip()]
    own = [kv for kv in items if kv.partition("=")[0].strip() in _MIMIC_KEYS]
    rest = [kv for kv in items if kv.partition("=")[0].strip() not in _MIMIC_KEYS]
    mimic = config_files.parse_arg(",".join(own), **_MIMIC_KEYS)
    try:
        config = scar.get_config(",".join(rest))
    except ValueError as e:
        raise ValueError(f"{e} configs/mimic.py also takes: {', '.join(_MIMIC_KEYS)}.") from None
    config.arg = dict(config.arg, **mimic.to_dict())

    txt = config.model.txt
    if not any(kv.partition("=")[0].strip() == "text" for kv in rest):
        txt.checkpoint = config.arg["text"] = TEXT
    txt.freeze = text_freeze(mimic.frozen_layers)
    txt.pooling = "cls"  # MedCPT's query embedding is the last layer's [CLS] state
    # trainable top layers: no cached text features, so no finding-level targets
    config.model.selector.target = "report"
    config.loss_weights.find = 0.0
    if config.arg["runlocal"]:  # configs/scar.py's runlocal already shrank everything else
        return config

    config_files.set_leaves(
        config,
        {
            "input.dataset": "mimic_iv_ecg",  # scar_jax/data/builders/mimic_iv_ecg, default
            "input.sample_rate": 500,
            "input.seconds": 10.0,
            "model.ecg.patch_size": 100,  # 0.2 s tokens: 12 leads x 50 segments
            "model.ecg.max_segments": 50,
            # bfloat16 compute on the accelerator (parameters, optimizer state, logits,
            # softmax and losses stay float32: configs/scar.py); scar.py's `auto` would pick
            # it there too, the recipe says so explicitly
            "model.dtype": "bfloat16",
            # model.txt.max_len stays 64 report tokens: MedCPT-Query-Encoder's own query length
            "batch_size": 512,  # global; the contrastive loss spans all of it
            "total_steps": 75_000,  # ~50 epochs of ~770k pairs at 512
            "log_every": 100,
            "optim.warmup_steps": 2_000,
            "model.masker.warmup_steps": 2_000,  # random masks (same budget) first
            "train.checkpoint_every": 2_000,
            "train.eval_every": 2_000,  # each validation pass is also a checkpoint
            # the validation split is 2 % of the subjects (~16k records): 32 x 512 reads it all
            "train.eval_batches": 32,
            "train.keep": 3,
            "train.keep_best": 1,
            # zero-shot on a labelled held-out set ranks the checkpoints (MIMIC-IV-ECG has no
            # labels): PTB-XL's validation fold (~2.2k records, superdiagnostic), read once at
            # start-up (2,000 x 5000 x 12 float32, ~0.5 GB per process)
            "train.zeroshot_every": 2_000,
            "train.zeroshot_dataset": "ptbxl/500hz",
            "train.zeroshot_split": "validation",
            "train.zeroshot_examples": 2_000,
            "train.best_metric": "val/zeroshot_auroc",
            "train.best_mode": "max",
        },
    )
    return config


def sweep(add) -> None:
    """SCAR and its two baselines at MIMIC scale, and the larger ECG tower.

      python launch/sweep.py configs/mimic.py --workdir=gs://bucket/runs/mimic \
          --launcher="launch/tpu_pod.sh train"

    prints one training command per entry (see configs/scar.py: sweep for `add`).
    """
    for method in scar.METHODS:
        add(arg=f"method={method}", name=method)
    add(arg="variant=small", name="scar_small")
