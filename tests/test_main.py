"""The CLI: smoke (one training update on a generated batch); export without PyTorch."""

import subprocess
import sys

import numpy as np
import pytest

from configs import scar as scar_config
from scar_jax import smoke


def test_generated_batch_is_normalised_with_absent_leads():
    """Synthetic records: min-max over observed leads is exactly [0, 1]; absent leads are 0."""
    config = scar_config.get_config("runlocal")
    data = smoke.generated_batch(config, 16, seed=3)
    ecg, obs = data["ecg"], data["lead_observed"]
    assert ecg.shape == (16, 1000, 12) and obs.shape == (16, 12) and len(data["report"]) == 16
    assert (~obs).any() and obs.sum(1).min() >= 1
    for i in range(16):
        seen = ecg[i][:, obs[i]]
        np.testing.assert_allclose([seen.min(), seen.max()], [0.0, 1.0], atol=1e-6)
        assert (ecg[i][:, ~obs[i]] == 0).all()


def test_smoke_runs_the_training_update_for_every_method():
    """smoke is one step of the trainer's own update_fn: the adversarial masker (past its
    warm-up) gets a gradient under SCAR and none under MERL; the state's step advanced."""
    for method in ("scar", "merl"):
        config = scar_config.get_config(f"runlocal,text=random-tiny,method={method}")
        result = smoke.run(config)
        metrics = result.metrics
        assert all(np.isfinite(v) for v in metrics.values())
        assert metrics["grad_norm/ecg"] > 0 and metrics["grad_norm/encoders"] > 0
        assert (metrics["grad_norm/masker"] > 0) == (method == "scar")
        assert (metrics["mask/ratio"] > 0) == (method == "scar")
        assert metrics["nonfinite"] == 0.0
        out = smoke.format_report(result)
        assert "ECG embedding     (8, 32)" in out and "loss/total" in out


@pytest.mark.slow
def test_smoke_command_prints_the_report():
    code = ("from absl import app; from scar_jax import main; "
            "app.run(main.main, flags_parser=main.parse_flags)")
    proc = subprocess.run(
        [sys.executable, "-c", code, "smoke", "--config=configs/scar.py:runlocal,text=random-tiny"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("SCAR smoke  method=scar") and "grad_norm/masker" in proc.stdout


def test_export_without_torch_says_how_to_install_it(tmp_path):
    """The README's install leaves PyTorch out: export names the extra instead of a traceback."""
    code = ("import sys; sys.modules['torch'] = None; from absl import app; "
            "from scar_jax import main; app.run(main.main, flags_parser=main.parse_flags)")
    proc = subprocess.run(
        [sys.executable, "-c", code, "export", f"--checkpoint={tmp_path}", f"--out={tmp_path}/x"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "needs PyTorch" in proc.stderr and "'.[torch]'" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scar_jax.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_unknown_dataset_is_one_line_listing_the_datasets(tmp_path):
    proc = _cli("build", "--dataset=ptbx", f"--data_dir={tmp_path}")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "build: Unknown dataset 'ptbx': no builder 'ptbx'. The datasets that exist: "
        "chapman_shaoxing, cpsc2018, mimic_iv_ecg, ptbxl, synthetic_ecg (folders of "
        "scar_jax/data/builders; name them as builder/config, e.g. synthetic_ecg/100hz)."
    ]


def test_predict_on_an_empty_folder_is_one_line(tmp_path):
    proc = _cli("predict", f"--checkpoint={tmp_path}", "--input=x.hea")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"predict: No complete checkpoint in {tmp_path}."]
    assert list(tmp_path.iterdir()) == []  # a reader creates nothing there
    # --verbosity=1 asks for the traceback
    loud = _cli("predict", f"--checkpoint={tmp_path}", "--input=x.hea", "--verbosity=1")
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def test_unknown_command_is_one_line():
    proc = _cli("trian")
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "(got ['trian'])" in proc.stderr


def test_demo_config_overrides_are_refused_by_name(tmp_path):
    proc = _cli("demo", f"--workdir={tmp_path}/w", "--config=configs/demo.py:runlocal",
                "--config.total_steps=1")
    assert proc.returncode == 1 and not (tmp_path / "w").exists()
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "demo: --config overrides ['total_steps'] do not apply")
