"""On-device input normalisation of uint8 crops."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


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

    In float64 (the precision training parity with PyTorch is checked in) the result is
    the PyTorch side's input to the bit: see `reference_levels`.
    """
    if images.dtype != jnp.uint8:
        raise TypeError(f"normalize_images expects uint8 crops, got {images.dtype}")
    if color_order not in ("rgb", "bgr"):
        raise ValueError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
    if jnp.dtype(dtype) == jnp.float64:
        if color_order == "bgr":
            images = images[..., ::-1]
        return reference_levels(mean, std)[images.astype(jnp.int32), jnp.arange(len(mean))]
    # float32 arithmetic for float32 and bfloat16 (a bfloat16 result is rounded once, at
    # the end).
    work = jnp.promote_types(dtype, jnp.float32)
    x = images.astype(work)
    if color_order == "bgr":
        x = x[..., ::-1]
    mean = jnp.asarray(mean, work) * 255.0
    std = jnp.asarray(std, work) * 255.0
    return ((x - mean) / std).astype(dtype)


def reference_levels(mean: Sequence[float], std: Sequence[float]) -> jnp.ndarray:
    """[256, channels] float64: level v of channel c normalised as the reference does,
    (v / 255 - mean[c]) / std[c] (torchvision's ToTensor, then Normalize; the PyTorch side
    of `interop.compare_training` gets `interop.compare.normalized_input`, the same
    expression in NumPy).

    Computed on the host, in NumPy, and looked up on device: under jit XLA's algebraic
    simplifier rewrites a division by a constant as a multiplication by its reciprocal
    (x / 255 -> x * 0.00392156862745098), which rounds ~10% of the levels differently,
    and (x - 255 mean) / (255 std) differs from the reference in 63% of them (by up to
    9e-16): a different input on every training step of a float64 comparison.
    """
    levels = np.arange(256, dtype=np.float64)[:, None] / 255.0
    return jnp.asarray((levels - np.asarray(mean, np.float64)) / np.asarray(std, np.float64))
