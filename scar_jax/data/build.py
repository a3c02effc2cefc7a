"""Build a TFDS corpus of scar_jax.data.builders as ArrayRecord (no TensorFlow needed).

    from scar_jax.data import build
    info = build.build_dataset("synthetic_ecg/250hz", data_dir="/data/tfds")
    info = build.build_dataset("ptbxl/500hz", data_dir=..., manual_dir="/data/ptb-xl-1.0.3")

`name` is "<builder>/<config>[:version]" (scar_jax.data.names); the builder module under
scar_jax/data/builders/<builder>/ is imported so it is registered. `config_kwargs` derive a
new builder config from the named one (e.g. {"num_train": 500}); it gets its own name (given
as config_kwargs["name"] or made from the overrides) so it never overwrites the standard
config's files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import inspect
import time
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

from scar_jax.data import names


def builder_class(builder_name: str) -> type[tfds.core.DatasetBuilder]:
    """Import scar_jax.data.builders.<name> and return its registered TFDS builder class.

    An unknown name is a names.UnknownDatasetError listing the builders that exist."""
    names.check_builder(builder_name)
    module_name = f"scar_jax.data.builders.{builder_name}.{builder_name}_dataset_builder"
    module = importlib.import_module(module_name)
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, tfds.core.DatasetBuilder) and c.__module__ == module.__name__
    ]
    if len(classes) != 1:
        raise ValueError(f"{module_name} defines {len(classes)} TFDS builders; expected one.")
    return classes[0]


def _derived_config(cls, base_name: str, overrides: dict[str, Any]) -> tfds.core.BuilderConfig:
    """The named config of `cls` with dataclass fields replaced (and a new name)."""
    base = cls.builder_configs.get(base_name)
    if base is None:
        raise ValueError(
            f"{cls.name} has no config {base_name!r}; its configs are {list(cls.builder_configs)}."
        )
    if not dataclasses.is_dataclass(base):
        raise ValueError(f"{cls.name} configs are not dataclasses; config_kwargs cannot apply.")
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"config_kwargs {unknown} are not fields of {cls.name}/{base_name}; "
            f"valid fields: {sorted(fields - {'name', 'version', 'release_notes'})}."
        )
    overrides = dict(overrides)
    name = overrides.pop("name", None) or "_".join(
        [base_name] + [f"{k}{v}".replace(".", "p") for k, v in sorted(overrides.items())]
    )
    return dataclasses.replace(base, name=name, **overrides)


def build_dataset(
    name: str,
    *,
    data_dir: str,
    manual_dir: str | None = None,
    config_kwargs: dict | None = None,
    strict: bool = False,
) -> tfds.core.DatasetInfo:
    """Build `name` ("<builder>/<config>") into data_dir as ArrayRecord; returns its info.

    manual_dir: the local copy of a corpus that cannot be downloaded (real corpora).
    strict: builders that accept it stop at the first broken record instead of skipping it.
    Already-built datasets are reused (TFDS's REUSE_DATASET_IF_EXISTS).
    """
    parsed = names.parse(name)
    builder_name, config_name = parsed.builder, parsed.config
    cls = builder_class(builder_name)
    kwargs: dict[str, Any] = {"data_dir": data_dir, "file_format": "array_record"}
    if parsed.version and parsed.version != str(cls.VERSION):
        raise ValueError(
            f"{name}: this code builds only version {cls.VERSION} of {builder_name} (older "
            f"versions stored the ECG as int64 lists and no report tables, and are not read); "
            f"drop ':{parsed.version}' from the name."
        )
    if config_kwargs:
        base = config_name or cls.DEFAULT_CONFIG_NAME or (cls.BUILDER_CONFIGS[0].name)
        kwargs["config"] = _derived_config(cls, base, config_kwargs)
    elif config_name:
        kwargs["config"] = config_name
    if "strict" in inspect.signature(cls.__init__).parameters:
        kwargs["strict"] = strict
    elif strict:
        logging.warning("%s does not take strict; ignoring strict=True.", builder_name)
    builder = cls(**kwargs)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    logging.info("Building %s into %s", builder.info.full_name, builder.data_dir)
    start = time.time()
    # TFDS prints 'Downloading and preparing dataset Unknown size ...' to stdout; this log's
    # own lines say what is built, where, and what came of it (--verbosity=1 keeps TFDS's).
    quiet = logging.get_verbosity() < 1
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        builder.download_and_prepare(file_format="array_record", download_config=download_config)
    info = builder.info
    counts = {s: info.splits[s].num_examples for s in info.splits}
    logging.info(
        "Built %s in %.1f s: %s examples, %.1f MiB at %s",
        info.full_name,
        time.time() - start,
        counts,
        info.dataset_size / 2**20,
        builder.data_dir,
    )
    return info
