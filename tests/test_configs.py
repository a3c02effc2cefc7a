"""Configs: every documented arg builds a model; typos in args or overrides fail clearly."""

import importlib
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from absl import flags
from ml_collections import config_flags

from configs import scar as scar_config
from scar_jax import config_files
from scar_jax.models import scar

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The args each config documents; every one must build.
DOCUMENTED_ARGS = {
    "scar": [
        "",
        "runlocal",
        "method=merl",
        "method=random",
        "variant=mu",
        "variant=tiny/4",
        "masker=none",
        "masker=random",
        "unit=token",
        "unit=lead",
        "unit=segment",
        "unit=joint",
        "selector=mean",
        "selector=cls",
        "supervision=false",
        "loss=siglip",
        "text=random-tiny",
        "minmax=alternating",
        "method=merl,variant=small,runlocal",
    ],
    "demo": ["", "method=merl", "method=random,seed=2", "runlocal", "unit=lead,seed=1",
             "secondary=0,reference_steps=0", "secondary=0.5"],
    "mimic": ["", "runlocal", "method=merl", "method=random", "variant=small", "frozen_layers=0",
              "frozen_layers=12", "text=/data/hf/BiomedBERT,frozen_layers=8", "unit=lead"],
}


def test_every_config_file_is_covered():
    files = {p.stem for p in (ROOT / "configs").glob("*.py")} - {"__init__"}
    assert files == set(DOCUMENTED_ARGS)


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in DOCUMENTED_ARGS.items() for a in args])
def test_documented_args_build_a_model(name, arg):
    config = importlib.import_module(f"configs.{name}").get_config(arg)
    config.model.txt.checkpoint = "random-tiny"  # the architecture of MiniLM is tested elsewhere
    if "runlocal" in arg or not arg.startswith("variant"):
        config.model.ecg.variant = "mu"  # shapes only; keep it fast
    model = scar.build_model(config.model)
    t = int(config.input.sample_rate * config.input.seconds)
    batch = {
        "ecg": jnp.zeros((2, t, 12)),
        "lead_observed": jnp.ones((2, 12), bool),
        "input_ids": jnp.ones((2, 8), jnp.int32),
        "attention_mask": jnp.ones((2, 8), jnp.int32),
    }
    rngs = {"params": jax.random.key(0), "masker": jax.random.key(1)}
    variables = jax.eval_shape(model.init, rngs, batch)
    assert set(variables["params"]) >= {"ecg", "txt", "logit_scale"}
    assert ("masker" in variables["params"]) == (config.model.masker.kind == "adversarial")


def test_method_presets():
    merl = scar_config.get_config("method=merl")
    assert merl.model.masker.kind == "none" and merl.model.selector.kind == "mean"
    assert merl.loss_weights.uma > 0 and merl.model.uma_dropout > 0
    rnd = scar_config.get_config("method=random")
    assert rnd.model.masker.kind == "random" and rnd.loss_weights.uma == 0
    s = scar_config.get_config("")
    assert s.model.masker.kind == "adversarial" and s.model.selector.supervision
    assert scar_config.get_config("supervision=off").loss_weights.sel == 0
    local = scar_config.get_config("variant=base,runlocal")
    assert local.model.ecg.variant == "mu" and local.batch_size == 8


@pytest.mark.parametrize(
    "arg,message",
    [
        ("varaint=mu", "Unknown key 'varaint'"),
        ("masker=adversary", "masker='adversary'"),
        ("unit=leads", "unit='leads'"),
        ("supervision=maybe", "expected a boolean"),
        ("method", "needs a value"),
    ],
)
def test_bad_args_fail_with_the_key_named(arg, message):
    with pytest.raises(ValueError, match=message):
        scar_config.get_config(arg)


def test_parse_arg_types():
    arg = config_files.parse_arg(
        "n=3,x=0.5,flag,name=abc", n=1, x=1.0, flag=False, name="", other=7
    )
    assert (arg.n, arg.x, arg.flag, arg.name, arg.other) == (3, 0.5, True, "abc", 7)
    with pytest.raises(ValueError, match="expected int"):
        config_files.parse_arg("n=three", n=1)
    with pytest.raises(ValueError, match="shadow"):
        config_files.parse_arg("", update=1)


def test_config_files_load_by_path_as_the_config_flag_does():
    by_path = config_files.load(f"{ROOT / 'configs' / 'scar.py'}:method=merl,variant=mu")
    assert by_path.to_dict() == scar_config.get_config("method=merl,variant=mu").to_dict()
    assert config_files.load_family("demo", "runlocal").to_dict() == (
        importlib.import_module("configs.demo").get_config("runlocal").to_dict()
    )
    assert config_files.CONFIGS_DIR == ROOT / "configs"
    with pytest.raises(FileNotFoundError, match=r"No config file 'configs/sacr\.py'"):
        config_files.load("configs/sacr.py:runlocal")


