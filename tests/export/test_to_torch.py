"""PyTorch export: output parity with JAX, strict loading, exact round trip, failure messages."""

import dataclasses
import json
import pathlib
import runpy
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file
from safetensors.torch import load_file as load_torch_file

from scar_jax import losses
from scar_jax.export import to_torch
from scar_jax.export import torch_modules as tm
from scar_jax.models import scar
from scar_jax.models import text_encoder as te
from tests.export import parity


@pytest.mark.parametrize(
    "arg,pooling,log_scale,stem,normalize",
    [
        ("variant=tiny/2", "mean", np.log(50.0), "linear", "minmax"),  # adaptive selector
        ("variant=mu,selector=cls,loss=siglip", "pooler", 5.0, "linear", "none"),  # capped scale
        ("variant=mu,selector=mean", "cls", np.log(50.0), "linear", "zscore"),
        ("variant=mu", "mean", np.log(50.0), "conv", "minmax"),  # the conv stem (Conv1d)
        ("variant=mu", "mean", np.log(50.0), "conv", "zscore"),
    ],
)
def test_parity_random_weights(arg, pooling, log_scale, stem, normalize, text_source, tmp_path):
    config = parity.make_config(arg, str(text_source))
    config.model.txt.pooling = pooling
    config.model.ecg.stem = stem
    config.input.normalize = normalize  # the tower's in-encoder normalisation follows it
    model, variables = parity.init(config, log_scale=log_scale)
    out_dir = tmp_path / "export"
    manifest = to_torch.export(variables, config, out_dir)
    ecg, lead_obs, time_obs, keep = parity.ecg_inputs()
    text = parity.tokens(out_dir / "text")
    assert (text["attention_mask"] == 0).any()  # prompts of different lengths: padding is used
    want = parity.jax_outputs(model, variables, ecg, lead_obs, time_obs, keep, text)
    got = parity.torch_outputs(out_dir, ecg, lead_obs, time_obs, keep, text)
    diffs = {k: float(np.max(np.abs(got[k] - want[k]))) for k in want}
    print(arg, pooling, "max-abs torch vs jax:", diffs)
    # Logits are scale * cosine: float32 rounding of the embeddings (~1e-7) is multiplied by the
    # scale (up to 100), so the logits are held to TOL per unit of scale, i.e. TOL in cosine.
    scale = float(losses.capped_scale(variables["params"]["logit_scale"]))
    assert scale == pytest.approx(min(np.exp(log_scale), 100.0), rel=1e-6)
    assert diffs.pop("logits") <= parity.TOL * scale
    assert max(diffs.values()) <= parity.TOL, diffs
    assert np.isfinite(got["z_keep"]).all()
    # The inputs really differ: removing time spans / tokens changes the embeddings.
    assert np.abs(want["z_time"][[0, 2]] - want["z_plain"][[0, 2]]).max() > 1e-3
    assert np.abs(want["z_keep"][3] - want["z_time"][3]).max() > 1e-3
    assert manifest["ecg_tower"]["kwargs"]["selector"] == config.model.selector.kind
    assert manifest["ecg_tower"]["kwargs"]["stem"] == stem
    assert manifest["ecg_tower"]["kwargs"]["normalize"] == normalize
    assert manifest["text"]["pooling"] == pooling


