"""Helpers shared by every config: typed parsing of the structural `arg`, runlocal shrinking."""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _convert(key: str, text: str, default: Any) -> Any:
    """Parse `text` to the type of `default` (bool, int, float or str)."""
    if isinstance(default, bool):
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(
            f"Config arg {key}={text!r}: expected a boolean ({'/'.join(_TRUE)} or "
            f"{'/'.join(_FALSE)})."
        )
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"Config arg {key}={text!r}: expected {type(default).__name__}.") from None


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
    """'variant=mu,runlocal' -> ConfigDict typed by the defaults in `spec`.

    A bare key sets a boolean to True. Unknown keys and values of the wrong type
    fail with a message naming them and the known keys.
    """
    shadowed = [k for k in spec if hasattr(ml_collections.ConfigDict, k)]
    if shadowed:
        raise ValueError(f"Config arg keys {shadowed} shadow ConfigDict methods; rename them.")
    out = dict(spec)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in spec:
            raise ValueError(
                f"Unknown key {key!r} in config arg {arg!r}; known keys: {', '.join(sorted(spec))}."
            )
        if not sep:
            if not isinstance(spec[key], bool):
                raise ValueError(f"Config arg {key!r} needs a value ({key}=...).")
            out[key] = True
        else:
            out[key] = _convert(key, value.strip(), spec[key])
    return ml_collections.ConfigDict(out)


def set_leaves(config: ml_collections.ConfigDict, leaves: Mapping[str, Any]) -> None:
    """Set dotted leaves ({'model.ecg.variant': 'mu'}); a key that does not exist fails."""
    for dotted, value in leaves.items():
        *path, leaf = dotted.split(".")
        node = config
        for part in path:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"Config has no field {dotted!r}.")
        node[leaf] = value


def choose(key: str, value: str, allowed: tuple[str, ...]) -> str:
    """`value` if it is one of `allowed`, else a ValueError naming the key and the choices."""
    if value not in allowed:
        raise ValueError(f"Config arg {key}={value!r}; expected one of {allowed}.")
    return value
