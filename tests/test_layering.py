"""Modules are imported for what their names say: data code needs no network, export and
predict need no evaluation grid."""

import subprocess
import sys


def test_data_code_does_not_import_the_network():
    code = (
        "import sys\n"
        "import scar_jax.data.preprocessing, scar_jax.data.synthetic, scar_jax.data.pipeline\n"
        "print(sorted(m for m in sys.modules if m.startswith('scar_jax.models')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_export_and_predict_do_not_import_evaluation():
    code = (
        "import sys\n"
        "import scar_jax.export.to_torch, scar_jax.inference, scar_jax.checkpointing\n"
        "print(sorted(m for m in sys.modules if m.startswith('scar_jax.evaluation')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
