"""Logs: the package's own lines; dependencies' INFO only at --verbosity >= 1."""

import logging as std_logging

import pytest
from absl import logging

from scar_jax import logs


def _record(pathname: str, level: int) -> std_logging.LogRecord:
    return std_logging.LogRecord("absl", level, pathname, 1, "msg", None, None)


@pytest.fixture
def verbosity():
    before = logging.get_verbosity()
    yield logging.set_verbosity
    logging.set_verbosity(before)


def test_library_info_is_dropped_unless_verbosity_asks(verbosity):
    orbax = "/venv/lib/python3.11/site-packages/orbax/checkpoint/_src/path/atomicity.py"
    ours = logs.PACKAGE_DIR + "train.py"
    f = logs.QuietLibraries()
    verbosity(logging.INFO)
    assert not f.filter(_record(orbax, std_logging.INFO))
    assert f.filter(_record(orbax, std_logging.WARNING))  # warnings always pass
    assert f.filter(_record(ours, std_logging.INFO))  # the package's stages and progress
    verbosity(logging.DEBUG)  # --verbosity=1
    assert f.filter(_record(orbax, std_logging.INFO))


def test_quiet_libraries_installs_one_filter():
    logs.quiet_libraries()
    logs.quiet_libraries()
    handler = logging.get_absl_handler()
    assert sum(isinstance(f, logs.QuietLibraries) for f in handler.filters) == 1