def test_strict_loading_and_files(text_source, tmp_path):
    config = parity.make_config("variant=mu", str(text_source))
    _, variables = parity.init(config)
    out_dir = tmp_path / "export"
    manifest = to_torch.export(variables, config, out_dir)
    kwargs = json.loads((out_dir / "ecg_tower.json").read_text())
    tower = tm.ECGTower(**kwargs)
    result = tower.load_state_dict(
        load_torch_file(str(out_dir / "ecg_tower.safetensors")), strict=True
    )
    assert not result.missing_keys and not result.unexpected_keys
    head = tm.TextHead(**json.loads((out_dir / "text_head.json").read_text()))
    head.load_state_dict(load_torch_file(str(out_dir / "text_head.safetensors")), strict=True)
    _, info = transformers.AutoModel.from_pretrained(out_dir / "text", output_loading_info=True)
    assert all(not v for v in info.values()), info  # pooler copied from the source checkpoint
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir / "text")
    assert tokenizer.tokenize("sinus rhythm") == ["sinus", "rhythm"]
    # The exported source is this module's source, and it imports nothing beyond torch.
    source = (out_dir / "ecg_tower.py").read_text()
    assert source == pathlib.Path(tm.__file__).read_text()
    imports = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports <= {"__future__", "json", "math", "pathlib", "typing", "torch"}, imports
    # No pickle: every weight file is safetensors; the manifest hashes every file written.
    files = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()}
    assert files - {"manifest.json"} == set(manifest["sha256"])
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert all((out_dir / f).stat().st_mode & 0o044 == 0o044 for f in files)  # group/other read
    assert {"text/tokenizer.json", "text/vocab.txt", "text/config.json"} <= files
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["jax"] == jax.__version__
    assert manifest["dropped"] == {"masker/": to_torch.DROPPED[("masker",)]}
    assert to_torch.read_manifest(out_dir) == manifest
    # Tampering with a weight file is caught by the hashes.
    w = load_file(str(out_dir / "text_head.safetensors"))
    w["proj.weight"] = w["proj.weight"] + 1.0
    save_file(w, str(out_dir / "text_head.safetensors"))
    with pytest.raises(ValueError, match=r"changed since export.*text_head\.safetensors"):
        to_torch.read_manifest(out_dir)


def test_round_trip_is_exact(text_source, tmp_path):
    source = tmp_path / "text_source"
    shutil.copytree(text_source, source)
    config = parity.make_config("variant=mu,loss=siglip", str(source))
    config.model.txt.pooling = "pooler"
    _, variables = parity.init(config)
    to_torch.export(variables, config, tmp_path / "export")
    shutil.rmtree(source)  # the import needs only the export folder
    config2, params = to_torch.load_exported_params(tmp_path / "export")
    want = {k: v for k, v in variables["params"].items() if k != "masker"}
    assert "masker" in variables["params"] and "logit_bias" in want
    assert jax.tree.structure(params) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert config2.to_dict() == json.loads(config.to_json_best_effort())


def test_minilm_text_tower_equals_original(tmp_path):
    """The real all-MiniLM-L6-v2, never trained: the exported HF folder is the original model."""
    config = parity.make_config("variant=mu", "minilm")
    model = scar.build_model(config.model)
    _, variables = parity.init(config)
    source = te.minilm_folder()
    variables["params"]["txt"]["bert"] = te.load_hf_bert(source, pooling="mean")[1]  # untrained
    to_torch.export(variables, config, tmp_path)
    texts = [
        "Sinus rhythm with occasional premature ventricular complexes.",
        "Hi!",
        "Atrial fibrillation with rapid ventricular response and ST depression.",
    ]
    tok_src = transformers.AutoTokenizer.from_pretrained(str(source))
    tok_exp = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "text"))
    enc = tok_exp(texts, padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist() == tok_src(texts, padding=True)["input_ids"]
    orig = transformers.AutoModel.from_pretrained(str(source)).eval()
    exported, info = transformers.AutoModel.from_pretrained(
        str(tmp_path / "text"), output_loading_info=True
    )
    assert all(not v for v in info.values()), info
    sd_o, sd_e = orig.state_dict(), exported.eval().state_dict()
    assert sd_o.keys() == sd_e.keys()
    assert all(torch.equal(sd_o[k], sd_e[k]) for k in sd_o)
    with torch.no_grad():
        a, b = orig(**enc), exported(**enc)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, rtol=0, atol=0)
    # And the exported text embedding (HF + head) equals JAX's.
    head = tm.load_text_head(tmp_path)
    with torch.no_grad():
        z_torch = head(b.last_hidden_state, enc["attention_mask"]).numpy()
    text = {k: jnp.asarray(v.numpy(), jnp.int32) for k, v in enc.items()}
    z_jax = jax.jit(lambda t: model.apply(variables, t, method=model.embed_text)[0])(text)
    z_jax = np.asarray(z_jax)
    assert float(np.abs(z_torch - z_jax).max()) <= parity.TOL


