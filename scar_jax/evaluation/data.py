"""A split in memory for the evaluation grid: `EvalData` and `load_split`, which reads a built
dataset's split through the eval pipeline with its labels, prompts, report tokens and the
evidence regions (scar_jax.evaluation.regions) the oracle rows and targeting need; plus the
per-batch helpers every stage of the grid shares (`observed_tokens`, `pad`).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
from absl import logging

from scar_jax.evaluation import regions as regions_lib
from scar_jax.evaluation import zeroshot
from scar_jax.models import ecg_encoder


@dataclasses.dataclass
class EvalData:
    """A split in memory: ecg [N, T, 12] float32, lead_observed [N, 12], labels [N, K].

    Optional: time_observed [N, T] bool; evidence_primary / evidence_secondary
    [N, nbins, 12] bool (per record, 0.1 s bins; masker / adversary targeting);
    class_primary / class_secondary [K, nbins, 12] or [K, N, nbins, 12] bool (class c's
    region, for the oracle protocols); report_tokens {input_ids, attention_mask} [N, L];
    ids [N] str: the source record ids (load_split(ids=True); splits by published id lists).
    """

    ecg: np.ndarray
    lead_observed: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    prompts: list[tuple[str, ...]]  # each class's phrasings
    time_observed: np.ndarray | None = None
    evidence_primary: np.ndarray | None = None
    evidence_secondary: np.ndarray | None = None
    class_primary: np.ndarray | None = None
    class_secondary: np.ndarray | None = None
    report_tokens: dict[str, np.ndarray] | None = None
    sample_rate: float = 500.0
    bin_seconds: float = 0.1
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ecg.shape[0])


def observed_tokens(data: EvalData, sl: slice, patch_size: int) -> np.ndarray:
    """Observed token grid [b, 12, S] of the examples in `sl`."""
    to = None if data.time_observed is None else data.time_observed[sl]
    return np.asarray(
        ecg_encoder.token_observed(data.lead_observed[sl], data.ecg.shape[1], patch_size, to)
    )


def pad(x: np.ndarray, n: int) -> np.ndarray:
    """Pad axis 0 of x to n rows with zeros."""
    if x.shape[0] == n:
        return x
    return np.concatenate([x, np.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)])


def head(data: EvalData, n: int) -> EvalData:
    """The first n records of a split (n = 0: all); class regions are dropped (not needed)."""
    if not n or n >= len(data):
        return dataclasses.replace(data, class_primary=None, class_secondary=None)
    return take(data, np.arange(n))


def take(data: EvalData, rows: np.ndarray) -> EvalData:
    """The records `rows` (indices, in that order) of a split; class regions are dropped."""
    rows = np.asarray(rows, np.int64)
    cut = lambda x: None if x is None else x[rows]  # noqa: E731
    return dataclasses.replace(
        data, ecg=data.ecg[rows], lead_observed=data.lead_observed[rows],
        labels=data.labels[rows], time_observed=cut(data.time_observed),
        evidence_primary=cut(data.evidence_primary),
        evidence_secondary=cut(data.evidence_secondary), class_primary=None,
        class_secondary=None, ids=cut(data.ids),
        report_tokens=None if data.report_tokens is None else {
            k: v[rows] for k, v in data.report_tokens.items()})


def concat(parts: list[EvalData]) -> EvalData:
    """Splits of one dataset (same classes) as one, in order; class regions are dropped."""
    first = parts[0]
    if any(p.class_names != first.class_names for p in parts):
        raise ValueError("concat: the splits have different classes.")
    join = lambda k: (None if any(getattr(p, k) is None for p in parts)  # noqa: E731
                      else np.concatenate([getattr(p, k) for p in parts]))
    tokens = None
    if all(p.report_tokens is not None for p in parts):
        tokens = {k: np.concatenate([p.report_tokens[k] for p in parts])
                  for k in first.report_tokens}
    return dataclasses.replace(
        first, ecg=join("ecg"), lead_observed=join("lead_observed"), labels=join("labels"),
        time_observed=join("time_observed"), evidence_primary=join("evidence_primary"),
        evidence_secondary=join("evidence_secondary"), class_primary=None,
        class_secondary=None, ids=join("ids"), report_tokens=tokens)


def _id(value) -> str:
    """A stored record id (bytes or str) -> str."""
    return value.decode() if isinstance(value, bytes) else str(value)


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
    ids: bool = False,
) -> EvalData:
    """A built dataset's split through the eval pipeline (no shuffle, no augmentation).

    label_set: PTB-XL's superdiagnostic | subdiagnostic | form | rhythm (the builder's
    `labels_<set>` features); default the dataset's own `labels`. A record with no label in
    the set is left out of it (the benchmark's rule: PTB-XL form has about a third of the
    records). evidence: also read the evidence regions where the corpus has them (the oracle
    and targeting need them; the linear probe's splits do not). ids: also read each record's
    source id (`EvalData.ids`).
    """
    from scar_jax.data import labels as labels_lib
    from scar_jax.data import names as names_lib
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
        labelled = labels.any(1)
        if not labelled.all():
            logging.info("%s %s: %d of %d records have no %s label and are left out", dataset,
                         split, int((~labelled).sum()), len(labels), label_set)
            arrays = {k: v[labelled] for k, v in arrays.items()}
            labels = labels[labelled]
    corpus = names_lib.parse(dataset).builder
    data = EvalData(
        ecg=arrays["ecg"].astype(np.float32),
        lead_observed=arrays["lead_observed"].astype(bool),
        labels=labels,
        class_names=classes,
        prompts=labels_lib.class_prompts(
            corpus if not label_set else f"{corpus}/{label_set}", classes),
        time_observed=arrays["time_observed"].astype(bool),
        sample_rate=float(inp.sample_rate),
        bin_seconds=float(meta.get("evidence_bin_s", 0.1)),
    )
    if ids:
        data.ids = np.array([_id(source[int(i)]["id"]) for i in arrays["index"]], dtype=object)
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
            setattr(data, f"class_{region}", regions_lib.oracle_regions(
                meta, classes, region, data.labels, ev.get(f"evidence_time_{region}"), nbins,
                int(config.eval.seed)))
    if text_checkpoint is not None:
        texts = [r.decode() if isinstance(r, bytes) else str(r) for r in arrays["report"]]
        data.report_tokens = zeroshot.tokenize_prompts(
            text_checkpoint, texts, int(config.model.txt.max_len))
    logging.info("eval data %s %s: %d records, %d classes", dataset, split, len(data),
                 len(classes))
    return data
