"""Reports split into findings: the text targets of the finding-level contrastive term.

A report is a list of statements ("sinus rhythm. lbbb, qrs 140 ms. abnormal ecg."); each
statement is a finding. `finding_table` gives every distinct finding of a split an id, so
that training batches carry, per record, the ids of its findings (and the frozen text
tower's features of each distinct finding, computed once: scar_jax.train). Machine
statements of real corpora (MIMIC-IV-ECG's report_0..17 joined by the builders) split the
same way.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

# A statement ends at '.', ';' or a line break; a '.' between two digits (0.5 mV) does not
# end one.
_SPLIT = re.compile(r"(?<!\d)\.|\.(?!\d)|;|\n")
SPLIT_RULE = f"{_SPLIT.pattern}|dedup|whitespace"  # part of cache keys of finding tables


def split_findings(report: str) -> list[str]:
    """The distinct statements of a report, in order, whitespace-normalised (empty ones dropped)."""
    out: list[str] = []
    for part in _SPLIT.split(str(report)):
        part = " ".join(part.split())
        if part and part not in out:
            out.append(part)
    return out


def finding_table(reports: Sequence[str], max_findings: int
                  ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(distinct findings [V], ids [N, max_findings] int32, counts [N] int32) of `reports`.

    ids index the sorted distinct findings (-1 pads), so every process of a run that reads
    the same split gets the same ids; counts[i] is how many distinct findings report i has.
    A report with more than `max_findings` findings keeps its first `max_findings` (how many
    were cut: `np.sum(counts > max_findings)`, for a log line). Each report is split once.
    """
    if max_findings < 1:
        raise ValueError(f"max_findings={max_findings}; needs at least 1.")
    split = [split_findings(r) for r in reports]
    unique = sorted({f for fs in split for f in fs})
    index = {f: i for i, f in enumerate(unique)}
    ids = np.full((len(split), max_findings), -1, np.int32)
    for i, fs in enumerate(split):
        row = [index[f] for f in fs[:max_findings]]
        ids[i, : len(row)] = row
    return unique, ids, np.array([len(fs) for fs in split], np.int32)