def test_out_dir_must_be_empty_or_a_previous_export(text_source, tmp_path, monkeypatch):
    config = parity.make_config("variant=mu", str(text_source))
    _, variables = parity.init(config)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        to_torch.export(variables, config, tmp_path / "other")
    with pytest.raises(FileExistsError, match="not a previous export"):
        to_torch.export(variables, config, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"
    first = to_torch.export(variables, config, tmp_path / "exp")
    with pytest.raises(FileExistsError, match="not empty"):
        to_torch.export(variables, config, tmp_path / "exp")
    variables["params"]["logit_scale"] = variables["params"]["logit_scale"] + 1.0
    second = to_torch.export(variables, config, tmp_path / "exp", overwrite=True)
    assert second["sha256"]["text_head.safetensors"] != first["sha256"]["text_head.safetensors"]
    assert second["sha256"]["ecg_tower.safetensors"] == first["sha256"]["ecg_tower.safetensors"]
    to_torch.read_manifest(tmp_path / "exp")  # hashes match the rewritten files
    # a URL is refused by name, not turned into a local 'gs:/...' folder by pathlib
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="export writes a local folder, not gs://b/exp"):
        to_torch.export(variables, config, "gs://b/exp")
    assert not (tmp_path / "gs:").exists()


# ----------------------------------------------------------------------------- Strictness.


@pytest.fixture(scope="module")
def mu_setup(text_source):
    config = parity.make_config("variant=mu", str(text_source))
    _, variables = parity.init(config)
    return config, variables


def _rules_and_shapes(config):
    return to_torch.model_rules(config), to_torch.torch_shapes(config)


def test_unmapped_flax_param_fails(mu_setup):
    config, variables = mu_setup
    params = jax.tree.map(lambda x: x, variables["params"])
    params["ecg"]["encoder"]["block_1"]["extra"] = {"kernel": jnp.zeros((3, 3))}
    with pytest.raises(ValueError, match=r"without an export rule: \['ecg/encoder/block_1/extra/"):
        to_torch.flax_to_torch(params, *_rules_and_shapes(config))


def test_missing_flax_param_and_unfilled_torch_tensor_fail(mu_setup):
    config, variables = mu_setup
    params = jax.tree.map(lambda x: x, variables["params"])
    del params["ecg"]["selector_fc2"]["bias"]
    with pytest.raises(
        ValueError,
        match=r"(?s)parameter is missing: \['ecg/selector_fc2/bias'\]"
        r".*no rule fills: \['selector_fc2\.bias'\]",
    ):
        to_torch.flax_to_torch(params, *_rules_and_shapes(config))


def test_rule_without_torch_tensor_fails(mu_setup):
    config, variables = mu_setup
    rules, shapes = _rules_and_shapes(config)
    rules = [r if r.torch != "head.bias" else dataclasses.replace(r, torch="head.b") for r in rules]
    with pytest.raises(
        ValueError,
        match=r"(?s)ecg/head/bias -> ecg:head\.b: no such torch name"
        r".*no rule fills: \['head\.bias'\]",
    ):
        to_torch.flax_to_torch(variables, rules, shapes)


def test_shape_mismatch_fails(mu_setup):
    config, variables = mu_setup
    rules, shapes = _rules_and_shapes(config)
    # A wrong transform (plain identity for a q kernel [32, 2, 16]) is caught by the shape check.
    rules = [
        dataclasses.replace(r, transform=to_torch.IDENTITY)
        if r.torch == "blocks.0.attn.query.weight"
        else r
        for r in rules
    ]
    with pytest.raises(
        ValueError,
        match=r"Shape mismatch: ecg/encoder/block_0/attn/query/kernel "
        r"\(32, 2, 16\).*torch expects \(32, 32\)",
    ):
        to_torch.flax_to_torch(variables, rules, shapes)


def test_import_rejects_unknown_and_missing_tensors(mu_setup, tmp_path):
    config, variables = mu_setup
    to_torch.export(variables, config, tmp_path)
    tensors = {t: load_file(str(tmp_path / rel)) for t, rel in to_torch.FILES.items()}
    rules, shapes = to_torch.model_rules(config), to_torch.flax_shapes(config)
    ignore = to_torch.pooler_names(config)
    tensors[to_torch.ECG]["blocks.9.ln1.weight"] = np.ones(32, np.float32)
    del tensors[to_torch.TEXT_HEAD]["proj.weight"]
    with pytest.raises(
        ValueError,
        match=r"(?s)Missing torch tensor text_head:proj\.weight.*"
        r"ecg not read by any rule: \['blocks\.9\.ln1\.weight'\]",
    ):
        to_torch.torch_to_flax(tensors, rules, shapes, ignore=ignore)


