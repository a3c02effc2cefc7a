"""The README is a user's document: short, inside the repository, its examples the tested ones."""

import pathlib
import re

from scar_jax import demo, generated_docs, main

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_block(text: str, heading: str) -> str:
    """The first ```python block after `heading`."""
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_short_and_the_two_commands_first():
    assert len(README.splitlines()) <= 250
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    assert first[0].endswith(".venv/bin/python -m scar_jax.main demo --workdir=demo_run")
    assert first[1] == "bash .ci/run"


def test_links_stay_inside_the_repository():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert "../" not in text, doc
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            assert not target.startswith("http") and (doc.parent / target).exists(), (doc, target)


def test_every_command_is_in_the_table():
    table = [line for line in README.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1].split()[0] for line in table] == list(main.COMMANDS)


def test_the_export_example_is_the_tested_file():
    example = (ROOT / "scar_jax/export/README_example.py").read_text()
    code = example.split('"""', 2)[2].strip()
    assert python_block(README, "## Export").strip() == code


def test_generated_blocks_live_in_docs():
    results = generated_docs.RESULTS.read_text()
    assert demo.RESULTS_BEGIN in results and demo.RESULTS_END in results
    perf = generated_docs.PERFORMANCE.read_text()
    assert generated_docs.BENCHMARKS_BEGIN in perf and generated_docs.BENCHMARKS_END in perf
    assert demo.RESULTS_BEGIN not in README  # measured tables are not in the README


def test_replace_block_rewrites_only_the_block(tmp_path):
    doc = tmp_path / "PERFORMANCE.md"
    begin, end = generated_docs.BENCHMARKS_BEGIN, generated_docs.BENCHMARKS_END
    doc.write_text(f"# P\nintro\n{begin}\nold table\n{end}\n\nprose\n")
    generated_docs.replace_block(doc, begin, end, "| row |\n")
    assert doc.read_text() == f"# P\nintro\n{begin}\n| row |\n{end}\n\nprose\n"
