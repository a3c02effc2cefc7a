"""Modules are imported for what their names say: data code needs no network, export and
predict need no evaluation grid."""

import ast
import pathlib
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
        (["scar_jax.export.to_torch", "scar_jax.inference", "scar_jax.checkpointing",
          "scar_jax.main"],
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


def _imported(nodes) -> set[str]:
    """Every module an import statement under `nodes` names, function-level ones included
    ('from scar_jax import evaluation' names scar_jax.evaluation)."""
    out = set()
    for node in nodes:
        for n in ast.walk(node):
            if isinstance(n, ast.Import):
                out |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.module:
                out |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return out


def _command_branch(tree, command: str):
    """The body of main.py's `elif command == "<command>":` branch."""
    for n in ast.walk(tree):
        if (isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
                and isinstance(n.test.left, ast.Name) and n.test.left.id == "command"
                and isinstance(n.test.comparators[0], ast.Constant)
                and n.test.comparators[0].value == command):
            return n.body
    raise AssertionError(f"main.py has no `command == {command!r}` branch")


def test_export_and_predict_source_never_imports_the_evaluation_package():
    """By source, lazy imports included: the export package, inference and main.py's
    predict branch name no scar_jax.evaluation module (main's eval branch does: the scan sees
    lazy imports)."""
    import scar_jax

    root = pathlib.Path(scar_jax.__file__).parent
    files = sorted((root / "export").glob("*.py")) + [root / "inference.py"]
    assert len(files) >= 4
    bad = lambda mods: sorted(m for m in mods if m.startswith("scar_jax.evaluation"))  # noqa: E731
    for f in files:
        assert bad(_imported([ast.parse(f.read_text())])) == [], f
    main = ast.parse((root / "main.py").read_text())
    top = [n for n in main.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert bad(_imported(top)) == []
    assert bad(_imported(_command_branch(main, "predict"))) == []
    assert "scar_jax.checkpointing" in _imported(_command_branch(main, "predict"))
    assert "scar_jax.evaluation.run" in bad(_imported(_command_branch(main, "eval")))
