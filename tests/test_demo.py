"""The demo end to end at test size, the CLI's predict on its checkpoint, report helpers."""

from __future__ import annotations

import json
import logging as std_logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from configs import demo as demo_config
from scar_jax import demo
from tests import multiprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tiny_config(arg: str):
    """configs/demo.py at runlocal, with the evaluation grid cut to what a test needs."""
    config = demo_config.get_config(arg + ",runlocal,text=random-tiny")
    config.total_steps = 3
    config.eval.probe = False
    config.eval.bootstrap = 20
    config.eval.max_examples = 8
    config.eval.rhos = (0.2,)
    config.eval.adv_units = ("lead",)
    config.eval.trace_examples = 1
    return config


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    # a relative workdir, as in the README's command (orbax needs absolute paths: a relative
    # one failed at the first checkpoint save, in the worker processes)
    cwd = os.getcwd()
    os.chdir(work.parent)
    try:
        results = demo.run_demo(work.name, get_config=_tiny_config)
    finally:
        os.chdir(cwd)
    return work, results


@pytest.mark.slow
def test_demo_trains_every_method_and_writes_the_report(demo_run):
    work, results = demo_run
    assert set(results) == {0}
    models = results[0]["models"]
    assert set(models) == set(demo_config.METHODS)
    for method in demo_config.METHODS:
        ckpts = work / "runs" / method / "seed0" / "checkpoints"
        assert (ckpts / "3").is_dir(), sorted(os.listdir(ckpts))
        auroc = models[method]["zeroshot"]["clean"]["auroc"]
        assert 0.0 <= auroc <= 1.0
    report = work / "report"
    for name in ("results.json", "results.md", "auroc_vs_missing.png", "cmrs_vs_rho.png"):
        assert (report / name).is_file(), name
    md = (report / "results.md").read_text()
    assert all(m in md for m in demo_config.METHODS)
    saved = json.loads((report / "results.json").read_text())
    assert set(saved["synthetic_ecg/tiny"]["models"]) == set(demo_config.METHODS)
    # the transfer reference: trained once, outside the comparison, ranks every model's
    # transfer rows (classwise rows too); the per-example scores are kept for the seeds
    method, seed = demo_config.REFERENCE
    ref = work / "runs" / "reference" / f"{method}_seed{seed}" / "checkpoints"
    assert (ref / "3").is_dir()
    assert saved["synthetic_ecg/tiny"]["reference"].endswith(
        f"reference/{method}_seed{seed}/checkpoints")
    for m in demo_config.METHODS:
        rows = models[m]["zeroshot"]
        assert {"adversarial/transfer/lead/rho0.2", "classwise/transfer/lead/rho0.5",
                "classwise/whitebox/lead/rho0.5"} <= set(rows)
    assert "reference" in saved["synthetic_ecg/tiny"]["classwise"]["units"]
    assert (report / "scores.npz").is_file()


