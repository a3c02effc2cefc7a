"""The CLI's smoke command: the full model's forward, objective and gradient on a generated batch."""

import numpy as np

from configs import scar as scar_config
from scar_jax import main


def test_generated_batch_is_normalised_with_absent_leads():
    """Synthetic records: min-max over observed leads is exactly [0, 1]; absent leads are 0."""
    config = scar_config.get_config("runlocal")
    data = main.generated_batch(config, 16, seed=3)
    ecg, obs = data["ecg"], data["lead_observed"]
    assert ecg.shape == (16, 1000, 12) and obs.shape == (16, 12) and len(data["report"]) == 16
    assert (~obs).any() and obs.sum(1).min() >= 1
    for i in range(16):
        seen = ecg[i][:, obs[i]]
        np.testing.assert_allclose([seen.min(), seen.max()], [0.0, 1.0], atol=1e-6)
        assert (ecg[i][:, ~obs[i]] == 0).all()


def test_smoke_runs_every_method(capsys):
    for method in ("scar", "merl"):
        config = scar_config.get_config(f"runlocal,text=random-tiny,method={method}")
        metrics = main.smoke(config)
        assert all(np.isfinite(v) for v in metrics.values())
        assert metrics["grad_norm/ecg"] > 0
        assert ("grad_norm/masker" in metrics) == (method == "scar")
        out = capsys.readouterr().out
        assert "ECG embedding     (8, 32)" in out and "loss/total" in out
