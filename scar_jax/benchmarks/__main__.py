r"""The benchmark suite (issue #9): one table, every row measured in this run.

  python -m scar_jax.benchmarks [--quick] [--out=benchmarks.json] [--rows=1,2,3,4,5,6]
      [--workdir=DIR] [--reps=N] [--no_torch_compile] [--update_docs]
  python -m scar_jax.benchmarks --accelerator [--quick] [--workdir=DIR] [--update_docs]

--rows with --update_docs replaces only those rows of the docs' table (each row's lines say
which run measured them); --scar_variant and --knobs shrink row 2 for a busy machine.

--accelerator (issue #23) instead times SCAR and MERL-style train steps at tiny and small
on one device (bf16, 600 ECG tokens, 64 text tokens, the largest batch that fits):
examples/s, MFU, peak memory, compile time, and writes a jax.profiler trace to
DIR/trace (open with `tensorboard --logdir DIR/trace` and its Profile tab, or load the
.trace.json.gz under DIR/trace/plugins/profile/*/ in https://ui.perfetto.dev); ~5 min on
one GPU. With --quick it runs the same code at mu size on CPU (~1-2 min); --update_docs
writes its table into docs/PERFORMANCE.md's accelerator block (scar_jax/benchmarks/
accelerator.py).

Rows: (1) train-step examples/s vs PyTorch eager and torch.compile (masker none), (2) SCAR
step / MERL-style step and the optimisation knobs, (3) input pipeline vs the step's demand
and vs wfdb, (4) evaluation grid cost, (5) FLOP/s utilisation vs the measured matmul peak,
(6) scaling with tokens and batch, peak memory. Prints the markdown table and writes the
entries (with every measured detail) as JSON to --out (rewritten after every row; a row
that fails is an entry with its error); --update_docs also writes the table into
docs/PERFORMANCE.md's generated block. A full run takes ~25 min on 2 busy CPU cores,
--quick ~5 min. See scar_jax/benchmarks/suite.py for the shapes of each mode.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

_QUICK = flags.DEFINE_bool("quick", False, "Small shapes (smallest model only, fewer repeats).")
_OUT = flags.DEFINE_string("out", "benchmarks.json", "JSON output (relative to --workdir).")
_WORKDIR = flags.DEFINE_string("workdir", ".", "Folder for --out and the temporary dataset.")
_ROWS = flags.DEFINE_list("rows", ["1", "2", "3", "4", "5", "6"], "Rows to run.")
_REPS = flags.DEFINE_integer("reps", 0, "Interleaved repeats of rows 2-6 (0: the mode's own; "
                             "row 2 uses reps - 1).")
_NO_COMPILE = flags.DEFINE_bool("no_torch_compile", False, "Skip the torch.compile timings.")
_UPDATE_DOCS = flags.DEFINE_bool(
    "update_docs", False, "Replace docs/PERFORMANCE.md's generated table with this run's."
)
_SCAR_VARIANT = flags.DEFINE_string(
    "scar_variant", "", "ECG variant of rows 2, 4, 5 ('': the mode's; e.g. tiny/4 on a busy "
    "machine).")
_KNOBS = flags.DEFINE_list(
    "knobs", [], f"Row 2: only these knobs (keys of suite.KNOB_KEYS; default: all in the full "
    "mode).")
_ACCELERATOR = flags.DEFINE_bool(
    "accelerator", False, "Run the one-device accelerator benchmark instead of the suite "
    "(with --quick: at mu size, for CPU).")


def accelerator_main(command: str) -> None:
    """--accelerator: times the steps, prints the table, writes JSON and the trace."""
    from scar_jax.benchmarks import accelerator

    mode = accelerator.QUICK if _QUICK.value else accelerator.ACCELERATOR
    os.makedirs(_WORKDIR.value, exist_ok=True)
    out = os.path.join(_WORKDIR.value, _OUT.value)
    result = accelerator.run(mode, trace_dir=os.path.join(_WORKDIR.value, "trace"))
    result["command"] = command
    with open(out, "w") as f:
        json.dump(result, f, indent=1, default=float)
    table = accelerator.format_table(result)
    print(table)
    logging.info("wrote %s and the trace under %s (%.0f s)", out, result["trace_dir"],
                 result["seconds"])
    if _UPDATE_DOCS.value:
        from scar_jax import generated_docs

        generated_docs.replace_block(
            generated_docs.PERFORMANCE, generated_docs.ACCELERATOR_BEGIN,
            generated_docs.ACCELERATOR_END, f"`{command}`\n\n{table}",
        )


def main(argv: list[str]) -> None:
    """Runs the suite, prints the table, writes the JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import dataclasses

    from scar_jax.benchmarks import suite

    if _ACCELERATOR.value:
        accelerator_main("python -m scar_jax.benchmarks " + " ".join(sys.argv[1:]))
        return

    sizes = suite.QUICK if _QUICK.value else suite.FULL
    if _REPS.value:
        sizes = dataclasses.replace(sizes, reps=_REPS.value)
    if _NO_COMPILE.value:
        sizes = dataclasses.replace(sizes, torch_compile=False)
    if _SCAR_VARIANT.value:
        sizes = dataclasses.replace(sizes, scar_variant=_SCAR_VARIANT.value)
    if _KNOBS.value:
        unknown = set(_KNOBS.value) - set(suite.KNOB_KEYS)
        if unknown:
            raise app.UsageError(f"--knobs: {sorted(unknown)} unknown; known: "
                                 f"{sorted(suite.KNOB_KEYS)}.")
        sizes = dataclasses.replace(sizes, knobs=True, knob_keys=tuple(_KNOBS.value))
    try:
        rows = tuple(int(r) for r in _ROWS.value)
    except ValueError:
        raise app.UsageError(f"--rows={_ROWS.value}: expected integers in {suite.ROWS}.") from None
    os.makedirs(_WORKDIR.value, exist_ok=True)
    out = os.path.join(_WORKDIR.value, _OUT.value)
    command = "python -m scar_jax.benchmarks " + " ".join(sys.argv[1:])

    def save(result):
        result["command"] = command
        with open(out, "w") as f:
            json.dump(result, f, indent=1, default=float)

    result = suite.run(sizes, rows, _WORKDIR.value, on_row=save)
    table = suite.format_table(result)
    logging.info("wrote %s (%.0f s)", out, result["seconds"])
    m = result["machine"]
    where = (f"{m['processor'] or m['platform']}, {m['cpu_count']} cores, load average "
             f"{m['load_average_start']:.1f} -> {m['load_average_end']:.1f}; jax {m['jax']}, "
             f"torch {m['torch']}; {result['seconds']:.0f} s")
    print(where)
    print(table)
    if _UPDATE_DOCS.value:
        from scar_jax import generated_docs

        block = (generated_docs.PERFORMANCE, generated_docs.BENCHMARKS_BEGIN,
                 generated_docs.BENCHMARKS_END)
        body = f"`{command}`\n\n{where}\n\n{table}"
        if set(rows) != set(suite.ROWS):  # the other rows keep their run's lines
            body = suite.merge_rows(generated_docs.read_block(*block), rows, body)
        generated_docs.replace_block(*block, body)


if __name__ == "__main__":
    app.run(main)
