"""The accelerator benchmark (issue #23): SCAR and MERL-style train steps on one device.

`python -m scar_jax.benchmarks --accelerator` times, for each method (scar, merl) and ECG
size (tiny, small): 600 ECG tokens (10 s at 500 Hz, patch 100), reports of at most 64
tokens through the frozen text tower, configs/scar.py otherwise (bfloat16 compute,
gathered masked view), the largest global batch of BATCHES whose XLA memory estimate fits
the SCAR step on the device (MERL-style at the same batch). Per step: examples/s, MFU,
peak device memory and compile time, and one profile trace (jax.profiler) of a few
SCAR-tiny steps. Peak device memory is the device's peak in use so far in the process
(sizes run smallest first, MERL-style before SCAR), beside XLA's own estimate of the step
(temp + argument bytes). `--quick` runs the same code at mu size on short records with a
small batch (CPU, a minute or two).

MFU = (FLOPs per step from XLA's cost analysis of the compiled step) x steps/s / peak
dense bf16 FLOP/s of the device kind (PEAK_BF16_FLOPS). XLA counts the FLOPs of the ops it
compiles; cuDNN's fused attention is a custom call it does not count, so with cuDNN
attention the MFU understates the attention's share.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from absl import logging

from scar_jax.benchmarks import torch_step as ts
from scar_jax.models import ecg_encoder, scar

# Dense bf16 peak FLOP/s by device_kind substring (first match wins; vendor data sheets,
# without sparsity). Unknown kinds (CPU included) give no MFU.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM / NVL
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("V100", 125e12),  # fp16 tensor cores (V100 has no bf16)
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
)
MFU_FORMULA = ("MFU = XLA cost-analysis FLOPs per step x steps per second / peak dense bf16 "
               "FLOP/s of the device kind")
BATCHES = (256, 128, 64, 32, 16, 8)  # global batches tried for SCAR, largest first
MEMORY_HEADROOM = 0.9  # a batch fits when XLA's temp + argument bytes <= this x the limit


@dataclasses.dataclass(frozen=True)
class Mode:
    """Shapes of one accelerator-benchmark run."""

    variants: tuple[str, ...]
    seconds: float  # record length: 12 x seconds x 5 tokens at 500 Hz, patch 100
    text_len: int  # report tokens (the longest the config allows)
    batches: tuple[int, ...]  # candidates, largest first (the first that fits is used)
    steps: int  # timed steps (after two warm-up steps)
    trace_steps: int  # steps in the profile trace
    dtype: str
    text: str = "minilm"  # text tower (configs/scar.py's text key; weights do not matter here)


ACCELERATOR = Mode(variants=("tiny", "small"), seconds=10.0, text_len=64, batches=BATCHES,
                   steps=10, trace_steps=3, dtype="bfloat16")
QUICK = Mode(variants=("mu",), seconds=2.0, text_len=16, batches=(8,), steps=3,
             trace_steps=1, dtype="bfloat16", text="random-tiny")


def peak_flops(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of a device kind (None: not in PEAK_BF16_FLOPS)."""
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_kind.lower():
            return flops
    return None


def step_config(method: str, variant: str, batch: int, mode: Mode):
    """configs/scar.py for `method` at `variant` with the mode's shapes and dtype."""
    from scar_jax import config_files

    config = config_files.load_family("scar", f"method={method},variant={variant},"
                                      f"text={mode.text}")
    config.batch_size = batch
    config.input.seconds = mode.seconds
    config.model.txt.max_len = mode.text_len
    config.model.dtype = mode.dtype
    return config


def text_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
    """synthetic_batch with report token ids (lengths 8..max_len) instead of cached features,
    and findings (ids, pooled features) as training batches carry them."""
    batch = ts.synthetic_batch(config, seed)
    rng = np.random.default_rng(seed + 1)
    b, n = config.batch_size, config.model.txt.max_len
    hidden = batch.pop("txt_feats").shape[-1]
    vocab = scar.bert_config_for(config.model.txt.checkpoint).vocab_size
    lengths = rng.integers(min(8, n), n + 1, b)
    mask = (np.arange(n)[None, :] < lengths[:, None]).astype(np.int32)
    low = 1000 if vocab > 2000 else 1  # past BERT's special tokens where the vocab has them
    batch["input_ids"] = (rng.integers(low, vocab, (b, n)) * mask).astype(np.int32)
    batch["attention_mask"] = mask
    f = config.model.txt.max_findings
    ids = rng.integers(-1, 4 * b, (b, f)).astype(np.int32)
    ids[:, 0] = np.arange(b)
    batch["finding_ids"] = ids
    batch["finding_feats"] = (rng.normal(size=(b, f, hidden)) * (ids[..., None] >= 0)).astype(
        np.float32)
    return batch


