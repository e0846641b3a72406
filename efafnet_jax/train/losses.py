"""SimpleBaseline's heatmap losses (lib/core/loss.py), on channels-last heatmaps."""

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


def heatmap_loss(
    pred: jnp.ndarray, target: jnp.ndarray, weight: jnp.ndarray, kind: str, top_k: int = 8
) -> jnp.ndarray:
    """`kind`: 'mse' (JointsMSELoss) or 'ohkm' (online hard keypoint mining, top_k joints)."""
    if kind == "mse":
        return joints_mse(pred, target, weight)
    if kind == "ohkm":
        return ohkm_mse(pred, target, weight, top_k)
    raise ValueError(f"train.loss must be 'mse' or 'ohkm', got {kind!r}")
