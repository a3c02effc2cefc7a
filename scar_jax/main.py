r"""scar_jax command line: one entry point for every job.

  python -m scar_jax.main <command> [flags]

Commands:
  demo     the main job: build the synthetic corpus, pretrain SCAR, the MERL-style baseline
           and random-mask training (configs/demo.py), evaluate the missingness grid and
           write WORKDIR/report: --workdir=DIR [--demo_seeds=0,1,2] [--demo_arg=runlocal]
           [--config=configs/demo.py:ARG: another demo config file; default the repository's]
           [--demo_methods=scar --demo_arg=supervision=false: one ablation run]
           [--demo_workers=3: training runs at once, each in its own process]
           [--update_readme: put the report's tables into docs/RESULTS.md].
  smoke    one training update (the trainer's update_fn, past the masker's warm-up) of the
           model from --config on generated synthetic records (scar_jax/smoke.py); prints
           every view's shape, the mask ratio, each loss term and each player's gradient norm.
  build    build a TFDS dataset as ArrayRecord: --dataset=synthetic_ecg/250hz
           --data_dir=DIR [--manual_dir=LOCAL_COPY for the real corpora] [--strict].
  plot     one synthetic record per class with its evidence regions shaded: --out=FILE.png
           [--dataset=synthetic_ecg/500hz].
  train    pretrain (or resume) in --workdir with --config.
  eval     zero-shot / missingness / CMRS / linear-probe grid of --checkpoint (a training
           workdir or its checkpoints folder; several as name=path,name=path) on --dataset,
           written to --out.
  benchmark_table  the six-benchmark table (PTB-XL super/sub/form/rhythm, CPSC2018, CSN) of
           --checkpoint (one or several as name=path,...) on every benchmark built in
           --data_dir: linear probe at 1/10/100 % and zero-shot, next to MERL's published
           numbers, written to --out (benchmark_table.md/.json); [--splits_dir=MERL's
           finetune/data_split: their train/val/test CSVs, records assigned by id] [--grid:
           also the missingness grid] [--dataset=ptbxl/500hz,cpsc2018 --label_set=form: some].
  export   write the PyTorch export of --checkpoint to --out.
  predict  zero-shot scores of one WFDB or DICOM ECG file (--input) for --dataset's
           classes with --checkpoint's model (and the config saved with it; --verbose
           logs that config); prints the record's observed leads and the scores.

Leaves of the config are overridden with --config.<path>=<value>
(e.g. --config.model.masker.unit=lead); a misspelled path is an error.
Logs: the package's stages and progress at INFO; dependencies' INFO lines (orbax, TFDS,
JAX) only with --verbosity=1. A user's mistake ends in one line naming it (--verbosity=1
shows the traceback).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

COMMANDS = ("demo", "smoke", "build", "plot", "train", "eval", "benchmark_table", "export",
            "predict")
_NEEDS_CONFIG = ("smoke", "train", "eval", "benchmark_table")  # predict reads the checkpoint's own

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file and arg, e.g. configs/scar.py:variant=mu,runlocal.",
    lock_config=True,
)
_SEED = flags.DEFINE_integer("seed", None, "Overrides config.seed.")
_WORKDIR = flags.DEFINE_string("workdir", None, "train: run folder (checkpoints, metrics.jsonl).")
_DATASET = flags.DEFINE_string(
    "dataset", None,
    "build/plot/eval/predict: '<builder>[/<config>][:<version>]', e.g. synthetic_ecg/250hz; "
    "benchmark_table: a comma-separated list of them (default all six benchmarks)."
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Built TFDS datasets (default: config.input.data_dir, TFDS_DATA_DIR)."
)
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "build: local copy of a real corpus.")
_STRICT = flags.DEFINE_bool("strict", False, "build: stop at the first broken record.")
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 0, "build mimic_iv_ecg: number of shards (0: one unsharded build)."
)
_SHARD_INDEX = flags.DEFINE_list(
    "shard_index", [], "build mimic_iv_ecg: shard indices this worker builds (default: all)."
)
_MERGE_SHARDS = flags.DEFINE_bool(
    "merge_shards", False, "build mimic_iv_ecg: link the built shards into the default dataset."
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "eval/export/predict: a training workdir (local or gs://) or its checkpoints folder; eval "
    "takes several as name=path,name=path.",
)
_LABEL_SET = flags.DEFINE_string(
    "label_set", None, "eval: PTB-XL label set (superdiagnostic|subdiagnostic|form|rhythm); "
    "benchmark_table: a comma-separated list of them (default all four)."
)
_SPLIT = flags.DEFINE_string("split", None, "eval: split (default config.eval.split).")
_SPLITS_DIR = flags.DEFINE_string(
    "splits_dir", None,
    "benchmark_table: MERL's published split CSVs (their repository's finetune/data_split: "
    "ptbxl/<set>/ptbxl_<set>_{train,val,test}.csv, icbeb/..., chapman/...); records are "
    "assigned to splits by id (default: the builders' splits).")
_GRID = flags.DEFINE_bool(
    "grid", False, "benchmark_table: also run config.eval's missingness grid per benchmark.")
_OUT = flags.DEFINE_string(
    "out", None, "eval: output folder (local or gs://); export: local folder; plot: PNG file."
)
_INPUT = flags.DEFINE_string("input", None, "predict: a WFDB record (.hea) or a DICOM (.dcm).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "train on a cluster of your own: host:port of process 0 (or JAX_COORDINATOR_ADDRESS); "
    "TPU slices and SLURM need nothing.",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "train: with --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "train: with --coordinator_address.")
_DEMO_SEEDS = flags.DEFINE_list("demo_seeds", ["0"], "demo: training seeds (mean and spread).")
_DEMO_METHODS = flags.DEFINE_list(
    "demo_methods", ["scar", "merl", "random"], "demo: which methods to train and compare."
)
_DEMO_ARG = flags.DEFINE_string(
    "demo_arg", "", "demo: extra configs/demo.py arg keys, e.g. runlocal or unit=lead."
)
_DEMO_WORKERS = flags.DEFINE_integer(
    "demo_workers",
    3,
    "demo: training runs at once, each in its own process (1: one after another in this "
    "process); the results do not depend on it.",
    lower_bound=1,
)
_UPDATE_README = flags.DEFINE_bool(
    "update_readme", False,
    "demo: replace docs/RESULTS.md's generated results block with the report's tables."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "export: replace a previous export in --out.")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "predict: also log the model's config (other commands always log it)."
)


def _require(flag, command: str):
    """The flag's value; a clear usage error when it is missing."""
    if not flag.value:
        raise app.UsageError(f"'{command}' needs --{flag.name}.")
    return flag.value


