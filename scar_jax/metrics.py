"""Training metrics: JSONL (always), TensorBoard (when installed), throughput, ETA, progress line.

Only process 0 writes files; every process may log. One JSONL line is one JSON
object `{"step": int, "<name>": float, ...}`, e.g. `{"step": 50, "train/loss": 2.1}`.
The workdir may be a local folder or a remote one (`gs://...`, through etils.epath;
object stores cannot append, so there the file is rewritten at each write).
"""

from __future__ import annotations

import collections
import json
import math
import os
import time
from typing import Any, Mapping

from absl import logging
from etils import epath
import numpy as np

JSONL_NAME = "metrics.jsonl"


def _tensorboard_writer(logdir: str) -> Any | None:
    """A SummaryWriter from tensorboardX or torch.utils.tensorboard, or None when neither works."""
    for module, attr in (("tensorboardX", "SummaryWriter"), ("torch.utils.tensorboard", None)):
        try:
            mod = __import__(module, fromlist=["SummaryWriter"])
            return getattr(mod, attr or "SummaryWriter")(logdir)
        except Exception:  # noqa: BLE001 - any import/initialisation failure means "not available"
            continue
    try:
        from flax.metrics import tensorboard as flax_tb  # needs TensorFlow

        return flax_tb.SummaryWriter(logdir)
    except Exception:  # noqa: BLE001
        return None


def to_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A flat dict of 0-d arrays / numbers -> python floats (one device_get for all)."""
    import jax  # local: keeps this module importable without initialising a backend

    values = jax.device_get(dict(metrics))
    return {k: float(np.asarray(v)) for k, v in values.items()}


class MetricWriter:
    """Appends `{"step", **scalars}` lines to `<workdir>/metrics.jsonl` (+ TensorBoard if present).

    `resume_step`: on a resumed run, lines with step > resume_step (written after
    the checkpoint the run restarts from) are dropped, so each step appears once.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self.path = epath.Path(workdir) / JSONL_NAME
        self._remote = "://" in os.fspath(workdir)
        self._lines: list[str] = []  # remote: everything written, rewritten at each write
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        if self._remote:
            self._lines = self.path.read_text().splitlines() if self.path.exists() else []
        else:
            self._file = self.path.open("a", encoding="utf-8")
        if tensorboard and not self._remote:
            self._tb = _tensorboard_writer(os.path.join(os.fspath(workdir), "tensorboard"))
            if self._tb is None:
                logging.info(
                    "TensorBoard writer unavailable (install tensorboardX or tensorboard); "
                    "metrics go to %s only.",
                    self.path,
                )

    def _truncate_after(self, step: int) -> None:
        """Drop lines whose step is greater than `step` (and unparsable partial lines)."""
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if record.get("step", 0) <= step:
                kept.append(json.dumps(record))
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        """One JSONL line `{"step": step, **scalars}`; values are converted to float."""
        if not self.enabled:
            return
        record = {"step": int(step)}
        for k, v in scalars.items():
            f = float(np.asarray(v))
            record[k] = f if math.isfinite(f) else str(f)  # JSON has no NaN/Infinity
        if self._remote:
            self._lines.append(json.dumps(record))
            self.path.write_text("".join(line + "\n" for line in self._lines))
        else:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(np.asarray(v)), int(step))

    def close(self) -> None:
        """Flush and close the writers."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a metrics.jsonl file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Throughput:
    """Examples/s and steps/s over the last `window` marks, and the ETA to `total_steps`."""

    def __init__(self, total_steps: int, window: int = 20, clock=time.perf_counter):
        self.total_steps = total_steps
        self._clock = clock
        self._marks: collections.deque[tuple[float, int, int]] = collections.deque(
            maxlen=window + 1
        )

    def mark(self, step: int, examples: int) -> None:
        """Record that `step` steps / `examples` examples (cumulative) are done now."""
        self._marks.append((self._clock(), step, examples))

    def reset(self) -> None:
        """Forget the marks (call after a pause such as validation or compilation)."""
        self._marks.clear()

    def rates(self) -> tuple[float, float]:
        """(steps/s, examples/s) over the window; (nan, nan) with fewer than two marks."""
        if len(self._marks) < 2:
            return math.nan, math.nan
        (t0, s0, e0), (t1, s1, e1) = self._marks[0], self._marks[-1]
        dt = max(t1 - t0, 1e-9)
        return (s1 - s0) / dt, (e1 - e0) / dt

    def eta_seconds(self) -> float:
        """Seconds until total_steps at the current step rate (nan when unknown)."""
        steps_per_s, _ = self.rates()
        if not self._marks or not steps_per_s > 0:
            return math.nan
        return max(self.total_steps - self._marks[-1][1], 0) / steps_per_s


def format_duration(seconds: float) -> str:
    """1234.5 -> '20m34s'; 5000 -> '1h23m'; nan -> '?'."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def progress_line(
    step: int,
    total_steps: int,
    scalars: Mapping[str, float],
    throughput: Throughput | None = None,
    keys: tuple[str, ...] = ("train/loss",),
) -> str:
    """'step 120/2000 (6.0%) | train/loss 2.3110 | 41.2 ex/s | ETA 12m03s'."""
    parts = [f"step {step}/{total_steps} ({100.0 * step / max(total_steps, 1):.1f}%)"]
    parts += [f"{k} {float(scalars[k]):.4f}" for k in keys if k in scalars]
    if throughput is not None:
        _, ex_s = throughput.rates()
        parts.append(f"{ex_s:.1f} ex/s" if math.isfinite(ex_s) else "? ex/s")
        parts.append(f"ETA {format_duration(throughput.eta_seconds())}")
    return " | ".join(parts)


def log_progress(*args, **kwargs) -> str:
    """progress_line(...) logged at INFO; returns the line."""
    line = progress_line(*args, **kwargs)
    logging.info("%s", line)
    return line