@pytest.mark.slow
def test_a_run_trained_in_a_worker_process_equals_one_trained_in_this_process(demo_run, tmp_path):
    """The demo trains in spawned worker processes (default workers=3); the same config
    trained here, one run after another, logs the same losses and gradients to the bit."""
    work, _ = demo_run
    config = demo.method_config(_tiny_config, "merl", 0, "")
    config.input.data_dir = str(work / "data")
    config.train.text_cache_dir = str(work / "text_cache")
    demo.train_runs([("merl seed 0", config, str(tmp_path / "merl"))], workers=1)

    def logged(run_dir: pathlib.Path) -> list[dict]:  # every logged scalar but throughput
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rows]

    here, worker = logged(tmp_path / "merl"), logged(work / "runs" / "merl" / "seed0")
    assert here and any("train/loss/total" in r for r in here)
    assert here == worker


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = multiprocess.xla_flags(None)  # one device, as a user's machine
    return subprocess.run(
        [sys.executable, "-m", "scar_jax.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_predict_cli_on_the_pydicom_ecg_and_a_corrupt_file(demo_run, tmp_path):
    from pydicom.data import get_testdata_file

    work, _ = demo_run
    ckpt = str(work / "runs" / "scar" / "seed0")
    ok = _cli("predict", "--config=configs/demo.py:runlocal", f"--checkpoint={ckpt}",
              f"--input={get_testdata_file('waveform_ecg.dcm')}", "--dataset=synthetic_ecg")
    assert ok.returncode == 0, ok.stderr[-3000:]
    scores = [float(line.split()[-1]) for line in ok.stdout.splitlines()
              if line.startswith("    ")]
    assert len(scores) == 12
    assert np.all(np.isfinite(scores))
    # the input's observed leads and the scores; no config, no library chatter
    assert "leads  I II III aVR aVL aVF V1 V2 V3 V4 V5 V6" in ok.stdout
    assert "config:" not in ok.stderr and "orbax" not in ok.stderr, ok.stderr[-3000:]
    # the checkpoint's own config (no --config); a TFDS config after '/' (PTB-XL's built
    # labels are its 5 superdiagnostic classes); --verbose logs the config
    ptbxl = _cli("predict", f"--checkpoint={ckpt}", "--verbose",
                 f"--input={get_testdata_file('waveform_ecg.dcm')}", "--dataset=ptbxl/500hz")
    assert ptbxl.returncode == 0, ptbxl.stderr[-3000:]
    classes = {line.split()[0] for line in ptbxl.stdout.splitlines() if line.startswith("    ")}
    assert classes == {"NORM", "MI", "STTC", "CD", "HYP"}
    assert "the checkpoint's config:" in ptbxl.stderr
    bad = tmp_path / "corrupt.dcm"
    bad.write_bytes(b"\x00" * 200)
    fail = _cli("predict", "--config=configs/demo.py:runlocal", f"--checkpoint={ckpt}",
                f"--input={bad}", "--dataset=synthetic_ecg")
    assert fail.returncode != 0
    assert "corrupt.dcm" in fail.stderr and "DICOM" in fail.stderr


@pytest.mark.slow
def test_readme_using_the_model_runs_on_the_demo_checkpoint(demo_run):
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Using the model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    work, _ = demo_run
    assert '"demo_run/runs/scar/seed0"' in code
    code = code.replace('"demo_run/runs/scar/seed0"', repr(str(work / "runs" / "scar" / "seed0")))
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    scores = namespace["scores"]
    assert scores.shape == (12,) and np.all(np.isfinite(scores)) and np.all(np.abs(scores) <= 1)
    assert namespace["batch"]["lead_observed"][0].tolist() == [True] * 6 + [False] * 6


def test_a_worker_exits_when_the_demo_process_dies(tmp_path):
    """A training worker must not outlive a killed demo (kill -9: no chance to clean up)."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, sys, time
        from scar_jax import demo

        def worker(parent, path):
            demo._exit_with_parent(parent)
            tmp = path + ".tmp"
            open(tmp, "w").write(str(os.getpid()))
            os.replace(tmp, path)
            time.sleep(120)

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            ctx.Process(target=worker, args=(os.getpid(), sys.argv[1])).start()
            time.sleep(120)
    """))
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        deadline = time.time() + 120
        while not pid_file.exists() and time.time() < deadline and parent.poll() is None:
            time.sleep(0.2)
        assert pid_file.exists(), "the worker did not start"
        worker = int(pid_file.read_text())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 20
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the worker outlived the demo process"
    finally:
        parent.kill()
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_a_rerun_skips_finished_runs_without_starting_workers(demo_run, monkeypatch, caplog):
    """train_runs on runs already trained to total_steps starts no worker pool and trains
    nothing; each is logged as reused. A run short of total_steps still goes to the pool."""
    work, _ = demo_run
    jobs = []
    for method in demo_config.METHODS:
        config = demo.method_config(_tiny_config, method, 0, "")
        jobs.append((f"{method} seed 0", config, str(work / "runs" / method / "seed0")))

    def no_pool(*args, **kwargs):
        raise AssertionError("a worker pool was started for finished runs")

    monkeypatch.setattr(demo.futures, "ProcessPoolExecutor", no_pool)
    with caplog.at_level("INFO"):
        demo.train_runs(jobs, workers=3)
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "already trained to step 3" in m]) == 3, lines
    longer = jobs[0][1].copy_and_resolve_references()
    longer.total_steps = 4
    with pytest.raises(AssertionError, match="worker pool was started"):
        demo.train_runs([(jobs[0][0], longer, jobs[0][2])], workers=3)


