"""The evaluation grid: every model on the same masks, zero-shot, CMRS, probes, report.

`evaluate(models, data, eval_config, reference=...)` works on in-memory arrays
(`scar_jax.evaluation.data.EvalData`); `run_eval(config, checkpoints, dataset, split,
out_dir)` loads a built dataset's splits (`scar_jax.evaluation.data.load_split`) and
checkpoints (`scar_jax.checkpointing.load_checkpoint`), then writes the report
(`scar_jax.evaluation.report`) and the per-example scores (`compare.save_scores`).

Per batch, every model-independent mask is drawn once and shared by all models;
transfer-adversarial masks are ranked once by the reference model; white-box
masks are ranked by each evaluated model. All of a model's conditions then run
through one compiled encoder call per chunk of conditions (folded into its batch).
The rooms around it: the oracle regions (`regions`), the trained masker's removals
(`adversary`), targeting (`targeting`) and the grid's cost (`cost`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from scar_jax import checkpointing
from scar_jax import metrics as metrics_lib
from scar_jax.evaluation import adversary
from scar_jax.evaluation import classwise as classwise_lib
from scar_jax.evaluation import cmrs as cmrs_lib
from scar_jax.evaluation import compare
from scar_jax.evaluation import cost as cost_lib
from scar_jax.evaluation import diagnostics
from scar_jax.evaluation import linear_probe
from scar_jax.evaluation import missingness as miss
from scar_jax.evaluation import regions as regions_lib
from scar_jax.evaluation import targeting
from scar_jax.evaluation import zeroshot
from scar_jax.evaluation.data import EvalData, head, load_split, observed_tokens, pad
from scar_jax.leads import LEAD_NAMES, NUM_LEADS
from scar_jax.models import scar as scar_model


@dataclasses.dataclass
class ModelSpec:
    """A model to evaluate: flax Model, its variables, and its text checkpoint name + max length."""

    name: str
    model: scar_model.Model
    variables: Any
    text_checkpoint: str
    max_len: int = 64

    @classmethod
    def from_config(cls, name: str, config: ml_collections.ConfigDict, variables: Any):
        """Model built from a full config (its `model` block) with the given variables."""
        return cls(
            name,
            scar_model.build_model(config.model),
            variables,
            config.model.txt.checkpoint,
            int(config.model.txt.max_len),
        )

    def class_embeddings(self, phrasings: Sequence[Sequence[str]], center: bool) -> np.ndarray:
        """Zero-shot class embeddings [K, E] of this model from each class's phrasings
        (scar_jax.data.labels.class_prompts), averaged and centred as `center` says: the same
        computation as predict's (scar_jax.models.scar.class_embeddings)."""
        return scar_model.class_embeddings(
            self.model, self.variables, phrasings, text_checkpoint=self.text_checkpoint,
            max_len=self.max_len, center=center)


