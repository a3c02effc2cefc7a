"""Test setup: 8 simulated CPU devices, XLA's CPU backend at optimisation level 0, no network
and a compilation cache for this test session, set before jax is imported."""

import atexit
import os
import shutil
import tempfile

# XLA's CPU backend at LLVM optimisation level 0: the test programs are tiny and each is
# compiled once or twice, so compiling, not running, is what the suite waits for; at level 0
# test_update.py's sign and bfloat16 tests took 0.67x the time of the default level. The
# HLO passes (fusion, layouts, SPMD partitioning) run as in production; only machine-code
# optimisation of the kernels is skipped, which can move results by rounding only (the
# tests' tolerances are for rounding). Subprocesses inherit it (tests/multiprocess.py).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS, "--xla_force_host_platform_device_count=8"]
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Many tests (and the processes they start) compile the same programs; JAX's persistent
# cache compiles each once per session. The first process (pytest, or xdist's controller)
# makes a fresh directory and removes it at exit; workers and subprocesses inherit it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="scar_jax_test_jit_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
# every program, not only those that take a second to compile (JAX's default): the many small
# evaluation and loss programs recur across tests and processes (test_main.py, test_run.py
# and test_benchmark_table.py: 0.84x the time)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


# The longest test files (minutes each, measured under `bash .ci/run`), run first: pytest-xdist
# hands whole files to its two workers in collection order, so long files collected last
# (test_train.py, test_update.py) would otherwise leave one worker idle at the end.
LONGEST_FIRST = (
    "test_update.py",
    "test_demo.py",
    "test_train.py",
    "test_scar.py",
    "test_run.py",
    "test_multiprocess_update.py",
    "test_checkpoint_export.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


@pytest.fixture
def gcs(tmp_path, monkeypatch):
    """gs://bucket/... served from the returned folder (<tmp>/gcs/bucket/...) through
    etils.epath's own test backend (no GCS or network here): code that reaches files through
    epath sees the bucket; code that puts the URL through os or pathlib does not, and what it
    writes lands in the (empty) working directory <tmp>/cwd as a relative 'gs:/...' path.
    Orbax's restore reads GCS through google-cloud-storage, which this does not cover."""
    from etils.epath import testing as epath_testing

    root, cwd = tmp_path / "gcs", tmp_path / "cwd"
    root.mkdir()
    cwd.mkdir()

    def local(path):
        path = os.fspath(path)
        assert path.startswith("gs://"), path  # the URL reaches the backend unmangled
        return os.path.join(root, path[len("gs://"):])

    def mapped(original, path, *args, **kwargs):
        return original(local(path), *args, **kwargs)

    def mapped_pair(original, src, dst, *args, **kwargs):  # rename / replace: a local move
        del original, args, kwargs  # the backend's own would call the mocked isdir
        os.replace(local(src), local(dst))

    names = ("exists", "isdir", "listdir", "glob", "makedirs", "mkdir", "open", "remove",
             "rmtree", "stat")
    monkeypatch.chdir(cwd)
    with epath_testing.mock_epath(**{n: mapped for n in names}, rename=mapped_pair,
                                  replace=mapped_pair):
        yield root