def test_the_package_never_imports_configs_nor_edits_sys_path():
    offenders = []
    for folder in ("scar_jax", "configs", "launch"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for needle in ("sys.path.insert", "sys.path.append", "from configs ", "import configs"):
                if needle in text:
                    offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []


def test_demo_config_loads_from_any_working_directory(tmp_path):
    # The package finds the demo's config file by path, not as the module `configs.demo`
    # (which exists only when the repository root is the working directory).
    code = "from scar_jax import demo; print(demo.check_methods(None))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['scar', 'merl', 'random']"


def _parse_flags(*overrides):
    """Parse a command line exactly as scar_jax.main does (locked config flag)."""
    argv = ["scar_jax.main", f"--config={ROOT / 'configs/scar.py'}:runlocal", *overrides]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "", flag_values=fv, lock_config=True, sys_argv=argv
    )
    fv(argv)
    return fv.config


def test_leaf_override_from_the_command_line():
    config = _parse_flags("--config.model.masker.rho_max=0.6", "--config.model.ecg.variant=tiny")
    assert config.model.masker.rho_max == 0.6 and config.model.ecg.variant == "tiny"


def test_misspelled_override_fails_naming_it():
    with pytest.raises(Exception, match="rho_mx"):
        _parse_flags("--config.model.masker.rho_mx=0.6")
    config = _parse_flags()
    with pytest.raises(AttributeError, match="gather_kep"):
        config.model.ecg.gather_kep = True  # locked: no new fields


