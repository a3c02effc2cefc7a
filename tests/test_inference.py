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


@pytest.mark.parametrize("rate, want", [(100, 10), (250, 25), (257, 26), (360, 36), (500, 50),
                                        (1000, 100), (4, 1)])
def test_one_nan_gap_rule(rate, want):
    """round(0.1 s * rate), at least one sample: builders and inference read the same number."""
    assert preprocessing.nan_gap_samples(rate) == want
    with pytest.raises(ValueError, match="rate=0"):
        preprocessing.nan_gap_samples(0)


@pytest.mark.parametrize("gap, kept", [(26, True), (27, False)])
def test_builders_and_inference_repair_the_same_nan_gaps(setup, gap, kept):
    """At 257 Hz (INCART) the rule allows 26 samples: both paths repair 26 and drop a lead at 27
    (before, the builders' round() allowed 26 and inference's int() 25)."""
    config, _ = setup
    sig = wfdb_common.synthetic_ecg(4, 257, seed=3)
    sig[300:300 + gap, 2] = np.nan
    rec = wfdb_common.Record(sig, list(preprocessing.LEAD_NAMES), 257, [], "f")
    built = wfdb_common.Hygiene("t").example("r", rec, target_rate=100, num_samples=400)
    batch = inference.prepare_input(rec, config.input)
    assert bool(built["lead_observed"][2]) is kept
    assert bool(batch["lead_observed"][0, 2]) is kept


def test_class_embeddings_average_phrasings_then_centre(setup):
    """A class is the normalised mean of its phrasings' embeddings; centring subtracts the
    mean class embedding (of the normalised classes) and renormalises."""
    config, variables = setup
    model = scar.build_model(config.model)
    phrasings = [("ECG shows a", "ECG shows b b"), ("ECG shows c",), ("ECG shows d e f",)]
    one = lambda texts: scar.class_embeddings(  # noqa: E731
        model, variables, [(t,) for t in texts], text_checkpoint="random-tiny", max_len=16)
    single = one(["ECG shows a", "ECG shows b b", "ECG shows c", "ECG shows d e f"])
    np.testing.assert_allclose(np.linalg.norm(single, axis=1), 1.0, rtol=1e-5)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    want = unit(np.stack([single[0] + single[1], single[2], single[3]]))
    kw = dict(text_checkpoint="random-tiny", max_len=16)
    got = scar.class_embeddings(model, variables, phrasings, **kw)
    np.testing.assert_allclose(got, want, atol=1e-5)
    centred = scar.class_embeddings(model, variables, phrasings, center=True, **kw)
    np.testing.assert_allclose(centred, unit(want - want.mean(0)), atol=1e-5)
    with pytest.raises(ValueError, match="at least one phrasing"):
        scar.class_embeddings(model, variables, [("x",), ()], **kw)
    with pytest.raises(TypeError, match=r"classes \[1\] got a bare string"):
        scar.class_embeddings(model, variables, [("x",), "ECG shows y"], **kw)


@pytest.mark.parametrize("center", [False, True])
def test_predict_scores_with_the_class_embeddings_eval_uses(setup, center):
    """predict's score of each class == cos(ECG embedding, eval's class embedding)."""
    from pydicom.data import get_testdata_file

    from scar_jax.evaluation import run

    config, variables = setup
    config = config.copy_and_resolve_references()
    config.eval.center_prompts = center
    path = get_testdata_file("waveform_ecg.dcm")
    p = inference.predict(config, variables, path, "synthetic_ecg")
    spec = run.ModelSpec.from_config("m", config, variables)
    classes = labels.classes("synthetic_ecg")
    z_cls = spec.class_embeddings([labels.prompts("synthetic_ecg")[c] for c in classes], center)
    batch = inference.prepare_input(inference.read_ecg_file(path), config.input)
    z, _ = spec.model.apply(variables, batch["ecg"], batch["lead_observed"],
                            batch["time_observed"], method=scar.Model.embed_ecg)
    z = np.asarray(z) / np.linalg.norm(np.asarray(z), axis=-1, keepdims=True)
    want = (z @ z_cls.T)[0]
    np.testing.assert_allclose([p.scores[c] for c in classes], want, atol=1e-5)
