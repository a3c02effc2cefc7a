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
    "demo": ["", "method=merl", "method=random,seed=2", "runlocal", "unit=lead,seed=1"],
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
