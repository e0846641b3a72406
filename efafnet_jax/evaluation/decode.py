"""Heatmaps -> keypoints, as SimpleBaseline/HRNet decode them (lib/core/inference.py).

Heatmaps are channels-last [N, h, w, K] everywhere in this project.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from efafnet_jax.data.transforms import affine_matrix, affine_points


def flip_back(
    heatmaps: jnp.ndarray, flip_pairs: Sequence[tuple[int, int]], shift: bool = True
) -> jnp.ndarray:
    """Heatmaps of mirrored crops -> heatmaps of the original crops (HRNet `flip_back`).

    Mirror the width, swap left/right channels, then (`shift`, the reference's
    SHIFT_HEATMAP) move everything one pixel right: out[..., 1:, :] = out[..., :-1, :],
    column 0 keeping its own value.
    """
    num_joints = heatmaps.shape[-1]
    perm = np.arange(num_joints)
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    out = heatmaps[:, :, ::-1, :][..., perm]
    if shift:
        out = jnp.concatenate([out[:, :, :1, :], out[:, :, :-1, :]], axis=2)
    return out


def max_positions(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax per joint (first maximum wins) -> coords [N, K, 2] (x, y) and scores [N, K].

    Where the maximum is <= 0 the coordinate is (0, 0), as the reference masks it.
    """
    n, h, w, k = heatmaps.shape
    flat = np.moveaxis(heatmaps, -1, 1).reshape(n, k, h * w)
    index = np.argmax(flat, axis=2)
    scores = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    coords *= (scores > 0)[..., None]
    return coords, scores


def quarter_offset(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Moves each peak 0.25 px toward its higher neighbour, where 1 < px < w-1, 1 < py < h-1."""
    n, h, w, k = heatmaps.shape
    px = np.floor(coords[..., 0] + 0.5).astype(np.int64)
    py = np.floor(coords[..., 1] + 0.5).astype(np.int64)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    pxc, pyc = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
    batch = np.arange(n)[:, None]
    joint = np.arange(k)[None, :]
    dx = heatmaps[batch, pyc, pxc + 1, joint] - heatmaps[batch, pyc, pxc - 1, joint]
    dy = heatmaps[batch, pyc + 1, pxc, joint] - heatmaps[batch, pyc - 1, pxc, joint]
    offset = np.stack([np.sign(dx), np.sign(dy)], axis=-1) * 0.25
    return coords + offset * inside[..., None]


def to_image_coordinates(
    coords: np.ndarray, centers: np.ndarray, scales: np.ndarray, heatmap_size: tuple[int, int]
) -> np.ndarray:
    """Heatmap coords [N, K, 2] -> image coords via the inverse affine of (centre, scale, 0)."""
    out = np.zeros(coords.shape, np.float64)
    for i in range(len(coords)):  # one 2x3 matrix per person
        matrix = affine_matrix(centers[i], scales[i], 0.0, heatmap_size, inverse=True)
        out[i] = affine_points(coords[i], matrix)
    return out


def decode_heatmaps(
    heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray, post_process: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """HRNet `get_final_preds`: (image coords [N, K, 2], scores [N, K])."""
    heatmaps = np.asarray(heatmaps, np.float32)
    coords, scores = max_positions(heatmaps)
    if post_process:
        coords = quarter_offset(heatmaps, coords)
    h, w = heatmaps.shape[1:3]
    return to_image_coordinates(coords, centers, scales, (w, h)), scores
