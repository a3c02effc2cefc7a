"""The synthetic ECG generator: lead algebra, rates, ST deviations, evidence, reports, labels."""

import numpy as np
import pytest

from scar_jax.data import labels, synthetic
from scar_jax.leads import LEAD_NAMES

L = {name: i for i, name in enumerate(LEAD_NAMES)}


def _rec(index, names=None, fs=500, seed=0, **kw):
    return synthetic.generate_record(seed, "train", index, sampling_rate=fs, labels=names, **kw)


@pytest.mark.parametrize("names", [["NORM"], ["AMI", "RBBB"], ["AFIB", "LVOLT"], ["PVC", "IMI"]])
def test_einthoven_and_goldberger_relations(names):
    for i in range(3):
        x = _rec(i, names).ecg
        lead_i, lead_ii = x[:, L["I"]], x[:, L["II"]]
        np.testing.assert_allclose(x[:, L["III"]], lead_ii - lead_i, atol=1e-5, rtol=0)
        np.testing.assert_allclose(x[:, L["aVR"]], -(lead_i + lead_ii) / 2, atol=1e-5, rtol=0)
        np.testing.assert_allclose(x[:, L["aVL"]], lead_i - lead_ii / 2, atol=1e-5, rtol=0)
        np.testing.assert_allclose(x[:, L["aVF"]], lead_ii - lead_i / 2, atol=1e-5, rtol=0)
        # precordial leads are not a function of the limb leads
        _, res, *_ = np.linalg.lstsq(x[:, :2], x[:, L["V2"]], rcond=None)
        assert res[0] > 0.1 * np.sum(x[:, L["V2"]] ** 2)


def test_rr_intervals_have_the_requested_mean():
    rng = np.random.default_rng(0)
    for hr in (45.0, 72.0, 130.0):
        for afib in (False, True):
            rr = synthetic.rr_intervals(rng, hr, 40, afib=afib)
            assert 60.0 / rr.mean() == pytest.approx(hr, rel=1e-9)


def _r_peaks(ecg, fs):
    """QRS detection: peaks of the summed |slope| of the smoothed leads (refractory 250 ms)."""
    k = max(int(0.02 * fs), 1)
    smooth = np.apply_along_axis(lambda v: np.convolve(v, np.ones(k) / k, "same"), 0, ecg)
    energy = np.abs(np.diff(smooth, axis=0)).sum(1)  # muscle noise averaged out first
    energy = np.convolve(energy, np.ones(k) / k, mode="same")
    thr = 0.4 * np.percentile(energy, 99.5)
    peaks, last = [], -(10**9)
    for i in np.flatnonzero((energy[1:-1] > thr) & (energy[1:-1] >= energy[:-2])
                            & (energy[1:-1] >= energy[2:])) + 1:  # fmt: skip
        if i - last > 0.25 * fs:
            peaks.append(i)
            last = i
        elif energy[i] > energy[peaks[-1]]:
            peaks[-1] = last = i
    return np.array(peaks)


@pytest.mark.parametrize("hr", [48.0, 75.0, 125.0])
def test_heart_rate_measured_on_the_signal(hr):
    for i in range(3):
        rec = _rec(i, ["NORM"], heart_rate=hr, fs=250)
        peaks = _r_peaks(rec.ecg, 250)
        measured = 60.0 / np.mean(np.diff(peaks) / 250.0)
        assert measured == pytest.approx(hr, rel=0.05), (i, measured)
        # one detected peak per generated QRS inside the record (+-1 at the edges)
        inside = rec.qrs_onsets[(rec.qrs_onsets > 0) & (rec.qrs_onsets < 10)]
        assert abs(len(peaks) - len(inside)) <= 1


