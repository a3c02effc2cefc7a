"""Zero-shot diagnostics (scar_jax.evaluation.diagnostics) on constructed embeddings."""

import numpy as np

from scar_jax.evaluation import diagnostics, zeroshot


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_class_means_average_the_normalised_rows_of_each_class():
    z = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    labels = np.array([[1, 0], [1, 1], [0, 1]], bool)
    np.testing.assert_allclose(diagnostics.class_means(z, labels),
                               _unit(np.array([[1.0, 1.0], [0.0, 2.0]])), atol=1e-6)


def test_prompt_cosine_finds_the_closest_pair():
    z = _unit(np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]]))
    out = diagnostics.prompt_cosine(z, ["A", "B", "C"])
    assert out["max_pair"][:2] == ["A", "B"]
    np.testing.assert_allclose(out["max_pair"][2], z[0] @ z[1], atol=1e-4)
    np.testing.assert_allclose(out["mean_offdiag"], np.mean([z[0] @ z[1], 0.0, z[1] @ z[2]]),
                               atol=1e-6)


def test_diagnostics_on_a_text_side_that_points_exactly_at_the_classes():
    """Reports equal to their class embedding: text-alone AUROC 1; the bound reproduces the
    ECG zero-shot when ECGs sit on their class mean; the centring choice is computed on
    the validation pair given."""
    rng = np.random.default_rng(0)
    k, n, e = 3, 60, 8
    z_cls = _unit(rng.normal(size=(k, e)))
    y = np.eye(k, dtype=bool)[rng.integers(0, k, n)]
    reports = z_cls[y.argmax(1)]
    ecg = _unit(reports + 0.3 * rng.normal(size=(n, e)))
    out = diagnostics.zeroshot_diagnostics(
        class_names=["a", "b", "c"], z_cls_raw=z_cls, z_cls=z_cls, test_labels=y,
        z_ecg_test=ecg, z_reports_test=reports, val=(ecg, y), centered=False)
    assert out["text_zeroshot"]["auroc"] == 1.0
    want = zeroshot.macro_auroc(y, zeroshot.scores(ecg, z_cls))["auroc"]
    np.testing.assert_allclose(out["class_mean_bound"]["auroc"], want, atol=1e-9)
    np.testing.assert_allclose(out["center_choice"]["val_auroc_raw"], want, atol=1e-9)
    centred = _unit(z_cls - z_cls.mean(0))
    np.testing.assert_allclose(
        out["center_choice"]["val_auroc_centered"],
        zeroshot.macro_auroc(y, zeroshot.scores(ecg, centred))["auroc"], atol=1e-9)
