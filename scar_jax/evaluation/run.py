"""The evaluation driver: every model on the same masks, zero-shot, CMRS, probes, report.

`evaluate(models, data, eval_config, reference=...)` works on in-memory arrays
(`EvalData`); `run_eval(config, checkpoints, dataset, split, out_dir)` loads a
built dataset through the input pipeline and checkpoints through
`scar_jax.checkpointing`, then writes the report (`scar_jax.evaluation.report`).

Per batch, every model-independent mask is drawn once and shared by all models;
transfer-adversarial masks are ranked once by the reference model; white-box
masks are ranked by each evaluated model. All of a model's conditions then run
through one compiled encoder call per chunk of conditions (folded into its batch).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from scar_jax import metrics as metrics_lib
from scar_jax.evaluation import classwise as classwise_lib
from scar_jax.evaluation import cmrs as cmrs_lib
from scar_jax.evaluation import compare
from scar_jax.evaluation import diagnostics
from scar_jax.evaluation import linear_probe
from scar_jax.evaluation import missingness as miss
from scar_jax.evaluation import zeroshot
from scar_jax.models import ecg_encoder
from scar_jax.models import scar as scar_model


@dataclasses.dataclass
class EvalData:
    """A split in memory: ecg [N, T, 12] float32, lead_observed [N, 12], labels [N, K].

    Optional: time_observed [N, T] bool; evidence_primary / evidence_secondary
    [N, nbins, 12] bool (per record, 0.1 s bins; masker / adversary targeting);
    class_primary / class_secondary [K, nbins, 12] or [K, N, nbins, 12] bool (class c's
    region, for the oracle protocols); report_tokens {input_ids, attention_mask} [N, L].
    """

    ecg: np.ndarray
    lead_observed: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    prompts: list[str]
    time_observed: np.ndarray | None = None
    evidence_primary: np.ndarray | None = None
    evidence_secondary: np.ndarray | None = None
    class_primary: np.ndarray | None = None
    class_secondary: np.ndarray | None = None
    report_tokens: dict[str, np.ndarray] | None = None
    sample_rate: float = 500.0
    bin_seconds: float = 0.1

    def __len__(self) -> int:
        return int(self.ecg.shape[0])


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


def _observed_tokens(data: EvalData, sl: slice, patch_size: int) -> np.ndarray:
    """Observed token grid [b, 12, S] of the examples in `sl`."""
    to = None if data.time_observed is None else data.time_observed[sl]
    return np.asarray(
        ecg_encoder.token_observed(data.lead_observed[sl], data.ecg.shape[1], patch_size, to)
    )


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    """Pad axis 0 of x to n rows with zeros."""
    if x.shape[0] == n:
        return x
    return np.concatenate([x, np.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)])


def _region_tokens(region: np.ndarray | None, data: EvalData, patch: int, s: int, sl: slice):
    """Class regions [K, nbins, 12] or [K, N, nbins, 12] -> token grid [K, 1|b, 12, S] or None."""
    if region is None:
        return None
    if region.ndim == 4:  # per example: only this batch's rows are converted
        region = region[:, sl]
    tok = miss.evidence_to_tokens(region, patch, data.sample_rate, s, data.bin_seconds)
    return tok[:, None] if tok.ndim == 3 else tok


def _masker_removals(module, ecg, lead_observed, text, rho, tau, noise_scale):
    """Model method: the trained masker's hard removal [B, 12, S] at budget rho, given the report.

    Jitted per model in `evaluate` (rho, tau and noise_scale are traced; noise_scale 0 gives the
    adversary's mode, its noise-free top-k)."""
    observed = module.observed_tokens(ecg, lead_observed)
    z_txt, _ = module.txt(text)
    tokens = module.ecg.embed_tokens(ecg, observed)
    rho_b = jnp.full((ecg.shape[0],), rho, jnp.float32)
    _, aux = module.masker(tokens, z_txt, observed, tau=tau, rho=rho_b, noise_scale=noise_scale)
    return aux["m_hard"] > 0


def _apply_masker(model, variables, ecg, lead_observed, text, rho, tau, noise_scale, rng):
    """model.apply of _masker_removals with the 'masker' rng (jitted per model)."""
    return model.apply(variables, ecg, lead_observed, text, rho, tau, noise_scale,
                       method=_masker_removals, rngs={"masker": rng})


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
    z_cls = {m.name: class_embeddings(m, data.prompts, cfg) for m in models}
    ref_emb = ref_zcls = None
    if reference is not None:
        ref_emb = miss.GridEmbedder(reference.model, reference.variables, cfg.chunk,
                                     cfg.grid_buckets)
        ref_zcls = class_embeddings(reference, data.prompts, cfg)

    masker_fns = {
        m.name: jax.jit(functools.partial(_apply_masker, m.model))
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
    traces = {"examples": [], "keeps": {}}
    n_trace = int(cfg.trace_examples)
    timing = {"rank_s": 0.0, "grid_s": 0.0, "conditions": 0}
    val_ranks, class_regions, rd = {}, {}, None
    if rank_data is not None and (cw_conds or probe_masks):
        t0 = time.perf_counter()
        rd = _head(rank_data, int(cfg.get("class_rank_examples", 0)))
        val_ranks = _rank_validation(models, embedders, z_cls, masker_fns, reference, ref_emb,
                                     ref_zcls, rd, cfg, patch, class_units, probe_masks)
        for c in cw_conds:
            for who in (["reference"] if c.mode == "transfer" else [m.name for m in models]):
                units = classwise_lib.top_units(val_ranks[who].importance[c.unit], c.rho)
                class_regions[who, c.name] = classwise_lib.units_to_region(
                    units, c.unit, ecg_encoder.NUM_LEADS, s)
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
        observed = _pad(_observed_tokens(data, sl, patch), bs)
        ecg = _pad(np.nan_to_num(data.ecg[sl]).astype(np.float32), bs)
        labels = _pad(np.asarray(data.labels[sl], bool), bs)
        index = np.arange(start, start + bs)
        keeps = {c.name: miss.condition_keep(c, observed, index, cfg.seed) for c in static}
        primary = class_primary = None
        if data.evidence_primary is not None:
            primary = _pad(
                miss.evidence_to_tokens(data.evidence_primary[sl], patch, data.sample_rate, s,
                                        data.bin_seconds), bs)
            class_primary = _class_region_batch(regions["primary"], data, patch, s, sl, bs)
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
                reg = _region_tokens(regions[c.region], data, patch, s, sl)
                if reg is None:
                    continue
                if reg.shape[1] != 1:
                    reg = np.stack([_pad(r, bs) for r in reg])
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
            masker_removed = {}  # the trained masker's removals, for targeting and the probe
            if (data.report_tokens is not None and m.name in masker_fns
                    and (primary is not None or probe_masks)):
                run_masker = _masker_on(m, masker_fns[m.name], data, cfg, bs, int(cfg.seed))
                for rho in cfg.rhos:
                    for prefix, noise in (("masker", 1.0), ("masker_mode", 0.0)):
                        masker_removed[f"{prefix}/rho{rho:g}"] = run_masker(ecg, observed, sl,
                                                                            rho, noise)
            if probe_masks:
                for name, removed in masker_removed.items():
                    test_masks[m.name].setdefault(name, []).append(_flat_removed(removed, b))
            if primary is not None:
                for c in conds:
                    if c.family in ("adversarial", "random"):
                        removed = observed & ~mk[c.name]
                        target_stats[m.name].setdefault(c.name, []).append(
                            _target_counts(removed, primary, observed)[:b])
                        if class_primary is not None and c.family == "adversarial":
                            class_stats[m.name].setdefault(c.name, []).append(
                                _class_target_counts(removed, class_primary, observed, labels)[:b])
                for name, removed in masker_removed.items():
                    target_stats[m.name].setdefault(name, []).append(
                        _target_counts(removed, primary, observed)[:b])
                    if class_primary is not None:
                        class_stats[m.name].setdefault(name, []).append(
                            _class_target_counts(removed, class_primary, observed, labels)[:b])
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
    _add_lead_local(results, classwise_lib.lead_local_classes(data.class_primary,
                                                              data.class_names))
    if rd is not None:
        results["classwise"] = _classwise_summary(cw_conds, class_regions, val_ranks, rd, s)
    if probe_masks:
        t0 = time.perf_counter()
        c_probe = float(cfg.get("mask_probe_c", 1.0))
        cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
        for m in models:
            results["models"][m.name]["mask_probe"] = classwise_lib.mask_probes(
                val_ranks[m.name].removed, cat(test_masks[m.name]), rd.labels, data.labels,
                data.class_names, c_probe)
        shared_val = {k: v for k, v in val_ranks[models[0].name].removed.items()
                      if k.startswith("random/")}
        if "reference" in val_ranks:
            shared_val.update(val_ranks["reference"].removed)
        results["mask_probe"] = classwise_lib.mask_probes(
            shared_val, cat(shared_masks), rd.labels, data.labels, data.class_names, c_probe)
        timing["mask_probe_s"] = time.perf_counter() - t0
    results["timing"] = _measure_cost(embedders[models[0].name], data, cfg, patch, static, timing)
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


def _head(data: EvalData, n: int) -> EvalData:
    """The first n records of a split (n = 0: all); class regions are dropped (not needed)."""
    if not n or n >= len(data):
        return dataclasses.replace(data, class_primary=None, class_secondary=None)
    cut = lambda x: None if x is None else x[:n]  # noqa: E731
    return dataclasses.replace(
        data, ecg=data.ecg[:n], lead_observed=data.lead_observed[:n], labels=data.labels[:n],
        time_observed=cut(data.time_observed), evidence_primary=cut(data.evidence_primary),
        evidence_secondary=cut(data.evidence_secondary), class_primary=None,
        class_secondary=None,
        report_tokens=None if data.report_tokens is None else {
            k: v[:n] for k, v in data.report_tokens.items()})


def _flat_removed(removed: np.ndarray, b: int) -> np.ndarray:
    """Removed tokens [bs, 12, S] -> the first b rows flattened [b, 12 * S] bool."""
    return np.asarray(removed, bool)[:b].reshape(b, -1)


def _masker_on(m: ModelSpec, fn, data: EvalData, cfg, bs: int, seed: int):
    """f(ecg, observed, sl, rho, noise) -> the trained masker's removal [bs, 12, S] of the rows
    sl of `data` (its report tokens; rng folded from `seed` and the batch start)."""

    def f(ecg, observed, sl, rho, noise):
        text = {k: jnp.asarray(_pad(v[sl], bs)) for k, v in data.report_tokens.items()}
        lo = jnp.asarray(_pad(np.asarray(data.lead_observed[sl], bool), bs))
        removed = np.asarray(fn(m.variables, jnp.asarray(ecg), lo, text, jnp.float32(rho),
                                jnp.float32(cfg.masker_tau), jnp.float32(noise),
                                jax.random.fold_in(jax.random.key(seed), sl.start)))
        return removed & observed

    return f


def _rank_validation(models, embedders, z_cls, masker_fns, reference, ref_emb, ref_zcls,
                     rd: EvalData, cfg, patch: int, class_units, probe_masks: bool):
    """classwise.rank_on_split of every model (and of the reference, as 'reference') on the
    validation split rd: class importance, and the masks of the mask-only probe."""
    bs = int(cfg.batch_size)
    obs_fn = lambda sl: _observed_tokens(rd, sl, patch)  # noqa: E731
    rhos = tuple(cfg.rhos) if probe_masks else ()
    out = {}
    for i, m in enumerate(models):
        masker = None
        if probe_masks and m.name in masker_fns and rd.report_tokens is not None:
            masker = _masker_on(m, masker_fns[m.name], rd, cfg, bs, int(cfg.seed) + 1)
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
                picked = [ecg_encoder.LEAD_NAMES[i] for i in np.flatnonzero(reg[j].any(1))]
            else:
                picked = [f"s{i}" for i in np.flatnonzero(reg[j].any(0))]
            units.setdefault(who, {}).setdefault(name, {})[cls] = picked
    return {"ranked_on": {"examples": len(rd), "rankers": sorted(val_ranks)}, "units": units}


def _add_lead_local(results: dict[str, Any], lead_local: Sequence[str]) -> None:
    """Mark the classes whose primary evidence is local to leads and add, per remover, the
    macro lift over those classes only (`targeting_by_class[...]['lead_local_macro_lift']`)."""
    results["lead_local_classes"] = list(lead_local)
    for res in results["models"].values():
        for t in res.get("targeting_by_class", {}).values():
            lifts = [t["classes"][c]["lift"] for c in lead_local
                     if c in t["classes"] and t["classes"][c]["n"]
                     and math.isfinite(t["classes"][c]["lift"])]
            t["lead_local_macro_lift"] = float(np.mean(lifts)) if lifts else float("nan")


def save_scores(out_dir: str | os.PathLike, labels: np.ndarray,
                scores: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """Per-example zero-shot scores of every model and condition into out_dir/scores.npz
    (labels [N, K] and '<model>|<condition>' [N, K] float32): the seed summary's paired
    bootstrap of method differences reads them (scar_jax.evaluation.compare)."""
    from etils import epath

    arrays = {"labels": np.asarray(labels, bool)}
    for model, by_cond in scores.items():
        for cond, sc in by_cond.items():
            arrays[compare.score_key(model, cond)] = np.asarray(sc, np.float32)
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / compare.SCORES_FILE
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)
    return str(path)


def _target_counts(removed: np.ndarray, primary: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per example [b, 4]: removed, removed in primary, primary observed, observed token counts."""
    primary = primary & observed
    return np.stack(
        [removed.sum((1, 2)), (removed & primary).sum((1, 2)), primary.sum((1, 2)),
         observed.sum((1, 2))], -1)


def _class_region_batch(region, data, patch, s, sl, bs) -> np.ndarray | None:
    """Every class's region as tokens for the batch `sl`, padded: [K, bs, 12, S] bool or None."""
    reg = _region_tokens(region, data, patch, s, sl)
    if reg is None:
        return None
    if reg.shape[1] == 1:
        return np.broadcast_to(reg, (reg.shape[0], bs) + reg.shape[2:])
    return np.stack([_pad(r, bs) for r in reg])


def _class_target_counts(removed: np.ndarray, class_region: np.ndarray, observed: np.ndarray,
                         labels: np.ndarray) -> np.ndarray:
    """Per example and class [b, K, 4] count rows (as _target_counts) against class k's own
    region [K, b, 12, S]; rows of examples that are not positive for k are zero (skipped)."""
    rows = np.stack([_target_counts(removed, class_region[k], observed)
                     for k in range(class_region.shape[0])], 1)
    return rows * np.asarray(labels, bool)[:, :, None]


def _targeting_by_class(rows: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """[N, K, 4] count rows -> per class share / chance / lift over its positives, and the
    macro mean of the lifts over classes with at least one counted positive."""
    out = {c: _targeting_from_counts(rows[:, k]) for k, c in enumerate(classes)}
    lifts = [v["lift"] for v in out.values() if v["n"] and math.isfinite(v["lift"])]
    return {"classes": out, "macro_lift": float(np.mean(lifts)) if lifts else float("nan")}


def _targeting_from_counts(rows: np.ndarray) -> dict[str, float]:
    """Aggregate [N, 4] count rows into share / chance / lift (as missingness.targeting)."""
    ok = (rows[:, 0] > 0) & (rows[:, 2] > 0)
    if not ok.any():
        return {"share": float("nan"), "chance": float("nan"), "lift": float("nan"), "n": 0}
    share = float(np.mean(rows[ok, 1] / rows[ok, 0]))
    chance = float(np.mean(rows[ok, 2] / rows[ok, 3]))
    return {"share": share, "chance": chance, "lift": share / chance, "n": int(ok.sum())}


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
            res["targeting"][name] = _targeting_from_counts(np.concatenate(rows))
        res["targeting_by_class"] = {
            name: _targeting_by_class(np.concatenate(rows), data.class_names)
            for name, rows in class_stats[m.name].items()
        }
        out["models"][m.name] = res
    return out


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


def _measure_cost(emb, data, cfg, patch, static, timing) -> dict[str, float]:
    """`grid_cost` of the model-independent conditions on the first batch, plus run totals."""
    bs = int(cfg.batch_size)
    sl = slice(0, min(bs, len(data)))
    observed = _pad(_observed_tokens(data, sl, patch), bs)
    ecg = _pad(np.nan_to_num(data.ecg[sl]).astype(np.float32), bs)
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


def _clean_embeddings(emb, d: EvalData, cfg, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Clean (all observed tokens kept) embeddings [N, E] and pooled features [N, D] of `d`."""
    zs, ps = [], []
    for start in range(0, len(d), cfg.batch_size):
        sl = slice(start, min(start + cfg.batch_size, len(d)))
        obs = _pad(_observed_tokens(d, sl, patch), cfg.batch_size)
        ecg = _pad(np.nan_to_num(d.ecg[sl]).astype(np.float32), cfg.batch_size)
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
        z_cls_raw=class_embeddings(m, data.prompts, cfg, center=False),
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


# ----------------------------------------------------------------------------- Checkpoints.


def load_checkpoint(path: str | os.PathLike, step: int | None = None) -> tuple[Any, dict | None]:
    """(variables {'params': ...}, saved config dict or None) of a training workdir / checkpoint.

    Restored onto this process's first device whatever topology saved it
    (checkpointing.restore_params).
    """
    from scar_jax import checkpointing

    params, saved_config = checkpointing.restore_params(path, step)
    return {"params": params}, saved_config


def model_spec(name: str, config: ml_collections.ConfigDict, source: Any) -> ModelSpec:
    """ModelSpec from a checkpoint folder, a variables dict, or (config, variables)."""
    if isinstance(source, ModelSpec):
        return source
    if isinstance(source, tuple):
        cfg, variables = source
        return ModelSpec.from_config(name, cfg, variables)
    if isinstance(source, (str, os.PathLike)):
        variables, saved = load_checkpoint(source)
        cfg = config
        if saved is not None and "model" in saved:
            cfg = ml_collections.ConfigDict(saved)
        return ModelSpec.from_config(name, cfg, variables)
    variables = source if "params" in source else {"params": source}
    return ModelSpec.from_config(name, config, variables)


# ----------------------------------------------------------------------------- Built datasets.


LOCALISED_TIME_KINDS = ("pvc", "post_pvc")  # evidence that exists only in some records' spans


def oracle_regions(
    metadata: Mapping[str, Any],
    classes: Sequence[str],
    region: str,
    labels: np.ndarray,
    time_bins: np.ndarray | None,
    num_bins: int,
    seed: int = 0,
) -> np.ndarray | None:
    """Class c's `region` (primary | secondary) in every record: [K, N, nbins, 12] bool.

    From info.metadata['class_info'] (each class's leads and time kind) and the records'
    per-class time bins `time_bins` [N, nbins, K] (evidence_time_<region>, set on positives
    only). A class whose evidence recurs in every beat (time kind not in
    LOCALISED_TIME_KINDS) is removed over its leads for the whole record, in every record.
    A time-localised class (premature beats) is removed over its leads at a positive's own
    spans; a negative gets the spans of a seeded random positive, shifted by a random
    offset, so positives and negatives lose the same kind of region (no label leak).
    """
    info = (metadata or {}).get("class_info")
    if not info:
        return None
    labels = np.asarray(labels, bool)
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    out = np.zeros((len(classes), n, num_bins, ecg_encoder.NUM_LEADS), bool)
    for j, c in enumerate(classes):
        ci = info.get(c, {})
        cols = [ecg_encoder.LEAD_NAMES.index(x) for x in ci.get(f"{region}_leads", [])]
        lead_mask = np.zeros(ecg_encoder.NUM_LEADS, bool)
        lead_mask[cols] = True
        pos = np.flatnonzero(labels[:, j])
        if ci.get(f"{region}_time") in LOCALISED_TIME_KINDS and time_bins is not None and len(pos):
            t = np.asarray(time_bins[:, :, j], bool).copy()  # [N, bins]
            for i in np.flatnonzero(~labels[:, j]):
                t[i] = np.roll(t[rng.choice(pos)], int(rng.integers(0, num_bins)))
        else:
            t = np.ones((n, num_bins), bool)
        out[j] = t[:, :, None] & lead_mask[None, None, :]
    return out


def class_embeddings(m: ModelSpec, prompts: Sequence[Sequence[str]], cfg,
                     center: bool | None = None) -> np.ndarray:
    """Zero-shot class embeddings [K, E] of model `m`: phrasings averaged, centred as `center`
    says (default cfg.center_prompts)."""
    if center is None:
        center = bool(cfg.get("center_prompts", False))
    return scar_model.class_embeddings(
        m.model, m.variables, prompts, text_checkpoint=m.text_checkpoint, max_len=m.max_len,
        center=center)


def class_prompts(dataset: str, classes: Sequence[str]) -> list[tuple[str, ...]]:
    """The zero-shot phrasings of every class, from the label registry (scar_jax.data.labels).

    Falls back to real_labels' curated table of the corpus; a class with no prompt at all
    fails with a message naming it.
    """
    from scar_jax.data import labels as labels_lib
    from scar_jax.data import real_labels

    try:
        table = labels_lib.prompts(dataset)
    except KeyError:
        table = {}
    out, missing = [], []
    for c in classes:
        p = table.get(c)
        if p is None:
            try:
                p = labels_lib.as_phrasings(real_labels.prompts(dataset.partition("/")[0], c))
            except KeyError:
                missing.append(c)
        out.append(p)
    if missing:
        raise KeyError(
            f"No prompt for classes {missing} of {dataset}; add them to "
            "scar_jax/data/real_labels.py PROMPTS or register them in scar_jax/data/labels.py."
        )
    return out


def load_split(
    config: ml_collections.ConfigDict,
    dataset: str,
    split: str,
    *,
    data_dir: str | None = None,
    max_examples: int = 0,
    text_checkpoint: str | None = None,
    label_set: str | None = None,
    evidence: bool = True,
) -> EvalData:
    """A built dataset's split through the eval pipeline (no shuffle, no augmentation).

    label_set: PTB-XL's superdiagnostic | subdiagnostic | form | rhythm (the builder's
    `labels_<set>` features); default the dataset's own `labels`. evidence: also read the
    evidence regions where the corpus has them (the oracle and targeting need them; the
    linear probe's splits do not).
    """
    from scar_jax.data import labels as labels_lib
    from scar_jax.data import pipeline

    inp = ml_collections.ConfigDict(config.input.to_dict())
    inp.dataset = dataset
    if data_dir is not None:
        inp.data_dir = data_dir
    source, info = pipeline.load_source(dataset, split, inp.data_dir or None)
    bs = int(config.eval.batch_size)
    ds = pipeline.make_dataset(inp, split, global_batch_size=bs, seed=0, train=False,
                               process_index=0, process_count=1)
    cols: dict[str, list[np.ndarray]] = {}
    total = 0
    for batch in ds:
        valid = np.asarray(batch["valid"], bool)
        for k in ("ecg", "lead_observed", "time_observed", "labels", "index", "report"):
            cols.setdefault(k, []).append(np.asarray(batch[k])[valid])
        total += int(valid.sum())
        if max_examples and total >= max_examples:
            break
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    if max_examples:
        arrays = {k: v[:max_examples] for k, v in arrays.items()}
    meta = info.metadata or {}
    classes = list(meta.get("classes") or labels_lib.classes(dataset))
    labels = arrays["labels"].astype(bool)
    if label_set:
        sets = meta.get("label_sets") or {}
        if label_set not in sets or f"labels_{label_set}" not in info.features:
            raise ValueError(
                f"{dataset} has no label set {label_set!r}; it has {sorted(sets) or 'none'}.")
        classes = list(sets[label_set])
        labels = np.stack([np.asarray(source[int(i)][f"labels_{label_set}"])
                           for i in arrays["index"]]).astype(bool)
    corpus = dataset.partition("/")[0].split(":")[0]
    data = EvalData(
        ecg=arrays["ecg"].astype(np.float32),
        lead_observed=arrays["lead_observed"].astype(bool),
        labels=labels,
        class_names=classes,
        prompts=class_prompts(corpus if not label_set else f"{corpus}/{label_set}", classes),
        time_observed=arrays["time_observed"].astype(bool),
        sample_rate=float(inp.sample_rate),
        bin_seconds=float(meta.get("evidence_bin_s", 0.1)),
    )
    if evidence and "evidence_primary" in info.features:
        keys = ["evidence_primary", "evidence_secondary"] + [
            k for k in ("evidence_time_primary", "evidence_time_secondary") if k in info.features]
        cols = {k: [] for k in keys}
        for i in arrays["index"]:
            record = source[int(i)]  # decoded once; only the evidence arrays are kept
            for k in keys:
                cols[k].append(np.asarray(record[k]))
        ev = {k: np.stack(v).astype(bool) for k, v in cols.items()}
        data.evidence_primary = ev["evidence_primary"]
        data.evidence_secondary = ev["evidence_secondary"]
        nbins = data.evidence_primary.shape[1]
        for region in ("primary", "secondary"):
            setattr(data, f"class_{region}", oracle_regions(
                meta, classes, region, data.labels, ev.get(f"evidence_time_{region}"), nbins,
                int(config.eval.seed)))
    if text_checkpoint is not None:
        texts = [r.decode() if isinstance(r, bytes) else str(r) for r in arrays["report"]]
        data.report_tokens = zeroshot.tokenize_prompts(
            text_checkpoint, texts, int(config.model.txt.max_len))
    logging.info("eval data %s %s: %d records, %d classes", dataset, split, len(data),
                 len(classes))
    return data


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
    and returns the results, plus scores.npz (per-example scores, save_scores). dataset /
    split default to config.input.dataset and config.eval.split; `reference` (same forms;
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
    save_scores(out_dir, data.labels, plots["scores"])
    return results