def _st_deviation(rec, fs):
    """Mean over beats of ECG(J + 60 ms) - mean ECG(PR segment [onset-40, onset-10] ms): [12]."""
    n = rec.ecg.shape[0]
    out = []
    for on, j in zip(rec.qrs_onsets, rec.j_points):
        a, b, c = int((on - 0.04) * fs), int((on - 0.01) * fs), int((j + 0.06) * fs)
        if a >= 0 and c < n:
            out.append(rec.ecg[c] - rec.ecg[a:b].mean(0))
    return np.mean(out, 0)


@pytest.mark.parametrize("cls", ["AMI", "IMI", "LMI"])
def test_st_elevation_primary_and_reciprocal_depression_secondary(cls):
    info = synthetic.CLASS_INFO[synthetic.CLASSES.index(cls)]
    prim = [L[x] for x in info.primary_leads]
    sec = [L[x] for x in info.secondary_leads]
    norm = np.array([_st_deviation(_rec(i, ["NORM"]), 500) for i in range(10)])
    for i in range(10):
        st = _st_deviation(_rec(100 + i, [cls]), 500)
        assert st[prim].min() > 0.05, (i, st[prim])
        assert st[sec].max() < 0.0 and st[sec].mean() < -0.03, (i, st[sec])
        assert np.all(st[prim] > norm.mean(0)[prim] + 0.04), (i, st[prim])
    # normal records: no systematic deviation (T-wave upslope and early repolarisation aside)
    assert np.abs(norm.mean(0)).max() < 0.08


def test_afib_rr_irregular_sinus_regular():
    def irregularity(rec):
        inside = rec.qrs_onsets[(rec.qrs_onsets > 0) & (rec.qrs_onsets < 10)]
        rr = np.diff(inside)
        return np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean()  # RMSSD / mean RR

    sinus = [irregularity(_rec(i, ["NORM"], fs=100)) for i in range(20)]
    afib = [irregularity(_rec(i, ["AFIB"], fs=100)) for i in range(20)]
    assert max(sinus) < 0.06 < min(afib)
    # and measured on the signal
    for i in range(5):
        peaks = _r_peaks(_rec(i, ["AFIB"], fs=250).ecg, 250)
        rr = np.diff(peaks) / 250.0
        assert np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean() > 0.06


def test_determinism_by_seed_and_independent_of_order():
    a = [synthetic.generate_record(7, "validation", i, sampling_rate=100) for i in range(4)]
    b = [synthetic.generate_record(7, "validation", i, sampling_rate=100) for i in (3, 2, 1, 0)]
    for x, y in zip(a, b[::-1]):
        np.testing.assert_array_equal(x.ecg, y.ecg)
        np.testing.assert_array_equal(x.evidence_primary, y.evidence_primary)
        assert x.report == y.report
    c = synthetic.generate_record(8, "validation", 0, sampling_rate=100)
    assert not np.array_equal(a[0].ecg, c.ecg)
    d = synthetic.generate_record(7, "test", 0, sampling_rate=100)
    assert not np.array_equal(a[0].ecg, d.ecg)


def test_missing_leads_are_zero_and_unobserved():
    n_missing = 0
    for i in range(20):
        rec = synthetic.generate_record(0, "train", i, sampling_rate=100, missing_lead_fraction=1.0)
        assert 1 <= (~rec.lead_observed).sum() <= 6
        assert np.all(rec.ecg[:, ~rec.lead_observed] == 0)
        assert np.all(np.abs(rec.ecg[:, rec.lead_observed]).max(0) > 0.05)
        n_missing += (~rec.lead_observed).sum()
    assert n_missing > 20
    rec = synthetic.generate_record(0, "train", 0, sampling_rate=100, missing_lead_fraction=0.0)
    assert rec.lead_observed.all()