def parse_checkpoints(value: str) -> dict[str, str]:
    """'path' -> {'model': path}; 'scar=a,merl=b' -> {'scar': 'a', 'merl': 'b'}."""
    out = {}
    for i, item in enumerate(v for v in value.split(",") if v):
        name, sep, path = item.partition("=")
        if not sep:
            name, path = ("model" if i == 0 else f"model{i}"), item
        if name in out:
            raise app.UsageError(f"--checkpoint names {name!r} twice.")
        out[name] = path
    return out


# A user's mistake (a dataset that does not exist or is not built, an empty checkpoint
# folder, a bad input file) ends in one line naming it; --verbosity=1 shows the traceback.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError)


def main(argv):
    from scar_jax import logs

    logs.quiet_libraries()
    try:
        run_command(argv)
    except app.UsageError as e:
        sys.exit(f"{e}  (--help lists the commands and flags)")
    except USER_ERRORS as e:
        if logging.get_verbosity() >= 1:
            raise
        sys.exit(f"{argv[1]}: {_innermost_message(e)}")


def run_command(argv):
    """Dispatches argv[1] to the module that does the work."""
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"Usage: python -m scar_jax.main <{'|'.join(COMMANDS)}> [flags]  (got {argv[1:]})"
        )
    command = argv[1]
    config = None
    try:
        config = _CONFIG.value
    except (AttributeError, KeyError, ValueError, TypeError) as e:
        raise app.UsageError(f"Bad --config: {_innermost_message(e)}") from None
    if config is None and command in _NEEDS_CONFIG:
        raise app.UsageError(
            f"'{command}' needs --config, e.g. --config=configs/scar.py:runlocal"
        )
    if config is not None:
        if _SEED.value is not None:
            config.seed = _SEED.value
        if _DATA_DIR.value:
            config.input.data_dir = _DATA_DIR.value
        if command != "predict" or _VERBOSE.value:
            logging.info("config:\n%s", config)

    if command == "demo":
        from scar_jax import demo

        workdir = _require(_WORKDIR, command)
        seeds = [int(s) for s in _DEMO_SEEDS.value]
        config_file, demo_arg = demo_config_file(config), _DEMO_ARG.value
        if config_file:  # --config=configs/demo.py:arg: its arg joins --demo_arg
            config_file, _, file_arg = config_file.partition(":")
            demo_arg = ",".join(a for a in (file_arg, demo_arg) if a)
        try:
            methods = demo.check_methods(_DEMO_METHODS.value, config_file)
        except ValueError as e:
            raise app.UsageError(f"--demo_methods: {e}") from None
        demo.run_demo(
            workdir, seeds=seeds, methods=methods, arg=demo_arg, workers=_DEMO_WORKERS.value,
            config_file=config_file,
        )
        report = os.path.join(workdir, "report", "results.md" if len(seeds) == 1 else "seeds.md")
        print(f"Demo report: {report}")
        if _UPDATE_README.value:
            demo.update_results(os.path.join(workdir, "report"), seeds)
    elif command == "smoke":
        from scar_jax import smoke

        print(smoke.format_report(smoke.run(config)))
    elif command == "build":
        from scar_jax.data import build

        data_dir = _DATA_DIR.value or (config.input.data_dir if config else None)
        data_dir = data_dir or _default_data_dir()
        dataset = _require(_DATASET, command)
        if _NUM_SHARDS.value:
            _build_mimic_shards(dataset, data_dir)
        else:
            build.build_dataset(
                dataset, data_dir=data_dir, manual_dir=_MANUAL_DIR.value, strict=_STRICT.value
            )
    elif command == "plot":
        from scar_jax.data import names, synthetic

        name = names.parse(_DATASET.value or "synthetic_ecg/500hz").config or "500hz"
        print(synthetic.plot_examples(_require(_OUT, command), config_name=name))
    elif command == "train":
        from scar_jax import train

        train.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        train.run(config, _require(_WORKDIR, command))
    elif command == "eval":
        from scar_jax.evaluation import run as eval_run

        results = eval_run.run_eval(
            config,
            parse_checkpoints(_require(_CHECKPOINT, command)),
            _DATASET.value,
            _SPLIT.value,
            _require(_OUT, command),
            label_set=_LABEL_SET.value,
        )
        print(f"Wrote {_OUT.value}/results.json, results.md and plots ({len(results)} entries).")
    elif command == "benchmark_table":
        from scar_jax.evaluation import benchmark_table

        table = benchmark_table.run(
            config,
            parse_checkpoints(_require(_CHECKPOINT, command)),
            _require(_OUT, command),
            datasets=_DATASET.value,
            label_sets=_LABEL_SET.value,
            splits_dir=_SPLITS_DIR.value,
            grid=_GRID.value,
        )
        print(f"Wrote {_OUT.value}/benchmark_table.md and .json ({len(table['benchmarks'])} "
              f"benchmarks evaluated, {len(table['skipped'])} skipped).")
    elif command == "export":
        try:
            from scar_jax.export import to_torch
        except ImportError as e:
            if e.name != "torch":
                raise
            sys.exit("export: needs PyTorch, which the base install leaves out; install the "
                     "torch extra: .venv/bin/pip install -e '.[torch]'")

        to_torch.run(
            _require(_CHECKPOINT, command), _require(_OUT, command), overwrite=_OVERWRITE.value
        )
        print(f"Exported to {_OUT.value}")
    elif command == "predict":
        from scar_jax import checkpointing, inference

        variables, saved = checkpointing.load_checkpoint(_require(_CHECKPOINT, command))
        if saved is not None and "model" in saved:
            config = ml_collections.ConfigDict(saved)
            if _VERBOSE.value:
                logging.info("the checkpoint's config:\n%s", config)
        elif config is None:
            raise app.UsageError(
                f"predict: {_CHECKPOINT.value} holds no config; pass the one it was trained "
                "with, e.g. --config=configs/scar.py:runlocal"
            )
        try:
            prediction = inference.predict(
                config,
                variables,
                _require(_INPUT, command),
                _DATASET.value or config.input.dataset,
            )
        except inference.UnreadableRecordError as e:
            sys.exit(f"predict: {e}")
        print(inference.format_prediction(prediction))


