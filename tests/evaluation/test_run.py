"""The evaluation driver: shared masks across models, batched == one by one, white-box vs random
on a trained model, checkpoints, and run_eval on the built synthetic corpus with its report."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import roc_auc_score

from scar_jax.evaluation import classwise
from scar_jax.evaluation import compare
from scar_jax.evaluation import data as eval_data
from scar_jax.evaluation import missingness as miss
from scar_jax.evaluation import run
from scar_jax.evaluation import zeroshot
from tests.evaluation.conftest import ecg_batch


def _small_grid(cfg, **kw):
    """config.eval shrunk to a few conditions of every family."""
    ev = cfg.eval
    ev.lead_drop, ev.subsets, ev.temporal, ev.joint = (3,), ("I+II",), (0.5,), ("3+0.25",)
    ev.rhos, ev.adv_units, ev.adv_modes = (0.2,), ("lead", "token"), ("whitebox", "transfer")
    ev.bootstrap, ev.batch_size, ev.chunk, ev.probe, ev.trace_examples = 20, 8, 4, False, 2
    for k, v in kw.items():
        ev[k] = v
    return ev


def _data(mu, n=12, k=3, seed=0):
    ecg, lead_obs = ecg_batch(n, mu.num_samples, seed)
    labels = np.random.default_rng(seed).random((n, k)) > 0.5
    labels[0], labels[1] = True, False  # every class has both labels
    return eval_data.EvalData(ecg, lead_obs, labels, [f"c{i}" for i in range(k)],
                        [(f"ECG shows finding {i}",) for i in range(k)])


@pytest.mark.slow
def test_models_share_masks_and_batching_changes_nothing(mu):
    a = run.ModelSpec("a", mu.model, mu.variables, "random-tiny", 16)
    pert = jax.tree.map(lambda x: x * 1.05 + 0.01, mu.variables)
    b = run.ModelSpec("b", mu.model, pert, "random-tiny", 16)
    ref = run.ModelSpec("ref", mu.model, jax.tree.map(lambda x: x * 0.95 - 0.01, mu.variables),
                        "random-tiny", 16)
    data = _data(mu)
    res_ab, plots = run.evaluate([a, b], data, _small_grid(mu.config), reference=ref)
    res_b, _ = run.evaluate([b], data, _small_grid(mu.config, batch_size=5, chunk=3),
                            reference=ref)
    zb, zb2 = res_ab["models"]["b"]["zeroshot"], res_b["models"]["b"]["zeroshot"]
    assert set(zb) == set(zb2) and len(zb) == 1 + 1 + 1 + 1 + 1 + 2 * 3
    for name in zb:  # other batch size, other chunking, other co-evaluated models: same numbers
        assert zb[name]["auroc"] == pytest.approx(zb2[name]["auroc"], abs=1e-6), name
    # the reference is outside the comparison: a compared model as reference is refused
    with pytest.raises(ValueError, match="outside the comparison"):
        run.evaluate([a, b], data, _small_grid(mu.config), reference=a)
    # one by one: the clean and lead-drop conditions through the model's own embed_ecg, scored
    # against the class embeddings evaluate uses (phrasings averaged, centred as configured)
    z_cls = b.class_embeddings(data.prompts, bool(_small_grid(mu.config).center_prompts))
    token_obs = np.asarray(b.model.apply(b.variables, jnp.asarray(data.ecg),
                                         jnp.asarray(data.lead_observed),
                                         method=b.model.observed_tokens))
    for cond in (miss.clean(), miss.lead_drop(3)):
        keep = miss.condition_keep(cond, token_obs, np.arange(len(data)), seed=0)
        z, _ = b.model.apply(b.variables, jnp.asarray(data.ecg), jnp.asarray(data.lead_observed),
                             keep=jnp.asarray(keep, jnp.float32), method=b.model.embed_ecg)
        s = zeroshot.scores(np.asarray(z), z_cls)
        np.testing.assert_allclose(plots["scores"]["b"][cond.name], s, atol=2e-5)
        want = np.mean([roc_auc_score(data.labels[:, c], s[:, c]) for c in range(3)])
        assert zb[cond.name]["auroc"] == pytest.approx(want, abs=1e-6)
    # one compilation per gathered length at most (4 buckets), however many batches
    assert 1 <= res_ab["timing"]["traces"] <= _small_grid(mu.config).grid_buckets == 4
    cm = res_ab["models"]["a"]["cmrs"]["whitebox/lead"]
    assert 0.0 <= cm["cmrs"] <= 1.0 and set(cm["by_rho"]) == {"0.2"}


def _trained(mu, steps=80):
    """The mu ECG tower trained so that class c lives in leads 4c..4c+3 (a 5 Hz wave)."""
    n, t, k = 48, mu.num_samples, 3
    rng = np.random.default_rng(0)
    labels = rng.random((n, k)) > 0.5
    labels[np.arange(n), rng.integers(0, k, n)] = True
    labels[:4] = [True, False, False]  # and some negatives for every class
    labels[4:8] = [False, True, False]
    tt = np.arange(t) / 500.0
    ecg = 0.3 * rng.normal(size=(n, t, 12)).astype(np.float32)
    for c in range(k):
        wave = np.sin(2 * np.pi * 5 * tt + rng.uniform(0, 6, (n, 1)))  # [n, t]
        ecg[:, :, 4 * c : 4 * c + 4] += (labels[:, c, None] * wave)[..., None] * 1.5
    lead_obs = np.ones((n, 12), bool)
    z_cls = np.array(jax.random.normal(jax.random.key(3), (k, 32)))
    z_cls /= np.linalg.norm(z_cls, axis=-1, keepdims=True)
    model = mu.model

    def loss(params):
        v = {"params": params}
        z, _ = model.apply(v, jnp.asarray(ecg), jnp.asarray(lead_obs), method=model.embed_ecg)
        logits = 10.0 * z @ z_cls.T
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

    opt = optax.adam(3e-3)
    params = mu.variables["params"]
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        l, g = jax.value_and_grad(loss)(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, l

    for _ in range(steps):
        params, state, l = step(params, state)
    return {"params": params}, ecg, lead_obs, labels, z_cls, float(l)


@pytest.mark.slow
def test_whitebox_removal_lowers_a_trained_models_margin_more_than_random(mu):
    variables, ecg, lead_obs, labels, z_cls, final_loss = _trained(mu)
    assert final_loss < 0.3  # it learned the classes
    emb = miss.GridEmbedder(mu.model, variables, chunk=8)
    obs = np.repeat(lead_obs[:, :, None], 10, 2)
    tok = emb.tokens(ecg, obs)
    idx = np.arange(len(ecg))
    for unit, rho in (("lead", 0.25), ("segment", 0.3), ("token", 0.3)):
        imp = emb.importance(tok, obs, unit, z_cls, labels)
        adv = np.asarray(miss.topk_units_keep(jnp.asarray(obs), jnp.asarray(imp), unit, rho))
        rnd = [miss.condition_keep(miss.random_units(unit, rho), obs, idx, seed)
               for seed in range(3)]
        z, _ = emb.embed(tok, miss.stack_keeps([obs, adv] + rnd))
        m = np.asarray(miss.margin_objective(jnp.asarray(z @ z_cls.T), jnp.asarray(labels)[None]))
        clean, white, random_ = m[0].mean(), m[1].mean(), m[2:].mean()
        assert white <= random_ <= clean + 1e-6, (unit, clean, white, random_)
        assert (adv.sum((1, 2)) == np.stack(rnd).sum((2, 3))).all()  # same budget


def test_load_checkpoint_restores_the_params(mu, tmp_path):
    from scar_jax import checkpointing

    ckpt = checkpointing.Checkpointer(tmp_path / "ckpt", async_save=False, keep_best=0)
    state = {"step": jnp.asarray(7), "params": mu.variables["params"]}
    ckpt.save(7, state, config=mu.config)
    ckpt.close()
    variables, saved = checkpointing.load_checkpoint(tmp_path / "ckpt")
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 variables["params"], mu.variables["params"])
    assert saved["model"]["ecg"]["variant"] == "mu"
    spec = run.model_spec("x", mu.config, str(tmp_path / "ckpt"))
    assert spec.model.ecg.variant == "mu" and spec.text_checkpoint == "random-tiny"


@pytest.mark.slow
def test_run_eval_on_the_built_synthetic_corpus_writes_the_report(mu, tmp_path):
    from scar_jax.data import build

    build.build_dataset("synthetic_ecg/tiny", data_dir=str(tmp_path / "tfds"))
    cfg = mu.config
    cfg.input.data_dir = str(tmp_path / "tfds")
    cfg.input.sample_rate, cfg.input.seconds = 100, 10.0
    _small_grid(cfg, adv_units=("lead",), adv_modes=("whitebox", "transfer"), probe=True,
                probe_fractions=(0.5, 1.0), probe_cs=(0.1, 1.0), max_examples=0,
                class_rhos=(0.5,), class_units=("lead",))
    out = tmp_path / "eval"
    # no reference given: the transfer rows are omitted, not ranked by the compared model
    res = run.run_eval(cfg, {"scar": mu.variables}, "synthetic_ecg/tiny", "test", out)
    for f in ("results.json", "results.md", "auroc_vs_missing.png", "cmrs_vs_rho.png",
              "traces.png"):
        assert (out / f).stat().st_size > 200, f
        if f.endswith(".png"):
            assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "results.json").read_text())["synthetic_ecg/tiny"]
    m = saved["models"]["scar"]
    assert res["n"] == 8 and {"oracle/primary", "oracle/secondary"} <= set(m["zeroshot"])
    assert {"masker/rho0.2", "masker_mode/rho0.2", "adversarial/whitebox/lead/rho0.2"} <= set(
        m["targeting"])
    assert not any("transfer" in k for k in m["zeroshot"]) and "none" in saved["reference"]
    assert "classwise/whitebox/lead/rho0.5" in m["zeroshot"]
    # the mask-only probe of the masker (sampled and mode) and of the white-box protocol
    # and the sampled masks with masker.swap_share of them swapped, as training shows them
    assert mu.config.model.masker.swap_share > 0
    assert set(m["mask_probe"]) == {"masker/rho0.2", "masker_mode/rho0.2",
                                    "masker_swapped/rho0.2", "adversarial/whitebox/lead/rho0.2"}
    assert set(saved["mask_probe"]) == {"random/lead/rho0.2"}
    assert "Mask-only label probe" in (out / "results.md").read_text()
    # the encoder's score shift under the oracle's removal, per lead-local class, from the
    # oracle/primary and clean scores (the per-class value is tested on its own below)
    local = saved["lead_local_classes"]
    assert local and set(m["oracle_shift"]["per_class"]) | set(
        m["oracle_shift"]["skipped"]) == set(local)
    assert "Mask shortcut in the encoder" in (out / "results.md").read_text()
    labels, scores = compare.load_scores(out / "scores.npz")  # per-example, for the seeds
    assert labels.shape == (8, len(saved["classes"]))
    np.testing.assert_allclose(
        compare.auroc_statistic(labels)(scores["scar"]["clean"], np.arange(8)[None])[0],
        m["zeroshot"]["clean"]["auroc"], atol=1e-9)
    with pytest.raises(ValueError, match="outside the comparison"):
        run.run_eval(cfg, {"scar": mu.variables}, "synthetic_ecg/tiny", "test", out,
                     reference=mu.variables)
    by_class = m["targeting_by_class"]["masker_mode/rho0.2"]
    assert set(by_class["classes"]) == set(saved["classes"])
    assert set(m["linear_probe"]) == {"0.5", "1"} and m["linear_probe"]["1"]["C"] in (0.1, 1.0)
    md = (out / "results.md").read_text()
    assert "| oracle/primary |" in md and "CMRS" in md and "Linear probe" in md
    # zero-shot diagnostics: text alone, prompt cosine, the labelled bound, the centring choice
    # (validation) and the untrained encoder's probe
    g = m["zeroshot_diagnostics"]
    assert {"text_zeroshot", "class_mean_bound", "center_choice", "prompt_cosine"} <= set(g)
    k = len(saved["classes"])
    assert np.allclose(np.diag(g["prompt_cosine"]["matrix"]), 1.0, atol=1e-3)
    assert np.array(g["prompt_cosine"]["matrix"]).shape == (k, k)
    assert "uses_labels" in g["class_mean_bound"] and g["centered"] == cfg.eval.center_prompts
    assert set(saved["random_init_probe"]) == {"0.5", "1"}
    assert "Zero-shot diagnostics" in md and "uses test labels" in md
    assert "Targeting by class" in md and "| masker_mode/rho0.2 |" in md
    # where the masker removes, lead by lead, for each of its removals (sampled and mode)
    leads = m["masker_leads"]
    assert set(leads) == {"masker/rho0.2", "masker_mode/rho0.2"}
    for profile in [leads["masker_mode/rho0.2"]["all"]] + [
            p for p in leads["masker_mode/rho0.2"]["classes"].values() if p]:
        assert len(profile["lift"]) == 12 and sum(profile["share"]) == pytest.approx(1.0)
        assert 0 < profile["n"] <= 8
    assert "Where the masker removes (masker_mode/rho0.2)" in md and "| every record |" in md
    # the evidence regions are read from the records (decoded once each) only when asked for
    with_ev = eval_data.load_split(cfg, "synthetic_ecg/tiny", "test")
    assert with_ev.evidence_primary.shape[0] == 8 and with_ev.class_primary is not None
    assert with_ev.evidence_primary.any() and with_ev.evidence_secondary.any()
    plain = eval_data.load_split(cfg, "synthetic_ecg/tiny", "test", evidence=False)
    assert plain.evidence_primary is None and plain.class_primary is None
    np.testing.assert_array_equal(plain.ecg, with_ev.ecg)


def _fake_results(auroc):
    cond = dataclasses.asdict(miss.lead_drop(3))
    z = {"auroc": auroc, "ci": [auroc - 0.1, auroc + 0.1], "per_class": {}, "skipped": []}
    return {"n": 4, "classes": ["a"], "skipped_classes": [], "conditions": [
        dataclasses.asdict(miss.clean()), cond],
        "models": {"scar": {"zeroshot": {"clean": z, cond["name"]: z}, "cmrs": {},
                            "targeting": {}}}}


def test_report_merges_datasets_side_by_side(tmp_path):
    from scar_jax.evaluation import report

    fake = _fake_results
    for ds, a in (("d1", 0.8), ("d2", 0.7)):
        report.write(tmp_path / ds, {ds: fake(a)})
    files = report.merge([tmp_path / "d1" / "results.json", tmp_path / "d2" / "results.json"],
                         tmp_path / "all")
    md = (tmp_path / "all" / "results.md").read_text()
    assert "| condition | d1 · scar | d2 · scar |" in md
    assert "| lead_drop/k3 | 0.800 [0.700, 0.900] | 0.700 [0.600, 0.800] |" in md
    assert set(json.loads((tmp_path / "all" / "results.json").read_text())) == {"d1", "d2"}
    assert (tmp_path / "all" / "auroc_vs_missing_d1.png").exists() and "json" in files


def test_report_gives_each_dataset_its_own_class_columns():
    # merged datasets need not share classes: the per-class tables (targeting by class, on the
    # lead-local classes, the encoder's shift) get one table per dataset with its own columns
    # (they took the first dataset's names and failed or mislabelled the second's cells)
    from scar_jax.evaluation import report

    def with_classes(auroc, classes, local):
        r = _fake_results(auroc)
        r["classes"], r["lead_local_classes"] = classes, local
        per = {c: {"share": 0.5, "chance": 0.25, "lift": 2.0, "n": 3} for c in classes}
        r["models"]["scar"]["targeting_by_class"] = {
            "masker/rho0.2": {"classes": per, "macro_lift": 2.0, "lead_local_macro_lift": 2.0}}
        r["models"]["scar"]["oracle_shift"] = {
            "negatives": 0.1, "positives": -0.5,
            "per_class": {c: {"negatives": 0.1 * (i + 1)} for i, c in enumerate(local)}}
        return r

    md = report.markdown({"d1": with_classes(0.8, ["A", "B"], ["A"]),
                          "d2": with_classes(0.7, ["C", "D", "E"], ["D", "E"])})
    assert "| dataset · model | remover | macro | A | B |" in md
    assert "| dataset · model | remover | macro | C | D | E |" in md
    assert "| d2 · scar | masker/rho0.2 | 2.000 | 2.000 | 2.000 | 2.000 |" in md
    assert "| dataset · model | remover | macro lift | D | E |" in md
    assert "| d2 · scar | masker/rho0.2 | 2.000 | 0.500 / 0.250 | 0.500 / 0.250 |" in md
    assert "| dataset · model | negatives (macro) | positives (macro) | A negatives |" in md
    assert "| d2 · scar | 0.100 | -0.500 | 0.100 | 0.200 |" in md
    assert md.count("## Targeting by class") == 1 and md.count("## Mask shortcut") == 1


def test_report_is_written_to_and_merged_from_a_gs_folder(gcs):
    # `eval --out=gs://bucket/...` on a pod: pathlib collapsed the URL to a local 'gs:/...'
    # folder; the report now goes through etils.epath (GCS served from a folder, see conftest)
    from scar_jax.evaluation import report

    files = report.write("gs://bucket/eval/d1", {"d1": _fake_results(0.8)})
    assert files["json"] == "gs://bucket/eval/d1/results.json"
    out = gcs / "bucket" / "eval" / "d1"
    assert json.loads((out / "results.json").read_text())["d1"]["n"] == 4
    assert "| lead_drop/k3 | 0.800 [0.700, 0.900] |" in (out / "results.md").read_text()
    assert (out / "auroc_vs_missing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.merge(["gs://bucket/eval/d1/results.json"], "gs://bucket/eval/all")
    assert (gcs / "bucket" / "eval" / "all" / "results.md").exists()
    assert not os.path.exists("gs:")  # nothing written beside the working directory


@pytest.mark.slow
def test_transfer_rows_use_the_references_masks_not_the_models_own(mu):
    """Model a and model r2 (the reference's parameters, copied) are compared; the reference
    ranks the transfer masks: they are r2's white-box masks, not a's, for every model."""
    a = run.ModelSpec("a", mu.model, mu.variables, "random-tiny", 16)
    ref_vars = jax.tree.map(lambda x: x * 0.9 + 0.02, mu.variables)
    ref = run.ModelSpec("ref", mu.model, ref_vars, "random-tiny", 16)
    r2 = run.ModelSpec("r2", mu.model, jax.tree.map(jnp.copy, ref_vars), "random-tiny", 16)
    data = _data(mu)
    cfg = _small_grid(mu.config, trace_examples=12, batch_size=12, adv_units=("lead",))
    res, plots = run.evaluate([a, r2], data, cfg, reference=ref)
    keeps = plots["traces"]["keeps"]
    name = "adversarial/transfer/lead/rho0.2"
    np.testing.assert_array_equal(keeps[name], keeps["r2:adversarial/whitebox/lead/rho0.2"])
    assert (keeps[name] != keeps["a:adversarial/whitebox/lead/rho0.2"]).any()
    sc = plots["scores"]
    np.testing.assert_allclose(sc["r2"][name], sc["r2"]["adversarial/whitebox/lead/rho0.2"],
                               atol=1e-6)
    assert np.abs(sc["a"][name] - sc["a"]["adversarial/whitebox/lead/rho0.2"]).max() > 1e-4


@pytest.mark.slow
def test_classwise_rows_remove_one_region_per_class_ranked_on_validation(mu, monkeypatch):
    """On the tower trained so that class c lives in leads 4c..4c+3, the validation ranking
    puts class c's top lead (rho 0.1: 1 of 12) inside 4c..4c+3 and ranks those 4 leads above
    the others on average; each classwise row scores class c with that one lead set removed
    from every test record, positives and negatives alike."""
    variables, ecg, lead_obs, labels, z_cls, _ = _trained(mu)
    model = run.ModelSpec("m", mu.model, variables, "random-tiny", 16)
    prompts = [(f"ECG shows finding {i}",) for i in range(3)]
    val = eval_data.EvalData(ecg[:24], lead_obs[:24], labels[:24], ["c0", "c1", "c2"], prompts)
    test = eval_data.EvalData(ecg[24:], lead_obs[24:], labels[24:], ["c0", "c1", "c2"], prompts)
    cfg = _small_grid(mu.config, adv_units=("lead",), adv_modes=("whitebox",),
                      class_rhos=(0.1, 0.5), class_units=("lead",))
    zc = z_cls  # the class embeddings the tower was trained against
    monkeypatch.setattr(run.ModelSpec, "class_embeddings", lambda *a, **kw: zc)
    emb = miss.GridEmbedder(mu.model, variables, chunk=4)
    obs_fn = lambda sl: np.repeat(val.lead_observed[sl][:, :, None], 10, 2)  # noqa: E731
    ranks = classwise.rank_on_split(emb, zc, val, obs_fn, units=("lead",), rhos=(),
                                    batch_size=8)
    res, plots = run.evaluate([model], test, cfg, rank_data=val)
    picked = res["classwise"]["units"]["m"]
    imp = ranks.importance["lead"]
    for c in range(3):
        want = classwise.top_units(imp, 0.1)[c]
        assert picked["classwise/whitebox/lead/rho0.1"][f"c{c}"] == [
            miss.LEAD_NAMES[i] for i in np.flatnonzero(want)]
        group = np.arange(12) // 4 == c
        assert want.sum() == 1 and want[group].sum() == 1, (c, imp)
        assert imp[c, group].mean() > imp[c, ~group].mean() + 0.01, imp
        assert len(picked["classwise/whitebox/lead/rho0.5"][f"c{c}"]) == 6
        # the row's class-c column = the model's scores with that lead set gone from every record
        obs = np.repeat(test.lead_observed[:, :, None], 10, 2)
        keep = obs & ~classwise.units_to_region(want[None], "lead", 12, 10)[0]
        z, _ = emb.embed(emb.tokens(test.ecg, obs), keep[None])
        np.testing.assert_allclose(plots["scores"]["m"]["classwise/whitebox/lead/rho0.1"][:, c],
                                   zeroshot.scores(z[0], zc)[:, c], atol=2e-5)
    assert "classwise/whitebox/lead/rho0.5" in res["models"]["m"]["zeroshot"]
    assert not any("transfer" in k for k in res["models"]["m"]["zeroshot"])  # no reference
    probe = res["models"]["m"]["mask_probe"]
    assert set(probe) == {"adversarial/whitebox/lead/rho0.2"}  # no masker without reports
    assert set(res["mask_probe"]) == {"random/lead/rho0.2"}
    assert 0.0 <= probe["adversarial/whitebox/lead/rho0.2"]["auroc"] <= 1.0


def test_class_ranking_is_the_positive_minus_negative_occlusion_drop():
    # 2 units, 2 classes, 3 examples: scores [1 + U, b, K]
    clean = np.array([[1.0, 0.0], [0.5, 0.2], [0.0, 1.0]])
    drop_u0 = np.array([[0.6, 0.0], [0.1, 0.1], [0.0, 0.3]])  # score drops under unit 0
    drop_u1 = np.array([[0.1, 0.2], [0.3, 0.0], [0.2, 0.0]])
    scores = np.stack([clean, clean - drop_u0, clean - drop_u1])
    labels = np.array([[1, 0], [1, 1], [0, 1]], bool)
    r = classwise.ClassRanking.empty(2, 2)
    r.add(scores[:, :2], labels[:2])  # in two batches: the sums add up
    r.add(scores[:, 2:], labels[2:])
    imp = r.importance()
    # class 0: positives 0, 1; negative 2. unit 0: (0.6 + 0.1) / 2 - 0.0 = 0.35
    #                                      unit 1: (0.1 + 0.3) / 2 - 0.2 = 0.0
    # class 1: positives 1, 2; negative 0. unit 0: (0.1 + 0.3) / 2 - 0.0 = 0.2
    #                                      unit 1: (0.0 + 0.0) / 2 - 0.2 = -0.2
    np.testing.assert_allclose(imp, [[0.35, 0.0], [0.2, -0.2]], atol=1e-12)
    np.testing.assert_array_equal(classwise.top_units(imp, 0.5), [[True, False], [True, False]])
    np.testing.assert_array_equal(classwise.top_units(np.zeros((1, 4)), 0.5),
                                  [[True, True, False, False]])  # ties: lower index first
    reg = classwise.units_to_region(np.array([[True, False]]), "segment", 3, 2)
    np.testing.assert_array_equal(reg[0], [[True, False]] * 3)


def test_mask_probe_reads_a_label_dependent_mask_and_not_a_random_one():
    rng = np.random.default_rng(0)
    n, k, f = 400, 2, 24
    y_va, y_te = rng.random((n, k)) > 0.5, rng.random((n, k)) > 0.5

    def masks(y):  # leads of class c removed exactly when c is positive, plus noise bits
        m = rng.random((len(y), f)) < 0.3
        m[:, 0:4] = y[:, :1]
        m[:, 4:8] = y[:, 1:]
        return m

    told = classwise.mask_probe(masks(y_va), y_va, masks(y_te), y_te, ["a", "b"])
    assert told["auroc"] > 0.99
    rand = classwise.mask_probe(rng.random((n, f)) < 0.3, y_va, rng.random((n, f)) < 0.3, y_te,
                                ["a", "b"])
    assert abs(rand["auroc"] - 0.5) < 0.06
    with pytest.raises(ValueError, match="same token grid"):
        classwise.mask_probe(masks(y_va), y_va, masks(y_te)[:, :8], y_te, ["a", "b"])


def test_swapped_masks_give_a_share_of_the_records_another_records_mask():
    n = 1000
    own = np.eye(n, dtype=bool)  # row i is record i's own mask: a swapped row names its partner
    np.testing.assert_array_equal(classwise.swapped_masks(own, 0.0, 0), own)
    every = classwise.swapped_masks(own, 1.0, 0)
    partner = every.argmax(1)
    assert np.all(every.sum(1) == 1) and np.all(partner != np.arange(n))  # nobody keeps its own
    # one cycle over all records: following partners from record 0 visits every record once
    seen, i = set(), 0
    for _ in range(n):
        seen.add(i)
        i = partner[i]
    assert len(seen) == n and i == 0
    half = classwise.swapped_masks(own, 0.5, 0)
    share = 1.0 - np.mean(half.argmax(1) == np.arange(n))
    assert abs(share - 0.5) < 0.05  # Binomial(1000, 0.5): 3.2 std
    np.testing.assert_array_equal(half, classwise.swapped_masks(own, 0.5, 0))  # seeded
    with pytest.raises(ValueError, match="share"):
        classwise.swapped_masks(own, 1.5, 0)


def test_swapping_masks_shrinks_what_the_mask_only_probe_reads():
    rng = np.random.default_rng(1)
    n, f = 2000, 8
    y_va, y_te = rng.random((n, 1)) > 0.5, rng.random((n, 1)) > 0.5

    def masks(y):  # the class's leads removed exactly when it is positive
        return np.repeat(y, f, 1) & (np.arange(f) < 4)

    def probe(share):
        return classwise.mask_probe(classwise.swapped_masks(masks(y_va), share, 0), y_va,
                                    classwise.swapped_masks(masks(y_te), share, 1), y_te,
                                    ["a"])["auroc"]

    # a swapped record holds a random record's mask: P(removed | positive) = 1 - s/2 and
    # P(removed | negative) = s/2, so the AUROC of the two-valued score is 1 - s/2
    assert probe(0.0) == 1.0
    assert abs(probe(0.5) - 0.75) < 0.03
    assert abs(probe(1.0) - 0.5) < 0.04


def test_removal_score_shift_by_hand():
    names = ["a", "b", "c"]
    clean = np.array([[0.0, 1.0, 5.0], [2.0, 1.0, 5.0], [0.0, 3.0, 5.0], [2.0, 3.0, 5.0]])
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 1]], bool)
    delta = np.array([[-1.0, 0.5, 0.0], [0.5, 0.5, 0.0], [-1.0, 0.0, 0.0], [1.5, -1.0, 0.0]])
    out = classwise.removal_score_shift(clean, clean + delta, labels, names, ["a", "b", "c"])
    # sd of a's and b's clean scores: 1 (population sd of {0, 2, 0, 2} and {1, 1, 3, 3})
    # a: negatives rows 1, 3: (0.5 + 1.5) / 2 = 1; positives rows 0, 2: -1
    # b: negatives rows 0, 1: 0.5; positives rows 2, 3: (0 - 1) / 2 = -0.5
    assert out["per_class"]["a"] == {"negatives": 1.0, "positives": -1.0, "n_neg": 2,
                                     "n_pos": 2}
    assert out["per_class"]["b"]["negatives"] == 0.5 and out["per_class"]["b"]["positives"] == -0.5
    assert out["skipped"] == ["c"]  # a constant clean score
    assert out["negatives"] == 0.75 and out["positives"] == -0.75
    none = classwise.removal_score_shift(clean, clean, labels, names, ["c"])
    assert none["per_class"] == {} and np.isnan(none["negatives"])
    with pytest.raises(ValueError, match="one shape"):
        classwise.removal_score_shift(clean, clean[:2], labels, names, ["a"])