def test_label_exclusions_and_prevalence():
    y = np.array([synthetic.sample_labels(np.random.default_rng(i)) for i in range(3000)])
    c = {name: y[:, i] for i, name in enumerate(synthetic.CLASSES)}
    assert np.all(y.sum(1) >= 1)
    assert np.all(y[c["NORM"]].sum(1) == 1)  # NORM stands alone
    rhythm = c["AFIB"].astype(int) + c["SBRAD"] + c["STACH"]
    assert rhythm.max() == 1
    assert not np.any(c["LBBB"] & c["RBBB"])
    mi = c["AMI"].astype(int) + c["IMI"] + c["LMI"]
    assert mi.max() == 1 and not np.any((mi > 0) & c["LBBB"])
    assert not np.any(c["AFIB"] & (c["1AVB"] | c["PVC"]))
    assert (y.sum(1) > 1).mean() > 0.15  # multi-label happens
    assert y.mean(0).min() > 0.04, dict(zip(synthetic.CLASSES, y.mean(0)))


def test_every_class_has_primary_and_secondary_regions():
    for info in synthetic.CLASS_INFO:
        assert info.primary_leads and info.secondary_leads
        assert info.primary_time in synthetic.TIME_KINDS
        assert info.secondary_time in synthetic.TIME_KINDS
        assert set(info.primary_leads) <= set(LEAD_NAMES)
        assert set(info.secondary_leads) <= set(LEAD_NAMES)
        # lead-level regions are disjoint; the time-localised class splits by time instead
        if info.primary_time == info.secondary_time or "all" in (
            info.primary_time,
            info.secondary_time,
        ):
            assert not set(info.primary_leads) & set(info.secondary_leads), info.name
    assert len(synthetic.CLASSES) >= 8


def test_evidence_maps_follow_the_class_regions():
    rec = _rec(3, ["IMI"], fs=100)
    prim, sec = rec.evidence_primary, rec.evidence_secondary
    assert prim.shape == sec.shape == (100, 12)
    assert set(np.flatnonzero(prim.any(0))) == {L["II"], L["III"], L["aVF"]}
    assert set(np.flatnonzero(sec.any(0))) == {L["I"], L["aVL"]}
    # ST spans of every beat: about (T end - J) / RR of the time, never all of it
    assert 0.15 < prim[:, L["II"]].mean() < 0.9
    # each J point .. T end lies in a marked bin
    for j in rec.j_points[(rec.j_points > 0.05) & (rec.j_points < 9.8)]:
        assert prim[int((j + 0.05) / 0.1), L["III"]]

    pvc = _rec(4, ["PVC"], fs=100)
    assert pvc.evidence_primary.all(1).sum() >= 3  # whole-lead-set spans at the PVCs
    assert pvc.evidence_primary.any(1).mean() < 0.5  # localised in time
    assert not (pvc.evidence_primary.any(1) & ~pvc.evidence_primary.all(1)).any()
    assert pvc.evidence_secondary.any()
    # secondary spans start where the premature beat's span ends (after it in time)
    first_p = np.flatnonzero(pvc.evidence_primary[:, 0])[0]
    first_s = np.flatnonzero(pvc.evidence_secondary[:, 0])[0]
    assert first_s > first_p

    # per-class time bins: PVC's own spans, not the union with another class's
    both = _rec(4, ["PVC", "IMI"], fs=100)
    c_pvc, c_imi = synthetic.CLASSES.index("PVC"), synthetic.CLASSES.index("IMI")
    t_pvc = both.evidence_time_primary[:, c_pvc]
    assert 0 < t_pvc.mean() < 0.5 and both.evidence_time_primary[:, c_imi].sum() > t_pvc.sum()
    assert (
        both.evidence_time_primary.sum(0)[[c for c in range(12) if c not in (c_pvc, c_imi)]].max()
        == 0
    )
    reg = synthetic.class_regions(both.evidence_time_secondary, "secondary")
    np.testing.assert_array_equal(reg.any(0), both.evidence_secondary)
    assert reg[c_imi][:, [L["I"], L["aVL"]]].any() and not reg[c_imi][:, L["V1"]].any()

    norm = _rec(5, ["NORM"], fs=100)
    assert norm.evidence_primary[:, 6:].all() and not norm.evidence_primary[:, :6].any()


