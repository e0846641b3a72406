"""Heatmap losses on channels-last maps.

'mse' and 'ohkm' are SimpleBaseline's (lib/core/loss.py). 'spatial_softmax' is
the quickstart's faster-starting alternative: a softmax over each joint's pixels
scored by cross-entropy against the target Gaussian normalised to sum 1 (an MSE
net first learns all-zero maps and localises late; see benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections


def per_joint_mse(pred: jnp.ndarray, target: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
    """[B, K]: 0.5 * mean over pixels of (w * pred - w * gt)^2 (weights multiply both sides)."""
    diff = (pred - target) * weight[:, None, None, :]
    return 0.5 * jnp.mean(jnp.square(diff), axis=(1, 2))


def joints_mse(pred: jnp.ndarray, target: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
    """JointsMSELoss: the mean over joints of 0.5 * MSE over batch and pixels."""
    return jnp.mean(per_joint_mse(pred, target, weight))


def ohkm_mse(
    pred: jnp.ndarray, target: jnp.ndarray, weight: jnp.ndarray, top_k: int = 8
) -> jnp.ndarray:
    """JointsOHKMMSELoss: per sample, the mean of its top-k joint losses; then the batch mean."""
    losses = per_joint_mse(pred, target, weight)
    top, _ = jax.lax.top_k(losses, top_k)
    return jnp.mean(jnp.mean(top, axis=1))


def spatial_softmax_ce(
    logits: jnp.ndarray, target: jnp.ndarray, weight: jnp.ndarray
) -> jnp.ndarray:
    """Cross-entropy of the per-joint softmax over pixels against the normalised target."""
    b, h, w, k = logits.shape
    log_prob = jax.nn.log_softmax(logits.reshape(b, h * w, k).astype(jnp.float32), axis=1)
    mass = target.reshape(b, h * w, k)
    mass = mass / jnp.maximum(jnp.sum(mass, axis=1, keepdims=True), 1e-12)
    per_joint = -jnp.sum(mass * log_prob, axis=1) * weight
    return jnp.sum(per_joint) / jnp.maximum(jnp.sum(weight), 1.0)


def heatmaps_from_outputs(outputs: jnp.ndarray, loss_kind: str, sigma: float) -> jnp.ndarray:
    """Model outputs -> heatmaps on the scale the decoder and rescoring expect.

    MSE-trained outputs already are heatmaps. Spatial-softmax outputs are logits:
    their softmax is scaled by the mass of a unit-peak Gaussian (2 pi sigma^2), so
    a perfect prediction peaks at 1 and the 0.2 keypoint-score threshold keeps
    its meaning.
    """
    if loss_kind != "spatial_softmax":
        return outputs
    b, h, w, k = outputs.shape
    prob = jax.nn.softmax(outputs.reshape(b, h * w, k).astype(jnp.float32), axis=1)
    return prob.reshape(b, h, w, k) * (2.0 * jnp.pi * sigma**2)


def heatmap_activation(config: ml_collections.ConfigDict) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """`heatmaps_from_outputs` for the loss and sigma a model was trained with."""
    return partial(heatmaps_from_outputs, loss_kind=config.train.loss, sigma=config.data.sigma)


def heatmap_loss(
    pred: jnp.ndarray, target: jnp.ndarray, weight: jnp.ndarray, kind: str, top_k: int = 8
) -> jnp.ndarray:
    """`kind`: 'mse' (JointsMSELoss), 'ohkm' (hard keypoint mining, top_k) or 'spatial_softmax'."""
    if kind == "mse":
        return joints_mse(pred, target, weight)
    if kind == "ohkm":
        return ohkm_mse(pred, target, weight, top_k)
    if kind == "spatial_softmax":
        return spatial_softmax_ce(pred, target, weight)
    raise ValueError(f"train.loss must be 'mse', 'ohkm' or 'spatial_softmax', got {kind!r}")
