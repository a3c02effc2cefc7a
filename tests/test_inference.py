"""Single-ECG inference: DICOM and WFDB readers, preprocessing, finite zero-shot scores."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import scar as scar_config
from scar_jax import inference
from scar_jax.data import labels
from scar_jax.data import preprocessing
from scar_jax.data.builders import wfdb_common
from scar_jax.models import scar


@pytest.fixture(scope="module")
def setup():
    config = scar_config.get_config("runlocal,text=random-tiny")
    config.input.sample_rate = 100
    config.input.seconds = 4.0
    config.model.ecg.patch_size = 25
    model = scar.build_model(config.model)
    t = 400
    batch = {
        "ecg": np.zeros((2, t, 12), np.float32),
        "lead_observed": np.ones((2, 12), bool),
        "input_ids": np.ones((2, 8), np.int32),
        "attention_mask": np.ones((2, 8), np.int32),
    }
    variables = model.init(
        {"params": jax.random.key(0), "masker": jax.random.key(1)}, batch
    )
    return config, variables


def test_read_dicom_matches_the_packaged_ecg():
    """read_dicom on pydicom's waveform_ecg.dcm: 12 named leads, 1000 Hz, mV (uV / 1000)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("waveform_ecg.dcm")
    rec = inference.read_dicom(path)
    signal, names, rate, _ = wfdb_common.pydicom_ecg()
    assert rec.rate == rate == 1000
    assert rec.names == names
    assert [preprocessing.canonical_lead_name(n) for n in rec.names] == list(
        preprocessing.LEAD_NAMES
    )
    np.testing.assert_allclose(rec.signal, signal, rtol=0, atol=1e-12)
    # A real ECG: QRS peaks of a few tenths of a mV to a few mV.
    assert 0.2 < np.abs(rec.signal).max() < 10


def test_predict_dicom_gives_a_finite_score_per_class(setup):
    from pydicom.data import get_testdata_file

    config, variables = setup
    p = inference.predict(config, variables, get_testdata_file("waveform_ecg.dcm"), "synthetic_ecg")
    assert list(p.scores) == list(labels.classes("synthetic_ecg"))
    assert all(np.isfinite(v) and -1 - 1e-6 <= v <= 1 + 1e-6 for v in p.scores.values())
    assert all(p.lead_observed.values())
    assert p.valid_seconds == pytest.approx(4.0)
    text = inference.format_prediction(p)
    assert "NORM" in text and "(V1)" not in text


def test_predict_wfdb_with_three_leads_removed(setup, tmp_path):
    """A WFDB record holding 9 of 12 leads (shuffled order): those 3 are unobserved, scores finite."""
    config, variables = setup
    signal, names, rate, _ = wfdb_common.pydicom_ecg()
    keep = [0, 1, 6, 7, 8, 9, 10, 11, 4][::-1]  # drop III, aVR, aVF; reverse the order
    _write(tmp_path / "rec", signal[:, keep], [names[i] for i in keep], rate)
    p = inference.predict(config, variables, str(tmp_path / "rec.hea"), "synthetic_ecg")
    assert [n for n, o in p.lead_observed.items() if not o] == ["III", "aVR", "aVF"]
    assert all(np.isfinite(v) for v in p.scores.values())


def _write(base, signal, names, rate):
    import wfdb

    wfdb.wrsamp(
        base.name,
        fs=rate,
        units=["mV"] * len(names),
        sig_name=names,
        p_signal=signal,
        fmt=["16"] * len(names),
        adc_gain=[1000.0] * len(names),
        baseline=[0] * len(names),
        write_dir=str(base.parent),
    )


def test_corrupt_files_name_the_file_and_problem(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(inference.UnreadableRecordError, match="broken.dcm.*DICOM"):
        inference.read_ecg_file(str(bad))
    with pytest.raises(inference.UnreadableRecordError, match="no WFDB header"):
        inference.read_ecg_file(str(tmp_path / "missing.hea"))
    hea = tmp_path / "trunc.hea"
    _write(tmp_path / "trunc", np.zeros((1000, 12)) + 0.1, list(preprocessing.LEAD_NAMES), 500)
    dat = tmp_path / "trunc.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    assert hea.exists()
    with pytest.raises(inference.UnreadableRecordError, match="trunc.dat.*truncated"):
        inference.read_ecg_file(str(hea))
