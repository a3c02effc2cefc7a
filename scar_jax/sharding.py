"""Device mesh ('data', 'fsdp'), parameter sharding rules and the global batch sharding.

The mesh has two axes: examples are split over both ('data' x 'fsdp' devices
each hold a slice of the global batch); parameters with at least
`fsdp_min_size` elements are split over 'fsdp' along their largest dimension
that the axis size divides, every other parameter is replicated. Axis types
are Auto (jax 0.10 defaults to Explicit), so XLA's sharding propagation places
the collectives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both axes


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
    """(data, fsdp) sizes from `config.mesh` for `num_devices` devices; -1 takes what remains."""
    sizes = [int(config.data), int(config.fsdp)]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh sizes {sizes}: at most one axis may be -1 (the remaining devices).")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes {sizes} must be positive or -1; set config.mesh.data/fsdp.")
    if -1 in sizes:
        known = int(np.prod([s for s in sizes if s != -1]))
        if num_devices % known:
            raise ValueError(
                f"{num_devices} devices cannot be split with mesh sizes {sizes}; "
                f"choose config.mesh sizes whose product divides {num_devices}."
            )
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} = {int(np.prod(sizes))} devices, but "
            f"{num_devices} are available; set config.mesh.data=-1 to use them all."
        )
    return sizes[0], sizes[1]


def make_mesh(
    config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """Mesh with axes ('data', 'fsdp') (Auto axis types) from `config.mesh` over `devices`."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(config, len(devices))
    if devices == list(jax.devices()):
        mesh = jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES))
    else:
        grid = np.asarray(devices, dtype=object).reshape(shape)
        mesh = Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))
    logging.info("mesh %s over %d devices", dict(mesh.shape), len(devices))
    return mesh


def param_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
    """PartitionSpec of one parameter: its largest 'fsdp'-divisible dim sharded, if big enough."""
    if fsdp_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def param_shardings(shapes: Any, mesh: Mesh, min_size: int = 2**16) -> Any:
    """NamedShardings for a tree of arrays / ShapeDtypeStructs by the fsdp rule (see module)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp, min_size)), shapes
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on `mesh` (scalars, rng keys, metrics)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ('data', 'fsdp'); a prefix for every batch leaf."""
    return NamedSharding(mesh, P(BATCH_AXES))


def batch_divisor(mesh: Mesh) -> int:
    """The global batch size must be a multiple of this (devices on the batch axes)."""
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def put_global(tree: Any, shardings: Any) -> Any:
    """A host tree, identical on every process, -> global jax.Arrays with `shardings`."""

    def put(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree, shardings)


def to_host(tree: Any) -> Any:
    """Global (possibly multi-process) jax.Arrays -> full numpy arrays on every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
