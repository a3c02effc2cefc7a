"""The committed dummy_data/ folders are exactly what their make_dummy_data.py scripts write."""

from __future__ import annotations

import filecmp
import os

import pytest

from scar_jax.data.builders.chapman_shaoxing import make_dummy_data as csn
from scar_jax.data.builders.cpsc2018 import make_dummy_data as cpsc
from scar_jax.data.builders.mimic_iv_ecg import make_dummy_data as mimic
from scar_jax.data.builders.ptbxl import make_dummy_data as ptbxl


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize("module", [ptbxl, cpsc, csn, mimic], ids=lambda m: m.__name__)
def test_dummy_data_is_reproducible(module, tmp_path):
    module.main(str(tmp_path))
    committed = _files(module.HERE)
    assert _files(str(tmp_path)) == committed
    _, mismatch, errors = filecmp.cmpfiles(module.HERE, str(tmp_path), committed, shallow=False)
    assert not mismatch and not errors
