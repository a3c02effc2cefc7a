r"""The demo: SCAR and its two baselines pretrained on the built-in synthetic corpus.

  python -m scar_jax.main demo --workdir=/tmp/scar_demo

builds `synthetic_ecg/100hz` (10 s at 100 Hz, 8000/1000/1000 records), pretrains SCAR,
the MERL-style baseline and random-mask training with the frozen all-MiniLM-L6-v2 text
tower (report embeddings cached), plus a MERL-style transfer reference (seed 1000, 100
steps), evaluates the missingness grid on the test split and writes `report/` (results.md,
results.json, scores.npz, PNGs). The README's first command took 11.5 minutes on a quiet
2-core machine from a fresh clone, install included (pip 0.6 min, build 0.3, training 7.1,
evaluation 3.5; measured 2026-12-06 at commit c0a883e).

`arg` takes the keys of configs/scar.py (method=scar|merl|random, ...) plus:

  seed              training seed                                     [0]
  reference_steps   steps of the transfer reference (0: none, the transfer rows are
                    omitted)                                          [100]
  secondary         strength of the corpus's secondary evidence: 1 (synthetic_ecg/100hz),
                    0.5 (100hz_sec50) or 0 (100hz_sec0); see scar_jax.data.synthetic
                    SECONDARY_KNOB_CLASSES                            [1]
  runlocal          the same pipeline at test size (tiny corpus, a few steps; CI)

The secondary-evidence curve (docs/RESULTS.md): one multi-seed demo per setting, then
scar_jax.evaluation.curve:

  python -m scar_jax.main demo --workdir=sec0 --demo_seeds=0,1,2 --demo_methods=scar,random \
      --demo_arg=secondary=0,reference_steps=0
  python -m scar_jax.evaluation.curve --point 1=demo/report --point 0.5=sec50/report \
      --point 0=sec0/report --update_docs

The transfer reference ranks the transfer-adversarial masks of every compared model: a
model outside the comparison (METHOD §8), REFERENCE's method at its own seed, trained once
in the same workdir and shared by every seed's evaluation. Its steps are capped at
reference_steps (at most the demo's own; the learning-rate schedule follows): a third of
the demo's 300 by default, to keep the demo's time (a weaker, but common, attacker).

The demo command builds one config per method with `get_config(f"method={m},...")`.
"""

from __future__ import annotations

import pathlib

import ml_collections

from scar_jax import config_files

scar = config_files.load_module(pathlib.Path(__file__).with_name("scar.py"))

METHODS = ("scar", "merl", "random")  # what the demo trains, in this order
REFERENCE = ("merl", 1000)  # method and seed of the transfer reference (outside the comparison)
_DEMO_KEYS = {"seed": 0, "reference_steps": 100, "secondary": 1.0}
# secondary evidence strength -> the corpus config that has it
SECONDARY_DATASETS = {1.0: "synthetic_ecg/100hz", 0.5: "synthetic_ecg/100hz_sec50",
                      0.0: "synthetic_ecg/100hz_sec0"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The demo config of one method for `arg` (see the module docstring)."""
    items = [kv for kv in (arg or "").split(",") if kv]
    demo_items = [kv for kv in items if kv.partition("=")[0] in _DEMO_KEYS]
    scar_items = [kv for kv in items if kv.partition("=")[0] not in _DEMO_KEYS]
    demo = config_files.parse_arg(",".join(demo_items), **_DEMO_KEYS)
    runlocal = "runlocal" in scar_items
    config = scar.get_config(",".join(["variant=mu", "text=minilm"] + scar_items))
    config.arg = dict(config.arg, **demo.to_dict())
    config.seed = demo.seed
    # A 1 s patch holds a beat at any phase: the linear stem (Dense(LayerNorm(patch))) learns
    # little morphology in 300 steps (supervised probe on its features 0.85 macro AUROC, 0.78
    # with the primary leads removed, vs 1.0 / 0.96 for hand-made beat features); the conv
    # stem reaches 0.93 / 0.87 and val loss 2.32 vs 2.84. runlocal (CI) uses it too.
    config.model.ecg.stem = "conv"
    config.model.dtype = "float32"  # its recorded results are float32, on any machine
    if runlocal:  # configs/scar.py's runlocal already shrank it to the tiny corpus
        config.total_steps = 6
        return config
    if float(demo.secondary) not in SECONDARY_DATASETS:
        raise ValueError(f"demo: secondary={demo.secondary} has no corpus; one of "
                         f"{sorted(SECONDARY_DATASETS)}.")
    config_files.set_leaves(
        config,
        {
            "input.dataset": SECONDARY_DATASETS[float(demo.secondary)],
            "input.sample_rate": 100,
            "input.seconds": 10.0,
            "model.ecg.patch_size": 100,  # 1 s tokens: 12 leads x 10 segments = 120 tokens
            "model.ecg.max_segments": 10,
            "model.embed_dim": 64,
            "model.masker.width": 64,
            "model.masker.num_heads": 2,
            "model.selector.hidden": 64,
            "model.txt.max_len": 40,  # the longest synthetic report is 40 MiniLM tokens
            "model.masker.warmup_steps": 60,
            "batch_size": 64,
            "total_steps": 300,
            "log_every": 50,
            "optim.lr": 1e-3,
            # 240 adversarial steps: at 1e-4 the masker stays near its random init (targeting
            # 0.8-1.0x chance); at 1e-3 it removes AMI/IMI's primary leads at ~2x chance.
            "optim.masker_lr": 1e-3,
            "optim.warmup_steps": 30,
            "train.checkpoint_every": 0,
            "train.eval_every": 100,
            "train.eval_batches": 4,
            "eval.batch_size": 64,
            "eval.bootstrap": 200,
            "eval.max_examples": 0,
            # the claims rest on lead and segment removals; token-level adversarial rows
            # cost ~0.5 min of the 15-minute budget
            "eval.adv_units": ("lead", "segment"),
            # class-level ranking and the mask probes' fit on 500 of the 1000 validation
            # records (~20 s of the budget)
            "eval.class_rank_examples": 500,
        },
    )
    return config
