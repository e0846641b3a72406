"""Device half of on-device augmentation: bilinear warp and Gaussian targets in JAX.

Both run inside the jitted train step on batches from `efafnet_jax.data.region`.
The warp is cv2.warpAffine's (INTER_LINEAR, zero border) up to cv2's fixed-point
rounding (1/32 pixel positions, 15-bit weights); the targets are
`efafnet_jax.data.targets.gaussian_targets` (HRNet's window placement and
truncations) in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp


def warp_crops(
    source: jnp.ndarray, to_source: jnp.ndarray, output_size: tuple[int, int]
) -> jnp.ndarray:
    """uint8 buffers [B, bh, bw, 3] x crop -> buffer matrices [B, 2, 3] -> uint8 crops.

    `output_size` is (width, height). Taps outside the buffer read zero.
    """
    batch, buffer_h, buffer_w, channels = source.shape
    width, height = output_size
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


def gaussian_targets(
    joints: jnp.ndarray,
    visibility: jnp.ndarray,
    image_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
    joint_weights: Sequence[float] | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Crop-pixel joints [B, K, 2] -> heatmaps [B, h, w, K] and weights [B, K].

    As the host version: peak at mu = int(joint / stride + 0.5), window
    [int(mu - 3 sigma), int(mu + 3 sigma + 1)) holding the reference's window values
    by offset from its corner, weight zeroed when the window is off the map.
    """
    width, height = heatmap_size
    stride = jnp.asarray(
        [image_size[0] / heatmap_size[0], image_size[1] / heatmap_size[1]], jnp.float32
    )
    radius = sigma * 3
    size = 2 * sigma * 3 + 1
    center = size // 2
    mu = jnp.trunc(joints.astype(jnp.float32) / stride + 0.5)
    ul = jnp.trunc(mu - radius)
    br = jnp.trunc(mu + radius + 1)
    off_map = (ul[..., 0] >= width) | (ul[..., 1] >= height) | (br[..., 0] < 0) | (br[..., 1] < 0)
    weight = jnp.where(off_map, 0.0, visibility.astype(jnp.float32))

    def window_offsets(coords, low, high):  # [n] map coords -> [B, K, n] offsets, mask
        offset = coords - low[..., None]
        return offset, (offset >= 0) & (offset < size) & (coords < high[..., None])

    off_x, in_x = window_offsets(jnp.arange(width, dtype=jnp.float32), ul[..., 0], br[..., 0])
    off_y, in_y = window_offsets(jnp.arange(height, dtype=jnp.float32), ul[..., 1], br[..., 1])
    # One float32 exp of the summed squares, as the host window is computed.
    exponent = (off_y[..., :, None] - center) ** 2 + (off_x[..., None, :] - center) ** 2
    values = jnp.exp(-exponent / (2 * sigma**2))  # [B, K, h, w]
    mask = in_y[..., :, None] & in_x[..., None, :] & (weight > 0.5)[..., None, None]
    target = jnp.where(mask, values, 0.0).transpose(0, 2, 3, 1)
    if joint_weights is not None:
        weight = weight * jnp.asarray(joint_weights, jnp.float32)
    return target, weight


def device_batch(
    batch: dict,
    image_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
    joint_weights: Sequence[float] | None = None,
) -> dict:
    """A batch of source regions -> the host path's {'image', 'target', 'target_weight'}."""
    target, weight = gaussian_targets(
        batch["joints"], batch["visibility"], image_size, heatmap_size, sigma, joint_weights
    )
    image = warp_crops(batch["source"], batch["to_source"], image_size)
    return {"image": image, "target": target, "target_weight": weight}
