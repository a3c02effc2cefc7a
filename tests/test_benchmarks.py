"""Benchmark suite: the compared steps compute the same thing; FLOP counts; the table/JSON.

No timing is asserted here: speed is what `python -m scar_jax.benchmarks` reports.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest

pytest.importorskip("torch")

from scar_jax.benchmarks import accelerator  # noqa: E402
from scar_jax.benchmarks import suite  # noqa: E402
from scar_jax.benchmarks import torch_step as ts  # noqa: E402


@pytest.fixture(scope="module")
def steps():
    """A JAX step and the PyTorch step from the same weights (mu, 2 s records, batch 8)."""
    config = ts.parity_config("mu", 8, seconds=2.0, text="random-tiny")
    config.optim.warmup_steps = 0  # a non-zero learning rate at step 0
    js = ts.JaxStep(config)
    params = jax.device_get(js.state.params)
    return js, ts.TorchStep(config, params, jax.device_get(js.batch)), params


def test_torch_and_jax_steps_match(steps):
    """Same loss on the same batch and the same first AdamW update, from identical weights."""
    js, tstep, params = steps
    before = ts.torch_tensors(js.config, params)
    assert ts.max_abs_diff(before, tstep.state_dicts()) == 0.0
    jax_loss = ts.jax_loss(js)
    metrics = js(1)
    torch_loss = tstep(1)
    assert abs(jax_loss - torch_loss) < 1e-4
    assert abs(float(metrics["loss/total"]) - torch_loss) < 1e-4
    after_jax, after_torch = ts.torch_tensors(js.config, js.state.params), tstep.state_dicts()
    moved = 0
    for target, tensors in after_jax.items():
        for name, x in tensors.items():
            if name.endswith("attn.key.bias"):
                # Softmax is shift invariant: this gradient is exactly 0, so both Adams
                # normalise rounding noise. Its update is bounded by lr, not matched.
                assert np.max(np.abs(x - before[target][name])) <= 3e-4 + 1e-7
                continue
            update = x - before[target][name]
            np.testing.assert_allclose(
                after_torch[target][name] - before[target][name], update, atol=5e-6,
                err_msg=f"{target}:{name}")
            moved += int(np.max(np.abs(update)) > 1e-5)
    assert moved > 10  # the step really changed the weights


def test_matmul_flops_from_cost_analysis():
    """XLA's cost analysis counts a plain [m, k] @ [k, n] as 2 m k n FLOPs."""
    m, k, n = 64, 48, 80
    assert suite.matmul_flops(m, k, n) == 2 * m * k * n