def test_run_summary_line_says_when_a_run_was_trained_before():
    """A rerun on a finished workdir resumes at the last step and trains nothing: its line
    says so instead of 'train loss nan, val loss None'."""
    fresh = {"step": 300, "resumed_from": None, "train_loss": 2.70842, "val_loss": None}
    assert demo._describe(fresh) == "step 300, train loss 2.7084, val loss –"
    resumed = dict(fresh, resumed_from=200, val_loss=np.float32(2.51594))
    assert demo._describe(resumed) == "step 300, train loss 2.7084, val loss 2.5159"
    done = {"step": 300, "resumed_from": 300, "train_loss": None, "val_loss": None}
    assert demo._describe(done) == "already trained to step 300 (its checkpoint is reused)"


def test_seed_summary_mean_and_std(tmp_path):
    results = {
        s: {"models": {"scar": {"zeroshot": {"clean": {"auroc": a}}, "cmrs_headline": c}}}
        for s, a, c in ((0, 0.6, 0.2), (1, 0.8, 0.4), (2, 0.7, 0.9))
    }
    path = demo.write_seed_summary(results, tmp_path)
    summary = json.loads((tmp_path / "seeds.json").read_text())
    auroc = summary["scar"]["zeroshot/clean/auroc"]
    assert auroc["mean"] == pytest.approx(0.7) and auroc["n"] == 3
    assert auroc["std"] == pytest.approx(np.std([0.6, 0.8, 0.7], ddof=1))
    assert summary["scar"]["cmrs_headline"]["mean"] == pytest.approx(0.5)
    assert "zeroshot/clean/auroc | 0.7000" in path.read_text()


def test_seed_summary_reports_paired_method_differences_from_the_score_files(tmp_path):
    """scar == merl in every seed (difference exactly 0); scar perfect and random reversed
    (difference exactly 1 in every resample); the per-seed files come from save_scores."""
    from scar_jax.evaluation import compare

    rng = np.random.default_rng(0)
    labels = rng.random((30, 3)) > 0.5
    labels[0], labels[1] = True, False
    perfect = labels + 0.01 * np.arange(30)[:, None]
    conds = ["clean", "adversarial/whitebox/lead/rho0.1"]
    results, files = {}, {}
    for seed in (0, 1):
        noise = rng.normal(size=labels.shape)
        scores = {"scar": {c: perfect for c in conds}, "merl": {c: perfect for c in conds},
                  "random": {c: -perfect + 0 * noise for c in conds}}
        files[seed] = compare.save_scores(tmp_path / f"seed{seed}", labels, scores)
        results[seed] = {"conditions": [{"name": c} for c in conds],
                         "models": {m: {"zeroshot": {"clean": {"auroc": 0.5}}} for m in scores}}
    path = demo.write_seed_summary(results, tmp_path, score_files=files, num_samples=50)
    diffs = json.loads((tmp_path / "seeds.json").read_text())["differences"]
    assert set(diffs) == {"merl", "random"} and set(diffs["merl"]) == set(conds) | {"cmrs"}
    for c in conds:
        assert diffs["merl"][c]["mean"] == 0.0 and diffs["merl"][c]["ci"] == [0.0, 0.0]
        assert diffs["random"][c]["mean"] == pytest.approx(1.0)
        assert diffs["random"][c]["ci"] == pytest.approx([1.0, 1.0])
    md = path.read_text()
    assert "| clean | +0.0000 [+0.0000, +0.0000] | **+1.0000 [+1.0000, +1.0000]** |" in md
    # a seed without its scores.npz: no differences (logged), the mean / std part as before
    files[1] = tmp_path / "nowhere" / "scores.npz"
    demo.write_seed_summary(results, tmp_path, score_files=files, num_samples=50)
    assert json.loads((tmp_path / "seeds.json").read_text())["differences"] == {}


