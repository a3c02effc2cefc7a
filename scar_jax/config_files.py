"""Config files: loaded by path, as `--config=configs/scar.py:arg` does, and their helpers.

The package never imports the top-level `configs/` folder as a module. Commands that need a
config file without a `--config` flag (the demo, the benchmarks) load it by path with
`load_module` / `load`; `CONFIGS_DIR` is the repository's `configs/` folder. A config file
that builds on another one loads it the same way (configs/demo.py loads configs/scar.py).
The helpers below parse a config's structural `arg` ('variant=mu,runlocal') and set
dotted leaves; every config file uses them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import sys
import types
from typing import Any, Mapping

import ml_collections

CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_module(path: str | os.PathLike) -> types.ModuleType:
    """The config file at `path` imported as a module (once per file; a missing file is named)."""
    file = pathlib.Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(
            f"No config file {os.fspath(path)!r}; pass a config file such as {CONFIGS_DIR}/scar.py."
        )
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:8]
    name = f"_scar_config_{file.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load(spec: str) -> ml_collections.ConfigDict:
    """'path/to/config.py[:arg]' -> the file's get_config(arg), as --config=<spec> gives it."""
    path, sep, arg = str(spec).partition(":")
    module = load_module(path)
    return module.get_config(arg) if sep else module.get_config()


def load_family(family: str, arg: str = "") -> ml_collections.ConfigDict:
    """The repository's configs/<family>.py for `arg` (the benchmarks' configs)."""
    return load(f"{CONFIGS_DIR / (family + '.py')}:{arg}")


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