def demo_config_file(config) -> str | None:
    """demo: the --config file and arg ('configs/demo.py:runlocal'), None without --config.

    The demo builds one config per method and seed from the file, so --config.<key>
    overrides cannot apply; they are refused by name."""
    if config is None:
        return None
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    if overrides:
        raise app.UsageError(
            f"demo: --config overrides {sorted(overrides)} do not apply (the demo builds one "
            "config per method from the file); pass structural keys with --demo_arg."
        )
    return config_flags.get_config_filename(flags.FLAGS["config"])


def _build_mimic_shards(dataset: str, data_dir: str) -> None:
    """build --num_shards: MIMIC-IV-ECG's sharded generation (one worker's shards, or the merge)."""
    from scar_jax.data.builders.mimic_iv_ecg import mimic_iv_ecg_dataset_builder as mimic

    from scar_jax.data import names

    if names.parse(dataset).builder != "mimic_iv_ecg":
        raise app.UsageError(f"--num_shards is for mimic_iv_ecg only (got --dataset={dataset}).")
    if _MERGE_SHARDS.value:
        mimic.merge_shards(data_dir, _NUM_SHARDS.value)
        return
    mimic.build_sharded(
        _require(_MANUAL_DIR, "build --num_shards"),
        data_dir,
        _NUM_SHARDS.value,
        [int(i) for i in _SHARD_INDEX.value] or None,
        strict=_STRICT.value,
    )


def _default_data_dir() -> str:
    """TFDS_DATA_DIR or ~/tensorflow_datasets (TFDS's own default)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing; a bad config file, arg or override exits with its message."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
        sys.exit(f"FATAL flags error: {_innermost_message(e)}\nPass --helpfull for every flag.")


def _innermost_message(e: BaseException) -> str:
    """The message of the root cause of a chained or wrapped exception."""
    while True:
        if e.args and isinstance(e.args[0], BaseException):
            e = e.args[0]  # ml_collections wraps KeyErrors in AttributeErrors
        elif not isinstance(e, LookupError) and (e.__cause__ or e.__context__):
            e = e.__cause__ or e.__context__  # absl and ml_collections re-raise the config's error
        else:
            return str(e.args[0]) if e.args else str(e)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
