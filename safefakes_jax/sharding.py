"""The device mesh and the two shardings every jit-compiled step uses.

One 1-D mesh with axis `data` over all devices of all processes; replicated values (params,
optimiser state, rng) have `P()`, batch arrays are split on their leading axis (`P('data')`)
and built from each host's part with `jax.make_array_from_process_local_data`. Below every
layer that compiles a step (evaluation predicts, trainers train) so that none of them imports
another's trainer for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh with axis `data` over the first `num_devices` devices (default: all)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    return jax.make_mesh(
        (n,), ('data',), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n]
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of replicated values (params, optimiser state, rng) on `mesh`."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of batch arrays: leading axis split over `data`."""
    return NamedSharding(mesh, P('data'))


def shard_batch(
    batch: Mapping[str, np.ndarray], mesh: Mesh, keys: Sequence[str]
) -> dict[str, jax.Array]:
    """This host's batch -> global arrays sharded over `data` (only `keys` are kept)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys}