def test_pack_unpack_evidence_round_trip():
    rng = np.random.default_rng(0)
    m = rng.random((100, 12)) < 0.3
    np.testing.assert_array_equal(synthetic.unpack_evidence(synthetic.pack_evidence(m), 100), m)


def test_prompts_are_worded_unlike_every_report_phrasing():
    templates = [t.lower() for t in synthetic.all_report_templates()]
    reports = [_rec(i, fs=100).report.lower() for i in range(100)]
    seen = set()
    for info in synthetic.CLASS_INFO:
        assert len(info.prompts) >= 3 and info.prompt == info.prompts[0], info.name
        for prompt in info.prompts:
            body = prompt[len(synthetic.PROMPT_PREFIX) :].lower()
            assert prompt.startswith(synthetic.PROMPT_PREFIX)
            assert body not in seen, (info.name, prompt)  # no two classes share a phrasing
            seen.add(body)
            for text in templates + reports:
                assert body not in text and prompt.lower() not in text, (info.name, text)
    assert labels.prompts("synthetic_ecg") == {c.name: c.prompts for c in synthetic.CLASS_INFO}
    assert labels.classes("synthetic_ecg/250hz") == synthetic.CLASSES


def _marker(template):
    return template.split("{")[0].lower()


def test_reports_name_exactly_the_positive_findings():
    n_remarks = 0
    orders = set()
    for i in range(200):
        rec = _rec(i, fs=100)
        text = rec.report
        for c, on in zip(synthetic.CLASSES, rec.labels):
            found = any(_marker(t) in text for t in synthetic.FINDING_TEMPLATES[c])
            assert found == bool(on), (c, on, text)
        n_remarks += any(_marker(r) in text for r in synthetic.IRRELEVANT_REMARKS)
        if rec.labels.sum() >= 2:
            names = [c for c, on in zip(synthetic.CLASSES, rec.labels) if on]
            pos = [min(text.find(_marker(t)) for t in synthetic.FINDING_TEMPLATES[c]
                       if _marker(t) in text) for c in names]  # fmt: skip
            orders.add(tuple(np.argsort(pos)))
    assert n_remarks > 20  # occasional irrelevant remarks
    assert len(orders) > 1  # shuffled order
    # several phrasings per finding are used
    afib_reports = [_rec(i, ["AFIB"], fs=100).report for i in range(40)]
    used = {t for t in synthetic.FINDING_TEMPLATES["AFIB"] for r in afib_reports
            if _marker(t) in r}  # fmt: skip
    assert len(used) >= 3


def test_amplitudes_are_plausible():
    for i in range(10):
        x = _rec(i, ["NORM"]).ecg
        qrs = np.ptp(x, 0)
        assert 0.3 < qrs[L["II"]] < 4.0
        assert np.abs(x).max() < 6.0
    low = np.median([np.ptp(_rec(i, ["LVOLT"]).ecg[:, :6], 0).max() for i in range(10)])
    normal = np.median([np.ptp(_rec(i, ["NORM"]).ecg[:, :6], 0).max() for i in range(10)])
    assert low < 0.6 * normal


