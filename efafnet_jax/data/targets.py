"""Gaussian heatmap targets and per-joint weights (HRNet JointsDataset `generate_target`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np


def _truncate(x: np.ndarray) -> np.ndarray:
    """Python int(): toward zero, as the reference rounds."""
    return np.trunc(x).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _window(sigma: float) -> np.ndarray:
    """The reference's window g: size = 2 * 3 sigma + 1, centred at size // 2."""
    size = 2 * sigma * 3 + 1
    grid = np.arange(0, size, 1, np.float32)
    center = size // 2
    window = np.exp(-((grid - center) ** 2 + (grid[:, None] - center) ** 2) / (2 * sigma**2))
    window.flags.writeable = False
    return window


def gaussian_targets(
    joints: np.ndarray,
    visibility: np.ndarray,
    image_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
    joint_weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [h, w, K] float32 and weights [K] float32 for crop-space joints [K, 2].

    Sizes are (width, height). The peak of joint k sits at mu = int(joint / stride
    + 0.5) (int truncating toward zero); an unnormalised Gaussian of `sigma` is
    pasted in the window [int(mu - 3 sigma), int(mu + 3 sigma + 1)), clipped to the
    map. The weight is the visibility, set to 0 when the window lies wholly off the
    map; weights then multiply by `joint_weights` if given. Vectorised over joints
    (no Python loop), with the reference's window values.
    """
    joints = np.asarray(joints, np.float64)
    num_joints = len(joints)
    width, height = heatmap_size
    stride = np.asarray(image_size, np.float64) / np.asarray(heatmap_size, np.float64)
    weight = np.asarray(visibility, np.float32).reshape(num_joints).copy()
    radius = sigma * 3
    mu = _truncate(joints[:, :2] / stride + 0.5)
    ul = _truncate(mu - radius)
    br = _truncate(mu + radius + 1)
    off_map = (ul[:, 0] >= width) | (ul[:, 1] >= height) | (br[:, 0] < 0) | (br[:, 1] < 0)
    weight[off_map] = 0

    window = _window(float(sigma))

    # Scatter each joint's window (n x n values) instead of evaluating the whole map.
    offsets = np.arange(window.shape[0])
    ys = ul[:, 1:2] + offsets  # [K, n]: map row of each window row
    xs = ul[:, 0:1] + offsets
    valid_y = (ys >= 0) & (ys < np.minimum(br[:, 1:2], height))
    valid_x = (xs >= 0) & (xs < np.minimum(br[:, 0:1], width))
    valid = (weight > 0.5)[:, None, None] & valid_y[:, :, None] & valid_x[:, None, :]
    k, iy, ix = np.nonzero(valid)
    target = np.zeros((height, width, num_joints), np.float32)  # channels last, as batched
    flat_index = (ys[k, iy] * width + xs[k, ix]) * num_joints + k
    target.reshape(-1)[flat_index] = window[iy, ix]
    if joint_weights is not None:
        weight = weight * np.asarray(joint_weights, np.float32)
    return target, weight
