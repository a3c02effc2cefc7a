"""Parameter-path regexes (freezing, per-player selection) for optax transforms."""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import optax


def path_str(path: tuple[Any, ...]) -> str:
    """A key path as 'txt/bert/encoder/layer_0/...'."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def param_paths(params: Any) -> list[str]:
    """Every leaf's '/'-joined path, in tree order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]


def regex_mask(params: Any, patterns: Sequence[str], *, strict: bool = True) -> Any:
    """Tree of bools: True where the leaf's path matches any of `patterns` (re.search).

    With `strict`, a pattern that matches no parameter fails: a typo would
    otherwise silently freeze nothing.
    """
    compiled = [re.compile(p) for p in patterns]
    hits = {p.pattern: 0 for p in compiled}

    def match(path, _):
        s = path_str(path)
        found = False
        for c in compiled:
            if c.search(s):
                hits[c.pattern] += 1
                found = True
        return found

    mask = jax.tree_util.tree_map_with_path(match, params)
    unused = [p for p, n in hits.items() if n == 0]
    if strict and unused:
        raise ValueError(
            f"Regex(es) {unused} match no parameter path; paths look like "
            f"{param_paths(params)[:3]}."
        )
    return mask


def freeze(
    tx: optax.GradientTransformation, params: Any, patterns: Sequence[str]
) -> optax.GradientTransformation:
    """`tx` for parameters not matching `patterns`; matching ones get zero updates (no state)."""
    if not patterns:
        return tx
    frozen = regex_mask(params, patterns)
    labels = jax.tree.map(lambda f: "frozen" if f else "train", frozen)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
