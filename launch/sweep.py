r"""Expand a config file's `sweep(add)` into one training command per entry.

  python launch/sweep.py configs/scar.py --arg=variant=tiny --workdir=/data/runs/ablations \
      [--launcher="launch/local.sh"] [--base_override=--config.total_steps=5000 ...]

prints (does not run) one command per entry; pipe it to a scheduler, `parallel` or a
shell. Each entry's workdir is <workdir>/<name>. With a launcher the command is
`<launcher> <config:arg> <workdir> <overrides>` (local.sh, tpu_pod.sh train, sbatch
slurm_gpu.sbatch), otherwise `python -m scar_jax.main train --config=... --workdir=...`.
A config without `sweep` is an error naming the file.
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any

from scar_jax import config_files


def load_config_module(path: str):
    """Import a config file by path (as --config=<path> does)."""
    try:
        return config_files.load_module(path)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None


def _name(arg: str, leaves: dict[str, Any]) -> str:
    """A workdir-safe name from the entry's arg and overrides."""
    parts = [arg] + [f"{k.split('.')[-1]}={v}" for k, v in leaves.items()]
    text = ",".join(p for p in parts if p) or "base"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text.replace(",", "_"))


def _format(value: Any) -> str:
    """A config override value as ml_collections' flag parser reads it."""
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_format(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def expand(
    config_path: str,
    *,
    base_arg: str = "",
    workdir: str,
    launcher: str = "",
    base_overrides: tuple[str, ...] = (),
) -> list[str]:
    """The shell commands of every `sweep(add)` entry of the config file at `config_path`."""
    module = load_config_module(config_path)
    if not hasattr(module, "sweep"):
        raise SystemExit(
            f"{config_path} defines no sweep(add); add one (see configs/scar.py) or run a "
            "single config with launch/local.sh."
        )
    commands, names = [], set()

    def add(arg: str = "", name: str | None = None, **leaves: Any) -> None:
        full_arg = ",".join(a for a in (base_arg, arg) if a)
        module.get_config(full_arg)  # a bad arg fails here, not on the cluster
        run_name = name or _name(arg, leaves)
        if run_name in names:
            raise SystemExit(f"Two sweep entries are named {run_name!r}; give them names.")
        names.add(run_name)
        config = f"{config_path}:{full_arg}" if full_arg else config_path
        run_dir = f"{workdir.rstrip('/')}/{run_name}"
        overrides = list(base_overrides) + [f"--config.{k}={_format(v)}" for k, v in leaves.items()]
        if launcher:
            words = shlex.split(launcher) + [config, run_dir] + overrides
        else:
            words = [
                "python", "-m", "scar_jax.main", "train",
                f"--config={config}", f"--workdir={run_dir}", *overrides,
            ]  # fmt: skip
        commands.append(shlex.join(words))

    module.sweep(add)
    return commands


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="config file, e.g. configs/scar.py")
    parser.add_argument("--arg", default="", help="base config arg, e.g. variant=tiny")
    parser.add_argument("--workdir", required=True, help="root folder; one subfolder per run")
    parser.add_argument("--launcher", default="", help="e.g. 'launch/local.sh' or 'sbatch ...'")
    parser.add_argument(
        "--base_override", action="append", default=[], help="--config.<leaf>=<value> for all"
    )
    args = parser.parse_args(argv)
    for command in expand(
        args.config,
        base_arg=args.arg,
        workdir=args.workdir,
        launcher=args.launcher,
        base_overrides=tuple(args.base_override),
    ):
        print(command)


if __name__ == "__main__":
    main()
