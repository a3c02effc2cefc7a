"""What the commands log: the package's own lines; its dependencies' INFO only on request.

Orbax, TFDS and JAX log at INFO through the same absl handler as the package (a quarter of
the demo's log was orbax's 'Closing _NonBlockingMetadataStore'). `quiet_libraries()` drops
INFO and DEBUG records whose source file is outside scar_jax/ unless --verbosity >= 1;
warnings and errors always pass.
"""

from __future__ import annotations

import logging as std_logging
import os
import pathlib

from absl import logging

PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parent) + os.sep


class QuietLibraries(std_logging.Filter):
    """Passes warnings and errors, the package's own records, and everything at verbosity >= 1."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.WARNING or logging.get_verbosity() >= 1:
            return True
        return os.path.realpath(record.pathname).startswith(PACKAGE_DIR)


def quiet_libraries() -> None:
    """Install QuietLibraries on absl's handler (once per process)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, QuietLibraries) for f in handler.filters):
        handler.addFilter(QuietLibraries())
