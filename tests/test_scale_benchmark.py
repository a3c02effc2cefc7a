"""scar_jax/benchmarks/scale.py: the extrapolation, the goal verdicts, the table, and the
process measurement (peak RSS of a child, killed at a log line)."""

from __future__ import annotations

import re
import sys

import pytest

from scar_jax.benchmarks import scale


def _result(label, sizes_figures, target=800_000):
    sizes = {str(n): {"figures": f} for n, f in sizes_figures.items()}
    return {"label": label, "target": target, "sizes": sizes,
            "extrapolated": scale.extrapolate_figures(sizes_figures, target)}


def _figures(startup, before_step, rss, bytes_per_record, data=5.0):
    return {"startup_data_s": data, "build_records_per_s_per_process": 10.0,
            "build_cpu_ms_per_record": 50.0,
            "build_peak_rss_mib": 500.0,
            "bytes_per_record": bytes_per_record, "startup_s": startup,
            "startup_before_step_s": before_step, "startup_cold_s": startup + 5,
            "startup_peak_rss_mib": rss, "startup_cold_peak_rss_mib": rss + 100,
            "embed_s": 5.0}


def test_size_figures_warm_memory_from_runs_that_embedded_nothing():
    """A 'warm' run that found no cache (it embedded) counts as cold for memory; the warm
    start-up time is the fastest warm run."""
    run = lambda s, rss, embed=0.0: {"seconds": s, "before_step_seconds": s - 10,
                                     "data_seconds": 1.0, "peak_rss_mib": rss,
                                     "embed_seconds": embed}
    size = {"build": {"records_per_s_per_process": 70.0, "cpu_ms_per_record": 12.0,
                      "peak_rss_mib": 500.0, "bytes_per_record": 86_000},
            "train_cold": run(150, 3000, embed=120), "train_warm": [],
            "train_rewarm": [run(140, 3100, embed=110), run(31, 2900), run(33, 2950)]}
    f = scale.size_figures(size)
    assert f["startup_s"] == 31 and f["startup_peak_rss_mib"] == 2950
    assert f["startup_cold_peak_rss_mib"] == 3100 and f["embed_s"] == 120


def test_extrapolate_is_the_least_squares_line():
    assert scale.extrapolate([1, 3], [2.0, 4.0], 5) == pytest.approx(6.0)
    assert scale.extrapolate([0, 1, 2], [0.0, 1.0, 5.0], 4) == pytest.approx(9.5)  # 2.5 x - 0.5
    assert scale.extrapolate([5, 5], [1.0, 2.0], 9) is None


def test_goals_met_and_missed():
    flat = _result("after", {5000: _figures(100, 30, 2000, 121_000, data=5.0),
                             50000: _figures(100, 30.5, 2010, 121_000, data=5.1)})
    ex, g = flat["extrapolated"], scale.goals(flat)
    # data part 5.1 + 0.1 s / 45k records * 750k = 6.77 s (+1.8 s over 5k records);
    # start-up 30.5 s at 50k + (6.77 - 5.1) s = 32.2 s
    assert ex["startup_data_s"] == pytest.approx(5.1 + 0.1 * 750 / 45)
    assert ex["startup_before_step_s"] == pytest.approx(30.5 + 0.1 * 750 / 45)
    assert ex["startup_s"] == pytest.approx(100 + 0.1 * 750 / 45)
    assert ex["build_records_per_s_per_process"] is None  # per record and shard
    assert g["start-up < 2 min"] == ("32 s", True)
    assert g["start-up growth < 10 s"] == ("+2 s over 5,000 records (5.0 s -> 6.8 s)", True)
    assert g["start-up memory flat"][1] is True  # 2000 -> 2177 MiB: +8.8 %
    assert g["storage <= 1.2x raw int16"] == ("1.01x", True)
    grows = _result("before", {5000: _figures(100, 30, 2000, 300_000, data=5.0),
                               50000: _figures(130, 60, 2400, 300_000, data=35.0)})
    g = scale.goals(grows)
    assert g["start-up < 2 min"][1] is False  # 60 + 30 * 750/45 = 560 s
    assert g["start-up growth < 10 s"][1] is False
    assert g["start-up memory flat"][1] is False
    assert g["storage <= 1.2x raw int16"] == ("2.50x", False)
    shrinks = _result("after", {5000: _figures(100, 30, 2100, 1, data=6.0),
                                50000: _figures(100, 30, 2000, 1, data=5.0)})
    assert shrinks["extrapolated"]["startup_peak_rss_mib"] == 2000  # noise: taken as flat
    assert shrinks["extrapolated"]["startup_data_s"] == 5.0
    one = _result("before", {5000: _figures(100, 30, 2000, 300_000)})
    assert scale.goals(one)["start-up < 2 min"][1] is None


