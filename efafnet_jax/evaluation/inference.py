"""Heatmaps for batches sharded over every device of every host (flip test on device)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from efafnet_jax.evaluation.decode import flip_back


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named 'data' over all devices (of all hosts)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def heatmap_function(
    model,
    flip_pairs: Sequence[tuple[int, int]],
    flip_test: bool,
    shift_heatmap: bool,
    activation: Callable[[jnp.ndarray], jnp.ndarray] = lambda out: out,
) -> Callable[[dict, jnp.ndarray], jnp.ndarray]:
    """(variables, uint8 images) -> heatmaps, unjitted; flip test averaged on device.

    `activation` maps model outputs to heatmaps (see train.losses.heatmaps_from_outputs).
    """

    def heatmaps(variables, images):
        out = activation(model.apply(variables, images, train=False))
        if flip_test:
            mirrored = activation(model.apply(variables, images[:, :, ::-1, :], train=False))
            out = (out + flip_back(mirrored, flip_pairs, shift_heatmap)) * 0.5
        return out

    return heatmaps


def make_heatmap_fn(
    model,
    flip_pairs: Sequence[tuple[int, int]],
    flip_test: bool,
    shift_heatmap: bool,
    mesh: Mesh,
    activation: Callable[[jnp.ndarray], jnp.ndarray] = lambda out: out,
):
    """jit(heatmap_function) with the batch sharded over `mesh`'s 'data' axis."""
    batch = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    heatmaps = heatmap_function(model, flip_pairs, flip_test, shift_heatmap, activation)
    return jax.jit(heatmaps, in_shardings=(replicated, batch), out_shardings=batch)


def global_batch(mesh: Mesh, local_images: np.ndarray) -> jax.Array:
    """This host's rows -> the global batch array (rows of all hosts, in host order)."""
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, PartitionSpec("data")), local_images
    )


def local_rows(array: jax.Array) -> np.ndarray:
    """The rows of a batch-sharded global array that live on this host, in order."""
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards], axis=0)
