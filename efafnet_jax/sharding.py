"""Where arrays live: the data mesh, host batches as global arrays, and back.

One 1-D mesh named 'data' spans every device of every host. Each host feeds its
own rows of a global batch; the rows of all hosts, in host order, make the batch.
Training and evaluation both go through these functions.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named 'data' over `devices` (default: all devices of all hosts)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of `mesh` (parameters, optimiser state)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Rows split over the 'data' axis (batches, per-row outputs)."""
    return NamedSharding(mesh, PartitionSpec("data"))


def global_batch(mesh: Mesh, local_rows: np.ndarray) -> jax.Array:
    """This host's rows -> the global batch array (rows of all hosts, in host order)."""
    return jax.make_array_from_process_local_data(batch_sharded(mesh), local_rows)


def local_rows(array: jax.Array) -> np.ndarray:
    """The rows of a batch-sharded global array that live on this host, in order."""
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards], axis=0)


def prefetched(
    batches: Iterable[dict], put: Callable[[dict], dict], depth: int = 2
) -> Iterator[dict]:
    """`put(batch)` for each batch, `depth` batches ahead of the consumer.

    `put` starts the host-to-device copies (`global_batch`) and returns at once, so
    while the device runs step i, batch i+1 is already there and batch i+2 is on
    its way: the host assembles batches while the device computes.
    """
    queue: collections.deque[dict] = collections.deque()
    for batch in batches:
        queue.append(put(batch))
        if len(queue) > depth:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
