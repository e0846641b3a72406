"""Device half of on-device augmentation: bilinear warp and Gaussian targets in JAX.

Both run inside the jitted train step on batches from `efafnet_jax.data.region`.
The warp is cv2.warpAffine's (INTER_LINEAR, zero border) up to cv2's fixed-point
rounding (1/32 pixel positions, 15-bit weights); the targets are the codec's
(`codec.encode_on_device`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from efafnet_jax.data.codec import encode_on_device


def warp_crops(
    source: jnp.ndarray, to_source: jnp.ndarray, output_hw: tuple[int, int]
) -> jnp.ndarray:
    """uint8 buffers [B, bh, bw, 3] x crop -> buffer matrices [B, 2, 3] -> uint8 crops
    [B, *output_hw, 3]. Taps outside the buffer read zero.
    """
    batch, buffer_h, buffer_w, channels = source.shape
    height, width = output_hw
    xs = jnp.arange(width, dtype=jnp.float32)
    ys = jnp.arange(height, dtype=jnp.float32)[:, None]
    m = to_source.astype(jnp.float32)[:, :, :, None, None]  # [B, 2, 3, 1, 1]
    sx = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]  # [B, H, W]
    sy = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    left, top = jnp.floor(sx), jnp.floor(sy)
    fx, fy = (sx - left)[..., None], (sy - top)[..., None]
    flat = source.reshape(batch, buffer_h * buffer_w, channels)

    def tap(x, y):
        inside = (x >= 0) & (x < buffer_w) & (y >= 0) & (y < buffer_h)
        index = (jnp.clip(y, 0, buffer_h - 1) * buffer_w + jnp.clip(x, 0, buffer_w - 1)).astype(
            jnp.int32
        )
        values = jnp.take_along_axis(flat, index.reshape(batch, -1, 1), axis=1)
        values = values.reshape(batch, height, width, channels).astype(jnp.float32)
        return values * inside[..., None]

    value = (
        tap(left, top) * (1 - fx) * (1 - fy)
        + tap(left + 1, top) * fx * (1 - fy)
        + tap(left, top + 1) * (1 - fx) * fy
        + tap(left + 1, top + 1) * fx * fy
    )
    return jnp.clip(jnp.round(value), 0, 255).astype(jnp.uint8)


def device_batch(
    batch: dict,
    crop_hw: tuple[int, int],
    heatmap_hw: tuple[int, int],
    sigma: float,
    joint_weights: Sequence[float] | None = None,
    target_encoding: str = "msra",
    udp: bool = False,
) -> dict:
    """A batch of source regions -> the host path's {'image', 'target', 'target_weight'}."""
    target, weight = encode_on_device(
        batch["joints"],
        batch["visibility"],
        crop_hw,
        heatmap_hw,
        sigma,
        joint_weights,
        target_encoding,
        udp,
    )
    image = warp_crops(batch["source"], batch["to_source"], crop_hw)
    return {"image": image, "target": target, "target_weight": weight}
