"""Metric writers, throughput/ETA and the progress line, against hand-computed values."""

import json
import math

from scar_jax import metrics


def test_jsonl_lines_and_resume_truncation(tmp_path):
    w = metrics.MetricWriter(tmp_path, tensorboard=False)
    w.write(1, {"train/loss": 2.5, "lr": 1e-3})
    w.write(2, {"train/loss": float("nan")})
    w.write(3, {"val/loss": 1.25})
    w.close()
    lines = (tmp_path / metrics.JSONL_NAME).read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"step": 1, "train/loss": 2.5, "lr": 1e-3},
        {"step": 2, "train/loss": "nan"},  # JSON has no NaN: written as a string
        {"step": 3, "val/loss": 1.25},
    ]
    # A run resumed from the checkpoint of step 2 drops what was logged after it, and a
    # line cut short by a kill.
    with open(tmp_path / metrics.JSONL_NAME, "a") as f:
        f.write('{"step": 4, "train/lo')
    w = metrics.MetricWriter(tmp_path, tensorboard=False, resume_step=2)
    w.write(3, {"train/loss": 0.5})
    w.close()
    assert [r["step"] for r in metrics.read_jsonl(tmp_path / metrics.JSONL_NAME)] == [1, 2, 3]
    assert metrics.read_jsonl(tmp_path / metrics.JSONL_NAME)[-1] == {"step": 3, "train/loss": 0.5}


def test_disabled_writer_writes_nothing(tmp_path):
    w = metrics.MetricWriter(tmp_path / "sub", enabled=False)
    w.write(1, {"a": 1.0})
    w.close()
    assert not (tmp_path / "sub").exists()


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_throughput_window_and_eta():
    clock = _Clock()
    tp = metrics.Throughput(total_steps=100, window=2, clock=clock)
    assert all(math.isnan(x) for x in tp.rates()) and math.isnan(tp.eta_seconds())
    # steps 0,1,2,3 at t=0,1,2,4 with batch 8: the window of 2 intervals spans steps 1..3.
    for step, t in [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0)]:
        clock.t = t
        tp.mark(step, step * 8)
    steps_s, ex_s = tp.rates()
    assert steps_s == 2 / 3 and ex_s == 16 / 3
    assert tp.eta_seconds() == (100 - 3) / (2 / 3)
    tp.reset()
    assert math.isnan(tp.rates()[0])


def test_progress_line_and_durations():
    clock = _Clock()
    tp = metrics.Throughput(total_steps=200, window=5, clock=clock)
    tp.mark(0, 0)
    clock.t = 10.0
    tp.mark(50, 400)
    line = metrics.progress_line(50, 200, {"train/loss": 2.31104, "other": 1.0}, tp)
    assert line == "step 50/200 (25.0%) | train/loss 2.3110 | 40.0 ex/s | ETA 30s"
    assert metrics.format_duration(1234.4) == "20m34s"
    assert metrics.format_duration(5000) == "1h23m"
    assert metrics.format_duration(float("nan")) == "?"
    assert metrics.log_progress(1, 2, {}) == "step 1/2 (50.0%)"
