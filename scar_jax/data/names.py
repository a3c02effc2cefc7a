"""Dataset names, parsed in one place: `builder[/config][:version]` (TFDS's spelling).

    parse("synthetic_ecg")              DatasetName('synthetic_ecg', None, None)
    parse("synthetic_ecg/100hz")        a builder config
    parse("ptbxl/500hz:1.0.0")          a builder config at a version
    parse("ptbxl/superdiagnostic")      labels only: for PTB-XL the part after '/' may name
                                        one of its label sets instead (scar_jax.data.labels)

`builder` is a folder of scar_jax/data/builders (`builders()` lists them); an unknown one
fails with `UnknownDatasetError`, whose message lists the builders that exist.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

BUILDERS_DIR = pathlib.Path(__file__).resolve().parent / "builders"
_BUILDER = re.compile(r"[a-z][a-z0-9_]*")
_PART = re.compile(r"[A-Za-z0-9_.+-]+")


class UnknownDatasetError(ValueError):
    """A dataset name whose builder does not exist (the message lists those that do)."""


@dataclasses.dataclass(frozen=True)
class DatasetName:
    """One parsed dataset name; str() gives it back in canonical spelling."""

    builder: str
    config: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return (self.builder + (f"/{self.config}" if self.config else "")
                + (f":{self.version}" if self.version else ""))


def builders() -> tuple[str, ...]:
    """The builders that exist: folders of scar_jax/data/builders with <name>_dataset_builder.py."""
    return tuple(sorted(
        p.name for p in BUILDERS_DIR.iterdir() if (p / f"{p.name}_dataset_builder.py").is_file()
    ))


def parse(name: str) -> DatasetName:
    """'builder[/config][:version]' -> DatasetName; a malformed name raises a ValueError."""
    text = str(name).strip()
    rest, has_version, version = text.partition(":")
    builder, has_config, config = rest.partition("/")
    bad = (
        not _BUILDER.fullmatch(builder)
        or (has_config and not _PART.fullmatch(config))
        or (has_version and not _PART.fullmatch(version))
    )
    if bad:
        raise ValueError(
            f"Dataset name {name!r} is not 'builder[/config][:version]' (e.g. "
            "synthetic_ecg/100hz, ptbxl/500hz:1.0.0)."
        )
    return DatasetName(builder, config or None, version or None)


def check_builder(name: str | DatasetName) -> DatasetName:
    """The parsed name if its builder exists; else UnknownDatasetError listing the builders."""
    parsed = name if isinstance(name, DatasetName) else parse(name)
    known = builders()
    if parsed.builder not in known:
        raise UnknownDatasetError(
            f"Unknown dataset {str(name)!r}: no builder {parsed.builder!r}. The datasets that "
            f"exist: {', '.join(known)} (folders of scar_jax/data/builders; name them as "
            "builder/config, e.g. synthetic_ecg/100hz)."
        )
    return parsed
