"""The model's heatmaps for batches sharded over every device of every host.

Outputs pass through the codec's activation named by the model itself
(`model.heatmap_activation`); the flip test runs on device.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from efafnet_jax.data.codec import activate, flip_back
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.sharding import batch_sharded, replicated


def heatmap_function(
    model, spec: KeypointSpec, sigma: float, flip_test: bool, shift_heatmap: bool
) -> Callable[[dict, jnp.ndarray], jnp.ndarray]:
    """(variables, uint8 images) -> heatmaps, unjitted; flip test averaged on device.

    `sigma` is the codec's (data.sigma): the spatial-softmax activation's scale.
    """
    flip_permutation = spec.flip_permutation()

    def heatmaps(variables, images):
        def run(crops):
            outputs = model.apply(variables, crops, train=False)
            return activate(outputs, model.heatmap_activation, sigma)

        out = run(images)
        if flip_test:
            mirrored = run(images[:, :, ::-1, :])
            out = (out + flip_back(mirrored, flip_permutation, shift_heatmap)) * 0.5
        return out

    return heatmaps


def make_heatmap_fn(
    model, spec: KeypointSpec, sigma: float, flip_test: bool, shift_heatmap: bool, mesh: Mesh
):
    """jit(heatmap_function) with the batch sharded over `mesh`'s 'data' axis."""
    heatmaps = heatmap_function(model, spec, sigma, flip_test, shift_heatmap)
    return jax.jit(
        heatmaps,
        in_shardings=(replicated(mesh), batch_sharded(mesh)),
        out_shardings=batch_sharded(mesh),
    )