@pytest.mark.parametrize(
    "bad,named",
    [
        (
            ["--config=configs/scar.py:runlocal", "--config.model.masker.untt=lead"],
            'Did you mean "unit" instead of "untt"',
        ),
        (["--config=configs/scar.py:runlocal,maskr=none"], "Unknown key 'maskr'"),
    ],
)
def test_cli_rejects_a_misspelled_config_before_any_work(bad, named):
    proc = subprocess.run(
        [sys.executable, "-m", "scar_jax.main", "smoke", *bad],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert named in proc.stderr and "Traceback" not in proc.stderr


def test_demo_config_is_the_scar_config_per_method():
    from configs import demo

    for method, masker in (("scar", "adversarial"), ("merl", "none"), ("random", "random")):
        config = demo.get_config(f"method={method},seed=3")
        assert config.seed == 3 and config.arg["method"] == method
        assert config.model.masker.kind == masker
        assert config.input.dataset == "synthetic_ecg/100hz"
        assert config.input.sample_rate * config.input.seconds == 1000
        assert 1000 // config.model.ecg.patch_size <= config.model.ecg.max_segments
    with pytest.raises(ValueError, match="seed"):
        demo.get_config("seed=x")


# ----------------------------------------------------------------------------- configs/mimic.py


def test_mimic_config_is_paper_scale_on_the_mimic_builder():
    from configs import mimic
    from scar_jax.data.builders.mimic_iv_ecg import mimic_iv_ecg_dataset_builder as builder

    config = mimic.get_config("")
    assert config.input.dataset == builder.Builder.name == "mimic_iv_ecg"
    assert config.input.sample_rate * config.input.seconds == builder.NUM_SAMPLES
    assert (config.input.train_split, config.input.eval_split) == ("train", "validation")
    # 600 tokens of 0.2 s (METHOD §3), ViT-tiny; MedCPT from a local folder, first 6 frozen
    assert builder.NUM_SAMPLES // config.model.ecg.patch_size * 12 == 600
    assert config.model.ecg.variant == "tiny" and config.model.txt.checkpoint == mimic.TEXT
    assert config.model.txt.freeze == (
        "^txt/bert/embeddings/", "^txt/bert/encoder/layer_(0|1|2|3|4|5)/")
    assert config.model.selector.target == "report" and config.loss_weights.find == 0
    assert config.batch_size == 512 and config.total_steps == 75_000
    assert config.model.dtype == "bfloat16"
    assert config.train.checkpoint_every == config.train.eval_every == 2_000
    assert config.total_steps % config.train.checkpoint_every == 1_000  # final one at the end
    assert config.model.masker.kind == "adversarial"  # SCAR itself; method= as configs/scar.py
    assert mimic.get_config("method=merl").model.masker.kind == "none"


def test_mimic_arg_values_parse():
    from configs import mimic

    config = mimic.get_config("frozen_layers=3,variant=small,text=/x/BioLinkBERT-base")
    assert config.model.txt.freeze[1] == "^txt/bert/encoder/layer_(0|1|2)/"
    assert config.model.ecg.variant == "small" and config.model.txt.checkpoint == "/x/BioLinkBERT-base"
    assert config.arg["frozen_layers"] == 3 and config.arg["text"] == "/x/BioLinkBERT-base"
    assert mimic.get_config("frozen_layers=0").model.txt.freeze == ()
    local = mimic.get_config("runlocal,text=random-tiny")
    assert local.batch_size == 8 and local.input.dataset == "synthetic_ecg/tiny"
    assert local.model.txt.freeze == mimic.get_config("").model.txt.freeze
    for arg, message in [("frozen_layers=x", "expected int"), ("frozen_layers=-1", ">= 0"),
                         ("frozn_layers=2", "Unknown key 'frozn_layers'.*frozen_layers"),
                         ("method=mrl", "method='mrl'")]:
        with pytest.raises(ValueError, match=message):
            mimic.get_config(arg)
    assert config_files.load(f"{ROOT / 'configs/mimic.py'}:frozen_layers=3").to_dict() == (
        mimic.get_config("frozen_layers=3").to_dict())


@pytest.mark.slow
def test_mimic_runlocal_trains_the_top_text_layers_from_a_local_hf_folder(tmp_path):
    """One fused update on CPU: the HF folder's weights are loaded, the embeddings and the
    frozen bottom layer stay put, the top layer and the ECG tower move."""
    import numpy as np

    from configs import mimic
    from scar_jax import optim, sharding, train_state, update
    from scar_jax.models import text_encoder
    from tests.models import test_text_encoder as tte  # writes a tiny torch BERT (2 layers)

    tte._write_tiny_bert(tmp_path)
    # the MERL-style method (no masker) on 1 s records keeps the compile short; the text-tower
    # split is the same for every method
    config = mimic.get_config(f"runlocal,text={tmp_path},frozen_layers=1,method=merl")
    config.input.seconds = 1.0
    model = scar.build_model(config.model)
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    rng = np.random.default_rng(0)
    b, t = config.batch_size, int(config.input.sample_rate * config.input.seconds)
    tokens = scar.text_tokenizer(config.model.txt.checkpoint, config.model.txt.max_len)(
        ["sinus rhythm", "atrial fibrillation", "left bundle branch block", "st elevation"] * 2)
    batch = {"ecg": rng.normal(size=(b, t, 12)).astype(np.float32),
             "lead_observed": np.ones((b, 12), bool), **dict(tokens)}
    state, shardings = train_state.create_train_state(model, config, batch, mesh)
    _, hf = text_encoder.load_hf_bert(tmp_path, pooling=config.model.txt.pooling)
    jax.tree.map(np.testing.assert_array_equal, state.params["txt"]["bert"], hf)
    assert not update.text_is_frozen(config, state.params)
    step = update.jit_update(update.make_update_fn(model, config), shardings,
                             sharding.batch_sharding(mesh))
    before = jax.tree.map(np.array, state.params)
    state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh)),
                          jax.random.key(0))
    assert np.isfinite(float(metrics["loss/total"]))
    moved = {p: not np.array_equal(a, np.asarray(b_)) for p, a, b_ in zip(
        optim.param_paths(before), jax.tree.leaves(before), jax.tree.leaves(state.params))}
    for path, changed in moved.items():
        if path.startswith(("txt/bert/embeddings/", "txt/bert/encoder/layer_0/")):
            assert not changed, path
    assert any(c for p, c in moved.items() if p.startswith("txt/bert/encoder/layer_1/"))
    assert any(c for p, c in moved.items() if p.startswith("ecg/"))


def test_demo_secondary_picks_the_corpus_with_that_secondary_evidence_strength():
    demo_config = config_files.load_family("demo", "")
    assert demo_config.input.dataset == "synthetic_ecg/100hz"
    for value, name in (("0", "100hz_sec0"), ("0.5", "100hz_sec50"), ("1", "100hz")):
        config = config_files.load_family("demo", f"secondary={value},method=random")
        assert config.input.dataset == f"synthetic_ecg/{name}"
        # the knob changes the corpus only: the rest of the recipe is the demo's
        base = config_files.load_family("demo", "method=random").to_dict()
        got = config.to_dict()
        for d in (base, got):
            d["input"].pop("dataset")
            d["arg"].pop("secondary")
        assert got == base
    with pytest.raises(ValueError, match=r"secondary=0.3 has no corpus"):
        config_files.load_family("demo", "secondary=0.3")