def test_table_has_every_size_the_extrapolation_and_the_verdicts():
    before = _result("before", {5000: _figures(100, 30, 2000, 300_000)})
    after = _result("after", {5000: _figures(100, 30, 2000, 121_000),
                              50000: _figures(100, 30.5, 2010, 121_000)})
    table = scale.format_table([before, after])
    head = table.splitlines()[0]
    assert head == ("| figure | before 5,000 | after 5,000 | after 50,000 | "
                    "after 800,000 (extrapolated) |")
    assert "| storage <= 1.2x raw int16 | **no**: 2.50x | yes: 1.01x |" in table
    assert "n/a (one size)" in table
    assert len(table.splitlines()) == 2 + len(scale.FIGURES) + 1 + 2 + 4


def test_run_measured_peak_rss_and_kill_at_a_line(tmp_path):
    import resource

    # the caller's own peak is a floor of the child's figure (see run_measured)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mib = int(own) + 300
    code = (f"import numpy as np, sys, time; a = np.ones({mib} * 2**20 // 8); "
            "print('allocated', flush=True); time.sleep(60)")
    r = scale.run_measured([sys.executable, "-c", code], str(tmp_path / "log"),
                           until=re.compile("allocated"))
    assert r["match"] == "allocated"
    assert r["returncode"] == -9  # killed at the line, not after the sleep
    assert r["peak_rss_mib"] >= mib
    r = scale.run_measured([sys.executable, "-c", "print('hi')"], str(tmp_path / "log2"))
    assert r["returncode"] == 0 and r["match"] is None
    assert r["peak_rss_mib"] < mib - 250


def test_prefix_corpus_is_the_smaller_simulated_corpus(tmp_path):
    import filecmp

    from scar_jax.data.builders.mimic_iv_ecg import simulate

    simulate.write_corpus(str(tmp_path / "big"), 7)
    simulate.write_corpus(str(tmp_path / "small"), 5)
    assert not scale.prefix_corpus(str(tmp_path / "big"), str(tmp_path / "x"), 7)  # no row 8
    assert scale.prefix_corpus(str(tmp_path / "big"), str(tmp_path / "linked"), 5)
    cmp = filecmp.dircmp(tmp_path / "small", tmp_path / "linked")
    assert not cmp.left_only and not cmp.right_only
    for name in ("record_list.csv", "machine_measurements.csv"):
        assert filecmp.cmp(tmp_path / "small" / name, tmp_path / "linked" / name, shallow=False)
    rows = (tmp_path / "small" / "record_list.csv").read_text().splitlines()[1:]
    for row in rows:
        for ext in (".hea", ".dat"):
            rel = row.split(",")[-1] + ext
            assert filecmp.cmp(tmp_path / "small" / rel, tmp_path / "linked" / rel, shallow=False)


def test_data_seconds_between_the_trainer_log_lines():
    log = ("I1206 23:59:58.500000 1 train.py:1] train state: 22,968,619 parameters\n"
           "I1206 00:00:04.750000 1 train.py:2] the 3238 distinct reports of train from ...\n"
           "I1206 00:00:05.000000 1 pipeline.py:3] pipeline mimic_iv_ecg train: 4616 records, "
           "train (shuffled)\n")
    assert scale.data_seconds(log) == pytest.approx(6.5)  # across midnight
    assert scale.data_seconds("I1206 00:00:01.0 1 x.py:1] train state: 1\n") is None
