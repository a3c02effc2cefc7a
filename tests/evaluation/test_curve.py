"""The knob curve table: cells from each setting's seeds.json, in the order given."""

import json

import pytest

from scar_jax.evaluation import curve


def _summary(diff_mean, lo, hi, clean):
    d = {"mean": diff_mean, "ci": [lo, hi], "n_seeds": 3 if clean > 0.75 else 2}
    return {
        "differences": {"random": {"clean": d, "oracle/primary": d}},
        "scar": {"zeroshot/clean/auroc": {"mean": clean, "std": 0.01, "n": 3}},
        "random": {"zeroshot/clean/auroc": {"mean": clean - diff_mean, "std": 0.02, "n": 3}},
    }


def test_curve_cells_follow_each_settings_summary(tmp_path):
    for name, s in (("a", _summary(0.02, 0.01, 0.03, 0.8)), ("b", _summary(-0.01, -0.02, 0.005, 0.7))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "seeds.json").write_text(json.dumps(s))
    points = {"1": curve.load_point(tmp_path / "a"), "0": curve.load_point(tmp_path / "b")}
    text = curve.curve_markdown(points)
    rows = {}  # the first row of each name: the differences table comes first
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0], line)
    # setting 1 first, as given; the interval [0.01, 0.03] excludes 0 (bold), [-0.02, 0.005] not
    assert rows["| oracle/primary"] == ("| oracle/primary | **+0.0200 [+0.0100, +0.0300]** | "
                                        "-0.0100 [-0.0200, +0.0050] |")
    assert rows["| oracle/secondary"] == "| oracle/secondary | – | – |"
    assert ("| condition | secondary evidence strength 1 (3 seeds) | "
            "secondary evidence strength 0 (2 seeds) |") in text
    assert "| clean | scar | 0.800 ± 0.010 | 0.700 ± 0.010 |" in text
    assert "| clean | random | 0.780 ± 0.020 | 0.710 ± 0.020 |" in text


def test_curve_refuses_a_setting_without_differences(tmp_path):
    (tmp_path / "seeds.json").write_text(json.dumps({"scar": {}}))
    with pytest.raises(ValueError, match=r"settings \['x'\] have no paired differences"):
        curve.curve_markdown({"x": curve.load_point(tmp_path)})
    with pytest.raises(FileNotFoundError, match="no seed summary"):
        curve.load_point(tmp_path / "nowhere")