def evaluate(
    models: Sequence[ModelSpec],
    data: EvalData,
    cfg: ml_collections.ConfigDict,
    *,
    reference: ModelSpec | None = None,
    probe_data: tuple[EvalData, EvalData] | None = None,
    rank_data: EvalData | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate every model on the same grid -> (results (JSON-able), arrays for the plots).

    cfg: config.eval. reference: ranks the transfer-adversarial masks, one model outside the
    comparison (never one of `models`: it would attack itself white-box and the others
    black-box; default none, transfer conditions skipped). probe_data: (train, validation)
    splits for the linear probe, fitted on clean features and scored on every test
    condition. rank_data: the validation split; with it, the label-independent
    `classwise/...` rows (cfg.class_rhos, cfg.class_units; scar_jax.evaluation.classwise)
    and the mask-only label probe of every masker (cfg.mask_probe).
    """
    if not models:
        raise ValueError("evaluate() needs at least one model.")
    _check_reference(models, reference)
    patch = models[0].model.ecg.patch_size
    n, t = len(data), data.ecg.shape[1]
    s = t // patch
    k_cls = data.labels.shape[1]
    if len(data.prompts) != k_cls or len(data.class_names) != k_cls:
        raise ValueError(
            f"{k_cls} label columns but {len(data.class_names)} class names and "
            f"{len(data.prompts)} prompt sets; every class needs its phrasings."
        )
    with_oracle = bool(cfg.oracle) and data.class_primary is not None
    conds = miss.grid_from_config(cfg, with_transfer=reference is not None, with_oracle=with_oracle)
    static = [c for c in conds if c.family not in ("adversarial", "oracle")]
    regions = {"primary": data.class_primary, "secondary": data.class_secondary}
    bs = int(cfg.batch_size)

    embedders = {m.name: miss.GridEmbedder(m.model, m.variables, cfg.chunk,
                                             cfg.grid_buckets) for m in models}
    center = bool(cfg.get("center_prompts", False))
    z_cls = {m.name: m.class_embeddings(data.prompts, center) for m in models}
    ref_emb = ref_zcls = None
    if reference is not None:
        ref_emb = miss.GridEmbedder(reference.model, reference.variables, cfg.chunk,
                                     cfg.grid_buckets)
        ref_zcls = reference.class_embeddings(data.prompts, center)

    masker_fns = {
        m.name: adversary.masker_fn(m.model)
        for m in models if m.model.masker.kind == "adversarial"
    }
    class_rhos = tuple(float(r) for r in cfg.get("class_rhos", ())) if rank_data else ()
    class_units = tuple(cfg.get("class_units", ("lead",)))
    probe_masks = rank_data is not None and bool(cfg.get("mask_probe", True))
    cw_conds = [miss.classwise(mode, unit, rho)
                for mode in ("whitebox",) + (("transfer",) if reference is not None else ())
                for unit in class_units for rho in class_rhos]
    conds = conds + cw_conds
    want_z = {c.name for c in conds if c.family in ("clean", "random", "adversarial")}
    sc = {m.name: {c.name: np.zeros((n, k_cls), np.float32) for c in conds} for m in models}
    zs = {m.name: {c: None for c in want_z} for m in models}
    feats = {m.name: {} for m in models} if probe_data is not None else None
    target_stats = {m.name: {} for m in models}  # condition -> list of [b, 4] count rows
    class_stats = {m.name: {} for m in models}  # condition -> list of [b, K, 4] count rows
    lead_stats = {m.name: {} for m in models}  # masker removal -> list of [b, 2, 12] rows
    traces = {"examples": [], "keeps": {}}
    n_trace = int(cfg.trace_examples)
    timing = {"rank_s": 0.0, "grid_s": 0.0, "conditions": 0}
    val_ranks, class_regions, rd = {}, {}, None
    if rank_data is not None and (cw_conds or probe_masks):
        t0 = time.perf_counter()
        rd = head(rank_data, int(cfg.get("class_rank_examples", 0)))
        val_ranks = _rank_validation(models, embedders, z_cls, masker_fns, reference, ref_emb,
                                     ref_zcls, rd, cfg, patch, class_units, probe_masks)
        for c in cw_conds:
            for who in (["reference"] if c.mode == "transfer" else [m.name for m in models]):
                units = classwise_lib.top_units(val_ranks[who].importance[c.unit], c.rho)
                class_regions[who, c.name] = classwise_lib.units_to_region(
                    units, c.unit, NUM_LEADS, s)
        timing["class_rank_s"] = time.perf_counter() - t0
    test_masks = {m.name: {} for m in models}  # the mask-only probe's test masks [b, 12 * S]
    shared_masks: dict[str, list[np.ndarray]] = {}  # model-independent ones (random, transfer)
    unit_names = sorted({c.unit for c in conds if c.family == "adversarial"})
    num_batches = math.ceil(n / bs)
    progress = metrics_lib.Throughput(num_batches)
    progress.mark(0, 0)

    for start in range(0, n, bs):
        sl = slice(start, min(start + bs, n))
        b = sl.stop - sl.start
        observed = pad(observed_tokens(data, sl, patch), bs)
        ecg = pad(np.nan_to_num(data.ecg[sl]).astype(np.float32), bs)
        labels = pad(np.asarray(data.labels[sl], bool), bs)
        index = np.arange(start, start + bs)
        keeps = {c.name: miss.condition_keep(c, observed, index, cfg.seed) for c in static}
        primary = class_primary = None
        if data.evidence_primary is not None:
            primary = pad(
                miss.evidence_to_tokens(data.evidence_primary[sl], patch, data.sample_rate, s,
                                        data.bin_seconds), bs)
            class_primary = targeting.class_region_batch(regions["primary"], data, patch, s,
                                                         sl, bs)
        t0 = time.perf_counter()
        if ref_emb is not None:
            ref_tok = ref_emb.tokens(ecg, observed)
            for unit in unit_names:
                imp = ref_emb.importance(ref_tok, observed, unit, ref_zcls, labels)
                for c in conds:
                    if c.family == "adversarial" and c.mode == "transfer" and c.unit == unit:
                        keeps[c.name] = np.asarray(miss.topk_units_keep(
                            jnp.asarray(observed), jnp.asarray(imp), unit, c.rho))
        timing["rank_s"] += time.perf_counter() - t0
        oracle_keeps = {}
        for c in conds:
            if c.family == "oracle":
                reg = regions_lib.region_tokens(regions[c.region], data, patch, s, sl)
                if reg is None:
                    continue
                if reg.shape[1] != 1:
                    reg = np.stack([pad(r, bs) for r in reg])
                oracle_keeps[c.name] = [miss.region_keep(observed, reg[j]) for j in range(k_cls)]
        for c in cw_conds:  # class-level regions of the reference: the same for every model
            if c.mode == "transfer":
                reg = class_regions["reference", c.name]
                oracle_keeps[c.name] = [miss.region_keep(observed, reg[j]) for j in range(k_cls)]
        if probe_masks:
            for c in conds:
                if (c.family == "random" or c.mode == "transfer") and c.unit in class_units \
                        and c.name in keeps:
                    shared_masks.setdefault(c.name, []).append(
                        _flat_removed(observed & ~keeps[c.name], b))

        for m in models:
            emb = embedders[m.name]
            t0 = time.perf_counter()
            tok = emb.tokens(ecg, observed)
            mk = dict(keeps)
            for unit in unit_names:
                if not any(c.mode == "whitebox" and c.unit == unit for c in conds):
                    continue
                imp = emb.importance(tok, observed, unit, z_cls[m.name], labels)
                for c in conds:
                    if c.family == "adversarial" and c.mode == "whitebox" and c.unit == unit:
                        mk[c.name] = np.asarray(miss.topk_units_keep(
                            jnp.asarray(observed), jnp.asarray(imp), unit, c.rho))
            timing["rank_s"] += time.perf_counter() - t0
            class_keeps = dict(oracle_keeps)
            for c in cw_conds:
                if c.mode == "whitebox":
                    reg = class_regions[m.name, c.name]
                    class_keeps[c.name] = [miss.region_keep(observed, reg[j])
                                           for j in range(k_cls)]
            if probe_masks:
                for c in conds:
                    if c.family == "adversarial" and c.mode == "whitebox" and c.unit in class_units:
                        test_masks[m.name].setdefault(c.name, []).append(
                            _flat_removed(observed & ~mk[c.name], b))
            names, stack = [], []
            for c in conds:
                if c.family in ("oracle", "classwise"):
                    if c.name in class_keeps:
                        names += [(c.name, j) for j in range(k_cls)]
                        stack += class_keeps[c.name]
                else:
                    names.append((c.name, None))
                    stack.append(mk[c.name])
            t0 = time.perf_counter()
            z, pooled = emb.embed(tok, miss.stack_keeps(stack))
            timing["grid_s"] += time.perf_counter() - t0
            timing["conditions"] = len(stack)
            scores = zeroshot.scores(z, z_cls[m.name])  # [C', bs, K]
            for i, (name, j) in enumerate(names):
                if j is None:
                    sc[m.name][name][sl] = scores[i, :b]
                    if name in want_z:
                        zs[m.name][name] = _append(zs[m.name][name], z[i, :b])
                    if feats is not None:
                        feats[m.name][name] = _append(feats[m.name].get(name), pooled[i, :b])
                else:
                    sc[m.name][name][sl, j] = scores[i, :b, j]
            masker_removed = {}  # the trained masker's removals: targeting, leads, the probe
            if data.report_tokens is not None and m.name in masker_fns:
                run_masker = adversary.masker_on(masker_fns[m.name], m.variables, data, cfg, bs,
                                                int(cfg.seed))
                for rho in cfg.rhos:
                    for prefix, noise in (("masker", 1.0), ("masker_mode", 0.0)):
                        masker_removed[f"{prefix}/rho{rho:g}"] = run_masker(ecg, observed, sl,
                                                                            rho, noise)
            for name, removed in masker_removed.items():
                lead_stats[m.name].setdefault(name, []).append(
                    targeting.lead_counts(removed, observed)[:b])
            if probe_masks:
                for name, removed in masker_removed.items():
                    test_masks[m.name].setdefault(name, []).append(_flat_removed(removed, b))
            if primary is not None:
                for c in conds:
                    if c.family in ("adversarial", "random"):
                        removed = observed & ~mk[c.name]
                        target_stats[m.name].setdefault(c.name, []).append(
                            targeting.target_counts(removed, primary, observed)[:b])
                        if class_primary is not None and c.family == "adversarial":
                            class_stats[m.name].setdefault(c.name, []).append(
                                targeting.class_target_counts(removed, class_primary, observed,
                                                              labels)[:b])
                for name, removed in masker_removed.items():
                    target_stats[m.name].setdefault(name, []).append(
                        targeting.target_counts(removed, primary, observed)[:b])
                    if class_primary is not None:
                        class_stats[m.name].setdefault(name, []).append(
                            targeting.class_target_counts(removed, class_primary, observed,
                                                          labels)[:b])
            if start == 0 and n_trace:
                for name, _ in names:
                    if name in mk and (name.startswith("adversarial") or name == "clean"):
                        key = name if "transfer" in name or name == "clean" else f"{m.name}:{name}"
                        traces["keeps"][key] = mk[name][:n_trace]
        batch_no = start // bs + 1
        progress.mark(batch_no, sl.stop)
        logging.info(
            "evaluation grid (%d models x %d conditions): batch %s",
            len(models), len(conds), metrics_lib.progress_line(
                batch_no, num_batches, {}, progress, keys=()).removeprefix("step "),
        )
        if start == 0:  # the first batch compiled: the ETA comes from the batches after it
            progress.reset()
            progress.mark(1, sl.stop)
        if start == 0 and n_trace:
            traces["examples"] = ecg[: min(n_trace, b)]
            traces["observed"] = observed[: min(n_trace, b)]
            if primary is not None:
                traces["primary"] = primary[: min(n_trace, b)]

    results = _aggregate(models, data, cfg, conds, sc, zs, target_stats, class_stats)
    lead_local = classwise_lib.lead_local_classes(data.class_primary, data.class_names,
                                                  data.class_secondary)
    targeting.add_lead_local(results, lead_local)
    for m in models:  # where the masker aims, lead by lead (no evidence regions needed)
        if lead_stats[m.name]:
            results["models"][m.name]["masker_leads"] = {
                name: targeting.lead_profile(np.concatenate(rows), data.labels, data.class_names)
                for name, rows in lead_stats[m.name].items()}
    for m in models:  # the encoder's mask shortcut, under the oracle's class-level removal
        if lead_local and "oracle/primary" in sc[m.name]:
            results["models"][m.name]["oracle_shift"] = classwise_lib.removal_score_shift(
                sc[m.name]["clean"], sc[m.name]["oracle/primary"], data.labels,
                data.class_names, lead_local)
    if rd is not None:
        results["classwise"] = _classwise_summary(cw_conds, class_regions, val_ranks, rd, s)
    if probe_masks:
        t0 = time.perf_counter()
        c_probe = float(cfg.get("mask_probe_c", 1.0))
        cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
        for m in models:
            val_removed, test_removed = _with_swapped(
                m, val_ranks[m.name].removed, cat(test_masks[m.name]), int(cfg.seed))
            results["models"][m.name]["mask_probe"] = classwise_lib.mask_probes(
                val_removed, test_removed, rd.labels, data.labels, data.class_names, c_probe)
        shared_val = {k: v for k, v in val_ranks[models[0].name].removed.items()
                      if k.startswith("random/")}
        if "reference" in val_ranks:
            shared_val.update(val_ranks["reference"].removed)
        results["mask_probe"] = classwise_lib.mask_probes(
            shared_val, cat(shared_masks), rd.labels, data.labels, data.class_names, c_probe)
        timing["mask_probe_s"] = time.perf_counter() - t0
    results["timing"] = cost_lib.measure_cost(embedders[models[0].name], data, cfg, patch,
                                              static, timing)
    results["timing"].update({k: timing[k] for k in ("class_rank_s", "mask_probe_s")
                              if k in timing})
    for m in models:
        clean = ({} if probe_data is None else {
            split: _clean_embeddings(embedders[m.name], d, cfg, patch)
            for split, d in zip(("train", "val"), probe_data)})
        if probe_data is not None:
            results["models"][m.name]["linear_probe"] = _probe(
                clean["train"][1], clean["val"][1], probe_data, feats[m.name], data, cfg)
        results["models"][m.name]["zeroshot_diagnostics"] = _zeroshot_diagnostics(
            m, data, cfg, z_cls[m.name], zs[m.name]["clean"],
            None if probe_data is None else (clean["val"][0], probe_data[1].labels))
    if probe_data is not None and cfg.get("probe_random_init", True):
        results["random_init_probe"] = _random_init_probe(models[0], probe_data, data, cfg, patch)
    plots = {"scores": sc, "traces": traces, "conditions": conds}
    return results, plots


def _append(acc: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """Concatenate rows."""
    return x.copy() if acc is None else np.concatenate([acc, x])


def _check_reference(models: Sequence[ModelSpec], reference: ModelSpec | None) -> None:
    """The transfer reference must be outside the comparison (METHOD §8)."""
    if reference is None:
        return
    for m in models:
        if reference is m or reference.name == m.name or reference.variables is m.variables:
            raise ValueError(
                f"The transfer reference {reference.name!r} is the compared model {m.name!r}: "
                "it would attack itself white-box and the others black-box. Pass a reference "
                "outside the comparison (config.eval.reference / reference=), or none (the "
                "transfer rows are then omitted).")


def _flat_removed(removed: np.ndarray, b: int) -> np.ndarray:
    """Removed tokens [bs, 12, S] -> the first b rows flattened [b, 12 * S] bool."""
    return np.asarray(removed, bool)[:b].reshape(b, -1)


def _with_swapped(m: ModelSpec, val: dict[str, np.ndarray], test: dict[str, np.ndarray],
                  seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The probe's masks of model m, plus `masker_swapped/rho<rho>` where its masker gives a
    share of the training examples another example's mask (masker.swap_share > 0): the
    sampled masks `masker/rho<rho>` of each split with that share swapped, as in training."""
    share = float(getattr(m.model.masker, "swap_share", 0.0))
    if share <= 0.0:
        return val, test
    val, test = dict(val), dict(test)
    for name in [k for k in val if k.startswith("masker/") and k in test]:
        swapped = "masker_swapped/" + name.removeprefix("masker/")
        val[swapped] = classwise_lib.swapped_masks(val[name], share, seed + 1)
        test[swapped] = classwise_lib.swapped_masks(test[name], share, seed)
    return val, test


def _rank_validation(models, embedders, z_cls, masker_fns, reference, ref_emb, ref_zcls,
                     rd: EvalData, cfg, patch: int, class_units, probe_masks: bool):
    """classwise.rank_on_split of every model (and of the reference, as 'reference') on the
    validation split rd: class importance, and the masks of the mask-only probe."""
    bs = int(cfg.batch_size)
    obs_fn = lambda sl: observed_tokens(rd, sl, patch)  # noqa: E731
    rhos = tuple(cfg.rhos) if probe_masks else ()
    out = {}
    for i, m in enumerate(models):
        masker = None
        if probe_masks and m.name in masker_fns and rd.report_tokens is not None:
            masker = adversary.masker_on(masker_fns[m.name], m.variables, rd, cfg, bs,
                                         int(cfg.seed) + 1)
        out[m.name] = classwise_lib.rank_on_split(
            embedders[m.name], z_cls[m.name], rd, obs_fn, units=class_units, rhos=rhos,
            batch_size=bs, masker=masker,
            random_seed=int(cfg.seed) if probe_masks and i == 0 else None)
    if reference is not None:
        out["reference"] = classwise_lib.rank_on_split(
            ref_emb, ref_zcls, rd, obs_fn, units=class_units, rhos=rhos, batch_size=bs,
            whitebox_name="adversarial/transfer")
    logging.info("class-level ranking and probe masks on %d validation records (%s)", len(rd),
                 ", ".join(out))
    return out


def _classwise_summary(cw_conds, class_regions, val_ranks, rd: EvalData, s: int):
    """What the classwise rows removed: {ranker: {condition: {class: [units]}}} and the split."""
    units = {}
    for (who, name), reg in class_regions.items():
        cond = next(c for c in cw_conds if c.name == name)
        for j, cls in enumerate(rd.class_names):
            if cond.unit == "lead":
                picked = [LEAD_NAMES[i] for i in np.flatnonzero(reg[j].any(1))]
            else:
                picked = [f"s{i}" for i in np.flatnonzero(reg[j].any(0))]
            units.setdefault(who, {}).setdefault(name, {})[cls] = picked
    return {"ranked_on": {"examples": len(rd), "rankers": sorted(val_ranks)}, "units": units}


def _aggregate(models, data, cfg, conds, sc, zs, target_stats, class_stats) -> dict[str, Any]:
    """Metrics per model and condition from the collected scores / embeddings."""
    n = len(data)
    idx = zeroshot.bootstrap_indices(n, int(cfg.bootstrap), int(cfg.seed))
    labels = np.asarray(data.labels, bool)
    out = {
        "n": n,
        "classes": list(data.class_names),
        "skipped_classes": zeroshot.macro_auroc(labels, np.zeros(labels.shape))["skipped"],
        "conditions": [dataclasses.asdict(c) for c in conds],
        "models": {},
    }
    for m in models:
        res = {"zeroshot": {}, "cmrs": {}, "targeting": {}}
        for c in conds:
            res["zeroshot"][c.name] = zeroshot.evaluate(labels, sc[m.name][c.name],
                                                        data.class_names, indices=idx)
        clean = sc[m.name]["clean"]
        for mode in miss.MODES:
            for unit in miss.UNITS:
                adv = [c for c in conds if c.family == "adversarial" and c.mode == mode
                       and c.unit == unit]
                if not adv:
                    continue
                by_rho, drift, retention = {}, {}, {}
                for c in adv:
                    by_rho[c.rho] = cmrs_lib.cmrs_rho(clean, sc[m.name][c.name], labels)
                    retention[c.rho] = cmrs_lib.rank_retention(clean, sc[m.name][c.name], labels)
                    rnd = f"random/{unit}/rho{c.rho:g}"
                    drift[c.rho] = cmrs_lib.drift_ratio(
                        zs[m.name]["clean"], zs[m.name][c.name], zs[m.name][rnd])
                res["cmrs"][f"{mode}/{unit}"] = {
                    "cmrs": cmrs_lib.headline(by_rho),
                    "by_rho": {f"{r:g}": v for r, v in by_rho.items()},
                    "drift_ratio": {f"{r:g}": v for r, v in drift.items()},
                    "rank_retention": {f"{r:g}": v for r, v in retention.items()},
                }
        head = res["cmrs"].get(f"{cfg.cmrs_mode}/{cfg.cmrs_unit}")
        res["cmrs_headline"] = head["cmrs"] if head else float("nan")
        for name, rows in target_stats[m.name].items():
            res["targeting"][name] = targeting.targeting_from_counts(np.concatenate(rows))
        res["targeting_by_class"] = {
            name: targeting.targeting_by_class(np.concatenate(rows), data.class_names)
            for name, rows in class_stats[m.name].items()
        }
        out["models"][m.name] = res
    return out


def _clean_embeddings(emb, d: EvalData, cfg, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Clean (all observed tokens kept) embeddings [N, E] and pooled features [N, D] of `d`."""
    zs, ps = [], []
    for start in range(0, len(d), cfg.batch_size):
        sl = slice(start, min(start + cfg.batch_size, len(d)))
        obs = pad(observed_tokens(d, sl, patch), cfg.batch_size)
        ecg = pad(np.nan_to_num(d.ecg[sl]).astype(np.float32), cfg.batch_size)
        z, p = emb.embed(emb.tokens(ecg, obs), obs[None])
        zs.append(z[0, : sl.stop - sl.start])
        ps.append(p[0, : sl.stop - sl.start])
    return np.concatenate(zs), np.concatenate(ps)


def _zeroshot_diagnostics(m: ModelSpec, data: EvalData, cfg, z_cls: np.ndarray,
                          z_clean: np.ndarray, val) -> dict[str, Any]:
    """scar_jax.evaluation.diagnostics for model `m` on the test split (val: centring choice)."""
    z_reports = None
    if data.report_tokens is not None:
        z_reports = diagnostics.embed_texts(m.model, m.variables, data.report_tokens)
    return diagnostics.zeroshot_diagnostics(
        class_names=data.class_names,
        z_cls_raw=m.class_embeddings(data.prompts, center=False),
        z_cls=z_cls,
        test_labels=data.labels,
        z_ecg_test=z_clean,
        z_reports_test=z_reports,
        val=val,
        centered=bool(cfg.get("center_prompts", False)),
    )


def _random_init_probe(m: ModelSpec, probe_data, data: EvalData, cfg, patch: int):
    """The linear probe of the same ECG encoder untrained (random init, seed eval.seed): the
    floor that pretraining must beat. Test macro AUROC on clean inputs, per label fraction."""
    from scar_jax import train_state as train_state_lib

    spec = {"ecg": jax.ShapeDtypeStruct((1,) + data.ecg.shape[1:], jnp.float32)}
    config = ml_collections.ConfigDict({"model": {"txt": {"max_len": m.max_len}}})
    rng = jax.random.key(int(cfg.seed))
    r_params, r_masker, r_drop = jax.random.split(rng, 3)
    variables = m.model.init({"params": r_params, "masker": r_masker, "dropout": r_drop},
                             train_state_lib.init_batch(config, spec))
    emb = miss.GridEmbedder(m.model, variables, cfg.chunk, cfg.grid_buckets)
    train, val = probe_data
    x_tr, x_va, x_te = (_clean_embeddings(emb, d, cfg, patch)[1] for d in (train, val, data))
    return _probe(x_tr, x_va, probe_data, {"clean": x_te}, data, cfg)


def _probe(x_tr, x_va, probe_data, test_feats, data, cfg) -> dict[str, Any]:
    """Linear probes at each label fraction; test macro AUROC under every non-oracle condition."""
    train, val = probe_data
    probes = linear_probe.fit_fractions(
        x_tr, train.labels, x_va, val.labels, cfg.probe_fractions, cfg.probe_cs, cfg.seed)
    idx = zeroshot.bootstrap_indices(len(data), int(cfg.bootstrap), int(cfg.seed))
    out = {}
    for frac, probe in probes.items():
        res = {"C": probe.c, "val_auroc": probe.val_auroc, "test": {}}
        for name, x in test_feats.items():
            res["test"][name] = zeroshot.evaluate(
                data.labels, probe.decision(x), data.class_names, indices=idx)
        out[f"{frac:g}"] = res
    return out


def model_spec(name: str, config: ml_collections.ConfigDict, source: Any) -> ModelSpec:
    """ModelSpec from a checkpoint folder, a variables dict, or (config, variables)."""
    if isinstance(source, ModelSpec):
        return source
    if isinstance(source, tuple):
        cfg, variables = source
        return ModelSpec.from_config(name, cfg, variables)
    if isinstance(source, (str, os.PathLike)):
        variables, saved = checkpointing.load_checkpoint(source)
        cfg = config
        if saved is not None and "model" in saved:
            cfg = ml_collections.ConfigDict(saved)
        return ModelSpec.from_config(name, cfg, variables)
    variables = source if "params" in source else {"params": source}
    return ModelSpec.from_config(name, config, variables)


def run_eval(
    config: ml_collections.ConfigDict,
    checkpoints: Mapping[str, Any],
    dataset: str | None = None,
    split: str | None = None,
    out_dir: str | os.PathLike = "eval",
    *,
    data_dir: str | None = None,
    reference: Any = None,
    label_set: str | None = None,
) -> dict[str, Any]:
    """Evaluate {name: checkpoint folder | variables | (config, variables)} on a built dataset.

    Writes results.json, results.md and the PNGs into out_dir (scar_jax.evaluation.report)
    and returns the results, plus scores.npz (per-example scores, compare.save_scores).
    dataset / split default to config.input.dataset and config.eval.split; `reference` (same forms;
    default config.eval.reference) ranks the transfer-adversarial masks for every model: one
    model outside the comparison, never one of `checkpoints` (without one the transfer rows
    are omitted, and the log says so); `label_set` picks one of PTB-XL's four label sets
    (superdiagnostic | subdiagnostic | form | rhythm). The validation split (config.eval.
    val_split) ranks the classwise rows and fits the mask-only probe (and the linear probe's C).
    """
    from scar_jax.evaluation import report

    if not checkpoints:
        raise ValueError("run_eval needs at least one checkpoint ({name: folder or params}).")
    ev = config.eval
    dataset = dataset or config.input.dataset
    split = split or ev.split
    models = [model_spec(name, config, src) for name, src in checkpoints.items()]
    if reference is None and ev.reference:
        reference = ev.reference
    ref = model_spec("reference", config, reference) if reference is not None else None
    if ref is None:
        logging.warning("No transfer reference (config.eval.reference): the transfer rows are "
                        "omitted. A compared checkpoint is never used as the reference (it "
                        "would attack itself white-box and the others black-box).")
    elif isinstance(reference, (str, os.PathLike)) and any(
            isinstance(c, (str, os.PathLike)) and os.path.abspath(c) == os.path.abspath(reference)
            for c in checkpoints.values()):
        raise ValueError(f"The transfer reference {reference} is one of the compared "
                         "checkpoints; pass one outside the comparison.")
    text_ckpt = models[0].text_checkpoint
    data = load_split(config, dataset, split, data_dir=data_dir, label_set=label_set,
                      max_examples=int(ev.max_examples), text_checkpoint=text_ckpt)
    val = None
    if ev.probe or ev.get("class_rhos") or ev.get("mask_probe", True):
        val = load_split(config, dataset, ev.val_split, data_dir=data_dir, label_set=label_set,
                         evidence=False, text_checkpoint=text_ckpt)
    probe_data = None
    if ev.probe:
        train_split = load_split(config, dataset, ev.train_split, data_dir=data_dir,
                                 label_set=label_set, evidence=False)
        probe_data = (train_split, val)
    results, plots = evaluate(models, data, ev, reference=ref, probe_data=probe_data,
                              rank_data=val)
    name = dataset + (f"/{label_set}" if label_set else "")
    results.update(dataset=name, split=split,
                   reference=("none (transfer rows omitted)" if ref is None else str(reference)
                              if isinstance(reference, (str, os.PathLike)) else "in memory"))
    report.write(out_dir, {name: results}, {name: plots},
                 patch_size=models[0].model.ecg.patch_size, sample_rate=data.sample_rate)
    compare.save_scores(out_dir, data.labels, plots["scores"])
    return results

