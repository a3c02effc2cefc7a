"""Class names and zero-shot prompts per dataset.

    labels.classes("synthetic_ecg")          # ('NORM', 'AMI', ...)
    labels.prompts("synthetic_ecg/250hz")    # {class: (phrasing, ...)}; the config part is optional
    labels.prompts("ptbxl/superdiagnostic")  # real corpora from scar_jax.data.real_labels
    labels.class_prompts("cpsc2018", ["AF"])  # [(phrasing, ...)] per class: eval and predict

A dataset name is parsed by scar_jax.data.names ('builder[/config][:version]') and looked
up by its full name, then without the version, then by its builder. The synthetic corpus is
registered from `scar_jax.data.synthetic.CLASS_INFO`; the real corpora come from
`scar_jax.data.real_labels`. For PTB-XL the part after '/' is a builder config
('ptbxl/500hz': the built dataset's own `labels`, the superdiagnostic set) or one of its
label sets ('ptbxl/rhythm').
Corpora whose classes are only known once built (Chapman-Shaoxing) are registered with
`register(name, classes, prompts)`, e.g. from `info.metadata["classes"]`.

Every class has one or more phrasings (a prompt ensemble): zero-shot scores a class by the
mean of its phrasings' embeddings (scar_jax.models.scar.class_embeddings), in eval and
predict alike; both read the phrasings through `class_prompts(dataset, classes)`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Mapping, Sequence

from scar_jax.data import names as names_lib

Phrasings = tuple[str, ...]
_REGISTRY: dict[str, tuple[tuple[str, ...], dict[str, Phrasings]]] = {}
# The label set of a real corpus's built `labels` feature (what 'ptbxl/500hz' scores).
_BUILT_LABEL_SET = {"ptbxl": "superdiagnostic"}


def as_phrasings(prompt: str | Sequence[str]) -> Phrasings:
    """A prompt (str) or its phrasings (a sequence of str) -> the non-empty phrasings."""
    items = (prompt,) if isinstance(prompt, str) else tuple(prompt or ())
    return tuple(str(p) for p in items if str(p).strip())


def register(
    dataset: str,
    classes: Sequence[str],
    prompts: Mapping[str, str | Sequence[str]],
    *,
    overwrite: bool = False,
) -> None:
    """Register a dataset's class names (in label order) and a prompt (or phrasings) per class."""
    classes = tuple(classes)
    missing = [c for c in classes if not as_phrasings(prompts.get(c))]
    if missing:
        raise ValueError(f"register({dataset!r}): no prompt for classes {missing}.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"register({dataset!r}): repeated class names in {classes}.")
    if dataset in _REGISTRY and not overwrite and _REGISTRY[dataset][0] != classes:
        raise ValueError(
            f"Dataset {dataset!r} is already registered with other classes; pass overwrite=True "
            "to replace it."
        )
    _REGISTRY[dataset] = (classes, {c: as_phrasings(prompts[c]) for c in classes})


def _register_synthetic() -> None:
    synthetic = importlib.import_module("scar_jax.data.synthetic")
    register(
        "synthetic_ecg",
        synthetic.CLASSES,
        {c.name: c.prompts for c in synthetic.CLASS_INFO},
        overwrite=True,
    )


def _from_real_labels(dataset: str) -> tuple[tuple[str, ...], dict[str, Phrasings]] | None:
    """Classes and prompts of a real corpus from scar_jax.data.real_labels, if it knows it."""
    try:
        real = importlib.import_module("scar_jax.data.real_labels")
    except ModuleNotFoundError as e:
        if e.name == "scar_jax.data.real_labels":
            return None
        raise
    parsed = names_lib.parse(dataset)
    corpus = parsed.builder
    sets = real.PTBXL_LABEL_SETS if corpus == "ptbxl" else {}
    label_set = parsed.config if parsed.config in sets else _BUILT_LABEL_SET.get(corpus)
    if corpus not in getattr(real, "PROMPTS", {}):
        return None
    try:
        names = real.classes(corpus, label_set)
    except ValueError:
        return None
    return tuple(names), {c: as_phrasings(real.prompts(corpus, c, fallback=c)) for c in names}


def _lookup(dataset: str) -> tuple[tuple[str, ...], dict[str, Phrasings]]:
    if "synthetic_ecg" not in _REGISTRY:
        _register_synthetic()
    if dataset in _REGISTRY:
        return _REGISTRY[dataset]
    parsed = names_lib.parse(dataset)
    for key in (str(dataclasses.replace(parsed, version=None)), parsed.builder):
        if key in _REGISTRY:
            return _REGISTRY[key]
    found = _from_real_labels(dataset)
    if found is not None:
        return found
    raise KeyError(
        f"No class list for dataset {dataset!r}; known: {sorted(_REGISTRY)} and the real corpora "
        "of scar_jax/data/real_labels.py (ptbxl/<label set>, cpsc2018). Register it with "
        "scar_jax.data.labels.register(name, classes, prompts)."
    )


def classes(dataset: str) -> tuple[str, ...]:
    """Class names of `dataset`, in the order of its multi-hot `labels`."""
    return _lookup(dataset)[0]


def prompts(dataset: str) -> dict[str, Phrasings]:
    """{class name: its zero-shot phrasings} of `dataset`, in class order."""
    return dict(_lookup(dataset)[1])


def class_prompts(dataset: str, classes: Sequence[str] | None = None) -> list[Phrasings]:
    """The zero-shot phrasings of every class, in the order of `classes` (default: the
    dataset's own, `classes(dataset)`): the one prompt lookup of eval, predict and diagnostics.

    Read from the registry (`prompts(dataset)`); a class it lacks (a label set read from a
    built dataset's metadata) falls back to real_labels' curated table of the corpus; a class
    with no prompt at all fails with a message naming it.
    """
    if classes is None:
        classes = _lookup(dataset)[0]
    try:
        table = prompts(dataset)
    except KeyError:
        table = {}
    out, missing = [], []
    for c in classes:
        p = table.get(c)
        if p is None:
            real = importlib.import_module("scar_jax.data.real_labels")
            try:
                p = as_phrasings(real.prompts(names_lib.parse(dataset).builder, c))
            except KeyError:
                missing.append(c)
        out.append(p)
    if missing:
        raise KeyError(
            f"No prompt for classes {missing} of {dataset}; add them to "
            "scar_jax/data/real_labels.py PROMPTS or register them in scar_jax/data/labels.py."
        )
    return out


def registered() -> tuple[str, ...]:
    """Datasets registered so far (the real corpora of real_labels are looked up on demand)."""
    if "synthetic_ecg" not in _REGISTRY:
        _register_synthetic()
    return tuple(sorted(_REGISTRY))