@pytest.mark.slow
def test_plot_examples_writes_png(tmp_path):
    out = synthetic.plot_examples(str(tmp_path / "ex.png"), config_name="100hz", seconds=3.0)
    with open(out, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


@pytest.mark.slow
def test_secondary_evidence_alone_is_informative():
    """A logistic probe on hand-made features sees each class through its secondary region."""
    res = synthetic.evidence_probe(
        num_train=240, num_test=160, classes=["AMI", "LBBB", "PVC"], views=("secondary_only",)
    )
    for name, views in res.items():
        assert views["secondary_only"] > 0.7, (name, views)


def test_probe_features_ignore_removed_samples():
    rec = _rec(0, ["AMI"], fs=100)
    keep = np.ones((1000, 12), bool)
    keep[:, [6, 7, 8, 9]] = False  # V1-V4 removed
    other = rec.ecg.copy()
    other[:, [6, 7, 8, 9]] = np.random.default_rng(0).normal(0, 1, (1000, 4))
    a = synthetic.beat_features(rec.ecg, keep, 100)
    b = synthetic.beat_features(other, keep, 100)
    np.testing.assert_array_equal(a, b)
    full = synthetic.beat_features(rec.ecg, np.ones_like(keep), 100)
    assert not np.array_equal(a, full)


def test_label_registry():
    from scar_jax.data import real_labels

    assert "synthetic_ecg" in labels.registered()
    assert labels.classes("ptbxl/superdiagnostic") == real_labels.PTBXL_SUPERDIAGNOSTIC
    assert labels.prompts("cpsc2018")["AF"] == real_labels.prompts("cpsc2018", "AF")
    labels.register("csn_test", ("A", "B"), {"A": "ECG shows a", "B": ["ECG shows b", "b2"]})
    try:
        assert labels.classes("csn_test/500hz") == ("A", "B")
        assert labels.prompts("csn_test") == {"A": ("ECG shows a",), "B": ("ECG shows b", "b2")}
        with pytest.raises(ValueError, match="no prompt for classes \\['B'\\]"):
            labels.register("bad", ("A", "B"), {"A": "x"})
        with pytest.raises(ValueError, match="already registered"):
            labels.register("csn_test", ("A",), {"A": "x"})
    finally:
        labels._REGISTRY.pop("csn_test")
    with pytest.raises(KeyError, match="Register it with"):
        labels.classes("unknown_corpus")


def test_generate_record_rejects_unknown_labels():
    with pytest.raises(ValueError, match="unknown classes \\['MI'\\]"):
        _rec(0, ["MI"], fs=100)
    with pytest.raises(ValueError, match="at least one"):
        _rec(0, np.zeros(len(synthetic.CLASSES), bool), fs=100)


def test_probe_views_are_the_evaluation_oracle_regions():
    """The probe's views compose the grid's oracle regions (one rule): AMI loses V1-V4 for
    the whole record, a PVC positive loses its own premature-beat spans on every lead."""
    from scar_jax.evaluation.regions import oracle_regions

    rs = [_rec(i, names, fs=100) for i, names in enumerate([["AMI"], ["PVC"], ["NORM"]])]
    meta = {"class_info": {c.name: c.as_dict() for c in synthetic.CLASS_INFO}}
    labels_ = np.stack([r.labels for r in rs])
    reg = {
        region: oracle_regions(meta, synthetic.CLASSES, region, labels_,
                               np.stack([getattr(r, f"evidence_time_{region}") for r in rs]), 100)
        for region in ("primary", "secondary")
    }  # fmt: skip
    ami, pvc = synthetic.CLASSES.index("AMI"), synthetic.CLASSES.index("PVC")
    keep = synthetic._view_keep(rs[0], "no_primary", reg["primary"][ami, 0],
                                reg["secondary"][ami, 0])  # fmt: skip
    removed = [L[x] for x in synthetic.CLASS_INFO[ami].primary_leads]
    assert not keep[:, removed].any() and keep.sum() == 1000 * (12 - len(removed))
    keep = synthetic._view_keep(rs[1], "no_primary", reg["primary"][pvc, 1],
                                reg["secondary"][pvc, 1])  # fmt: skip
    spans = np.repeat(rs[1].evidence_time_primary[:, pvc], 10)
    assert spans.any() and np.array_equal(keep, np.repeat(~spans[:, None], 12, 1))
    only = synthetic._view_keep(rs[1], "secondary_only", reg["primary"][pvc, 1],
                                reg["secondary"][pvc, 1])  # fmt: skip
    sec = np.repeat(rs[1].evidence_time_secondary[:, pvc], 10) & ~spans
    assert np.array_equal(only, np.repeat(sec[:, None], 12, 1))
    full = synthetic._view_keep(rs[2], "full", reg["primary"][0, 2], reg["secondary"][0, 2])
    assert full.all()


def test_probe_logistic_regression_minimises_the_l2_objective():
    """evaluation's logistic regression at C = 1 / (l2 N) is the minimiser of
    mean log-loss + l2 / 2 |w|^2 (the probe's objective): its gradient vanishes there."""
    from scar_jax.evaluation import linear_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + rng.normal(size=300)) > 0
    l2 = 0.05
    coef, intercept = linear_probe.fit_classes(x, y[:, None], 1.0 / (l2 * len(y)))
    w, b = coef[0], intercept[0]
    p = 1 / (1 + np.exp(-(x @ w + b)))
    grad_w = x.T @ (p - y) / len(y) + l2 * w
    grad_b = np.mean(p - y)
    assert np.abs(grad_w).max() < 1e-3 and abs(grad_b) < 1e-3
    assert np.abs(w).max() > 0.3  # a real fit, not the zero vector


