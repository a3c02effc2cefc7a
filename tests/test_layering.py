"""Modules are imported for what their names say: data code needs no network, export and
predict need no evaluation grid."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "modules, forbidden",
    [
        # data code learns the lead order from scar_jax.leads, not from the network
        (["scar_jax.data.preprocessing", "scar_jax.data.synthetic", "scar_jax.data.pipeline"],
         "scar_jax.models"),
        # export and predict read checkpoints through checkpointing, not the evaluation grid
        (["scar_jax.export.to_torch", "scar_jax.inference", "scar_jax.checkpointing"],
         "scar_jax.evaluation"),
    ],
)  # fmt: skip
def test_importing_leaves_out(modules, forbidden):
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({forbidden!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_export_reads_a_checkpoint_without_the_evaluation_grid(tmp_path):
    code = (
        "import sys\n"
        "from scar_jax.export import to_torch\n"
        "try:\n"
        f"    to_torch.run({str(tmp_path)!r}, {str(tmp_path / 'out')!r})\n"
        "except FileNotFoundError as e:\n"
        "    print('error:', e)\n"
        "print(sorted(m for m in sys.modules if m.startswith('scar_jax.evaluation')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines() == [
        f"error: No complete checkpoint in {tmp_path}; nothing to export.", "[]"]
