"""Heatmap losses on channels-last maps.

'mse' and 'ohkm' are SimpleBaseline's (lib/core/loss.py). 'spatial_softmax' is
the quickstart's faster-starting alternative: a softmax over each joint's pixels
scored by cross-entropy against the target Gaussian normalised to sum 1 (an MSE
net first learns all-zero maps and localises late; see benchmarks/RESULTS.md).
Its outputs are logits, read with model.heatmap_activation="spatial_softmax"
(`data.codec.activate`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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


# The heatmap activation (model.heatmap_activation) each loss trains the outputs for.
LOSS_ACTIVATION = {"mse": "identity", "ohkm": "identity", "spatial_softmax": "spatial_softmax"}


def check_loss_fits_model(loss_kind: str, heatmap_activation: str) -> None:
    """A ValueError when train.loss trains outputs that model.heatmap_activation misreads."""
    if loss_kind not in LOSS_ACTIVATION:
        raise ValueError(f"train.loss must be one of {sorted(LOSS_ACTIVATION)}, got {loss_kind!r}")
    if LOSS_ACTIVATION[loss_kind] != heatmap_activation:
        raise ValueError(
            f"train.loss={loss_kind!r} trains outputs that are read with "
            f"heatmap_activation={LOSS_ACTIVATION[loss_kind]!r}, but "
            f"model.heatmap_activation={heatmap_activation!r}: set "
            f"model.heatmap_activation={LOSS_ACTIVATION[loss_kind]!r}"
        )


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
