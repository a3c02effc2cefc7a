"""Mesh from config, fsdp parameter rules, batch sharding, state born sharded, text weights."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from scar_jax import optim, sharding, train_state
from scar_jax.models import scar, text_encoder
from tests import test_update as tu


def mesh_config(data, fsdp, min_size=2**16):
    return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "fsdp_min_size": min_size})


@pytest.mark.parametrize(
    "data,fsdp,n,expected",
    [
        (-1, 1, 8, (8, 1)),
        (-1, 2, 8, (4, 2)),
        (2, -1, 8, (2, 4)),
        (1, 1, 1, (1, 1)),
        (4, 2, 8, (4, 2)),
    ],
)
def test_mesh_shape(data, fsdp, n, expected):
    assert sharding.mesh_shape(mesh_config(data, fsdp), n) == expected


@pytest.mark.parametrize(
    "data,fsdp,n,match",
    [
        (-1, -1, 8, "at most one"),
        (-1, 3, 8, "cannot be split"),
        (2, 2, 8, "available"),
        (0, 1, 8, "positive"),
    ],
)
def test_mesh_shape_errors(data, fsdp, n, match):
    with pytest.raises(ValueError, match=match):
        sharding.mesh_shape(mesh_config(data, fsdp), n)


def test_make_mesh_auto_axes():
    mesh = sharding.make_mesh(mesh_config(-1, 2))
    assert mesh.axis_names == ("data", "fsdp")
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    assert tuple(mesh.axis_types) == (AxisType.Auto, AxisType.Auto)
    sub = sharding.make_mesh(mesh_config(-1, 1), jax.devices()[2:4])
    assert dict(sub.shape) == {"data": 2, "fsdp": 1}
    assert set(sub.devices.flat) == set(jax.devices()[2:4])


@pytest.mark.parametrize(
    "shape,fsdp,min_size,expected",
    [
        ((256, 512), 4, 1000, P(None, "fsdp")),  # the largest divisible dim
        ((512, 256), 4, 1000, P("fsdp", None)),
        ((6, 30, 64), 4, 1000, P(None, None, "fsdp")),  # 30 and 6 are not divisible by 4
        ((30, 6), 4, 10, P()),  # nothing divisible
        ((256, 512), 4, 2**20, P()),  # too small
        ((4096,), 2, 1000, P("fsdp")),
        ((), 2, 0, P()),
        ((256, 512), 1, 0, P()),  # no fsdp axis
    ],
)
def test_param_spec(shape, fsdp, min_size, expected):
    assert sharding.param_spec(shape, fsdp, min_size) == expected


def test_batch_sharding_and_divisor():
    mesh = sharding.make_mesh(mesh_config(-1, 2))
    s = sharding.batch_sharding(mesh)
    assert s.spec == P(("data", "fsdp"))
    assert sharding.batch_divisor(mesh) == 8
    x = jax.device_put(np.arange(16.0).reshape(8, 2), s)
    assert [sh.data.shape for sh in x.addressable_shards] == [(1, 2)] * 8
    np.testing.assert_array_equal(sharding.to_host(x), np.arange(16.0).reshape(8, 2))


def test_state_born_sharded():
    """Every leaf of the state lands on its rule's sharding; Adam moments follow params."""
    config = tu.make_config(**{"mesh.fsdp": 2, "mesh.fsdp_min_size": 1024})
    model = scar.build_model(config.model)
    mesh = sharding.make_mesh(config.mesh)
    state, shardings = train_state.create_train_state(model, config, tu.make_batch(config), mesh)
    for leaf, want in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim)
    params = optim.param_paths(state.params)
    specs = dict(zip(params, (s.spec for s in jax.tree.leaves(shardings.params))))
    shapes = dict(zip(params, (x.shape for x in jax.tree.leaves(state.params))))
    for path, spec in specs.items():
        assert spec == sharding.param_spec(shapes[path], 2, 1024), path
    assert any(s != P() for s in specs.values())
    # AdamW's mu of a sharded kernel is sharded the same way
    mu = [
        (optim.path_str(p), x)
        for p, x in jax.tree_util.tree_leaves_with_path(state.opt_state["encoders"])
        if "mu" in optim.path_str(p) and x.ndim == 2 and x.size >= 1024
    ]
    assert mu and all(not x.sharding.is_fully_replicated for _, x in mu)
    assert int(state.step) == 0 and int(state.nonfinite) == 0


@pytest.mark.slow
def test_text_weights_loaded_onto_shardings(tmp_path):
    """A Hugging Face BERT folder's weights end up in the sharded state, unchanged."""
    from tests.models import test_text_encoder as tte  # writes a tiny torch BERT

    folder = tmp_path / "bert"
    tte._write_tiny_bert(folder)
    config = tu.make_config(**{"mesh.fsdp": 2, "mesh.fsdp_min_size": 64})
    config.model.txt.checkpoint = str(folder)
    model = scar.build_model(config.model)
    mesh = sharding.make_mesh(config.mesh)
    state, shardings = train_state.create_train_state(model, config, tu.make_batch(config), mesh)
    _, ref = text_encoder.load_hf_bert(folder, pooling=config.model.txt.pooling)
    got = sharding.to_host(state.params["txt"]["bert"])
    assert jax.tree.structure(got) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(a, np.asarray(b))
    for leaf, want in zip(
        jax.tree.leaves(state.params["txt"]["bert"]),
        jax.tree.leaves(shardings.params["txt"]["bert"]),
    ):
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim)