def test_best_of_is_interleaved_minimum():
    calls = []
    secs = suite.best_of({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3
    assert set(secs) == {"a", "b"} and all(s >= 0 for s in secs.values())


def test_bisection_error_shrinks_with_iterations():
    """The soft budget of the masker's bisection converges (error halves per iteration)."""
    errs = [suite.bisection_error(i, 0.1, batch=16) for i in (10, 20, 40)]
    assert errs[0] > errs[1] > errs[2] or errs[2] < 1e-3
    assert errs[2] < 1e-3


def test_table_and_json_have_every_row(tmp_path, steps, monkeypatch):
    """Row 6 runs (on the fixture's compiled step); the writer renders and serialises entries."""
    sizes = suite.Sizes(
        framework=(("mu", 4, 1),), framework_seconds=1.0, scar_variant="mu", scar_batch=4,
        scar_seconds=1.0, knobs=False, pipeline_records=8, grid_batch=2,
        scaling_variant="mu", scaling_seconds=(1.0,), scaling_batches=(4,), scaling_base_batch=4,
        matmul_n=64, reps=1, torch_compile=False)
    fake = {k: 1.0 for k in ("jax_examples_per_s", "eager_examples_per_s", "scar_step_s",
                             "merl_step_s", "flop_ratio")}
    fake["floor_arithmetic"] = "(1 + K/N) x 1.0 = 2.0x"
    entries = [suite.entry(r, f"row {r}", "s", 1.0, "x", ">= 1x", True, **fake) for r in (1, 2)]
    entries.append(suite.entry(1, "compile", "s", float("nan"), "x", ">= 1x", None,
                               error="RuntimeError: no compiler"))
    peak = suite.matmul_peak(sizes.matmul_n, reps=1)
    assert peak > 0
    monkeypatch.setattr(suite.ts, "JaxStep", lambda config: steps[0])  # no second compile
    entries += suite.row_scaling(sizes)
    result = {"machine": suite.machine(), "entries": entries, "sizes": {}, "seconds": 0.0}
    table = suite.format_table(result)
    lines = table.splitlines()
    assert len(lines) == 2 + len(entries)
    assert "failed" in table and "no compiler" in table
    assert {e["row"] for e in entries} == {1, 2, 6}
    assert sum(e["row"] == 6 for e in entries) == 3  # one shape + the two exponents
    for e in entries:
        assert tuple(e) == suite.ENTRY_KEYS
    memory = [e["details"] for e in entries if e["row"] == 6 and "tokens" in e["details"]]
    assert memory and all(d["temp_bytes"] + d["argument_bytes"] > 0 for d in memory)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(result, default=float))
    assert len(json.loads(path.read_text())["entries"]) == len(entries)


def test_peak_flops_table_by_device_kind():
    assert accelerator.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert accelerator.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert accelerator.peak_flops("NVIDIA H200") == 989e12
    assert accelerator.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert accelerator.peak_flops("TPU v5 lite") == 197e12
    assert accelerator.peak_flops("TPU v4") == 275e12
    assert accelerator.peak_flops("cpu") is None


def test_accelerator_quick_path_runs(tmp_path):
    """`--accelerator --quick`'s code at an even smaller shape: both methods step, FLOPs come
    from XLA, the trace is written, the table says n/a where CPU has no peak or memory stats."""
    mode = dataclasses.replace(accelerator.QUICK, seconds=1.0, text_len=8, batches=(4,),
                               steps=1)
    result = accelerator.run(mode, trace_dir=str(tmp_path / "trace"))
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"scar", "merl"}
    for r in rows.values():
        assert r["batch"] == 4 and r["tokens"] == 60 and r["examples_per_s"] > 0
        assert r["compile_s"] > 0 and r["xla_bytes"] > 0
        assert r["mfu"] is None  # no peak for CPU
    # the SCAR step runs a second (masked) view and the masker: more FLOPs than MERL-style
    assert rows["scar"]["flops_per_step"] > rows["merl"]["flops_per_step"] > 0
    assert result["scar_over_merl_step"]["mu"] > 0
    assert list((tmp_path / "trace").rglob("*.xplane.pb"))
    table = accelerator.format_table(result)
    assert "MFU = XLA cost-analysis FLOPs" in table and "| SCAR | mu | 4 |" in table
    assert json.loads(json.dumps(result, default=float))["rows"]


def test_merge_rows_replaces_only_the_rows_run():
    """--update_docs with --rows=2: row 2's lines come from the new run, the others stay, and
    the header names which run measured which rows."""
    head = "| row | benchmark | setting | result | target | met | details |\n|---:|---|---|---:|---|---|---|"
    old = f"`old cmd`\n\nold machine\n\n{head}\n| 1 | a | s | 1.00x | | | |\n" \
          "| 2 | b | s | 2.00x | | | |\n| 2 | b2 | s | 2.50x | | | |\n| 6 | c | s | 3.00x | | | |"
    new = f"`new cmd`\n\nnew machine\n\n{head}\n| 2 | B | s | 1.50x | | | |"
    merged = suite.merge_rows(old, [2], new)
    lines = merged.splitlines()
    assert lines[0] == "rows 2: `new cmd` new machine"
    assert lines[2] == "rows 1, 6: `old cmd` old machine"
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| row")]
    assert [r.split("|")[2].strip() for r in rows] == ["a", "B", "c"]
    # a second partial run keeps each earlier run's own heading for the rows it still holds
    newer = f"`newer cmd`\n\nnewer machine\n\n{head}\n| 6 | C | s | 2.00x | | | |"
    lines = suite.merge_rows(merged, [6], newer).splitlines()
    assert lines[0] == "rows 6: `newer cmd` newer machine"
    assert lines[2] == "rows 2: `new cmd` new machine"
    assert lines[4] == "rows 1: `old cmd` old machine"
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| row")]
    assert [r.split("|")[2].strip() for r in rows] == ["a", "B", "C"]
