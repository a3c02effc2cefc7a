"""Evaluation output folder: results.json, results.md (tables with 95 % intervals), PNG plots.

  results.json          everything `run.evaluate` measured, per dataset and model
  results.md            zero-shot macro AUROC per condition (rows) x dataset/model (columns)
                        with bootstrap intervals; CMRS, drift ratio, rank retention; linear
                        probes; adversary / masker targeting; where the masker removes, lead
                        by lead; the mask-only label probe and the encoder's score shift under
                        class-level removal; grid cost
  auroc_vs_missing.png  AUROC vs share removed, one line per model and protocol family
  cmrs_vs_rho.png       CMRS_rho vs rho per model and adversary (mode / unit)
  traces.png            a few test ECGs (12 leads) with the adversary's removed tokens shaded
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np
from absl import logging
from etils import epath

from scar_jax.leads import LEAD_NAMES, NUM_LEADS

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _jsonable(x: Any) -> Any:
    """numpy scalars/arrays and NaN -> JSON (NaN as null)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _fmt(v: Any, ci: Any = None) -> str:
    """'0.812 [0.790, 0.833]' (or '–' for a missing value)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    s = f"{v:.3f}"
    if ci and all(c is not None and math.isfinite(c) for c in ci):
        s += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return s


def markdown(results_by_dataset: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown tables for {dataset: results} (results as returned by run.evaluate)."""
    lines = ["# Evaluation", ""]
    cols = [(d, m) for d, r in results_by_dataset.items() for m in r["models"]]
    header = "| condition | " + " | ".join(f"{d} · {m}" for d, m in cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    conds: list[str] = []
    for r in results_by_dataset.values():
        for c in r["conditions"]:
            if c["name"] not in conds:
                conds.append(c["name"])
    lines += ["## Zero-shot macro AUROC (95 % bootstrap interval)", "", header, rule]
    for name in conds:
        cells = []
        for d, m in cols:
            z = results_by_dataset[d]["models"][m]["zeroshot"].get(name)
            cells.append(_fmt(z["auroc"], z.get("ci")) if z else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for d, r in results_by_dataset.items():
        if r.get("skipped_classes"):
            lines += ["", f"{d}: classes without both positives and negatives, skipped: "
                      + ", ".join(r["skipped_classes"])]

    lines += ["", "## CMRS (our definition: docs/METHOD.md, Evaluation)", "",
              "| dataset · model | adversary | CMRS | CMRS_rho | drift ratio | rank retention |",
              "|---|---|---|---|---|---|"]
    for d, m in cols:
        for adv, c in results_by_dataset[d]["models"][m].get("cmrs", {}).items():
            by = lambda key: ", ".join(f"{k}: {_fmt(v)}" for k, v in c[key].items())  # noqa: E731
            lines.append(f"| {d} · {m} | {adv} | {_fmt(c['cmrs'])} | {by('by_rho')} | "
                         f"{by('drift_ratio')} | {by('rank_retention')} |")

    probe_rows = []
    for d, m in cols:
        for frac, p in results_by_dataset[d]["models"][m].get("linear_probe", {}).items():
            clean = p["test"].get("clean", {})
            worst = min((v["auroc"] for v in p["test"].values() if v["auroc"] is not None
                         and math.isfinite(v["auroc"])), default=float("nan"))
            probe_rows.append(f"| {d} · {m} | {frac} | {p['C']:g} | {_fmt(p['val_auroc'])} | "
                              f"{_fmt(clean.get('auroc'), clean.get('ci'))} | {_fmt(worst)} |")
    if probe_rows:
        lines += ["", "## Linear probe (C chosen on validation; test macro AUROC)", "",
                  "| dataset · model | label fraction | C | val AUROC | test clean | "
                  "test worst condition |", "|---|---|---|---|---|---|"] + probe_rows

    lines += _diagnostics_markdown(results_by_dataset, cols)

    tgt_rows = []
    for d, m in cols:
        for name, t in results_by_dataset[d]["models"][m].get("targeting", {}).items():
            tgt_rows.append(f"| {d} · {m} | {name} | {_fmt(t['share'])} | {_fmt(t['chance'])} | "
                            f"{_fmt(t['lift'])} | {t['n']} |")
    if tgt_rows:
        lines += ["", "## Targeting: share of removed tokens inside the primary evidence", "",
                  "| dataset · model | remover | share | chance | lift | examples |",
                  "|---|---|---|---|---|---|"] + tgt_rows

    def by_class_rows(r, d, m, names):
        for name, t in r.get("targeting_by_class", {}).items():
            cells = [_fmt(t["classes"][c]["lift"]) if t["classes"][c]["n"] else "–"
                     for c in names]
            yield (f"| {d} · {m} | {name} | {_fmt(t['macro_lift'])} | " + " | ".join(cells)
                   + " |")

    by_class = _per_dataset_tables(
        results_by_dataset, cols, "classes",
        lambda names: ["dataset · model", "remover", "macro", *names], by_class_rows)
    if by_class:
        lines += ["", "## Targeting by class: lift of removals inside each positive class's own "
                  "primary region (share / chance)"] + by_class

    lines += _masker_leads_markdown(results_by_dataset, cols)
    lines += _label_independent_markdown(results_by_dataset, cols)

    lines += ["", "## Grid cost", ""]
    for d, r in results_by_dataset.items():
        t = r.get("timing")
        if t:
            lines.append(
                f"- {d}: {t['conditions_static']} model-independent conditions in "
                f"{t['grid_s']:.3f} s vs {t['clean_pass_s']:.4f} s per clean pass: "
                f"{t['ratio']:.2f}x of (conditions x clean pass); grid compiled "
                f"{t['traces']} time(s); ranking for the adversarial masks took "
                f"{t['total_rank_s']:.1f} s in all.")
    return "\n".join(lines) + "\n"


def _diagnostics_markdown(results_by_dataset: Mapping[str, Mapping[str, Any]],
                          cols: list[tuple[str, str]]) -> list[str]:
    """The zero-shot diagnostics (scar_jax.evaluation.diagnostics) as a table per dataset."""
    rows = []
    for d, m in cols:
        r = results_by_dataset[d]
        g = r["models"][m].get("zeroshot_diagnostics")
        if not g:
            continue
        clean = r["models"][m]["zeroshot"].get("clean", {})
        probe = r["models"][m].get("linear_probe", {}).get("1", {}).get("test", {}).get("clean", {})
        rnd = r.get("random_init_probe", {}).get("1", {}).get("test", {}).get("clean", {})
        cc = g.get("center_choice", {})
        pair = g["prompt_cosine"]["max_pair"]
        rows.append(
            f"| {d} · {m} | {_fmt(clean.get('auroc'))} | {_fmt(probe.get('auroc'))} | "
            f"{_fmt(rnd.get('auroc'))} | {_fmt(g.get('text_zeroshot', {}).get('auroc'))} | "
            f"{_fmt(g.get('class_mean_bound', {}).get('auroc'))} | "
            f"{_fmt(cc.get('val_auroc_raw'))} / {_fmt(cc.get('val_auroc_centered'))} "
            f"({'centred' if g.get('centered') else 'raw'}) | "
            f"{pair[0]}/{pair[1]} {pair[2]:.2f}, mean {_fmt(g['prompt_cosine']['mean_offdiag'])} |")
    if not rows:
        return []
    out = ["", "## Zero-shot diagnostics", "",
           "Zero-shot (clean, test) beside the linear probe on the same features (100 % labels), "
           "the probe of the same encoder untrained (the floor), the text side alone (test "
           "reports scored against the class embeddings), a bound that scores ECGs against the "
           "mean embedding of each class's test reports (**uses test labels: diagnostic only**), "
           "the validation AUROC that chose raw or centred class embeddings, and the most similar "
           "pair of class embeddings.", "",
           "| dataset · model | zero-shot | probe | probe, untrained encoder | text alone | "
           "class-mean bound (labels) | val raw / centred (used) | closest classes (cosine) |",
           "|---|---|---|---|---|---|---|---|"] + rows
    per_class = []
    for d, m in cols:
        r = results_by_dataset[d]
        g = r["models"][m].get("zeroshot_diagnostics")
        if not g:
            continue
        names = list(r["classes"])
        zs = r["models"][m]["zeroshot"].get("clean", {}).get("per_class", {})
        tx = g.get("text_zeroshot", {}).get("per_class", {})
        per_class.append(f"| {d} · {m} · ECG | " + " | ".join(_fmt(zs.get(c)) for c in names)
                         + " |")
        if tx:
            per_class.append(f"| {d} · {m} · text | "
                             + " | ".join(_fmt(tx.get(c)) for c in names) + " |")
    if per_class:
        names = list(next(iter(results_by_dataset.values()))["classes"])
        out += ["", "Per class (clean zero-shot AUROC of the ECGs, and of the test reports):", "",
                "| dataset · model | " + " | ".join(names) + " |",
                "|---|" + "---|" * len(names)] + per_class
    return out


def _per_dataset_tables(results_by_dataset: Mapping[str, Mapping[str, Any]],
                        cols: list[tuple[str, str]], names_key: str, header, rows) -> list[str]:
    """Per-class tables, one per dataset (merged datasets need not share their classes): for
    dataset d with class names results[d][names_key] (none: no table), the rows
    `rows(model results, d, model, names)` of its models under the columns `header(names)`."""
    out: list[str] = []
    for d, r in results_by_dataset.items():
        names = list(r.get(names_key) or [])
        body = [row for dd, m in cols if dd == d and names
                for row in rows(r["models"][m], d, m, names)]
        if body:
            head = header(names)
            out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + body
    return out


def _masker_leads_markdown(results_by_dataset: Mapping[str, Mapping[str, Any]],
                           cols: list[tuple[str, str]]) -> list[str]:
    """Where each trained masker aims, lead by lead: the lift of its noise-free removals at the
    largest budget per lead, over every record and over each class's positives."""
    rows, names = [], set()
    for d, m in cols:
        leads = results_by_dataset[d]["models"][m].get("masker_leads") or {}
        mode = sorted((k for k in leads if k.startswith("masker_mode/")),
                      key=lambda k: float(k.rpartition("rho")[2]))
        if not mode:
            continue
        names.add(mode[-1])
        profiles = [("every record", leads[mode[-1]]["all"])] + [
            (f"{c} positives", p) for c, p in leads[mode[-1]]["classes"].items()]
        rows += [f"| {d} · {m} | {who} | {p['n']} | " + " | ".join(_fmt(x) for x in p["lift"])
                 + " |" for who, p in profiles if p]
    if not rows:
        return []
    return ["", f"## Where the masker removes ({', '.join(sorted(names))}): lift per lead",
            "", "Share of a record's removed tokens in the lead / the lead's share of its "
            "observed tokens, averaged over the records (1 = chance); no evidence regions needed.",
            "", "| dataset · model | records | n | " + " | ".join(LEAD_NAMES) + " |",
            "|---|---|---|" + "---|" * NUM_LEADS] + rows


def _label_independent_markdown(results_by_dataset: Mapping[str, Mapping[str, Any]],
                                cols: list[tuple[str, str]]) -> list[str]:
    """Issue 19's evaluation tables: the units each classwise row removed, the mask-only label
    probe, masker targeting on the classes whose evidence is local to leads, and the encoder's
    score shift under the oracle's class-level removal of those classes' regions."""
    out: list[str] = []
    unit_rows = []
    for d, r in results_by_dataset.items():
        cw = r.get("classwise") or {}
        names = list(r["classes"])
        for who, by_cond in cw.get("units", {}).items():
            for cond, by_class in by_cond.items():
                unit_rows.append(f"| {d} · {who} | {cond} | "
                                 + " | ".join(" ".join(by_class.get(c, [])) or "–" for c in names)
                                 + " |")
        if unit_rows:
            n = cw.get("ranked_on", {}).get("examples", "?")
            out += ["", "## Label-independent removal: what each classwise row removed", "",
                    f"For class c, the units that matter most for c (occlusion on {n} validation "
                    "records: mean score drop over c's positives minus over its negatives), "
                    "ranked by the evaluated model (whitebox) or by the reference outside the "
                    "comparison (transfer), are removed from every test record, positives and "
                    "negatives alike; the zero-shot table's `classwise/...` rows score class c "
                    "under that removal (`oracle/...`: the corpus's own region of c).", "",
                    "| dataset · ranker | row | " + " | ".join(names) + " |",
                    "|---|---|" + "---|" * len(names)] + unit_rows
            unit_rows = []

    probe_rows = []
    for d, r in results_by_dataset.items():
        whose = [(m, r["models"][m].get("mask_probe", {})) for dd, m in cols if dd == d]
        whose.append(("(model-independent)", r.get("mask_probe", {})))
        for who, probes in whose:
            for name, p in (probes or {}).items():
                probe_rows.append(f"| {d} · {who} | {name} | {_fmt(p.get('auroc'))} | "
                                  f"{_fmt(p.get('removed_share'))} |")
    if probe_rows:
        out += ["", "## Mask-only label probe (chance 0.5)", "",
                "A logistic regression reads the labels from the removal mask alone (which "
                "tokens are removed), fitted on the validation split's masks, macro AUROC on the "
                "test split's masks. Well above 0.5: the mask tells the label (a masked view "
                "can learn the mask instead of the evidence; a per-record protocol picked from "
                "the record's own labels leaks them by construction). `masker/…`: the trained "
                "masker's own sampled masks (a masker that finds the evidence tells the label: "
                "this is its targeting); `masker_swapped/…`: the same masks with the share of "
                "records that training gives another record's mask (masker.swap_share) "
                "swapped, as the masked view sees them in training: the shortcut open to the "
                "encoder.", "",
                "| dataset · model | masker | probe AUROC | share removed |",
                "|---|---|---|---|"] + probe_rows

    def local_rows(r, d, m, names):
        for name, t in r.get("targeting_by_class", {}).items():
            if not name.startswith(("masker", "adversarial/whitebox/lead")):
                continue
            cells = []
            for c in names:
                v = t["classes"].get(c, {})
                cells.append(f"{_fmt(v.get('share'))} / {_fmt(v.get('chance'))}"
                             if v.get("n") else "–")
            yield (f"| {d} · {m} | {name} | {_fmt(t.get('lead_local_macro_lift'))} | "
                   + " | ".join(cells) + " |")

    local_tables = _per_dataset_tables(
        results_by_dataset, cols, "lead_local_classes",
        lambda names: ["dataset · model", "remover", "macro lift", *names], local_rows)
    if local_tables:
        out += ["", "## Targeting on the classes whose evidence is local to leads: share of "
                "removals inside the class's primary region / chance"] + local_tables

    def shift_rows(r, d, m, names):
        shift = r.get("oracle_shift")
        if shift:
            cells = [_fmt(shift["per_class"].get(c, {}).get("negatives")) for c in names]
            yield (f"| {d} · {m} | {_fmt(shift.get('negatives'))} | "
                   f"{_fmt(shift.get('positives'))} | " + " | ".join(cells) + " |")

    shift_tables = _per_dataset_tables(
        results_by_dataset, cols, "lead_local_classes",
        lambda names: ["dataset · model", "negatives (macro)", "positives (macro)",
                       *(f"{c} negatives" for c in names)], shift_rows)
    if shift_tables:
        out += ["", "## Mask shortcut in the encoder: score shift under the oracle's class-level "
                "removal", "",
                "For each class whose evidence is local to leads, its primary region removed "
                "from every test record (the `oracle/primary` row): the mean change of the "
                "class's zero-shot score on its negatives and on its positives, in standard "
                "deviations of its clean score. A rise on the negatives beyond what random-mask "
                "training shows: the encoder reads \"these leads are missing\" as the class "
                "(the shortcut a label-telling mask teaches); the drop on the positives: the "
                "evidence lost."] + shift_tables
    return out


def _plt():
    """matplotlib.pyplot with the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, dpi: int) -> None:
    """Write `fig` as PNG to `path` (local or gs://, through etils.epath) and close it."""
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    _plt().close(fig)


_RANDOM_KINDS = (("lead_drop", "leads dropped at random"), ("temporal", "a time span dropped"),
                 ("joint", "leads and a time span dropped"))
_UNIT_KINDS = (("random", "", "random {unit}s"), ("adversarial", "whitebox", "white-box {unit}s"),
               ("adversarial", "transfer", "transfer {unit}s"))
_UNITS = ("lead", "segment", "token")


def removal_kinds(conditions: list[Mapping[str, Any]]) -> list[list[tuple[str, str, str, str]]]:
    """Rows of (title, family, mode, unit) panels for the conditions present: the random
    missingness protocols, then per unit the random removal and the adversaries (same budget)."""
    present = {(c["family"], c.get("mode", ""), c.get("unit", "")) for c in conditions}
    rows = [[(title, fam, "", "") for fam, title in _RANDOM_KINDS if (fam, "", "") in present]]
    for unit in [u for u in _UNITS if any(k[2] == u for k in present)]:
        rows.append([(title.format(unit=unit), fam, mode, unit) for fam, mode, title in _UNIT_KINDS
                     if (fam, mode, unit) in present])
    return [r for r in rows if r]


def plot_auroc_vs_missing(results: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Zero-shot AUROC vs share removed as small multiples: one panel per removal kind (a row
    of random missingness, a row per unit: random removal and the adversaries at the same
    budget), one line per model in the same color everywhere; AUROC axis shared by all
    panels, the share-removed axis by each row."""
    plt = _plt()
    conditions = results["conditions"]
    rows = removal_kinds(conditions)
    ncols = max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(max(len(rows), 1), ncols, figsize=(3.6 * ncols, 2.9 * len(rows) + 0.8),
                             sharex="row", sharey=True, squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.set_visible(False)
    models = list(results["models"].items())
    for r, row in enumerate(rows):
        for col, (title, family, mode, unit) in enumerate(row):
            ax = axes[r, col]
            ax.set_visible(True)
            for mi, (model, res) in enumerate(models):
                pts = sorted((c["rate"], res["zeroshot"][c["name"]]["auroc"]) for c in conditions
                             if (c["family"], c.get("mode", ""), c.get("unit", ""))
                             == (family, mode, unit) and c["name"] in res["zeroshot"])  # fmt: skip
                xs, ys = zip(*([(0.0, res["zeroshot"]["clean"]["auroc"])] + pts))
                ax.plot(xs, ys, "-o", color=_COLORS[mi % len(_COLORS)], label=model, ms=3.5)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            ax.tick_params(labelbottom=True, labelleft=col == 0)
            if col == 0:
                ax.set_ylabel("zero-shot macro AUROC", fontsize=9)
            if r == len(rows) - 1 or r + 1 < len(rows) and col >= len(rows[r + 1]):
                ax.set_xlabel("share removed", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
                   bbox_to_anchor=(0.5, 1.0))  # fmt: skip
    else:
        axes[0, 0].set_visible(True)
        axes[0, 0].text(0.5, 0.5, "no missingness conditions", ha="center",
                        transform=axes[0, 0].transAxes)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    _save(fig, path, dpi=110)


def plot_cmrs_vs_rho(results: Mapping[str, Any], path: str | os.PathLike) -> None:
    """CMRS_rho vs rho: one line per model and adversary."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    styles = {"lead": "-", "segment": "--", "token": ":"}
    for mi, (model, res) in enumerate(results["models"].items()):
        for adv, c in res.get("cmrs", {}).items():
            mode, unit = adv.split("/")
            xs = [float(r) for r in c["by_rho"]]
            ys = [np.nan if v is None else v for v in c["by_rho"].values()]
            ax.plot(xs, ys, styles.get(unit, "-"), marker="o" if mode == "whitebox" else "s",
                    color=_COLORS[mi % len(_COLORS)], label=f"{model}: {adv}", ms=4)
    ax.set_xlabel("removal budget ρ (share of observed units)")
    ax.set_ylabel("CMRS_ρ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Margin kept under primary-evidence removal")
    fig.tight_layout()
    _save(fig, path, dpi=110)


def plot_traces(traces: Mapping[str, Any], path: str | os.PathLike, key: str | None = None,
                patch_size: int = 100, sample_rate: float = 500.0) -> str | None:
    """12-lead traces of a few examples; tokens removed under `key` shaded red, primary outlined.

    Returns the condition key drawn (None when there is nothing to draw).
    """
    ex = np.asarray(traces.get("examples", []))
    keeps = traces.get("keeps", {})
    if not len(ex) or not keeps:
        return None
    if key is None:
        cands = [k for k in keeps if "adversarial" in k] or list(keeps)
        # the first model's white-box token removal when there is one (dicts keep order)
        key = next((k for k in cands if "token" in k and "whitebox" in k), cands[0])
    keep = np.asarray(keeps[key], bool)
    observed = np.asarray(traces["observed"], bool)
    primary = traces.get("primary")
    plt = _plt()
    n = len(ex)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 7.5), squeeze=False)
    t = np.arange(ex.shape[1]) / sample_rate
    seg = patch_size / sample_rate
    for i, ax in enumerate(axes[0]):
        x = ex[i]
        span = np.nanmax(np.abs(x - np.nanmedian(x, 0))) or 1.0
        for lead in range(NUM_LEADS):
            off = -lead
            if not observed[i, lead].any():
                ax.text(0.0, off, "absent", fontsize=7, color="grey", va="center")
                continue
            for s in range(keep.shape[-1]):
                if observed[i, lead, s] and not keep[i, lead, s]:
                    ax.add_patch(plt.Rectangle((s * seg, off - 0.5), seg, 1.0, color="#d62728",
                                               alpha=0.28, lw=0))
                if primary is not None and primary[i, lead, s]:
                    ax.add_patch(plt.Rectangle((s * seg, off - 0.5), seg, 1.0, fill=False,
                                               ec="#1f77b4", lw=0.8))
            y = (x[:, lead] - np.median(x[:, lead])) / span * 0.45 + off
            ax.plot(t, y, color="black", lw=0.6)
        ax.set_yticks(-np.arange(12), LEAD_NAMES)
        ax.set_ylim(-11.7, 0.7)
        ax.set_xlim(0, t[-1])
        ax.set_xlabel("seconds")
        ax.set_title(f"example {i}: removed = red" + (", primary = blue box" if primary is not None
                                                     else ""), fontsize=9)
    fig.suptitle(key, fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi=100)
    return key


def write(
    out_dir: str | os.PathLike,
    results_by_dataset: Mapping[str, Mapping[str, Any]],
    plots_by_dataset: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    patch_size: int = 100,
    sample_rate: float = 500.0,
) -> dict[str, str]:
    """Write results.json, results.md and the PNGs into out_dir -> {what: path}."""
    out = epath.Path(out_dir)  # a local folder or gs://bucket/... (pathlib mangles URLs)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "results.json"), "markdown": str(out / "results.md")}
    (out / "results.json").write_text(json.dumps(_jsonable(results_by_dataset), indent=1))
    clean = json.loads(json.dumps(_jsonable(results_by_dataset)))  # NaN -> None, tuples -> lists
    (out / "results.md").write_text(markdown(clean))
    for d, res in clean.items():
        tag = "" if len(clean) == 1 else f"_{d.replace('/', '-')}"
        p = out / f"auroc_vs_missing{tag}.png"
        plot_auroc_vs_missing(res, p)
        files[f"auroc_vs_missing{tag}"] = str(p)
        if any(r.get("cmrs") for r in res["models"].values()):
            p = out / f"cmrs_vs_rho{tag}.png"
            plot_cmrs_vs_rho(res, p)
            files[f"cmrs_vs_rho{tag}"] = str(p)
        if plots_by_dataset and d in plots_by_dataset:
            p = out / f"traces{tag}.png"
            if plot_traces(plots_by_dataset[d]["traces"], p, patch_size=patch_size,
                           sample_rate=sample_rate):
                files[f"traces{tag}"] = str(p)
    logging.info("evaluation report written to %s", out)
    return files


def merge(result_files: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, str]:
    """Combine several results.json (e.g. one per dataset) into one report in out_dir."""
    merged: dict[str, Any] = {}
    for f in result_files:
        for name, res in json.loads(epath.Path(f).read_text()).items():
            if name in merged:
                raise ValueError(f"Dataset {name!r} appears in more than one of {result_files}.")
            merged[name] = res
    return write(out_dir, merged)
