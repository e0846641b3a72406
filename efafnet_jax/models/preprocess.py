"""On-device input normalisation of uint8 crops."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp


def normalize_images(
    images: jnp.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    color_order: str = "rgb",
    dtype=jnp.float32,
) -> jnp.ndarray:
    """Maps uint8 RGB crops [..., H, W, 3] to mean/std-normalised floats.

    With `color_order="bgr"` the channels are reversed first and the same mean/std
    vectors are then applied by channel index: SimpleBaseline and HRNet's ResNet
    configs fed cv2's BGR pixels through RGB-ordered statistics, and their
    checkpoints expect exactly that input.
    """
    if images.dtype != jnp.uint8:
        raise TypeError(f"normalize_images expects uint8 crops, got {images.dtype}")
    if color_order not in ("rgb", "bgr"):
        raise ValueError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
    # At least float32 (bfloat16 inputs are rounded once, at the end), float64 in a
    # float64 model: a float32 normalisation would cap float64 parity at ~1e-7.
    work = jnp.promote_types(dtype, jnp.float32)
    x = images.astype(work)
    if color_order == "bgr":
        x = x[..., ::-1]
    mean = jnp.asarray(mean, work) * 255.0
    std = jnp.asarray(std, work) * 255.0
    return ((x - mean) / std).astype(dtype)