@pytest.mark.parametrize("cls", synthetic.SECONDARY_KNOB_CLASSES + ("LBBB", "1AVB", "PVC"))
def test_secondary_strength_scales_only_the_secondary_only_leads(cls):
    """The knob is linear in its strength, touches only the class's secondary-only leads,
    and only for the classes it names; strength 1 is the corpus as always."""
    info = synthetic.CLASS_INFO[synthetic.CLASSES.index(cls)]
    only = [L[x] for x in info.secondary_leads if x not in info.primary_leads]
    rest = [i for i in range(12) if i not in only]
    recs = {s: synthetic.generate_record(0, "test", 7, sampling_rate=250, labels=[cls],
                                         secondary_strength=s) for s in (0.0, 0.5, 1.0)}
    plain = synthetic.generate_record(0, "test", 7, sampling_rate=250, labels=[cls])
    np.testing.assert_array_equal(recs[1.0].ecg, plain.ecg)
    np.testing.assert_allclose(recs[0.5].ecg, (recs[0.0].ecg + recs[1.0].ecg) / 2, atol=1e-6)
    diff = np.abs(recs[0.0].ecg - recs[1.0].ecg).max(0)
    assert diff[rest].max() == 0.0
    if cls in synthetic.SECONDARY_KNOB_CLASSES:
        assert diff[only].min() > 0.005, dict(zip(synthetic.LEAD_NAMES, diff))
    else:
        assert diff.max() == 0.0
    assert recs[0.0].report == plain.report
    np.testing.assert_array_equal(recs[0.0].evidence_secondary, plain.evidence_secondary)


@pytest.mark.parametrize("cls", ["AMI", "IMI", "LMI"])
def test_secondary_strength_zero_removes_the_reciprocal_st_change(cls):
    info = synthetic.CLASS_INFO[synthetic.CLASSES.index(cls)]
    only = [L[x] for x in info.secondary_leads if x not in info.primary_leads]
    prim = [L[x] for x in info.primary_leads]
    for i in range(5):
        full = _st_deviation(_rec(100 + i, [cls]), 500)
        gone = _st_deviation(synthetic.generate_record(
            0, "train", 100 + i, sampling_rate=500, labels=[cls], secondary_strength=0.0), 500)
        # the reciprocal depression is gone (what stays is the record's non-specific ST
        # drift and T upslope, as in normal records: see the test above)
        assert full[only].mean() < -0.03 and gone[only].mean() > -0.03, (full, gone)
        assert (gone - full)[only].mean() > 0.08, (full, gone)
        np.testing.assert_array_equal(full[prim], gone[prim])


def test_secondary_strength_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="secondary_strength must be in"):
        synthetic.generate_record(0, "train", 0, secondary_strength=1.5)