def memory_limit(device: jax.Device) -> float | None:
    """The device's memory limit in bytes (None where memory_stats is not reported)."""
    stats = _memory_stats(device)
    return float(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def _memory_stats(device: jax.Device) -> Mapping[str, Any] | None:
    try:
        return device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        return None


def fitting_step(method: str, variant: str, mode: Mode) -> tuple[ts.JaxStep, list[str]]:
    """The compiled step at the largest candidate batch whose XLA memory estimate fits."""
    device = jax.devices()[0]
    limit = memory_limit(device)
    notes = []
    for i, batch in enumerate(mode.batches):
        config = step_config(method, variant, batch, mode)
        try:
            step = ts.JaxStep(config, text_batch(config))
        except Exception as e:  # noqa: BLE001 - compile-time out-of-memory: try smaller
            if i == len(mode.batches) - 1:
                raise
            notes.append(f"B={batch}: {type(e).__name__}")
            continue
        need = step.memory["temp_bytes"] + step.memory["argument_bytes"]
        if limit is None or need <= MEMORY_HEADROOM * limit or i == len(mode.batches) - 1:
            return step, notes
        notes.append(f"B={batch}: needs {need / 2**30:.1f} GiB")
        del step
    raise AssertionError("unreachable")


def measure(step: ts.JaxStep, steps: int) -> dict[str, float]:
    """Seconds per step (mean over `steps` after two warm-up steps) and the device's peak
    memory in use so far in this process (None where memory_stats is not reported)."""
    step(2)
    t0 = time.perf_counter()
    step(steps)
    secs = (time.perf_counter() - t0) / steps
    stats = _memory_stats(jax.devices()[0])
    peak = float(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None
    return {"step_s": secs, "peak_bytes": peak}


def run(mode: Mode, trace_dir: str | None = None) -> dict[str, Any]:
    """Every (method, variant) of `mode`; -> {'device', 'peak_flops', 'rows', 'trace_dir', ...}."""
    device = jax.devices()[0]
    peak = peak_flops(device.device_kind)
    rows = []
    t_start = time.perf_counter()
    for variant in mode.variants:  # smallest first: the device peak so far is this step's
        # SCAR needs more memory: the largest batch that fits it, MERL-style at the same batch
        scar_step, notes = fitting_step("scar", variant, mode)
        b = scar_step.config.batch_size
        merl_config = step_config("merl", variant, b, mode)
        steps = {"merl": ts.JaxStep(merl_config, text_batch(merl_config)), "scar": scar_step}
        for method, step in steps.items():
            m = measure(step, mode.steps)
            achieved = step.flops / m["step_s"]
            rows.append({
                "method": method, "variant": variant, "batch": b,
                "tokens": ecg_encoder.NUM_LEADS * int(mode.seconds * 5),
                "text_len": mode.text_len, "dtype": mode.dtype,
                "examples_per_s": b / m["step_s"], "step_s": m["step_s"],
                "flops_per_step": step.flops, "achieved_flops_per_s": achieved,
                "mfu": achieved / peak if peak else None, "peak_bytes": m["peak_bytes"],
                "xla_bytes": step.memory["temp_bytes"] + step.memory["argument_bytes"],
                "compile_s": step.compile_s,
                "attention": step.config.model.attention, "batch_notes": notes,
            })
            logging.info("%s %s B=%d: %.1f ex/s", method, variant, b, b / m["step_s"])
        if trace_dir and variant == mode.variants[0]:
            os.makedirs(trace_dir, exist_ok=True)
            with jax.profiler.trace(trace_dir):
                scar_step(mode.trace_steps)
        del steps, scar_step
    ratio = {v: _ratio(rows, v) for v in mode.variants}
    return {"device": str(device), "device_kind": device.device_kind,
            "platform": device.platform, "peak_flops": peak, "mfu_formula": MFU_FORMULA,
            "rows": rows, "scar_over_merl_step": ratio, "trace_dir": trace_dir,
            "mode": dataclasses.asdict(mode), "seconds": time.perf_counter() - t_start}


def _ratio(rows: Sequence[Mapping[str, Any]], variant: str) -> float:
    by = {r["method"]: r for r in rows if r["variant"] == variant}
    return by["scar"]["step_s"] / by["merl"]["step_s"]


def format_table(result: Mapping[str, Any]) -> str:
    """The rows as one markdown table, with the device, the peak and the MFU formula."""
    peak = result["peak_flops"]
    lines = [f"device: {result['device_kind']} ({result['platform']}); peak dense bf16: "
             + (f"{peak / 1e12:.0f} TFLOP/s" if peak else "n/a (not in PEAK_BF16_FLOPS)"),
             f"{result['mfu_formula']}", "",
             "| method | ECG | batch | tokens (ECG / text) | dtype | examples/s | step | "
             "TFLOP/step | MFU | peak device memory | XLA temp + args | compile |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        mem = f"{r['peak_bytes'] / 2**30:.1f} GiB" if r["peak_bytes"] else "n/a"
        xla = f"{r['xla_bytes'] / 2**30:.2f} GiB"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        name = "SCAR" if r["method"] == "scar" else "MERL-style"
        lines.append(
            f"| {name} | {r['variant']} | {r['batch']} | {r['tokens']} / {r['text_len']} | "
            f"{r['dtype']} | {r['examples_per_s']:,.1f} | {r['step_s'] * 1e3:,.1f} ms | "
            f"{r['flops_per_step'] / 1e12:.3f} | {mfu} | {mem} | {xla} | {r['compile_s']:.1f} s |")
    lines.append("")
    lines.append("SCAR / MERL-style step: " + ", ".join(
        f"{v} {x:.2f}x" for v, x in result["scar_over_merl_step"].items()))
    if result.get("trace_dir"):
        lines.append(f"profile trace: {result['trace_dir']} (tensorboard --logdir or "
                     "ui.perfetto.dev on the .trace.json.gz)")
    return "\n".join(lines)