def test_conv_stem_constants_agree():
    # torch_modules depends on torch only, so it repeats the stem's constants.
    from scar_jax.models import ecg_encoder

    assert tm.CONV_STEM == ecg_encoder.CONV_STEM
    assert tm.STEMS == ecg_encoder.STEMS
    assert tm.NORMALIZE_KINDS == ecg_encoder.NORMALIZE_KINDS
    assert tm.NORMALIZE_EPS == ecg_encoder.NORMALIZE_EPS
    assert tm.STEM_SPREAD_FLOOR == ecg_encoder.STEM_SPREAD_FLOOR
    assert (tm.STEM_WAVE_SCALE, tm.STEM_LEVEL_SCALE, tm.STEM_SPREAD_SCALE) == (
        ecg_encoder.STEM_WAVE_SCALE, ecg_encoder.STEM_LEVEL_SCALE, ecg_encoder.STEM_SPREAD_SCALE)


def test_transforms_invert_exactly():
    rng = np.random.default_rng(0)
    for transform, shape, torch_shape in [
        (to_torch.DENSE, (32, 64), (64, 32)),
        (to_torch.DENSE, (32, 2, 16), (32, 32)),
        (to_torch.ATTN_OUT, (2, 16, 24), (24, 32)),
        (to_torch.FLATTEN, (2, 16), (32,)),
        (to_torch.CONV1D, (7, 1, 16), (16, 1, 7)),
        (to_torch.IDENTITY, (), ()),
    ]:
        x = rng.normal(size=shape).astype(np.float32)
        y = transform.to_torch(x)
        assert y.shape == torch_shape, transform.name
        np.testing.assert_array_equal(transform.to_flax(y, shape), x)
    # The attention q kernel [D, H, hd] becomes rows h * hd + d of the torch weight.
    x = rng.normal(size=(4, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_torch.DENSE.to_torch(x)[1 * 3 + 2], x[:, 1, 2])


# ----------------------------------------------------------------------------- README example.

EXAMPLE = pathlib.Path(to_torch.__file__).with_name("README_example.py")


def test_readme_example_runs(text_source, tmp_path, monkeypatch):
    config = parity.make_config("variant=mu", str(text_source))
    model, variables = parity.init(config)
    to_torch.export(variables, config, tmp_path)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(tmp_path)])
    path_before = list(sys.path)
    g = runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert sys.path == path_before  # the example loads ecg_tower.py by path
    logits = g["logits"].numpy()
    ecg, lead_obs = g["ecg"].numpy(), g["lead_observed"].numpy()
    assert logits.shape == (1, 2) and not lead_obs[0, 6:].any()
    # The record length comes from the export's own config (the model's sample rate x seconds).
    assert ecg.shape == (1, int(config.input.sample_rate * config.input.seconds), 12)
    text = {k: jnp.asarray(v.numpy(), jnp.int32) for k, v in g["prompts"].items()}
    z_e = jax.jit(lambda *a: model.apply(variables, *a, method=model.embed_ecg)[0])(
        jnp.asarray(ecg), jnp.asarray(lead_obs)
    )
    z_t = jax.jit(lambda t: model.apply(variables, t, method=model.embed_text)[0])(text)
    scale = float(losses.capped_scale(variables["params"]["logit_scale"]))
    want = scale * np.asarray(z_e @ z_t.T)
    assert float(np.abs(logits - want).max()) <= parity.TOL * scale  # TOL in cosine


def test_ecg_tower_traces_with_torch_export():
    """Deployment: the tower goes through torch.export and the program equals eager mode."""
    torch.manual_seed(0)
    tower = tm.ECGTower(width=32, depth=2, num_heads=2, mlp_dim=64, embed_dim=16).eval()
    ecg, lead_obs, time_obs, keep = parity.ecg_inputs(t=500)
    args = tuple(torch.from_numpy(np.array(a)) for a in (ecg, lead_obs, time_obs, keep))
    program = torch.export.export(tower, args)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*args), tower(*args), rtol=0, atol=0)