def test_update_results_replaces_only_the_generated_block(tmp_path):
    readme = tmp_path / "RESULTS.md"
    readme.write_text(f"# T\nbefore\n{demo.RESULTS_BEGIN}\nold\n{demo.RESULTS_END}\nafter\n")
    report = tmp_path / "report" / "results.md"
    report.parent.mkdir()
    report.write_text(
        "# Evaluation\n\n## Zero-shot\n| a |\n## Targeting: share\n| dataset | x |\n|---|---|\n"
        "| syn · scar | masker/rho0.1 |\n| syn · scar | random/lead/rho0.1 |\n"
        "## Targeting by class: lift\n| dataset | x | macro |\n|---|---|---|\n"
        "| syn · scar | masker_mode/rho0.2 | 1.5 |\n| syn · scar | adversarial/whitebox/lead/rho0.1 "
        "| 1.1 |\n## Mask-only label probe (chance 0.5)\n| syn · scar | masker_swapped/rho0.3 "
        "| 0.59 |\n## Mask shortcut in the encoder: score shift\n| syn · scar | 0.12 |\n"
        "## Grid cost\n| g |\n"
    )
    demo.update_results(report.parent, [0], readme)
    text = readme.read_text()
    assert "old" not in text and "before" in text and text.endswith("after\n")
    assert "#### Zero-shot" in text and "| a |" in text and "#### Evaluation" not in text
    assert "masker/rho0.1" in text and "random/lead" not in text and "| g |" not in text
    assert "#### Targeting by class" in text and "masker_mode/rho0.2 | 1.5" in text
    assert "adversarial/whitebox" not in text
    assert "#### Mask-only label probe" in text and "masker_swapped/rho0.3 | 0.59" in text
    assert "#### Mask shortcut in the encoder" in text and "| syn · scar | 0.12 |" in text
    demo.update_results(report.parent, [0], readme)  # idempotent
    assert readme.read_text() == text
    (tmp_path / "plain.md").write_text("no block\n")
    with pytest.raises(ValueError, match="generated-results block"):
        demo.update_results(report.parent, [0], tmp_path / "plain.md")


def test_update_results_with_several_seeds_takes_the_first_seeds_tables_and_the_differences(
        tmp_path):
    readme = tmp_path / "RESULTS.md"
    readme.write_text(f"{demo.RESULTS_BEGIN}\n{demo.RESULTS_END}\n")
    report = tmp_path / "report"
    for s, value in ((3, "0.81"), (5, "0.99")):
        (report / f"seed{s}").mkdir(parents=True)
        (report / f"seed{s}" / "results.md").write_text(
            f"# Evaluation\n## Zero-shot macro AUROC\n| scar | {value} |\n## Grid cost\n| g |\n")
    seeds_md = ("# Mean ± std over seeds [3, 5]\n\n## scar minus each other method (paired)\n\n"
                "| condition | scar − merl |\n|---|---|\n| clean | +0.0100 [+0.0010, +0.0200] |\n\n"
                "## scar\n\n| metric | mean | std | n |\n| zeroshot | 0.9 | 0.1 | 2 |\n")
    (report / "seeds.md").write_text(seeds_md)
    demo.update_results(report, [3, 5], readme)
    text = readme.read_text()
    assert "Seeds [3, 5]" in text and "| scar | 0.81 |" in text and "0.99" not in text
    assert "#### scar minus each other method (paired)" in text
    assert "| clean | +0.0100 [+0.0010, +0.0200] |" in text
    assert "| zeroshot | 0.9" not in text and "| g |" not in text
    # a seed summary without differences (a scores.npz missing) is refused, not left empty
    (report / "seeds.md").write_text("# Mean ± std over seeds [3, 5]\n\n## scar\n| m |\n")
    with pytest.raises(ValueError, match="no paired differences"):
        demo.update_results(report, [3, 5], readme)
    assert readme.read_text() == text


def test_run_demo_rejects_an_unknown_method_or_a_url_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"demo methods \['mrel'\] unknown"):
        demo.run_demo(str(tmp_path / "w"), methods=["scar", "mrel"])
    assert not (tmp_path / "w").exists()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="The demo runs in a local folder, not gs://b/w"):
        demo.run_demo("gs://b/w")
    assert not (tmp_path / "gs:").exists()


def test_a_worker_tags_its_log_lines_with_the_current_run_only():
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler()
    before = list(handler.filters)
    try:
        demo.tag_logs("scar seed 0")
        demo.tag_logs("random seed 1")  # the worker's next job
        record = std_logging.LogRecord("absl", std_logging.INFO, __file__, 1, "step %d", (5,), None)
        assert all(f.filter(record) for f in handler.filters)
        assert record.getMessage() == "[random seed 1] step 5"
    finally:
        for f in list(handler.filters):
            if f not in before:
                handler.removeFilter(f)
