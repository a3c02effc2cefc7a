"""METHOD §2: a removed lead or span is one that was never recorded.

embedding(record loaded whole, leads/spans removed by a keep mask or by the masker)
== embedding(record loaded with those leads/samples never recorded), for both
normalisations, through the loader's own normalisation (preprocessing.normalize_batch)
and the model's own entry points (embed_ecg, the training forward's masked view).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import scar as scar_config
from scar_jax.data import preprocessing
from scar_jax.models import scar

B, PATCH = 3, 100
T = 1000  # 10 segments of 100 samples
ATOL = 1e-4  # float32: the two loads round differently before the renormalisation


def _model(normalize, stem="conv", **masker):
    config = scar_config.get_config("runlocal,text=random-tiny,unit=lead,method=random")
    config.input.normalize = normalize  # model.ecg.normalize follows it
    config.model.ecg.stem = stem
    for k, v in masker.items():
        config.model.masker[k] = v
    model = scar.build_model(config.model)
    batch = _batch(np.ones((B, 12), bool), np.ones((B, T), bool), normalize)
    rngs = {"params": jax.random.key(0), "masker": jax.random.key(1)}
    return config, model, model.init(rngs, batch)


def _raw(seed=0):
    """Raw records [B, T, 12] in mV: a beat-like wave, per-lead gains and offsets, one lead
    with a large excursion (so removing it changes a record-wide min/max)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 100.0
    wave = np.sin(2 * np.pi * 1.2 * t)[None, :, None] ** 9
    gains = rng.uniform(0.2, 2.0, (B, 1, 12))
    offsets = rng.uniform(-0.5, 0.5, (B, 1, 12))
    raw = wave * gains + offsets + 0.05 * rng.normal(size=(B, T, 12))
    raw[:, :, 7] *= 6.0  # V2: the extremes
    raw[:, 300:400, :] += 3.0  # an artefact in segment 3 of every lead
    return raw.astype(np.float32)


def _batch(lead_observed, time_observed, normalize, raw=None):
    """The loader's view of the raw records: unrecorded leads / samples are NaN, then
    normalised over what was recorded (preprocessing.normalize_batch, as the pipeline does)."""
    raw = _raw() if raw is None else raw.copy()
    raw[~np.broadcast_to(lead_observed[:, None, :], raw.shape)] = np.nan
    raw[~np.broadcast_to(time_observed[:, :, None], raw.shape)] = np.nan
    ecg = preprocessing.normalize_batch(raw, lead_observed, time_observed, normalize)
    return {
        "ecg": jnp.asarray(ecg),
        "lead_observed": jnp.asarray(lead_observed),
        "time_observed": jnp.asarray(time_observed),
        "txt_feats": jnp.zeros((B, 32), jnp.float32),
    }


def _embed(model, params, batch, keep=None):
    z, _ = model.apply(
        params,
        batch["ecg"],
        batch["lead_observed"],
        batch["time_observed"],
        keep,
        method=model.embed_ecg,
    )
    return np.asarray(z)


def _removals():
    """(name, removed leads [B, 12], removed segments [B, 10]) cases."""
    leads = np.zeros((B, 12), bool)
    leads[:, [6, 7, 8]] = True  # V1-V3 (V2 holds the record's extremes)
    leads[1, [0, 1]] = True
    segs = np.zeros((B, 10), bool)
    segs[:, 2:5] = True  # 0.2-0.5 of the record, with the artefact
    segs[2, 9] = True
    both_l = np.zeros((B, 12), bool)
    both_l[:, 7] = True
    both_s = np.zeros((B, 10), bool)
    both_s[:, 3] = True
    return [
        ("leads", leads, np.zeros((B, 10), bool)),
        ("span", np.zeros((B, 12), bool), segs),
        ("both", both_l, both_s),
    ]


@pytest.mark.parametrize("stem", ["conv", "linear"])
@pytest.mark.parametrize("normalize", ["minmax", "zscore"])
def test_keep_mask_removal_equals_never_recorded(normalize, stem):
    _, model, params = _model(normalize, stem)
    whole = _batch(np.ones((B, 12), bool), np.ones((B, T), bool), normalize)
    for name, lead_rm, seg_rm in _removals():
        keep = ~(lead_rm[:, :, None] | seg_rm[:, None, :])
        z_removed = _embed(model, params, whole, jnp.asarray(keep, jnp.float32))
        unrecorded = _batch(~lead_rm, ~np.repeat(seg_rm, PATCH, axis=1), normalize)
        z_never = _embed(model, params, unrecorded)
        np.testing.assert_allclose(z_removed, z_never, atol=ATOL, err_msg=name)
        # and the removal changes the embedding (the identity is not vacuous)
        assert np.abs(z_removed - _embed(model, params, whole)).max() > 1e-3, name


def test_without_renormalisation_the_identity_fails():
    """The old behaviour (the encoder uses the loader's whole-record minmax as is): the kept
    tokens still carry the removed leads' extremes, so the two embeddings differ."""
    config, model, params = _model("minmax")
    model_none = scar.build_model(config.model.copy_and_resolve_references())
    model_none = model_none.clone(ecg=model_none.ecg.clone(normalize="none"))
    whole = _batch(np.ones((B, 12), bool), np.ones((B, T), bool), "minmax")
    _, lead_rm, _ = _removals()[0]
    keep = jnp.asarray(np.broadcast_to(~lead_rm[:, :, None], (B, 12, 10)), jnp.float32)
    z_removed = _embed(model_none, params, whole, keep)
    z_never = _embed(model_none, params, _batch(~lead_rm, np.ones((B, T), bool), "minmax"))
    assert np.abs(z_removed - z_never).max() > 1e-3


@pytest.mark.parametrize("normalize", ["minmax", "zscore"])
def test_masked_view_equals_never_recorded(normalize):
    """The training forward's masked view (a random lead mask here, the masker's path) embeds
    the record as if the removed leads had never been recorded."""
    _, model, params = _model(normalize, swap_share=0.0)
    whole = _batch(np.ones((B, 12), bool), np.ones((B, T), bool), normalize)
    rho = jnp.full((B,), 0.5, jnp.float32)
    _, out = model.apply(params, whole, rho=rho, rngs={"masker": jax.random.key(3)})
    removed = np.asarray(out["masker"]["m_hard"]).any(-1)  # [B, 12] leads removed
    assert removed.sum(1).tolist() == [6] * B
    z_never = _embed(model, params, _batch(~removed, np.ones((B, T), bool), normalize))
    np.testing.assert_allclose(np.asarray(out["z_masked"]), z_never, atol=ATOL)
